"""The ``feedback-loop`` flow: one incremental cycle of the loop (CONTRACT.md §5).

validate → prepare → clean_text → pretrain → fine_tune → evaluate → promote. The flow only composes
tasks; every stage is a plain function in ``tasks/`` that is tested on its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.cycle import train_evaluate_promote
from recloop.config import load_config
from recloop.paths import get_home
from tasks.prepare import load_champion_task, prepare_task
from tasks.validate import land_task


@flow(name="feedback-loop", log_prints=False)
def feedback_loop(
    batch_files: list[str] | None = None,
    items_files: list[str | None] | None = None,
    home: str | None = None,
    config_path: str | None = None,
    force_pretrain: bool = False,
) -> dict[str, Any]:
    """Land the given batches (if any), then learn from every batch landed since the champion.

    Args:
        batch_files: interactions files to validate and land first; None to consume what is
            already archived and pending (e.g. after ``recloop ingest``).
        items_files: items files matching ``batch_files`` one to one (None entries allowed).
        home: ``RECLOOP_HOME``; default from the environment.
        config_path: a YAML file overriding the default config.
        force_pretrain: run MLM pretraining even if the catalogue text has barely changed.

    Returns a summary: the landing results, the candidate version, the metrics of candidate,
    champion and baselines on the same held-out events, and the promotion decision.
    """
    log = get_run_logger()
    started = time.perf_counter()
    config = load_config(config_path)
    recloop_home = get_home(home).ensure()

    landed = []
    for index, path in enumerate(batch_files or []):
        items = (items_files or [None] * len(batch_files))[index]
        result = land_task(recloop_home, Path(path), Path(items) if items else None)
        landed.append(result.to_dict())
    summary: dict[str, Any] = {"landed": landed}

    champion = load_champion_task(config, recloop_home)
    applied = list(champion[0].metadata.get("trained_batches", [])) if champion else []
    data = prepare_task(recloop_home, applied)
    if data is None:
        log.info("No batch pending since the champion was trained: nothing to learn.")
        summary.update(status="up-to-date", seconds=round(time.perf_counter() - started, 1))
        return summary
    summary.update(
        train_evaluate_promote(
            data,
            champion,
            recloop_home,
            config,
            training="incremental",
            warm_start=True,
            force_pretrain=force_pretrain,
        )
    )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
