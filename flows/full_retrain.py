"""The ``full-retrain`` flow: the same model from scratch on all archived data (docs/interfaces.md).

[land a dataset] → prepare (everything archived) → clean_text → pretrain → fine_tune (no parent) →
evaluate → promote. It is the yardstick the incremental updates are measured against and the
recovery path when a chain of updates has drifted. The champion is loaded only to be compared with
on the same held-out events and to record the lineage; no weight of it is reused. The same gate
decides whether the new version becomes champion.

Runs are named ``full-retrain · N batches`` (``· <dataset folder>`` when landing one first), then
with the outcome (``· v5 promoted``), and tagged ``recloop``, ``home:<folder>``,
``training:full-retrain``, ``batch:<id>`` for a batch it landed, and ``version:<n>``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.cycle import train_evaluate_promote
from recloop.config import load_config
from recloop.data import find_table
from recloop.landing import QUARANTINED
from recloop.orchestration import label_flow_run, outcome_of, run_name, run_tags, training_lock
from recloop.paths import get_home
from tasks.prepare import load_champion_task, prepare_full_task
from tasks.promote import finish_promotion_task
from tasks.validate import land_task

TRAINING = "full-retrain"  # the ``training`` tag and metadata value of the versions it registers


def _run_name() -> str:
    """``full-retrain · all archived batches`` or ``full-retrain · <dataset folder>``."""
    from prefect.runtime import flow_run

    data_dir = (flow_run.parameters or {}).get("data_dir")
    return f"{TRAINING} · " + (Path(data_dir).name if data_dir else "all archived batches")


def _label(home: Any, summary: dict[str, Any], trained: int | None) -> None:
    """Name and tag the run with what it trained on and what came of it."""
    landed = [entry["batch_id"] for entry in summary.get("landed", [])]
    version = summary.get("version")
    name = run_name(TRAINING, trained if trained is not None else landed, outcome_of(summary))
    label_flow_run(name, run_tags(home, TRAINING, landed, str(version) if version else None))


@flow(name="full-retrain", flow_run_name=_run_name, log_prints=False)
def full_retrain(
    data_dir: str | None = None,
    home: str | None = None,
    config_path: str | None = None,
    force_pretrain: bool = False,
) -> dict[str, Any]:
    """Train a new version from scratch on every archived batch, evaluate it, gate it.

    Args:
        data_dir: a canonical dataset folder to land first as one batch (validated, archived or
            quarantined, like any batch); a batch already landed is a duplicate and is not
            applied twice. A quarantined dataset stops the flow before any training.
        home: ``RECLOOP_HOME``; default from the environment.
        config_path: a YAML file overriding the default config.
        force_pretrain: run MLM pretraining even if the catalogue text has barely changed.

    Returns the same summary as ``feedback-loop`` (``status`` is ``promoted``,
    ``kept-champion``, ``quarantined`` or ``no-data``).
    """
    log = get_run_logger()
    started = time.perf_counter()
    config = load_config(config_path)
    recloop_home = get_home(home).ensure()
    label_flow_run(tags=run_tags(recloop_home, TRAINING))

    summary: dict[str, Any] = {"landed": []}
    if data_dir is not None:
        folder = Path(data_dir)
        result = land_task(
            recloop_home, find_table(folder, "interactions"), find_table(folder, "items")
        )
        summary["landed"].append(result.to_dict())
        if result.status == QUARANTINED:
            log.error("Not retraining: %s", result.message)
            summary.update(status=QUARANTINED, seconds=round(time.perf_counter() - started, 1))
            _label(recloop_home, summary, None)
            return summary

    # One training at a time per home (see recloop.orchestration.training_lock).
    with training_lock(recloop_home, "full-retrain"):
        # A cycle killed after registering a version that passed the gate: promote it first.
        finished = finish_promotion_task(config, recloop_home)
        if finished is not None:
            summary["finished_promotion"] = finished
        data = prepare_full_task(recloop_home)
        if data is None:
            log.warning("Nothing is archived under %s: nothing to train on.", recloop_home.archive)
            summary.update(status="no-data", seconds=round(time.perf_counter() - started, 1))
            label_flow_run(f"{TRAINING} · nothing archived")
            return summary
        label_flow_run(run_name(TRAINING, len(data.trained_batches)))
        champion = load_champion_task(config, recloop_home)
        summary.update(
            train_evaluate_promote(
                data,
                champion,
                recloop_home,
                config,
                training=TRAINING,
                warm_start=False,  # the champion is the yardstick here, not a starting point
                force_pretrain=force_pretrain,
            )
        )
    _label(recloop_home, summary, len(data.trained_batches))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
