"""All talk with MLflow tracking and the model registry (docs/interfaces.md, sections 2 and 4).

The only module besides ``models/pyfunc.py`` that imports mlflow. The ``recloop`` experiment is a
classic machine-learning experiment (tag ``mlflow.experimentKind``), so the MLflow UI opens on its
runs table. Every candidate becomes one run, opened before training (:meth:`Registry.candidate_run`)
and closed once the gate has decided, so its duration is the training's: the run is named for
what it is (``v3 incremental batch ac1eb9e2``), its params are the resolved config, its input the
training interactions as an MLflow dataset, its metrics the per-epoch learning curve (``step`` =
epoch) and the candidate's, champion's and baselines' numbers on the same evaluation cases, its
description the gate's decision and reason, its artifacts the evaluation report and a pyfunc
model carrying the checkpoint. The candidate is one registered version of ``recloop``, created
with its tags ``gate``, ``reason``, ``metrics``, ``parent_version``, ``batch_ids``,
``data_fingerprint`` in one step. Alias ``challenger`` is the latest candidate, alias ``champion``
the promoted one (or the one a rollback chose). Each candidate run also carries a plot of the
gate's metric across the registered versions. A retried promotion reuses the version its run (or
its ``candidate_key`` tag, naming the attempt) already registered.
Nothing happens at import time; call :func:`configure` first.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.data
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from models.baselines import KINDS, Baseline
from models.pyfunc import (
    BASELINE_ARTIFACT,
    CHECKPOINT_ARTIFACT,
    DEFAULT_PARAMS,
    predictions_frame,
)
from recloop import faults
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
BASELINE_NAME = "baseline.npz"
# Version tag saying what serves: "learned" (a trained recommender) or "baseline:<name>".
MODEL_KIND, LEARNED, BASELINE_KIND = "model_kind", "learned", "baseline"
# Run tag naming one promotion attempt: a retried attempt finds the version it already registered.
CANDIDATE_KEY = "candidate_key"
# The experiment tag the MLflow UI reads for the experiment's type, and the value of its "machine
# learning" type (runs table, metric columns, charts). Untagged, the UI infers a type, and an
# experiment it does not recognise as training opens on the GenAI traces page.
EXPERIMENT_KIND = "mlflow.experimentKind"
CLASSIC_ML = "custom_model_development"
RUN_NOTE = "mlflow.note.content"  # a run's description in the UI (Markdown)
DATASET_CONTEXT = "mlflow.data.context"
# Training kinds in run names: from the champion's weights, or from scratch (no champion yet, or
# the full retrain, which also relearns every batch).
INCREMENTAL, FULL_RETRAIN, FROM_SCRATCH = "incremental", "full-retrain", "from-scratch"
# The learning curve: one point per epoch (step = epoch; epoch 0 = before training).
CURVE_LOSS, CURVE_VAL = "train_loss", "val_ndcg_at_10"
BATCH_PREFIX = 8  # hex digits of a batch id shown in run names (ids have 16)
# Models drawn beside the candidate in the per-version plot (run metrics ``<model>_<metric>``).
BASELINES = KINDS
# The model-from-code file logged with every candidate (see Registry.log_candidate).
MODEL_SCRIPT = """\
import mlflow.models

from models.pyfunc import RecloopModel

mlflow.models.set_model(RecloopModel())
"""


# mlflow.set_tracking_uri() also writes MLFLOW_TRACKING_URI into os.environ; remember what recloop
# set there, so that a later home in the same process is not sent to the first home's store.
_uri_set_here: str | None = None


# A tracking server that does not answer is known within about half a minute: this many health
# checks, each waiting at most HEALTH_TIMEOUT seconds, HEALTH_PAUSE seconds apart.
HEALTH_ATTEMPTS = 3
HEALTH_TIMEOUT = 10.0
HEALTH_PAUSE = 2.0


class RegistryUnreachable(ConnectionError):
    """The MLflow tracking server does not answer; nothing that needs it was done."""


def check_reachable(uri: str) -> None:
    """Raise :class:`RegistryUnreachable` when ``uri`` is an MLflow server (http or https) whose
    ``/health`` does not answer OK within :data:`HEALTH_ATTEMPTS` tries. A local store (SQLite,
    files) has nothing to check. Asked before anything is trained or written, so that a server
    that is down costs seconds and one line, not MLflow's retries inside every task's."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    reason = ""
    for attempt in range(HEALTH_ATTEMPTS):
        if attempt:
            time.sleep(HEALTH_PAUSE)
        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT)
        except requests.RequestException as error:
            errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))
            reason = errno.group(0) if errno else type(error).__name__
            continue
        if response.ok:
            return
        reason = f"HTTP {response.status_code} from /health"
    raise RegistryUnreachable(
        f"the MLflow tracking server at {uri} does not answer ({reason}); nothing was trained "
        "or registered, and landed batches stay pending. Start it, or unset MLFLOW_TRACKING_URI "
        "to use the home's own registry"
    )


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


def _user() -> dict[str, str]:
    """The run's "Created by" (as ``mlflow.start_run`` would set it), if the OS knows the user."""
    try:
        return {"mlflow.user": getpass.getuser()}
    except (KeyError, OSError):
        return {}


def training_kind(training: str, warm_start: bool) -> str:
    """The kind of training a run name shows: ``full-retrain``, else ``incremental`` when the
    candidate started from the champion's weights, else ``from-scratch``."""
    if training == FULL_RETRAIN:
        return FULL_RETRAIN
    return INCREMENTAL if warm_start else FROM_SCRATCH


def batch_list(value: Any) -> list[str]:
    """Batch ids from a ``batch_ids`` value: a list, a JSON list or a comma-separated string."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.startswith("[") else value.split(",")
        except json.JSONDecodeError:
            value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


def run_name(kind: str, batches: Sequence[str], version: str | None = None) -> str:
    """``incremental batch ac1eb9e2``; ``full-retrain 3 batches 0b1c2d3e..ac1eb9e2`` (first and
    last); prefixed ``v3`` once the candidate is registered as version 3."""
    ids = [str(b)[:BATCH_PREFIX] for b in batches if b]
    if not ids:
        what = "no batch"
    elif len(ids) == 1:
        what = f"batch {ids[0]}"
    else:
        what = f"{len(ids)} batches {ids[0]}..{ids[-1]}"
    return f"v{version} {kind} {what}" if version else f"{kind} {what}"


def _with_version(name: str, version: str) -> str:
    """``name`` with its ``v<N>`` prefix set to ``version`` (a retry does not prefix twice)."""
    return f"v{version} " + re.sub(r"^v\d+ ", "", name)


def gate_note(version: str, decision: Decision, served: bool | None = None) -> str:
    """The run's description: the gate's decision and its reason. ``served``: whether this
    version became champion (default: whether the decision promotes the candidate)."""
    served = decision.promote if served is None else served
    verdict = "passed" if served else "failed"
    outcome = "promoted to champion" if served else "not promoted"
    if not served and decision.baseline:
        outcome += f"; the {decision.baseline.replace('_', ' ')} baseline serves"
    return f"**Gate {verdict}: version {version} {outcome}.**\n\nReason: {decision.reason}\n"


def model_kind(tags: dict[str, str]) -> str:
    """``learned`` or ``baseline:<name>``, from a version's tags (versions registered before the
    tag existed are learned)."""
    return tags.get(MODEL_KIND) or LEARNED


@dataclass(frozen=True)
class LoggedCandidate:
    """Where a candidate went: its registered version and the run that holds it."""

    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    experiment_id: str = ""
    reused: bool = False  # an earlier attempt with the same key had registered it already


def _chunks(items: list[Any], size: int = 100) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class CandidateRun:
    """One candidate's MLflow run while it is open: from before training until the gate has
    decided (see :meth:`Registry.candidate_run`, which ends it). Every write names the run by id,
    so any thread or Prefect task can log to it."""

    registry: Registry
    run_id: str
    kind: str
    batches: list[str] = field(default_factory=list)

    @property
    def client(self) -> MlflowClient:
        return self.registry.client

    def rename(self, kind: str) -> None:
        """Say which kind of training the run turned out to be (e.g. ``from-scratch``)."""
        if kind != self.kind:
            self.kind = kind
            self.client.update_run(self.run_id, name=run_name(kind, self.batches))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, _tag(v)) for k, v in tags.items()])

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(key, _tag(value)) for key, value in params.items()]
        for chunk in _chunks(items):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: dict[str, float | None], step: int = 0) -> None:
        """Finite values only (a metric that was not measured stays absent)."""
        now = int(time.time() * 1000)
        points = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        for chunk in _chunks(points, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_learning_curve(self, history: Sequence[dict[str, Any]]) -> int:
        """The training loop's per-epoch rows (``epoch``, ``train_loss``, ``val``) as metrics
        ``train_loss`` and ``val_ndcg_at_10`` with ``step`` = epoch; returns the points logged."""
        now = int(time.time() * 1000)
        points = []
        for row in history:
            step = int(row.get("epoch", 0))
            for key, value in ((CURVE_LOSS, row.get("train_loss")), (CURVE_VAL, row.get("val"))):
                if value is not None and math.isfinite(float(value)):
                    points.append(Metric(key, float(value), now, step))
        for chunk in _chunks(points, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)
        return len(points)

    def log_training_data(
        self, frame: pd.DataFrame, digest: str, source: str | Path, name: str = "interactions"
    ) -> None:
        """``frame`` as the run's MLflow dataset input (context ``training``), identified by
        ``digest`` (the data fingerprint). The schema is read from the first rows only, so this
        stays cheap on millions of events; the profile counts every row."""
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways", int hints
            warnings.simplefilter("ignore")
            sample = mlflow.data.from_pandas(
                frame.head(1000), source=str(source), name=name, digest=digest or None
            )
            described = sample.to_dict()
        described["profile"] = json.dumps({"num_rows": len(frame), "num_elements": int(frame.size)})
        dataset = DatasetInput(Dataset(**described), [InputTag(DATASET_CONTEXT, "training")])
        self.client.log_inputs(self.run_id, datasets=[dataset])

    def log_dict(self, value: Any, path: str) -> None:
        self.client.log_dict(self.run_id, value, path)

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)


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

    def load_version(self, version: str) -> Recommender | Baseline:
        """Download a version's pyfunc model and rebuild its recommender (or baseline)."""
        loaded = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        return loaded.unwrap_python_model().recommender

    def load_champion(self) -> tuple[Recommender | Baseline, dict[str, Any]] | None:
        """The champion rebuilt from the registry's artifacts, with its version info, or None."""
        version = self.champion_version()
        if version is None:
            return None
        recommender = self.load_version(version)
        logger.info("loaded champion %s version %s", self.name, version)
        return recommender, self.version_info(version)

    def latest_learned(self) -> tuple[Recommender, dict[str, Any]] | None:
        """The newest learned (not baseline) version, rebuilt, with its info; or None. A baseline
        champion's successor starts from it: it learned the same batches."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return None
        for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True):
            if model_kind(dict(mv.tags)) == LEARNED:
                version = str(mv.version)
                learned = self.load_version(version)
                logger.info("loaded the latest learned %s version %s", self.name, version)
                return learned, self.version_info(version)  # type: ignore[return-value]
        return None

    def judged_versions(self, champion: str | None) -> list[dict[str, Any]]:
        """The versions judged against ``champion`` (their ``parent_version``; "" before the
        first champion) that have never been champion, newest first, as ``{"version",
        "tags"}``: the candidates it kept out, and one that passed but whose promotion did not
        happen (see :meth:`unfinished_promotion`). A version that was champion once (tag
        ``champion_reason``) was acted on: after a rollback its batches are learned again."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        parent = champion or ""
        judged = []
        for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True):
            tags = dict(mv.tags)
            ours = tags.get("parent_version", "") == parent and str(mv.version) != champion
            if ours and "gate" in tags and "champion_reason" not in tags:
                judged.append({"version": str(mv.version), "tags": tags})
        return judged

    def unfinished_promotion(self, champion: str | None) -> dict[str, Any] | None:
        """A version that passed the gate against ``champion`` but never became champion: its
        cycle stopped between registering it (with the decision) and moving the alias. None
        when there is none."""
        passed = [v for v in self.judged_versions(champion) if v["tags"].get("gate") == "passed"]
        return passed[0] if passed else None

    def find_candidate(
        self, key: str | None = None, run_id: str | None = None
    ) -> LoggedCandidate | None:
        """The version an earlier attempt registered from run ``run_id`` or from a run tagged
        ``candidate_key=key``, or None.

        A run that died before its model was registered has no version and is skipped.
        """
        run_ids = [run_id] if run_id else []
        if key:
            runs = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.{CANDIDATE_KEY} = '{key}'"
            )
            run_ids += [run.info.run_id for run in runs]
        for found_run in run_ids:
            found = self.client.search_model_versions(
                f"name='{self.name}' and run_id='{found_run}'"
            )
            if found:
                version = str(min(int(mv.version) for mv in found))
                return LoggedCandidate(
                    version,
                    found_run,
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

    def experiment_url(self) -> str:
        """The experiment's runs table in the MLflow UI (see :func:`experiment_url`)."""
        return experiment_url(self.uri, self.experiment_id)

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def candidate_run(
        self, kind: str, batches: Sequence[str], tags: dict[str, Any] | None = None
    ) -> Iterator[CandidateRun]:
        """Open a candidate's run, named ``<kind> batch <id>`` (:func:`run_name`), with the
        resolved config as params; yield it; end it FINISHED, or FAILED when the block raises
        (KILLED on an interrupt or a cancellation), with the error as its description.

        Open it before training and close it after the gate, so that the run's duration is the
        candidate's; :meth:`log_candidate` with its ``run_id`` registers the model in it.
        """
        batches = [str(b) for b in batches]
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name(kind, batches),
            tags={**_user(), **{name: _tag(value) for name, value in (tags or {}).items()}},
        )
        handle = CandidateRun(self, run.info.run_id, kind, batches)
        try:
            handle.log_params(self.config.flat())
            yield handle
        except BaseException as error:
            status = "FAILED" if isinstance(error, Exception) else "KILLED"
            try:
                note = f"**{status}**: {type(error).__name__}: {error}"[:5000]
                self.client.set_tag(handle.run_id, RUN_NOTE, note)
                self.client.set_terminated(handle.run_id, status)
            except Exception as cannot:  # never hide the error that ended the run
                logger.warning("could not mark run %s %s: %s", handle.run_id, status, cannot)
            raise
        self.client.set_terminated(handle.run_id, "FINISHED")

    def log_candidate(
        self,
        recommender: Recommender,
        report: EvaluationReport,
        tags: dict[str, Any] | None = None,
        decision: Decision | None = None,
        extra_metrics: dict[str, float] | None = None,
        artifacts: dict[str, Any] | None = None,
        key: str | None = None,
        run_id: str | None = None,
    ) -> LoggedCandidate:
        """Log a candidate's evaluation and model in a run, register it as one version (with its
        tags) and move ``challenger`` onto it.

        ``run_id``: the candidate's open run (:meth:`candidate_run`); without it a run is opened
        and closed here, named from the ``training`` and ``batch_ids`` tags. ``tags`` (e.g.
        parent_version, batch_ids, data_fingerprint) go on the run and the version; ``decision``
        adds ``gate`` (passed|failed) and ``reason``, and becomes the run's description.
        ``artifacts`` maps a name to a JSON-ready value logged as ``<name>.json``. A version the
        run already registered, or one a run tagged ``candidate_key=key`` registered (one
        promotion attempt, e.g. a Prefect task run id), is reused: a retry after a partial
        failure never registers the candidate twice.
        """
        raw = {MODEL_KIND: LEARNED, **(tags or {})}
        tags = {name: _tag(value) for name, value in raw.items()}
        version_tags = {**tags, "metrics": _tag(report.rows["candidate"])}
        if decision is not None:
            version_tags["gate"] = "passed" if decision.promote else "failed"
            version_tags["reason"] = decision.reason
        run_tags = {k: v for k, v in version_tags.items() if k != "metrics"}
        if key:
            run_tags[CANDIDATE_KEY] = key
        logged = self.find_candidate(key, run_id)
        if logged is not None:
            logger.warning(
                "attempt %s already registered %s version %s (run %s): reusing it",
                key or run_id,
                self.name,
                logged.version,
                logged.run_id,
            )
            # The earlier attempt may have died before these: apply them (again).
            for tag, value in version_tags.items():
                self.client.set_model_version_tag(self.name, logged.version, tag, value)
            self._complete(logged, decision)
            if run_id is None and self.client.get_run(logged.run_id).info.status != "FINISHED":
                self.client.set_terminated(logged.run_id, "FINISHED")  # now it is complete
            return logged
        if run_id is not None:
            logged = self._register(
                run_id, recommender, report, run_tags, version_tags, extra_metrics, artifacts
            )
            return self._complete(logged, decision)
        kind = str(raw.get("training") or "candidate")
        with self.candidate_run(kind, batch_list(raw.get("batch_ids")), run_tags) as run:
            logged = self._register(
                run.run_id, recommender, report, run_tags, version_tags, extra_metrics, artifacts
            )
            return self._complete(logged, decision)

    def register_baseline(
        self,
        baseline: Baseline,
        report: EvaluationReport,
        tags: dict[str, Any],
        decision: Decision,
        key: str,
    ) -> LoggedCandidate:
        """Register ``baseline`` (fitted on the same data as the candidate it beat) as a version
        in a run of its own, named ``v7 baseline recent_popularity batch ac1eb9e2``, with the
        metrics of ``report`` (its own unprefixed) and ``tags`` plus ``model_kind`` =
        ``baseline:<name>``, ``training`` = ``baseline`` and the gate's decision. ``key`` names
        the attempt: a retry finds the version the first attempt registered. ``challenger``
        stays on the learned candidate."""
        name = baseline.name
        version_tags = {
            **{tag: _tag(value) for tag, value in tags.items()},
            "training": BASELINE_KIND,
            MODEL_KIND: f"{BASELINE_KIND}:{name}",
            "metrics": _tag(report.rows[name]),
            "gate": "passed",
            "reason": decision.reason,
        }
        for absent in ("warm_start", "encoder_pretrained"):
            version_tags.pop(absent, None)
        run_tags = {k: v for k, v in version_tags.items() if k != "metrics"} | {CANDIDATE_KEY: key}
        logged = self.find_candidate(key)
        if logged is None:
            batches = batch_list(tags.get("batch_ids"))
            with self.candidate_run(f"{BASELINE_KIND} {name}", batches, run_tags) as run:
                logged = self._register(
                    run.run_id, baseline, report, run_tags, version_tags, None, None, name
                )
        run = self.client.get_run(logged.run_id)
        self.client.update_run(logged.run_id, name=_with_version(run.info.run_name, logged.version))
        self.client.set_tag(logged.run_id, RUN_NOTE, gate_note(logged.version, decision, True))
        logger.info("registered the %s baseline as %s version %s", name, self.name, logged.version)
        return logged

    def _register(
        self,
        run_id: str,
        model: Recommender | Baseline,
        report: EvaluationReport,
        run_tags: dict[str, str],
        version_tags: dict[str, str],
        extra_metrics: dict[str, float] | None,
        artifacts: dict[str, Any] | None,
        primary: str = "candidate",
    ) -> LoggedCandidate:
        """Log the evaluation (metrics, report) and the pyfunc model in ``run_id``, then create
        the registered version with its tags in one step (it never exists without them).
        ``primary``: the report's row that is this model (its metrics are logged unprefixed)."""
        now = int(time.time() * 1000)
        metrics = {**report.flat_metrics(primary), **(extra_metrics or {})}
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)]
        tags = [RunTag(k, v) for k, v in run_tags.items()]
        self.client.log_batch(run_id, metrics=points[:1000], tags=tags)
        for chunk in _chunks(points[1000:], 1000):
            self.client.log_batch(run_id, metrics=chunk)
        self.client.log_dict(run_id, report.to_dict(), "evaluation/report.json")
        self.client.log_text(run_id, report.to_markdown(), "evaluation/report.md")
        for name, value in (artifacts or {}).items():
            self.client.log_dict(run_id, value, f"{name}.json")
        model_id = self._log_model(run_id, model)
        try:
            self.client.create_registered_model(self.name)
        except MlflowException as error:
            if error.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
                raise
        mv = self.client.create_model_version(
            self.name, f"models:/{model_id}", run_id=run_id, tags=version_tags, model_id=model_id
        )
        version = str(mv.version)
        faults.point("registered")
        return LoggedCandidate(
            version, run_id, f"models:/{self.name}/{version}", self.experiment_id
        )

    def _log_model(self, run_id: str, model_state: Recommender | Baseline) -> str:
        """Log the pyfunc model (code + checkpoint, or code + baseline) as an output of
        ``run_id``; its model id."""
        model = mlflow.initialize_logged_model(
            name=MODEL_ARTIFACT,
            source_run_id=run_id,
            params={k: _tag(v) for k, v in self.config.flat().items()},
            experiment_id=self.experiment_id,
        )
        baseline = isinstance(model_state, Baseline)
        with tempfile.TemporaryDirectory(prefix="recloop-ckpt-") as tmp:
            state = Path(tmp) / (BASELINE_NAME if baseline else CHECKPOINT_NAME)
            model_state.save(state)
            # Models from code: the logged model imports RecloopModel when loaded instead of
            # unpickling an object, so it survives refactors of everything but that import.
            script = Path(tmp) / "recloop_model.py"
            script.write_text(MODEL_SCRIPT, encoding="utf-8")
            with warnings.catch_warnings():
                # An input example would make MLflow load and run the model once more.
                warnings.filterwarnings("ignore", message=".*input example.*")
                # mlflow.pyfunc.log_model with the run named: the model's MLmodel records the
                # run, and the run lists the model as its output, with no active fluent run.
                mlflow.models.Model.log(
                    artifact_path=None,
                    name=MODEL_ARTIFACT,
                    flavor=mlflow.pyfunc,
                    run_id=run_id,
                    model_id=model.model_id,
                    python_model=str(script),
                    artifacts={BASELINE_ARTIFACT if baseline else CHECKPOINT_ARTIFACT: str(state)},
                    signature=_signature(model_state),
                    pip_requirements=_requirements(),
                )
        return model.model_id

    def _complete(self, logged: LoggedCandidate, decision: Decision | None) -> LoggedCandidate:
        """Move ``challenger`` onto the version, put its number in the run's name and the gate's
        decision in its description, and attach the per-version plot."""
        self.client.set_registered_model_alias(self.name, CHALLENGER, logged.version)
        faults.point("challenger")
        run = self.client.get_run(logged.run_id)
        self.client.update_run(logged.run_id, name=_with_version(run.info.run_name, logged.version))
        if decision is not None:
            self.client.set_tag(logged.run_id, RUN_NOTE, gate_note(logged.version, decision))
        try:
            self._log_history_plot(logged.run_id)
        except Exception as error:  # a missing picture must not block the gate
            logger.warning("no per-version plot for run %s: %s", logged.run_id, error)
        logger.info("registered %s version %s (run %s)", self.name, logged.version, logged.run_id)
        return logged

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


def ui_url(tracking_uri: str, page: str) -> str:
    """A page of the MLflow UI, in its "Model training" view: the UI of MLflow 3 picks its view
    from the URL's ``workflowType`` (else from the browser's last choice, GenAI at first), not
    from the experiment's kind. Under the tracking server itself when it is one, else under
    ``mlflow ui --backend-store-uri <uri>`` at its default address."""
    page = f"#/{page.lstrip('#/')}?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI (see :func:`ui_url`)."""
    return ui_url(tracking_uri, f"experiments/{experiment_id}/runs/{run_id}")


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """An experiment's runs table in the MLflow UI (see :func:`ui_url`)."""
    return ui_url(tracking_uri, f"experiments/{experiment_id}/runs")


def _signature(recommender: Recommender | Baseline) -> Any:
    """Input ``user_id`` + ``history`` (list of str), the pyfunc output of docs/interfaces.md,
    params ``k`` and ``exclude_seen``."""
    example_items = list(recommender.item_ids[:2])
    model_input = pd.DataFrame({"user_id": ["u1"], "history": [example_items]})
    model_output = predictions_frame(["u1"], [example_items], [[1.0] * len(example_items)])
    return infer_signature(model_input, model_output, params=dict(DEFAULT_PARAMS))


def configure(home: Home, config: Config) -> Registry:
    """Point MLflow at the home's store and make sure the experiment exists (a tracking server
    that does not answer raises :class:`RegistryUnreachable`, see :func:`check_reachable`).

    Sets the process-wide tracking and registry URIs (the fluent ``mlflow.start_run`` API reads
    them); the experiment gets an absolute artifact location so runs do not depend on the cwd.
    """
    uri = tracking_uri(home)
    check_reachable(uri)
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
                name,
                artifact_location=home.mlartifacts.resolve().as_uri(),
                tags={EXPERIMENT_KIND: CLASSIC_ML},
            )
        except MlflowException:  # created concurrently by another process
            experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
        _keep_classic(client, experiment)
    return Registry(home, config, uri, experiment_id)


def _keep_classic(client: MlflowClient, experiment: Any) -> None:
    """Tag an experiment created before the kind was set (or one whose kind the UI inferred, e.g.
    ``genai_development_inferred``) as classic ML; a kind a user chose in the UI stays."""
    kind = experiment.tags.get(EXPERIMENT_KIND, "")
    if kind in ("", "no_inferred_type", "empty") or kind.endswith("_inferred"):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, CLASSIC_ML)


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


def load_champion_pyfunc(config: Config, home: Home) -> tuple[Any, str, str]:
    """The champion as served (its pyfunc model), its version and its kind (``learned`` or
    ``baseline:<name>``). The alias is read once and the model loaded by that version, so the
    version named is the one that answers even if the alias moves meanwhile."""
    registry = configure(home, config)
    version = registry.champion_version()
    if version is None:
        raise LookupError(f"no {CHAMPION!r} alias on model {registry.name!r} at {registry.uri}")
    kind = model_kind(registry.version_info(version)["tags"])
    return mlflow.pyfunc.load_model(f"models:/{registry.name}/{version}"), version, kind


def load_champion(
    config: Config, home: Home
) -> tuple[Recommender | Baseline, dict[str, Any]] | None:
    """The champion (a recommender or a baseline) rebuilt from the registry, or None."""
    return configure(home, config).load_champion()


def load_model_uri(uri: str, config: Config, home: Home) -> Recommender | Baseline:
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
