"""All talk with MLflow tracking and the model registry (CONTRACT.md §2 and §4).

The only module besides ``models/pyfunc.py`` that imports mlflow. Every candidate becomes one run
in the ``recloop`` experiment (params = the resolved config, metrics = candidate, champion and
baselines on the same evaluation cases, the evaluation report as artifacts, a pyfunc model carrying
the checkpoint) and one registered version of ``recloop`` with tags ``gate``, ``reason``,
``metrics``, ``parent_version``, ``batch_ids``, ``data_fingerprint``. Alias ``challenger`` is the
latest candidate, alias ``champion`` the promoted one (or the one a rollback chose). Each candidate
run also carries a plot of the gate's metric across the registered versions, and may carry a
``candidate_key`` tag naming the promotion attempt, so that a retried attempt reuses its version.
Nothing happens at import time; call :func:`configure` first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from models.pyfunc import DEFAULT_PARAMS, predictions_frame
from recloop.config import Config
from recloop.paths import Home

if TYPE_CHECKING:
    from models.sasrec import Recommender
    from recloop.evaluation import EvaluationReport
    from recloop.gate import Decision

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"  # name of the pyfunc model inside a run
CHECKPOINT_NAME = "recommender.pt"
# Run tag naming one promotion attempt: a retried attempt finds the version it already registered.
CANDIDATE_KEY = "candidate_key"
# Models drawn beside the candidate in the per-version plot (run metrics ``<model>_<metric>``).
BASELINES = ("popularity", "recent_popularity", "transitions")
# The model-from-code file logged with every candidate (see Registry.log_candidate).
MODEL_SCRIPT = """\
import mlflow.models

from models.pyfunc import RecloopModel

mlflow.models.set_model(RecloopModel())
"""


# mlflow.set_tracking_uri() also writes MLFLOW_TRACKING_URI into os.environ; remember what recloop
# set there, so that a later home in the same process is not sent to the first home's store.
_uri_set_here: str | None = None


def tracking_uri(home: Home) -> str:
    """``MLFLOW_TRACKING_URI`` if the user set it, else the SQLite store in the recloop home."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != _uri_set_here:
        return env
    return f"sqlite:///{home.mlflow_db}"


def _requirements() -> list[str]:
    """Pinned, explicit requirements: inferring them would import and probe the whole model."""
    out = []
    for package in ("mlflow", "torch", "numpy", "pandas", "pyyaml"):
        try:
            version = metadata.version(package).split("+")[0]  # torch's "+cpu" is no pip version
        except metadata.PackageNotFoundError:
            continue
        out.append(f"{package}=={version}")
    return out


def _tag(value: Any) -> str:
    """A tag value: strings as they are, everything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class LoggedCandidate:
    """Where a candidate went: its registered version and the run that holds it."""

    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    experiment_id: str = ""
    reused: bool = False  # an earlier attempt with the same key had registered it already


class Registry:
    """The experiment and the registered model of one recloop home. Build with :func:`configure`."""

    def __init__(self, home: Home, config: Config, uri: str, experiment_id: str) -> None:
        self.home = home
        self.config = config
        self.uri = uri
        self.experiment_id = experiment_id
        self.name = config.registry.model_name
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    # -- reading -----------------------------------------------------------------------------
    def _version_by_alias(self, alias: str) -> Any | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as error:
            if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise

    def champion_version(self) -> str | None:
        """The version the ``champion`` alias points at, or None before the first promotion."""
        version = self._version_by_alias(CHAMPION)
        return None if version is None else str(version.version)

    def challenger_version(self) -> str | None:
        """The latest candidate's version (alias ``challenger``), or None."""
        version = self._version_by_alias(CHALLENGER)
        return None if version is None else str(version.version)

    def version_info(self, version: str) -> dict[str, Any]:
        """One version's number, run, tags and aliases (from ``get_model_version``: search results
        leave aliases empty on SQLite)."""
        mv = self.client.get_model_version(self.name, str(version))
        return {
            "version": str(mv.version),
            "run_id": mv.run_id,
            "source": mv.source,
            "created": mv.creation_timestamp,
            "tags": dict(mv.tags),
            "aliases": list(mv.aliases),
        }

    def list_versions(self) -> list[dict[str, Any]]:
        """Every registered version, oldest first, with tags and aliases."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        numbers = sorted({int(mv.version) for mv in found})
        return [self.version_info(str(n)) for n in numbers]

    def load_version(self, version: str) -> Recommender:
        """Download a version's pyfunc model and rebuild its recommender from the checkpoint."""
        loaded = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        return loaded.unwrap_python_model().recommender

    def load_champion(self) -> tuple[Recommender, dict[str, Any]] | None:
        """The champion rebuilt from the registry's artifacts, with its version info, or None."""
        version = self.champion_version()
        if version is None:
            return None
        recommender = self.load_version(version)
        logger.info("loaded champion %s version %s", self.name, version)
        return recommender, self.version_info(version)

    def find_candidate(self, key: str) -> LoggedCandidate | None:
        """The version an earlier attempt tagged ``candidate_key=key`` registered, or None.

        A run that died before its model was registered has no version and is skipped.
        """
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{CANDIDATE_KEY} = '{key}'"
        )
        for run in runs:
            found = self.client.search_model_versions(
                f"name='{self.name}' and run_id='{run.info.run_id}'"
            )
            if found:
                version = str(min(int(mv.version) for mv in found))
                return LoggedCandidate(
                    version,
                    run.info.run_id,
                    f"models:/{self.name}/{version}",
                    self.experiment_id,
                    reused=True,
                )
        return None

    def version_history(self, metric: str, last: int = 50) -> list[dict[str, Any]]:
        """Per registered version (oldest first, at most ``last``): the candidate's ``metric`` and
        the champion's and baselines' on the same evaluation cases, from the version's run, and
        whether the version passed the gate."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        history = []
        for mv in sorted(found, key=lambda mv: int(mv.version))[-last:]:
            try:
                metrics = self.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            except MlflowException:  # a run deleted by hand: the version keeps a gap
                metrics = {}
            row: dict[str, Any] = {
                "version": str(mv.version),
                "gate": dict(mv.tags).get("gate", ""),
                "candidate": metrics.get(metric),
                CHAMPION: metrics.get(f"{CHAMPION}_{metric}"),
            }
            row |= {name: metrics.get(f"{name}_{metric}") for name in BASELINES}
            history.append(row)
        return history

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI (see :func:`run_url`)."""
        return run_url(self.uri, self.experiment_id, run_id)

    # -- writing -----------------------------------------------------------------------------
    def log_candidate(
        self,
        recommender: Recommender,
        report: EvaluationReport,
        tags: dict[str, Any] | None = None,
        decision: Decision | None = None,
        extra_metrics: dict[str, float] | None = None,
        artifacts: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> LoggedCandidate:
        """One run + one registered version for a candidate; moves ``challenger`` onto it.

        ``tags`` (e.g. parent_version, batch_ids, data_fingerprint) go on the run and the version;
        ``decision`` adds ``gate`` (passed|failed) and ``reason``; ``artifacts`` maps a name to a
        JSON-ready value logged as ``<name>.json`` (e.g. the training reports). With ``key`` (one
        promotion attempt, e.g. a Prefect task run id), a version an earlier try with the same key
        registered is reused, so a retry after a partial failure never registers it twice.
        """
        tags = {name: _tag(value) for name, value in (tags or {}).items()}
        candidate = report.rows["candidate"]
        version_tags = {**tags, "metrics": _tag(candidate)}
        if decision is not None:
            version_tags["gate"] = "passed" if decision.promote else "failed"
            version_tags["reason"] = decision.reason
        logged = self.find_candidate(key) if key else None
        if logged is None:
            logged = self._log_run(
                recommender, report, tags, version_tags, extra_metrics, artifacts, key
            )
        else:
            logger.warning(
                "attempt %s already registered %s version %s (run %s): reusing it",
                key,
                self.name,
                logged.version,
                logged.run_id,
            )
        # Tags and alias are (re)applied on reuse too: the earlier attempt may have died before.
        for tag, value in version_tags.items():
            self.client.set_model_version_tag(self.name, logged.version, tag, value)
        self.client.set_registered_model_alias(self.name, CHALLENGER, logged.version)
        try:
            self._log_history_plot(logged.run_id)
        except Exception as error:  # a missing picture must not block the gate
            logger.warning("no per-version plot for run %s: %s", logged.run_id, error)
        logger.info("registered %s version %s (run %s)", self.name, logged.version, logged.run_id)
        return logged

    def _log_run(
        self,
        recommender: Recommender,
        report: EvaluationReport,
        tags: dict[str, str],
        version_tags: dict[str, str],
        extra_metrics: dict[str, float] | None,
        artifacts: dict[str, Any] | None,
        key: str | None,
    ) -> LoggedCandidate:
        """Log the candidate's run (params, metrics, report, pyfunc model) and register it."""
        run_tags = {**tags, **{k: v for k, v in version_tags.items() if k != "metrics"}}
        if key:
            run_tags[CANDIDATE_KEY] = key
        with mlflow.start_run(experiment_id=self.experiment_id) as run:
            mlflow.set_tags(run_tags)
            mlflow.log_params({name: _tag(value) for name, value in self.config.flat().items()})
            metrics = {**report.flat_metrics(), **(extra_metrics or {})}
            mlflow.log_metrics({name: float(value) for name, value in metrics.items()})
            mlflow.log_dict(report.to_dict(), "evaluation/report.json")
            mlflow.log_text(report.to_markdown(), "evaluation/report.md")
            for name, value in (artifacts or {}).items():
                mlflow.log_dict(value, f"{name}.json")
            with tempfile.TemporaryDirectory(prefix="recloop-ckpt-") as tmp:
                checkpoint = Path(tmp) / CHECKPOINT_NAME
                recommender.save(checkpoint)
                # Models from code: the logged model imports RecloopModel when loaded instead of
                # unpickling an object, so it survives refactors of everything but that import.
                script = Path(tmp) / "recloop_model.py"
                script.write_text(MODEL_SCRIPT, encoding="utf-8")
                with warnings.catch_warnings():
                    # An input example would make MLflow load and run the model once more.
                    warnings.filterwarnings("ignore", message=".*input example.*")
                    info = mlflow.pyfunc.log_model(
                        name=MODEL_ARTIFACT,
                        python_model=str(script),
                        artifacts={"checkpoint": str(checkpoint)},
                        signature=_signature(recommender),
                        pip_requirements=_requirements(),
                        registered_model_name=self.name,
                    )
            run_id = run.info.run_id
        version = str(info.registered_model_version)
        uri = f"models:/{self.name}/{version}"
        return LoggedCandidate(version, run_id, uri, self.experiment_id)

    def _log_history_plot(self, run_id: str) -> None:
        """Attach ``evaluation/<metric>_by_version.png`` to the run: the gate's metric of every
        registered version so far, candidate vs champion vs baselines on the same cases."""
        from recloop.reporting import plot_series  # lazy: matplotlib only when a run is logged

        metric = self.config.gate.metric
        history = self.version_history(metric)
        if not history:
            return
        # "*" marks versions that passed the gate (each became champion when registered).
        labels = [f"v{row['version']}{'*' if row['gate'] == 'passed' else ''}" for row in history]
        models = ["candidate", CHAMPION, *BASELINES]
        # The champion each candidate was judged against, i.e. the one before it.
        shown = {CHAMPION: "champion before it"}
        series = {
            shown.get(name, name): [row[name] for row in history]
            for name in models
            if any(row[name] is not None for row in history)
        }
        with tempfile.TemporaryDirectory(prefix="recloop-plot-") as tmp:
            path = plot_series(
                Path(tmp) / f"{metric}_by_version.png",
                labels,
                series,
                f"{self.name}: {metric} per registered version (* = passed the gate)",
                metric,
                xlabel="registered version (each judged on its own newest events)",
                dashed=BASELINES,
            )
            self.client.log_artifact(run_id, str(path), "evaluation")

    def tag_decision(self, version: str, decision: Decision) -> None:
        """Record the gate's verdict on a version (``gate`` passed|failed and ``reason``)."""
        self.client.set_model_version_tag(
            self.name, version, "gate", "passed" if decision.promote else "failed"
        )
        self.client.set_model_version_tag(self.name, version, "reason", decision.reason)

    def set_champion(self, version: str, reason: str) -> None:
        """Point ``champion`` at ``version`` (a promotion or a manual rollback) and say why."""
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        self.client.set_model_version_tag(self.name, str(version), "champion_reason", reason)
        logger.info("champion is now %s version %s: %s", self.name, version, reason)

    def rollback(self, version: str, reason: str = "") -> dict[str, Any]:
        """Move ``champion`` back to an existing ``version`` and record why and when.

        The chosen version gets ``rollback_at``, ``rollback_from`` and ``rollback_reason`` tags
        (and ``champion_reason``); the version that loses the alias gets ``demoted_at``,
        ``demoted_to`` and ``demoted_reason``. Raises LookupError when ``version`` is not
        registered. Rolling back to the current champion changes nothing.
        """
        version = str(version).strip()
        if not version.isdigit():
            raise LookupError(f"{version!r} is not a version number of model {self.name!r}")
        try:
            self.client.get_model_version(self.name, version)
        except MlflowException as error:
            if error.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise
            known = [v["version"] for v in self.list_versions()]
            raise LookupError(
                f"model {self.name!r} has no version {version} at {self.uri} "
                f"(registered: {', '.join(known) or 'none'})"
            ) from error
        before = self.champion_version()
        if before == version:
            return {"version": version, "previous": before, "changed": False}
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        why = reason.strip() or "manual rollback"
        self.set_champion(version, f"rollback from version {before or '-'} at {when}: {why}")
        for tag, value in {
            "rollback_at": when,
            "rollback_from": before or "",
            "rollback_reason": why,
        }.items():
            self.client.set_model_version_tag(self.name, version, tag, value)
        if before is not None:
            for tag, value in {
                "demoted_at": when,
                "demoted_to": version,
                "demoted_reason": why,
            }.items():
                self.client.set_model_version_tag(self.name, before, tag, value)
        logger.warning("rolled back %s champion %s -> %s: %s", self.name, before, version, why)
        return {"version": version, "previous": before, "changed": True, "at": when}


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI: under the tracking server itself when it is one, else
    under ``mlflow ui --backend-store-uri <uri>`` at its default address."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page}"


def _signature(recommender: Recommender) -> Any:
    """Input ``user_id`` + ``history`` (list of str), CONTRACT §4 output, params k, exclude_seen."""
    example_items = list(recommender.item_ids[:2])
    model_input = pd.DataFrame({"user_id": ["u1"], "history": [example_items]})
    model_output = predictions_frame(["u1"], [example_items], [[1.0] * len(example_items)])
    return infer_signature(model_input, model_output, params=dict(DEFAULT_PARAMS))


def configure(home: Home, config: Config) -> Registry:
    """Point MLflow at the home's store and make sure the experiment exists.

    Sets the process-wide tracking and registry URIs (the fluent ``mlflow.start_run`` API reads
    them); the experiment gets an absolute artifact location so runs do not depend on the cwd.
    """
    uri = tracking_uri(home)
    if uri.startswith("sqlite:///"):
        home.root.mkdir(parents=True, exist_ok=True)
    global _uri_set_here
    user_set = os.environ.get("MLFLOW_TRACKING_URI") not in (None, "", _uri_set_here)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not user_set:
        _uri_set_here = uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = config.registry.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        home.mlartifacts.mkdir(parents=True, exist_ok=True)
        try:
            experiment_id = client.create_experiment(
                name, artifact_location=home.mlartifacts.resolve().as_uri()
            )
        except MlflowException:  # created concurrently by another process
            experiment_id = client.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    return Registry(home, config, uri, experiment_id)


def log_benchmark(
    name: str,
    params: dict[str, Any],
    metrics: dict[str, float | Sequence[float | None] | None],
    artifacts: Sequence[str | Path],
    config: Config,
    home: Home,
    tags: dict[str, Any] | None = None,
) -> str:
    """Log one benchmark as a run named ``name`` in experiment ``<registry.experiment>-benchmarks``
    of the home's tracking store (the same store as the candidates, no server); return its id.

    Params are the resolved config plus ``params``. A metric given as a sequence is logged with
    steps 1, 2, ... (e.g. one value per window); missing and non-finite values are skipped.
    ``artifacts`` are files (logged at the run's artifact root) or folders (logged under their
    name), e.g. the report's Markdown, JSON and plots.
    """
    experiment = f"{config.registry.experiment}-benchmarks"
    bench = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, experiment=experiment)
    )
    registry = configure(home, bench)
    now = int(time.time() * 1000)
    points: list[Metric] = []
    for key, value in metrics.items():
        values = list(value) if isinstance(value, Sequence) else [value]
        for step, v in enumerate(values, start=1 if isinstance(value, Sequence) else 0):
            if v is not None and math.isfinite(float(v)):
                points.append(Metric(key, float(v), now, step))
    all_params = {**config.flat(), **params}
    with mlflow.start_run(experiment_id=registry.experiment_id, run_name=name) as run:
        mlflow.log_params({key: _tag(value) for key, value in all_params.items()})
        registry.client.log_batch(run.info.run_id, metrics=points)
        mlflow.set_tags({"benchmark": name, **{k: _tag(v) for k, v in (tags or {}).items()}})
        for path in map(Path, artifacts):
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
    logger.info("benchmark %s logged as run %s (experiment %s)", name, run.info.run_id, experiment)
    return run.info.run_id


def load_champion_pyfunc(config: Config, home: Home) -> Any:
    """The champion as served: ``mlflow.pyfunc.load_model("models:/<name>@champion")``."""
    registry = configure(home, config)
    if registry.champion_version() is None:
        raise LookupError(f"no {CHAMPION!r} alias on model {registry.name!r} at {registry.uri}")
    return mlflow.pyfunc.load_model(f"models:/{registry.name}@{CHAMPION}")


def load_champion(config: Config, home: Home) -> tuple[Recommender, dict[str, Any]] | None:
    """The champion recommender rebuilt from the registry (not from memory), or None."""
    return configure(home, config).load_champion()


def load_model_uri(uri: str, config: Config, home: Home) -> Recommender:
    """The recommender behind a model URI (``models:/recloop@champion``, ``models:/recloop/3``,
    ``runs:/<run id>/model``) in the home's tracking store, rebuilt from its checkpoint artifact.

    Raises LookupError, with MLflow's reason, when the URI cannot be loaded.
    """
    configure(home, config)
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise LookupError(f"cannot load {uri} from {tracking_uri(home)}: {reason}") from error
    recommender = getattr(loaded.unwrap_python_model(), "recommender", None)
    if recommender is None:
        raise LookupError(f"{uri} is not a recloop model (no recommender in its pyfunc)")
    return recommender
