"""The ``recloop`` command line (CONTRACT.md §3).

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
    typer.Option("--config", help="YAML file overriding recloop/default.yaml."),
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
    # Route the library's own loggers into Prefect's run logs (and the UI).
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "recloop,tasks,models,flows")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _fail(message: str) -> None:
    typer.echo(f"recloop: {message}", err=True)
    raise typer.Exit(code=1)


def _one_line_errors(func: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from recloop.config import ConfigError

        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (ConfigError, FileNotFoundError, ValueError, KeyError, LookupError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            _fail(message)

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _environment()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "alembic", "urllib3", "filelock", "git", "great_expectations", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _format_metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def format_cycle_table(rows: list[dict[str, Any]]) -> str:
    """The per-window table of ``recloop run`` (CONTRACT.md §3)."""
    header = (
        f"{'window':>6} {'batch':<16} {'version':>7} {'ndcg@10':>8} {'recall@10':>9} "
        f"{'champ ndcg':>10} {'champ rec':>9} {'pop ndcg':>8} {'pop rec':>8} "
        f"{'trans ndcg':>10} {'users':>6}  decision"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        metrics = row.get("metrics", {}).get("rows", {})

        def pick(model: str, name: str, metrics: dict[str, Any] = metrics) -> str:
            return _format_metric(metrics.get(model, {}).get(name))

        if row.get("status") in {"promoted", "kept-champion"}:
            decision = "promoted" if row["promoted"] else "kept champion"
        else:
            decision = row.get("status", "-")
        batches = ",".join(row.get("batches", [])) or "-"
        lines.append(
            f"{row['window']:>6} {batches[:16]:<16} {row.get('version') or '-':>7} "
            f"{pick('candidate', 'ndcg_at_10'):>8} {pick('candidate', 'recall_at_10'):>9} "
            f"{pick('champion', 'ndcg_at_10'):>10} {pick('champion', 'recall_at_10'):>9} "
            f"{pick('popularity', 'ndcg_at_10'):>8} {pick('popularity', 'recall_at_10'):>8} "
            f"{pick('transitions', 'ndcg_at_10'):>10} "
            f"{row.get('data', {}).get('eval_users', '-'):>6}  {decision}"
        )
    return "\n".join(lines)


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
    """The main job: replay a dataset as arriving batches through the feedback-loop flow."""
    from flows.feedback_loop import feedback_loop
    from recloop.replay import stage_windows

    rows = []
    for window, (interactions_file, items_file) in enumerate(
        stage_windows(data, windows, home, config), start=1
    ):
        summary = feedback_loop(
            batch_files=[str(interactions_file)],
            items_files=[str(items_file)],
            home=str(home) if home else None,
            config_path=str(config) if config else None,
        )
        summary["window"] = window
        for landed in summary.get("landed", []):
            if landed["status"] != "archived":
                typer.echo(f"window {window}: {landed['message']}", err=True)
        rows.append(summary)
        typer.echo(format_cycle_table(rows[-1:]).splitlines()[-1])
    typer.echo("")
    typer.echo(format_cycle_table(rows))
    return rows


@app.command("import")
@_one_line_errors
def import_command(
    fmt: Annotated[str, typer.Argument(help="movielens | amazon-reviews | canonical")],
    src: Annotated[Path, typer.Argument(help="The published dataset (folder or file).")],
    dest: Annotated[Path, typer.Argument(help="Folder to write the canonical dataset to.")],
    meta: Annotated[
        Path | None,
        typer.Option("--meta", help="amazon-reviews: the item metadata file, if not beside SRC."),
    ] = None,
    config: ConfigOption = None,
) -> dict[str, int]:
    """Convert a published dataset to recloop's canonical form (CONTRACT.md §1)."""
    from recloop.config import load_config
    from recloop.importers import import_dataset

    dataset = import_dataset(fmt, src, dest, load_config(config).text, meta=meta)
    summary = dataset.summary()
    typer.echo(
        f"{dest}: {summary['interactions']} interactions, {summary['users']} users, "
        f"{summary['items']} items"
    )
    return summary


@app.command("ingest")
@_one_line_errors
def ingest_command(
    file: Annotated[Path, typer.Argument(help="Interactions file (CSV or Parquet).")],
    items: Annotated[
        Path | None, typer.Option("--items", help="Items file for new or changed items.")
    ] = None,
    home: HomeOption = None,
) -> dict[str, Any]:
    """Land a batch: validate it, then archive it or quarantine it with a report."""
    from recloop.landing import land_batch
    from recloop.paths import get_home

    result = land_batch(get_home(home).ensure(), file, items)
    if result.status == "quarantined":
        _fail(result.message)
    typer.echo(result.message)
    return result.to_dict()


@app.command("update")
@_one_line_errors
def update_command(home: HomeOption = None, config: ConfigOption = None) -> dict[str, Any]:
    """One incremental cycle on the batches landed since the champion was trained."""
    from flows.feedback_loop import feedback_loop

    summary = feedback_loop(
        home=str(home) if home else None, config_path=str(config) if config else None
    )
    summary["window"] = 1
    typer.echo(format_cycle_table([summary]))
    return summary


@app.command("recommend")
@_one_line_errors
def recommend_command(
    user_id: Annotated[str, typer.Argument(help="A user id known to the archive.")],
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 10,
    home: HomeOption = None,
    config: ConfigOption = None,
) -> dict[str, Any]:
    """The champion's top-k for a known user, through the registered pyfunc model."""
    import pandas as pd

    from recloop import registry
    from recloop.config import load_config
    from recloop.data import build_sequences
    from recloop.landing import read_archive
    from recloop.paths import get_home

    recloop_home = get_home(home)
    cfg = load_config(config)
    archive = read_archive(recloop_home)
    history = build_sequences(archive.interactions[archive.interactions["user_id"] == user_id])
    if user_id not in history:
        raise KeyError(f"user {user_id!r} has no interactions in {recloop_home.archive}")
    model = registry.load_champion_pyfunc(cfg, recloop_home)
    out = model.predict(
        pd.DataFrame({"user_id": [user_id], "history": [history[user_id]]}), params={"k": k}
    )
    titles = archive.items.set_index("item_id")["title"]
    row = out.iloc[0]
    for rank, (item, score) in enumerate(zip(row["item_ids"], row["scores"], strict=True), 1):
        typer.echo(f"{rank:>3}. {item:<14} {score:8.4f}  {titles.get(item, '')}")
    return {"user_id": user_id, "item_ids": list(row["item_ids"]), "scores": list(row["scores"])}


def run() -> None:  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


__all__ = ["app", "format_cycle_table"]
