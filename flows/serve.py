"""``recloop serve``: the four deployments of ``deployments/prefect.yaml`` served in one process,
with the landing-folder watcher beside them when asked."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.feedback_loop import TRAINING as INCREMENTAL
from flows.feedback_loop import feedback_loop
from flows.full_retrain import TRAINING as FULL_RETRAIN
from flows.full_retrain import full_retrain
from flows.pretrain_encoder import TRAINING as PRETRAIN
from flows.pretrain_encoder import pretrain_encoder
from recloop.config import Config
from recloop.orchestration import (
    EVENT,
    HOME_LABEL,
    RESOURCE_PREFIX,
    WATCH_INTERVAL,
    make_watcher,
    run_tags,
)
from recloop.paths import Home

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def api_url() -> str | None:
    """The Prefect server's API URL (``PREFECT_API_URL`` or the active profile), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def build_deployments(
    home: Home, config: Config, config_path: Path | None = None
) -> list[RunnerDeployment]:
    """The four deployments of ``deployments/prefect.yaml``, bound to ``home``.

    ``feedback-loop/scheduled`` (cron), ``feedback-loop/on-batch-landed`` (triggered by
    ``recloop.batch.landed`` from batches landed in this home, with the batch id as a parameter),
    ``pretrain-encoder/scheduled`` (cron) and ``full-retrain/on-demand``. Entrypoints are module
    paths, so the flow runs import the installed package whatever the working directory. Each
    deployment's runs are tagged ``recloop``, ``home:<folder>`` and ``training:<kind>`` from the
    moment they are scheduled; the flows add the batch and version tags as they learn them.
    """
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    orchestration = config.orchestration
    params: dict[str, Any] = {"home": str(home.root)}
    if config_path is not None:
        params["config_path"] = str(Path(config_path).resolve())
    module = EntrypointType.MODULE_PATH
    incremental = run_tags(home, INCREMENTAL)
    on_landed = DeploymentEventTrigger(
        expect={EVENT},
        # Only batches landed in this home: a second `recloop serve` for another home on the
        # same server ignores them.
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*", HOME_LABEL: str(home.root)},
        parameters={"batch_id": "{{ event.payload.batch_id }}"},
    )
    return [
        feedback_loop.to_deployment(
            name="scheduled",
            description="One feedback-loop cycle on every batch landed since the champion.",
            schedules=[Cron(orchestration.feedback_cron, timezone=orchestration.timezone)],
            parameters=params,
            tags=incremental,
            entrypoint_type=module,
        ),
        feedback_loop.to_deployment(
            name="on-batch-landed",
            description="A feedback-loop cycle for each batch announced by recloop ingest or "
            "the landing-folder watcher.",
            triggers=[on_landed],
            parameters=params,
            tags=incremental,
            entrypoint_type=module,
        ),
        pretrain_encoder.to_deployment(
            name="scheduled",
            description="Domain-adaptive MLM pretraining when the catalogue text has changed.",
            schedules=[Cron(orchestration.pretrain_cron, timezone=orchestration.timezone)],
            parameters=params,
            tags=run_tags(home, PRETRAIN),
            entrypoint_type=module,
        ),
        full_retrain.to_deployment(
            name="on-demand",
            description="The same model from scratch on all archived data.",
            parameters=params,
            tags=run_tags(home, FULL_RETRAIN),
            entrypoint_type=module,
        ),
    ]


def serve(
    home: Home,
    config: Config,
    config_path: Path | None = None,
    *,
    watch: bool = False,
    limit: int | None = None,
) -> None:
    """Serve the deployments until interrupted; with ``watch``, the landing watcher beside them.

    Raises :class:`LookupError` when no Prefect server is configured: events from ``recloop
    ingest`` and the UI need one that outlives this process.
    """
    from prefect import serve as prefect_serve

    if not api_url():
        raise LookupError(
            "recloop serve needs a Prefect server: start one (prefect server start) and set "
            "PREFECT_API_URL, e.g. http://127.0.0.1:4200/api"
        )
    deployments = build_deployments(home, config, config_path)
    stop = threading.Event()
    watcher_thread = None
    if watch:
        watcher = make_watcher(home.ensure())
        watcher_thread = threading.Thread(
            target=watcher.run,
            args=(stop, WATCH_INTERVAL),
            name="recloop-watch",
            daemon=True,  # never keeps the process alive once serving stopped
        )
        watcher_thread.start()
    try:
        prefect_serve(*deployments, limit=limit)
    finally:
        stop.set()
        if watcher_thread is not None:
            watcher_thread.join(timeout=30)
