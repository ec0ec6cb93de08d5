"""The ``feedback-loop`` flow: one incremental cycle of the loop (CONTRACT.md §5).

validate → prepare → clean_text → pretrain → fine_tune → evaluate → promote. The flow only composes
tasks; every stage is a plain function in ``tasks/`` that is tested on its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from recloop.config import load_config
from recloop.paths import get_home
from tasks.clean_text import clean_text_task
from tasks.evaluate import evaluate_task
from tasks.fine_tune import fine_tune_task
from tasks.prepare import load_champion_task, prepare_task
from tasks.pretrain import pretrain_task
from tasks.promote import promote_task
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
    parent, parent_info = champion if champion is not None else (None, None)
    applied = list(parent.metadata.get("trained_batches", [])) if parent is not None else []
    data = prepare_task(recloop_home, applied)
    if data is None:
        log.info("No batch pending since the champion was trained: nothing to learn.")
        summary.update(status="up-to-date", seconds=round(time.perf_counter() - started, 1))
        return summary
    if len(data.cases) == 0:
        log.warning("The pending batches hold no user with history to evaluate on.")

    catalogue = clean_text_task(data.items, config.text)
    encoder = pretrain_task(catalogue, recloop_home, config, force=force_pretrain)
    tuned = fine_tune_task(
        data.train_interactions,
        catalogue,
        encoder.encoder_path,
        recloop_home,
        config,
        parent,
        data.focus_users,
    )
    tuned.recommender.metadata.update(
        trained_batches=data.trained_batches,
        data_fingerprint=data.data_fingerprint,
        encoder_path=str(encoder.encoder_path),
    )
    report = evaluate_task(
        tuned.recommender,
        parent,
        data.train_interactions,
        data.cases,
        list(catalogue["item_id"]),
        config,
    )
    tags = {
        "parent_version": str(parent_info["version"]) if parent_info else "",
        "batch_ids": ",".join(data.pending),
        "data_fingerprint": data.data_fingerprint,
        "warm_start": str(tuned.report.get("warm_start", False)).lower(),
        "encoder_pretrained": str(encoder.ran).lower(),
    }
    extra_metrics = {
        "train_seconds": float(tuned.report.get("seconds", 0.0)),
        "pretrain_ran": float(encoder.ran),
    }
    promotion = promote_task(
        tuned.recommender,
        report,
        config,
        recloop_home,
        tags,
        extra_metrics,
        {
            "training": {"fine_tune": tuned.report, "pretrain": encoder.report},
            "data": data.summary(),
        },
    )
    summary.update(
        status="promoted" if promotion.promoted else "kept-champion",
        batches=data.pending,
        version=promotion.version,
        champion_before=promotion.champion_version_before,
        promoted=promotion.promoted,
        reason=promotion.decision.reason,
        metrics=report.to_dict(),
        data=data.summary(),
        seconds=round(time.perf_counter() - started, 1),
    )
    log.info(
        "Version %s %s: %s",
        promotion.version,
        "promoted to champion" if promotion.promoted else "not promoted",
        promotion.decision.reason,
    )
    return summary
