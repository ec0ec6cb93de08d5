"""The stages both flows share: clean → pretrain → fine-tune → evaluate → promote.

A plain function that calls tasks, so it runs inside whichever flow calls it (``feedback-loop`` or
``full-retrain``) and its task runs appear under that flow run. It ends by publishing the cycle's
Markdown artifact (key ``recloop-cycle``) on that flow run.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from recloop.config import Config
from recloop.paths import Home
from recloop.reporting import cycle_markdown
from tasks.clean_text import clean_text_task
from tasks.evaluate import evaluate_task
from tasks.fine_tune import fine_tune_task
from tasks.prepare import CycleData
from tasks.pretrain import pretrain_task
from tasks.promote import promote_task

# One key for both flows: the Prefect UI's Artifacts page shows its latest version and history.
ARTIFACT_KEY = "recloop-cycle"


def train_evaluate_promote(
    data: CycleData,
    champion: tuple[Any, dict[str, Any]] | None,
    home: Home,
    config: Config,
    *,
    training: str,
    warm_start: bool,
    force_pretrain: bool = False,
) -> dict[str, Any]:
    """Train a candidate on ``data``, judge it beside the champion and baselines, gate it.

    ``champion`` is ``(recommender, version info)`` from the registry, or None. With
    ``warm_start`` the candidate starts from the champion's weights; otherwise from scratch, and the
    champion is only the yardstick. ``training`` (``incremental`` | ``full-retrain``) is recorded
    as a version tag and in the checkpoint's metadata. Returns the summary fields of a cycle.
    """
    log = get_run_logger()
    parent, parent_info = champion if champion is not None else (None, None)
    if len(data.cases) == 0:
        log.warning("The newest batches hold no user with history to evaluate on.")

    catalogue = clean_text_task(data.items, config.text)
    encoder = pretrain_task(catalogue, home, config, force=force_pretrain)
    tuned = fine_tune_task(
        data.train_interactions,
        catalogue,
        encoder.encoder_path,
        home,
        config,
        parent=parent if warm_start else None,
        focus_users=data.focus_users,
        new_interactions=data.new_interactions,
    )
    tuned.recommender.metadata.update(
        trained_batches=data.trained_batches,
        data_fingerprint=data.data_fingerprint,
        encoder_path=str(encoder.encoder_path),
        training=training,
    )
    report = evaluate_task(
        tuned.recommender,
        parent,
        data.train_interactions,
        data.cases,
        list(catalogue["item_id"]),
        config,
        retention=data.retention,
    )
    tags = {
        "parent_version": str(parent_info["version"]) if parent_info else "",
        "batch_ids": ",".join(data.pending),
        "data_fingerprint": data.data_fingerprint,
        "warm_start": str(tuned.report.get("warm_start", False)).lower(),
        "encoder_pretrained": str(encoder.ran).lower(),
        "training": training,
    }
    extra_metrics = {
        "train_seconds": float(tuned.report.get("seconds", 0.0)),
        "pretrain_ran": float(encoder.ran),
    }
    promotion = promote_task(
        tuned.recommender,
        report,
        config,
        home,
        tags,
        extra_metrics,
        {
            "training": {"fine_tune": tuned.report, "pretrain": encoder.report},
            "data": data.summary(),
        },
    )
    log.info(
        "%s: version %s %s: %s",
        training,
        promotion.version,
        "promoted to champion" if promotion.promoted else "not promoted",
        promotion.decision.reason,
    )
    summary = {
        "status": "promoted" if promotion.promoted else "kept-champion",
        "training": training,
        "batches": data.pending,
        "version": promotion.version,
        "champion_before": promotion.champion_version_before,
        "promoted": promotion.promoted,
        "reason": promotion.decision.reason,
        "metrics": report.to_dict(),
        "data": data.summary(),
        "mlflow": {
            "run_id": promotion.run_id,
            "run_url": promotion.run_url,
            "tracking_uri": promotion.tracking_uri,
            "experiment_id": promotion.experiment_id,
            "model_name": config.registry.model_name,
        },
    }
    try:
        create_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown=cycle_markdown(summary, config.gate.metric),
            description=f"{training}: version {promotion.version} "
            f"{'promoted' if promotion.promoted else 'not promoted'}",
        )
    except Exception as error:  # the version is registered and gated; a report must not undo it
        log.warning("could not publish the %s artifact: %s", ARTIFACT_KEY, error)
    return summary
