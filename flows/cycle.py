"""The stages both flows share: clean → pretrain → fine-tune → evaluate → promote.

A plain function that calls tasks, so it runs inside whichever flow calls it (``feedback-loop`` or
``full-retrain``) and its task runs appear under that flow run. The candidate's MLflow run is
opened before training and closed after the gate, so it lasts as long as the candidate took: its
input is the training data, its metrics the learning curve and the evaluation, its name the
version and kind of training, its description and ``report.md`` the gate's decision and reason.
The cycle ends by publishing the same Markdown as a Prefect artifact (key ``recloop-cycle``) on
the flow run.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from models.baselines import Baseline
from recloop import faults, registry
from recloop.config import Config
from recloop.evaluation import CHAMPION, EvaluationReport
from recloop.fitting import FineTuneResult
from recloop.paths import Home
from recloop.reporting import cycle_markdown
from tasks.clean_text import clean_text_task
from tasks.evaluate import evaluate_task, refit_baselines
from tasks.fine_tune import fine_tune_task, learn_judged_task
from tasks.prepare import CycleData
from tasks.pretrain import PretrainResult, pretrain_task
from tasks.promote import PromotionResult, promote_task

# One key for both flows: the Prefect UI's Artifacts page shows its latest version and history.
ARTIFACT_KEY = "recloop-cycle"
REPORT_ARTIFACT = "report.md"  # the cycle's Markdown, at the root of the candidate's run


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

    ``champion`` is ``(model, version info)`` from the registry, or None. With ``warm_start`` the
    candidate starts from the champion's weights (from the newest learned version's when a
    baseline serves); otherwise from scratch, and the champion is only the yardstick.
    ``training`` (``incremental`` | ``full-retrain``) is recorded as a version tag and in the
    checkpoint's metadata. Returns the summary fields of a cycle.
    """
    log = get_run_logger()
    parent, parent_info = champion if champion is not None else (None, None)
    reg = registry.configure(home, config)
    start_from = _start_from(reg, parent) if warm_start else None
    if len(data.cases) == 0:
        log.warning("The newest batches hold no user with history to evaluate on.")
    provenance = {
        "parent_version": str(parent_info["version"]) if parent_info else "",
        "batch_ids": ",".join(data.pending),
        "data_fingerprint": data.data_fingerprint,
        "training": training,
    }
    kind = registry.training_kind(training, start_from is not None)
    # Failed (or killed) with the error as its description if any step below raises.
    with reg.candidate_run(kind, data.pending, provenance) as run:
        run.log_training_data(data.train_interactions, data.data_fingerprint, home.archive)
        tuned, encoder, catalogue = _train(data, start_from, home, config, training, force_pretrain)
        tags = {**provenance, **_log_training(run, training, tuned, encoder, data)}
        faults.point("trained")
        report = evaluate_task(
            tuned.recommender,
            parent,
            data.train_interactions,
            data.cases,
            list(catalogue["item_id"]),
            config,
            retention=data.retention,
        )
        _champion_as_judged(report, parent_info, data)
        # The version registered has learned the held-out events too, with the judged recipe.
        served = learn_judged_task(tuned, data, config, start_from)
        if data.interactions is not None:
            refit_baselines(report, data.interactions, catalogue["item_id"])
        learned_judged = tuned.report.get("learned_judged") or {"how": "none", "seconds": 0.0}
        run.log_metrics({"learn_judged_seconds": float(learned_judged["seconds"])})
        tags["learned_judged"] = learned_judged["how"]
        # Retried by Prefect after a partial failure: the run finds the version it registered.
        promotion = promote_task(served.recommender, report, config, home, tags, run_id=run.run_id)
        summary = _summary(training, data, report, promotion, config)
        markdown = cycle_markdown(summary, config.gate.metric)
        run.log_text(markdown, REPORT_ARTIFACT)
    log.info(
        "%s: version %s %s; champion: version %s (%s): %s",
        training,
        promotion.version,
        "promoted" if promotion.promoted else "not promoted",
        promotion.champion_version,
        promotion.serving or "-",
        promotion.decision.reason,
    )
    _publish(markdown, training, promotion)
    return summary


def _champion_as_judged(
    report: EvaluationReport, champion_info: dict[str, Any] | None, data: CycleData
) -> None:
    """A champion registered from the batch these cases come from has learned them since it was
    judged on them (``learned_judged``): its row becomes the metrics it was judged with, on the
    same cases before it learned them. That is a full retrain judged on the newest batch; an
    incremental cycle judges on events no version has learned."""
    if champion_info is None or CHAMPION not in report.rows:
        return
    tags = champion_info["tags"]
    batches = registry.batch_list(tags.get("batch_ids"))
    if "learned_judged" not in tags or not batches or batches[-1] != data.pending[-1]:
        return
    judged = json.loads(tags.get("metrics") or "{}")
    if "n_cases" not in judged or judged["n_cases"] != report.rows[CHAMPION].get("n_cases"):
        return
    get_run_logger().info(
        "the champion (version %s) has learned these held-out events since it was judged on "
        "them: its row is its judged metrics (%s %.4f, not %.4f)",
        champion_info["version"],
        "ndcg_at_10",
        judged.get("ndcg_at_10", float("nan")),
        report.rows[CHAMPION].get("ndcg_at_10", float("nan")),
    )
    report.rows[CHAMPION] = {key: float(value) for key, value in judged.items()}


def _start_from(reg: registry.Registry, champion: Any | None) -> Any | None:
    """The weights an update starts from: the champion's, or when a baseline serves, the newest
    learned version's (it learned the same batches); None when there is none."""
    if champion is None or not isinstance(champion, Baseline):
        return champion
    learned = reg.latest_learned()
    get_run_logger().info(
        "the %s baseline serves: the update starts from %s",
        champion.name,
        f"learned version {learned[1]['version']}" if learned else "scratch (no learned version)",
    )
    return learned[0] if learned else None


def _train(
    data: CycleData,
    start_from: Any | None,
    home: Home,
    config: Config,
    training: str,
    force_pretrain: bool,
) -> tuple[FineTuneResult, PretrainResult, Any]:
    """Clean the catalogue text, pretrain the encoder if the text changed, fine-tune the
    recommender (from ``start_from``'s weights, or from scratch when None)."""
    catalogue = clean_text_task(data.items, config.text)
    encoder = pretrain_task(catalogue, home, config, force=force_pretrain)
    tuned = fine_tune_task(
        data.train_interactions,
        catalogue,
        encoder.encoder_path,
        home,
        config,
        parent=start_from,
        focus_users=data.focus_users,
        new_interactions=data.new_interactions,
    )
    tuned.recommender.metadata.update(
        trained_batches=data.trained_batches,
        data_fingerprint=data.data_fingerprint,
        encoder_path=str(encoder.encoder_path),
        training=training,
    )
    return tuned, encoder, catalogue


def _log_training(
    run: registry.CandidateRun,
    training: str,
    tuned: FineTuneResult,
    encoder: PretrainResult,
    data: CycleData,
) -> dict[str, str]:
    """Log what training did as soon as it is done: the learning curve (step = epoch), train
    seconds, the training reports; rename the run if it did not start from the champion after
    all. Returns the tags it set, for the registered version."""
    warm = bool(tuned.report.get("warm_start", False))
    run.rename(registry.training_kind(training, warm))
    run.log_learning_curve(tuned.report.get("history") or [])
    run.log_metrics(
        {
            "train_seconds": float(tuned.report.get("seconds", 0.0)),
            "pretrain_ran": float(encoder.ran),
            "best_epoch": tuned.report.get("best_epoch"),
        }
    )
    run.log_dict({"fine_tune": tuned.report, "pretrain": encoder.report}, "training.json")
    run.log_dict(data.summary(), "data.json")
    tags = {"warm_start": str(warm).lower(), "encoder_pretrained": str(encoder.ran).lower()}
    setting = tuned.recommender.metadata.get("setting")
    if setting:  # what the settings search chose (train.search), kept by every update after it
        tags["setting"] = str(setting)
    run.set_tags(tags)
    return tags


def _summary(
    training: str,
    data: CycleData,
    report: EvaluationReport,
    promotion: PromotionResult,
    config: Config,
) -> dict[str, Any]:
    """The cycle's summary (what the flows return and :func:`cycle_markdown` renders)."""
    return {
        "status": "promoted"
        if promotion.promoted
        else "baseline-promoted"
        if promotion.baseline_version
        else "kept-champion",
        "training": training,
        "batches": data.pending,
        "version": promotion.version,
        "champion_before": promotion.champion_version_before,
        "promoted": promotion.promoted,
        "champion": promotion.champion_version,
        "serving": promotion.serving,
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


def _publish(markdown: str, training: str, promotion: PromotionResult) -> None:
    """The cycle's Markdown as the flow run's ``recloop-cycle`` artifact in the Prefect UI."""
    try:
        create_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown=markdown,
            description=f"{training}: version {promotion.version} "
            f"{'promoted' if promotion.promoted else 'not promoted'}; champion: version "
            f"{promotion.champion_version} ({promotion.serving or '-'})",
        )
    except Exception as error:  # the version is registered and gated; a report must not undo it
        get_run_logger().warning("could not publish the %s artifact: %s", ARTIFACT_KEY, error)
