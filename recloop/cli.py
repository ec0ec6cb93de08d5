"""The ``recloop`` command line (docs/interfaces.md).

Each command is a plain function that tests can call. Heavy imports (torch, prefect, mlflow, great
expectations) happen inside the commands, so ``recloop --help`` is instant.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from recloop.progress import is_quiet, library_output, setup_console, working

app = typer.Typer(
    name="recloop",
    help="Keep a text-aware sequential recommender fresh: validate, pretrain, fine-tune, "
    "evaluate and promote, orchestrated by Prefect and registered in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="State folder (default: $RECLOOP_HOME, else ./.recloop)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file with the settings to change (docs/config.md)."),
]


def _environment() -> None:
    """Offline, quiet defaults for the libraries recloop drives; the user's settings win."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # transformers reports every missing MLM head key on load; recloop expects them (see encoder).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary local server needs longer than Prefect's 20 s on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Route the library's own loggers (and Python warnings) into Prefect's run logs (and the UI).
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "recloop,tasks,models,flows,py.warnings")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow retries a request 7 times over minutes, inside each task's own retries: a tracking
    # server that goes away mid-cycle should fail the cycle in a minute or two, not in a quarter
    # of an hour (recloop.registry checks that it answers before a cycle starts).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def _fail(message: str) -> None:
    typer.echo(f"recloop: {message}", err=True)
    raise typer.Exit(code=1)


def _message(error: BaseException) -> str:
    """An exception's first line, without the quotes ``str(KeyError)`` adds."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _one_line_errors(func: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from recloop.config import ConfigError

        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (
            ConfigError,
            FileNotFoundError,
            ValueError,
            KeyError,
            LookupError,
            ConnectionError,  # recloop.registry.RegistryUnreachable: a tracking server is down
        ) as error:
            _fail(_message(error))

    return wrapper  # type: ignore[return-value]


def _dataset_dir(path: Path | None) -> None:
    """Fail in one line, before any work, when ``--data`` names no folder."""
    if path is not None and not Path(path).is_dir():
        what = "is not a directory" if Path(path).exists() else "does not exist"
        raise FileNotFoundError(f"{path}: the dataset directory {what}")


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show every library's log (Prefect, MLflow, Great Expectations, ...) on the "
            "console, with times. Without it the console shows recloop's own lines; the full "
            "logs are in the Prefect run logs either way.",
        ),
    ] = False,
) -> None:
    _environment()
    setup_console(verbose)
    # Not news even with --verbose: MLflow's schema migrations, and Great Expectations listing
    # each of its API functions as it imports (a hundred lines).
    for chatter in ("alembic", "great_expectations._docs_decorators"):
        logging.getLogger(chatter).setLevel(logging.WARNING)


def _format_metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def format_cycle_table(rows: list[dict[str, Any]]) -> str:
    """The per-window table of ``recloop run`` (docs/interfaces.md)."""
    header = (
        f"{'window':>6} {'batch':<16} {'version':>7} {'ndcg@10':>8} {'recall@10':>9} "
        f"{'champ ndcg':>10} {'pop ndcg':>8} {'recent ndcg':>11} {'trans ndcg':>10} "
        f"{'users':>6}  {'decision':<14} serving"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        metrics = row.get("metrics", {}).get("rows", {})

        def pick(model: str, name: str = "ndcg_at_10", metrics: dict[str, Any] = metrics) -> str:
            return _format_metric(metrics.get(model, {}).get(name))

        decision = DECISIONS.get(row.get("status", ""), row.get("status", "-"))
        serving = str(row.get("serving") or "-").replace("_", " ")
        if row.get("champion"):
            serving = f"v{row['champion']} {serving}"
        batches = ",".join(row.get("batches", [])) or "-"
        lines.append(
            f"{row['window']:>6} {batches[:16]:<16} {row.get('version') or '-':>7} "
            f"{pick('candidate'):>8} {pick('candidate', 'recall_at_10'):>9} "
            f"{pick('champion'):>10} {pick('popularity'):>8} {pick('recent_popularity'):>11} "
            f"{pick('transitions'):>10} {row.get('data', {}).get('eval_users', '-'):>6}  "
            f"{decision:<14} {serving}"
        )
    return "\n".join(lines)


# A cycle's status as the table's decision column says it.
DECISIONS = {
    "promoted": "promoted",
    "kept-champion": "kept champion",
    "baseline-promoted": "baseline wins",
}


def _window_line(window: int, total: int, summary: dict[str, Any]) -> tuple[str, bool]:
    """One line per replayed window while ``recloop run`` goes; True when it is a problem."""
    head = f"window {window}/{total}: "
    for landed in summary.get("landed", []):
        if landed["status"] == "quarantined":
            return head + landed["message"], True
    if summary.get("status") not in DECISIONS:
        reason = summary.get("reason") or "nothing new to learn"
        return head + f"{str(summary.get('status', '-')).replace('-', ' ')} ({reason})", False
    candidate = summary.get("metrics", {}).get("rows", {}).get("candidate", {})
    decision = "promoted to champion" if summary.get("promoted") else "not promoted"
    if summary.get("status") == "baseline-promoted":
        decision += f"; the {str(summary.get('serving')).replace('_', ' ')} baseline serves"
    return (
        head + f"batch {','.join(summary.get('batches', []))}: version {summary.get('version')} "
        f"{decision} (ndcg@10 {_format_metric(candidate.get('ndcg_at_10'))})",
        False,
    )


def _replay(
    staged: list[tuple[Path, Path]], home: Path | None, config: Path | None
) -> list[dict[str, Any]]:
    """Each staged window through the feedback-loop flow, under a bar at a terminal."""
    from flows.feedback_loop import feedback_loop
    from recloop.local_server import prefect_api
    from recloop.progress import step_progress

    rows = []
    # A bar on stderr at a terminal only: piped and test output stay plain lines.
    with prefect_api(), step_progress(len(staged), "window") as progress:
        say = progress.echo if progress else typer.echo
        for window, (interactions_file, items_file) in enumerate(staged, start=1):
            if progress:
                progress.start(window, "starting")
            with library_output(is_quiet()):
                summary = feedback_loop(
                    batch_files=[str(interactions_file)],
                    items_files=[str(items_file)],
                    home=str(home) if home else None,
                    config_path=str(config) if config else None,
                )
            summary["window"] = window
            rows.append(summary)
            line, problem = _window_line(window, len(staged), summary)
            say(line, err=problem)
            if progress:
                progress.finish(window, line.split(": ", 1)[1])
    return rows


def _next_steps(
    rows: list[dict[str, Any]], staged: list[tuple[Path, Path]], home: Path | None
) -> list[str]:
    """Three lines: a user to ask for recommendations, the MLflow UI, the Prefect UI."""
    import shlex

    import pandas as pd
    from prefect.settings import get_current_settings

    from recloop.paths import get_home

    archived = [
        files
        for files, row in zip(staged, rows, strict=True)
        if all(entry["status"] != "quarantined" for entry in row.get("landed", []))
    ] or staged
    users = pd.read_parquet(archived[-1][0], columns=["user_id"])["user_id"]
    user = shlex.quote(str(users.value_counts().index[0])) if len(users) else "USER_ID"
    home_arg = f" --home {shlex.quote(str(home))}" if home is not None else ""
    from recloop.registry import experiment_url, ui_url

    mlflow_info = next((row["mlflow"] for row in reversed(rows) if row.get("mlflow")), {})
    uri = mlflow_info.get("tracking_uri", f"sqlite:///{get_home(home).mlflow_db}")
    runs_page = (
        experiment_url(uri, mlflow_info["experiment_id"])
        if mlflow_info.get("experiment_id")
        else ui_url(uri, "experiments")
    )
    prefect_api = get_current_settings().api.url
    steps = [
        (f"recloop recommend {user}{home_arg}", "the champion's top 10 for a user"),
        (
            (f"mlflow ui --backend-store-uri {shlex.quote(uri)}", f"then open {runs_page}")
            if not uri.startswith("http")
            else (f"open {runs_page}", "runs, metrics and versions in MLflow")
        ),
        (
            ("prefect server start", "these flow runs: http://127.0.0.1:4200/runs")
            if not prefect_api
            else (f"open {prefect_api.removesuffix('/api')}/runs", "these flow runs in Prefect")
        ),
    ]
    width = max(len(command) for command, _ in steps)
    return [
        f"{'next:' if i == 0 else '':<5} {command:<{width}}  # {comment}"
        for i, (command, comment) in enumerate(steps)
    ]


@app.command("run")
@_one_line_errors
def run_command(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Canonical dataset folder (default: the embedded demo data)."),
    ] = None,
    windows: Annotated[
        int, typer.Option("--windows", min=1, help="How many arriving batches to replay.")
    ] = 4,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> list[dict[str, Any]]:
    """The main job: replay a dataset as arriving batches through the feedback-loop flow.

    Each batch is validated, learned (clean text, pretrain, fine-tune), evaluated beside the
    champion and the baselines, and promoted if it wins. Prints a line per batch, then the table
    and what to do next.
    """
    from recloop.paths import get_home
    from recloop.replay import stage_windows

    _dataset_dir(data)
    staged = stage_windows(data, windows, home, config)
    typer.echo(
        f"replaying {data or 'the demo data'} as {len(staged)} arriving batches into "
        f"{get_home(home).root}",
        err=True,
    )
    rows = _replay(staged, home, config)
    typer.echo("")
    typer.echo(format_cycle_table(rows))
    typer.echo("")
    for line in _next_steps(rows, staged, home):
        typer.echo(line)
    return rows


@app.command("import")
@_one_line_errors
def import_command(
    fmt: Annotated[
        str, typer.Argument(metavar="FORMAT", help="movielens | amazon-reviews | canonical")
    ],
    src: Annotated[
        Path, typer.Argument(metavar="SRC", help="The published dataset (folder or file).")
    ],
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="Folder to write the canonical dataset to.")
    ],
    meta: Annotated[
        Path | None,
        typer.Option("--meta", help="amazon-reviews: the item metadata file, if not beside SRC."),
    ] = None,
    config: ConfigOption = None,
) -> dict[str, int]:
    """Convert a published dataset to recloop's canonical form (see docs/interfaces.md)."""
    from recloop.importers import import_dataset

    dataset = import_dataset(fmt, src, dest, meta=meta)
    summary = dataset.summary()
    typer.echo(
        f"{dest}: {summary['interactions']} interactions, {summary['users']} users, "
        f"{summary['items']} items"
    )
    return summary


@app.command("ingest")
@_one_line_errors
def ingest_command(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Interactions file (CSV, TSV or Parquet).")
    ],
    items: Annotated[
        Path | None, typer.Option("--items", help="Items file for new or changed items.")
    ] = None,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """Land a batch: validate it, then archive it or quarantine it with a report, and announce it.

    An archived batch is announced to the Prefect server at PREFECT_API_URL with the event
    recloop.batch.landed (resource recloop.batch.<batch_id>), which starts the triggered
    feedback-loop deployment. When it cannot be delivered, one line says so; the batch stays
    pending and the next scheduled feedback-loop run learns it. A quarantined batch exits 1 with
    one line naming its report, and so does the same batch landed again.
    """
    from recloop.config import load_config
    from recloop.orchestration import ingest_batch
    from recloop.paths import get_home

    load_config(config)  # a broken --config fails here, before anything lands
    outcome = ingest_batch(get_home(home).ensure(), file, items)
    result = outcome.result
    if result.rejected:  # quarantined now or before: not accepted
        _fail(result.message)
    typer.echo(result.message)
    if outcome.announcement is not None:
        announcement = outcome.announcement
        prefix = "" if announcement.delivered else "recloop: warning: "
        typer.echo(prefix + announcement.message, err=not announcement.delivered)
    out = result.to_dict()
    if outcome.announcement is not None:
        out["announced"] = outcome.announcement.delivered
    return out


@app.command("watch")
@_one_line_errors
def watch_command(
    once: Annotated[
        bool,
        typer.Option("--once", help="Land what the folder holds now (once settled), then exit."),
    ] = False,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> list[dict[str, Any]]:
    """Watch RECLOOP_HOME/landing/ and land every batch dropped there, like recloop ingest.

    A batch is NAME.csv|.tsv|.parquet, with its optional items file NAME.items.csv|.tsv|.parquet
    beside it (drop that one first). A file is taken once its size and modification time have
    not changed for 2 seconds; names starting with "." and other suffixes (.part, .tmp) are
    ignored, so writing under such a name and renaming into place also works.
    Landed files leave the folder only once archived or quarantined (with a report). With
    --once, exits 1 when any batch was rejected.
    """
    from recloop.config import load_config
    from recloop.orchestration import watch
    from recloop.paths import get_home

    recloop_home = get_home(home)
    typer.echo(f"watching {recloop_home.landing}" + (" once" if once else " (Ctrl-C stops)"))

    def report(outcome: Any) -> None:  # each landing as it happens, like recloop ingest
        typer.echo(outcome.result.message)
        if outcome.announcement is not None and not outcome.announcement.delivered:
            typer.echo("recloop: warning: " + outcome.announcement.message, err=True)

    load_config(config)  # a broken --config fails here, before anything lands
    outcomes = watch(recloop_home, once=once, report=report)
    if once:
        statuses = [outcome.result.status for outcome in outcomes]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
        typer.echo(f"landed {len(outcomes)} batch(es)" + (f": {counts}" if counts else ""))
        rejected = sum(outcome.result.rejected for outcome in outcomes)
        if rejected:
            _fail(f"{rejected} of {len(outcomes)} batch(es) rejected (quarantined); see above")
    return [outcome.result.to_dict() for outcome in outcomes]


@app.command("serve")
@_one_line_errors
def serve_command(
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Also watch RECLOOP_HOME/landing/ (see recloop watch)."),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Most flow runs this process runs at once."),
    ] = None,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the Prefect deployments in this process until stopped (Ctrl-C).

    The four deployments of deployments/prefect.yaml, without a work pool or worker:
    feedback-loop on a schedule (config orchestration.feedback_cron) and on every
    recloop.batch.landed event from this home, pretrain-encoder on a schedule
    (orchestration.pretrain_cron), full-retrain on demand. Needs a Prefect server
    (prefect server start) at PREFECT_API_URL.
    """
    from flows.serve import serve
    from recloop.config import load_config
    from recloop.paths import get_home

    serve(get_home(home).ensure(), load_config(config), config, watch=watch, limit=limit)


@app.command("update")
@_one_line_errors
def update_command(home: HomeOption = None, config: ConfigOption = None) -> dict[str, Any]:
    """One incremental cycle on the batches landed since the champion was trained.

    Prints the cycle's row of the run table ("up-to-date" when nothing new has landed).
    """
    from recloop import registry
    from recloop.paths import get_home

    registry.check_reachable(registry.tracking_uri(get_home(home)))  # before any work
    from flows.feedback_loop import feedback_loop
    from recloop.local_server import prefect_api

    with prefect_api(), working("update"), library_output(is_quiet()):
        summary = feedback_loop(
            home=str(home) if home else None, config_path=str(config) if config else None
        )
    summary["window"] = 1
    typer.echo(format_cycle_table([summary]))
    return summary


def _champion_version(home: Any, config: Any) -> str:
    """The champion's version, or a one-line LookupError saying there is none yet."""
    from recloop import registry

    hint = "train one first: recloop run (the demo), or recloop ingest FILE then recloop update"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not home.mlflow_db.exists():
        raise LookupError(f"no champion yet in {home.root}; {hint}")
    version = registry.configure(home, config).champion_version()
    if version is None:
        raise LookupError(
            f"no champion yet in the registry at {registry.tracking_uri(home)}; {hint}"
        )
    return version


@app.command("recommend")
@_one_line_errors
def recommend_command(
    user_id: Annotated[
        str, typer.Argument(metavar="USER_ID", help="A user id from the archived batches.")
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 10,
    allow_unknown: Annotated[
        bool,
        typer.Option(
            "--allow-unknown",
            help="Answer a user with no events in the archive too: an empty history gets the "
            "popularity fallback (the most popular items).",
        ),
    ] = False,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """The champion's top-k for a user, through the registered pyfunc model.

    The user's history is their events in the archive, oldest first; items in it are not
    recommended again. The first line names the version that answered. An unknown user is an
    error (exit 1) unless --allow-unknown.
    """
    import shlex

    import pandas as pd

    from recloop import registry
    from recloop.config import load_config
    from recloop.data import build_sequences
    from recloop.landing import read_archive
    from recloop.paths import get_home

    recloop_home = get_home(home)
    cfg = load_config(config)
    version = _champion_version(recloop_home, cfg)
    archive = read_archive(recloop_home)
    history = build_sequences(archive.interactions[archive.interactions["user_id"] == user_id])
    if user_id not in history and not allow_unknown:
        again = shlex.join(["recloop", "recommend", user_id, "--allow-unknown"])
        raise LookupError(
            f"unknown user {user_id}: no events in {recloop_home.archive}; an unknown user gets "
            f"the popularity fallback (the most popular items): {again}"
        )
    model, version, kind = registry.load_champion_pyfunc(cfg, recloop_home)
    events = history.get(user_id, [])
    out = model.predict(pd.DataFrame({"user_id": [user_id], "history": [events]}), params={"k": k})
    titles = archive.items.set_index("item_id")["title"]
    row = out.iloc[0]
    basis = f"{len(events)} events" if events else "unknown user: popularity fallback"
    shown = kind.replace("baseline:", "").replace("_", " ") + (" baseline" if ":" in kind else "")
    typer.echo(
        f"{cfg.registry.model_name} champion version {version} ({shown}), top {k} for {user_id} "
        f"({basis}):"
    )
    for rank, (item, score) in enumerate(zip(row["item_ids"], row["scores"], strict=True), 1):
        typer.echo(f"{rank:>3}. {item:<14} {score:8.4f}  {titles.get(item, '')}")
    return {
        "user_id": user_id,
        "version": version,
        "model_kind": kind,
        "item_ids": list(row["item_ids"]),
        "scores": list(row["scores"]),
    }


@app.command("rollback")
@_one_line_errors
def rollback_command(
    version: Annotated[
        str,
        typer.Argument(metavar="VERSION", help="The registered version to make champion again."),
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (recorded as tags on both versions).")
    ] = "",
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """Move the champion alias back to VERSION, tagging it and the demoted version with why/when."""
    from recloop import registry
    from recloop.config import load_config
    from recloop.paths import get_home

    recloop_home = get_home(home)
    cfg = load_config(config)
    if not os.environ.get("MLFLOW_TRACKING_URI") and not recloop_home.mlflow_db.exists():
        raise LookupError(f"no model registry at {recloop_home.mlflow_db}: nothing to roll back")
    reg = registry.configure(recloop_home, cfg)
    result = reg.rollback(version, reason)
    if not result["changed"]:
        typer.echo(f"{reg.name}@champion is already version {result['version']}: nothing changed")
    else:
        typer.echo(
            f"{reg.name}@champion: version {result['previous'] or '-'} -> {result['version']} "
            f"({result['at']})"
        )
    return result


@app.command("retrain")
@_one_line_errors
def retrain_command(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Canonical dataset folder to land first as one batch (validated)."
        ),
    ] = None,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """Train from scratch on all archived data, evaluate against the champion, gate, promote.

    Prints the run table's row for the new version. A --data folder that fails validation is
    quarantined and nothing is trained (exit 1).
    """
    from flows.full_retrain import full_retrain
    from recloop.data import find_table
    from recloop.local_server import prefect_api

    _dataset_dir(data)
    if data is not None:  # fail before starting Prefect when the folder is not a dataset
        find_table(data, "interactions")
        find_table(data, "items")
    with prefect_api(), working("retrain"), library_output(is_quiet()):
        summary = full_retrain(
            data_dir=str(data) if data else None,
            home=str(home) if home else None,
            config_path=str(config) if config else None,
        )
    for landed in summary.get("landed", []):
        if landed["status"] == "quarantined":
            _fail(landed["message"])
        typer.echo(landed["message"], err=True)
    if summary["status"] == "no-data":
        _fail("nothing is archived to retrain on; land a batch first (recloop ingest or --data)")
    summary["window"] = 1
    typer.echo(format_cycle_table([summary]))
    return summary


def format_evaluation_table(results: list[dict[str, Any]], ks: tuple[int, ...]) -> str:
    """The table of ``recloop evaluate``: one row per split and model."""
    names = [f"ndcg_at_{k}" for k in ks] + [f"recall_at_{k}" for k in ks] + ["mrr"]
    labels = [name.replace("_at_", "@") for name in names]
    header = f"{'split':<16} {'model':<18} " + " ".join(f"{x:>9}" for x in labels) + "   cases"
    lines = [header, "-" * len(header)]
    for result in results:
        for model, metrics in result["rows"].items():
            cells = " ".join(f"{_format_metric(metrics.get(name)):>9}" for name in names)
            cases = int(metrics.get("n_cases", 0))
            lines.append(f"{result['name']:<16} {model:<18} {cells} {cases:>7}")
    return "\n".join(lines)


def _load_evaluated_model(uri: str, config: Any, home: Any) -> Any:
    """A Recommender from a checkpoint file or a model URI in the home's registry."""
    from recloop import registry

    path = Path(uri)
    if path.is_file():
        from models.sasrec import Recommender

        try:
            return Recommender.load(path)
        except Exception as error:  # torch raises many kinds for a file that is no checkpoint
            raise ValueError(f"{path}: not a recloop checkpoint ({error})") from error
    if not os.environ.get("MLFLOW_TRACKING_URI") and not home.mlflow_db.exists():
        raise LookupError(
            f"no model registry at {home.mlflow_db}: train a model first (recloop run) "
            "or pass --model a checkpoint file"
        )
    return registry.load_model_uri(uri, config, home)


def _evaluate_splits(
    recommender: Any, splits: list[Any], catalogue: list[str], config: Any
) -> list[dict[str, Any]]:
    """The model (named ``model``) and the baselines on each split's test cases."""
    from recloop.evaluation import CANDIDATE, evaluate_all

    results = []
    for split in splits:
        report = evaluate_all(recommender, None, split.train_full, split.test, catalogue, config)
        rows = {("model" if name == CANDIDATE else name): m for name, m in report.rows.items()}
        results.append({**split.summary(), "rows": rows, "seconds": report.seconds})
    return results


def _mean_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-split numbers averaged with equal weight over the splits with cases; cases summed."""
    scored = [r for r in results if r["test_cases"]]
    mean: dict[str, Any] = {"name": "mean", "rows": {}}
    for name in results[0]["rows"]:
        keys = [k for k in results[0]["rows"][name] if not k.startswith("n_")]
        row = {k: sum(r["rows"][name][k] for r in scored) / len(scored) for k in keys}
        row["n_cases"] = sum(r["rows"][name]["n_cases"] for r in results)
        mean["rows"][name] = row
    return mean


def _write_evaluation_report(home: Any, protocol: str, out: dict[str, Any]) -> Path:
    """``RECLOOP_HOME/reports/evaluate-<protocol>-<time>.json`` (a new name if taken)."""
    import json
    import time

    home.reports.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = home.reports / f"evaluate-{protocol}-{stamp}.json"
    for n in range(2, 1000):  # two evaluations within a second keep both reports
        if not path.exists():
            break
        path = home.reports / f"evaluate-{protocol}-{stamp}-{n}.json"
    path.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    return path


@app.command("evaluate")
@_one_line_errors
def evaluate_command(
    data: Annotated[Path, typer.Option("--data", help="Canonical dataset folder to evaluate on.")],
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="loo: each user's last event (users with 3+ events); temporal: each user's "
            "first event in each of K time windows after a base period.",
        ),
    ] = "loo",
    windows: Annotated[
        int,
        typer.Option(
            "--windows",
            min=1,
            help="temporal: evaluation windows after the base period (replay.base_fraction "
            "of the events).",
        ),
    ] = 3,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model) or a "
            "checkpoint file (default: models:/<registry.model_name>@champion).",
        ),
    ] = None,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """Evaluate a model (default: the champion) beside the baselines on a protocol's test cases.

    Full ranking over the dataset's catalogue, history excluded. The baselines are fitted on each
    split's events before its test targets. Writes the figures as JSON to
    RECLOOP_HOME/reports/evaluate-<protocol>-<time>.json.
    """
    import time

    from recloop.config import load_config
    from recloop.data import read_dataset
    from recloop.paths import get_home
    from recloop.protocols import PROTOCOLS, make_splits

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (use one of: {', '.join(PROTOCOLS)})")
    _dataset_dir(data)
    cfg = load_config(config)
    recloop_home = get_home(home)
    dataset = read_dataset(data)
    splits = make_splits(dataset.interactions, protocol, windows, cfg.replay.base_fraction)
    if not any(len(split.test) for split in splits):
        raise ValueError(f"{data}: no test cases under the {protocol} protocol")
    uri = model or f"models:/{cfg.registry.model_name}@champion"
    recommender = _load_evaluated_model(uri, cfg, recloop_home)
    catalogue = dataset.items["item_id"].tolist()
    known = len(set(recommender.item_ids) & set(catalogue))
    if known < len(catalogue) / 2:
        typer.echo(
            f"recloop: warning: the model knows {known} of the {len(catalogue)} catalogue items",
            err=True,
        )
    results = _evaluate_splits(recommender, splits, catalogue, cfg)
    mean = _mean_row(results) if len(splits) > 1 else None
    typer.echo(format_evaluation_table(results + ([mean] if mean else []), tuple(cfg.eval.ks)))
    out = {
        "command": "evaluate",
        "protocol": protocol,
        "model_uri": uri,
        "data": str(Path(data).resolve()),
        "windows": windows if protocol == "temporal" else None,
        "base_fraction": cfg.replay.base_fraction if protocol == "temporal" else None,
        "n_items": len(catalogue),
        "model_known_items": known,
        "seed": cfg.seed,
        "eval": cfg.to_dict()["eval"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "splits": results,
        "mean": mean,
    }
    path = _write_evaluation_report(recloop_home, protocol, out)
    typer.echo(f"report: {path}")
    out["report_path"] = str(path)
    return out


bench_app = typer.Typer(
    help="Benchmarks on real datasets: Markdown + JSON reports under reports/.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


@bench_app.command("quality")
@_one_line_errors
def bench_quality_command(
    shared: Annotated[
        Path, typer.Option("--shared", help="Folder with the published datasets.")
    ] = Path("../shared/datasets"),
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="NAME=DIR of a canonical dataset (repeatable)."),
    ] = None,
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help="Comma-separated: text+id, id, text, text+id-no-mlm (the MLM ablation).",
        ),
    ] = "text+id,id,text,text+id-no-mlm",
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="'loo' (last event per user = test) or 'temporal' (the last of --windows "
            "windows cut by time = test, the window before = validation).",
        ),
    ] = "loo",
    windows: Annotated[
        int, typer.Option("--windows", min=2, help="temporal: windows after the base period.")
    ] = 4,
    targets: Annotated[
        str,
        typer.Option(
            "--targets",
            help="temporal: 'all' (every test-window event with a history) or 'first' (each "
            "active user's first event there).",
        ),
    ] = "all",
    seeds: Annotated[
        str,
        typer.Option(
            "--seeds",
            help="Comma-separated seeds: every model (and the MLM pretraining) is repeated per "
            "seed and reported as the mean over them, the targets judged on it (default: the "
            "config's seed).",
        ),
    ] = "",
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports"),
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not log the benchmark to MLflow.")
    ] = False,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """Model quality (text+ID, ID-only, text-only, no-MLM) beside the baselines.

    Writes reports/quality.md (quality-temporal.md under --protocol temporal), the JSON figures
    and plots; logs an MLflow run.
    """
    from benchmarks.quality import bench_quality

    with working("bench quality"):
        results = bench_quality(
            shared=shared,
            data=data or (),
            config=config,
            out=out,
            variants=[variant for variant in variants.split(",") if variant],
            protocol=protocol,
            windows=windows,
            targets=targets,
            seeds=[int(seed) for seed in seeds.split(",") if seed.strip()],
            home=home,
            log_mlflow=not no_mlflow,
        )
    typer.echo("wrote " + ", ".join(results["files"]))
    return results


@bench_app.command("incremental")
@_one_line_errors
def bench_incremental_command(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Canonical dataset folder, or a shared dataset name (movielens-latest-small, "
            "amazon-instruments-2014, amazon-office-2014) imported from --shared.",
        ),
    ],
    windows: Annotated[
        int, typer.Option("--windows", min=1, help="Incremental updates (K); K + 1 windows.")
    ] = 3,
    targets: Annotated[
        str,
        typer.Option(
            "--targets",
            help="Test cases per window: 'all' (every event with a history, models frozen) "
            "or 'first' (each active user's first event).",
        ),
    ] = "all",
    name: Annotated[
        str | None, typer.Option("--name", help="Dataset name in the report (default: folder).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports"),
    work: Annotated[
        Path, typer.Option("--work", help="Imported datasets and the embedding cache.")
    ] = Path("reports/tmp/incremental"),
    shared: Annotated[
        Path, typer.Option("--shared", help="Folder with the published datasets.")
    ] = Path("../shared/datasets"),
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not log the benchmark to MLflow.")
    ] = False,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """Incremental update (warm start) vs full retrain per time window, beside the baselines.

    Writes reports/incremental/<dataset>.md, .json and plots; logs an MLflow run.
    """
    from benchmarks.incremental import bench_incremental

    with working("bench incremental"):
        results = bench_incremental(
            data,
            windows=windows,
            targets=targets,
            name=name,
            config=config,
            out=out,
            work=work,
            shared=shared,
            home=home,
            log_mlflow=not no_mlflow,
        )
    targets = results["targets"]
    typer.echo(
        f"incremental / full wall time at the last update: {targets['time_ratio_last']:.3f} "
        f"(target <= 0.1: {'met' if targets['time_met'] else 'NOT met'}); mean next-window "
        f"NDCG@10 ratio: {targets['ndcg_ratio_mean']:.3f} "
        f"(target >= 0.98: {'met' if targets['ndcg_met'] else 'NOT met'}); mean next-window "
        f"NDCG@10 against the best baseline ({targets['best_baseline']}): incremental "
        f"{targets['incremental_vs_best_baseline']:.3f}x, full retrain "
        f"{targets['full_vs_best_baseline']:.3f}x (target > 1: "
        f"{'met' if targets['incremental_above_baselines'] else 'NOT met'}, "
        f"{'met' if targets['full_above_baselines'] else 'NOT met'})"
    )
    typer.echo("wrote " + ", ".join(results["files"]))
    return results


def run() -> None:  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


__all__ = ["app", "format_cycle_table"]
