"""Promotion: register every candidate, let the gate choose who serves, move ``champion``.

The decision is :func:`recloop.gate.choose_champion` on the evaluation report's numbers
(candidate, champion and the baselines, all measured on the same cases). The candidate is always
registered; when a baseline wins, that baseline (refitted, as the
candidate's counts are, on every event of the cycle, see :func:`tasks.evaluate.absorb_judged`) is
registered too and becomes champion. The registry I/O is :mod:`recloop.registry`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop import registry
from recloop.config import Config
from recloop.evaluation import BASELINES, CANDIDATE, CHAMPION, EvaluationReport
from recloop.gate import Decision, choose_champion
from recloop.paths import Home

if TYPE_CHECKING:
    from models.sasrec import Recommender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionResult:
    """What happened to one candidate."""

    version: str  # the candidate's registered version
    decision: Decision
    champion_version_before: str | None
    promoted: bool  # the candidate became champion
    run_id: str
    run_url: str = ""  # the candidate run's page in the MLflow UI
    tracking_uri: str = ""
    experiment_id: str = ""
    baseline_version: str | None = None  # the baseline registered and promoted instead, if any
    # What serves after this step: "learned" or a baseline's name ("" before any champion).
    serving: str = ""

    @property
    def champion_version(self) -> str | None:
        """The champion after this promotion step."""
        if self.promoted:
            return self.version
        return self.baseline_version or self.champion_version_before


def promote_candidate(
    recommender: Recommender,
    report: EvaluationReport,
    config: Config,
    home: Home,
    tags: dict[str, Any],
    *,
    extra_metrics: dict[str, float] | None = None,
    artifacts: dict[str, Any] | None = None,
    candidate_key: str | None = None,
    run_id: str | None = None,
) -> PromotionResult:
    """Log and register ``recommender`` as a candidate, gate it, and promote it if it passes.

    ``tags`` carry provenance (``batch_ids``, ``data_fingerprint``, ``parent_version``; the
    parent defaults to the current champion). ``extra_metrics`` (e.g. ``train_seconds``) are
    logged on the run next to the report's metrics. ``run_id`` is the candidate's run, opened
    before training (:meth:`recloop.registry.Registry.candidate_run`); without it the run is
    opened and closed here. ``candidate_key`` names this promotion attempt: called again with
    the same key or run (a retry after a partial failure), it finishes the version the first
    call registered instead of registering a second one.
    """
    reg = registry.configure(home, config)
    before = reg.champion_version()
    earlier = reg.find_candidate(candidate_key, run_id) if candidate_key or run_id else None
    if earlier is not None and before == earlier.version:
        # The earlier attempt got as far as promoting: the champion "before" is its parent.
        before = reg.version_info(earlier.version)["tags"].get("parent_version") or None
    champion_metrics = report.get(CHAMPION)
    if before is not None and champion_metrics is None:
        # Without the champion's numbers on these cases the gate would compare against nothing.
        logger.warning(
            "registry has champion version %s but the report has no champion row; "
            "gating against the baselines only",
            before,
        )
    decision = choose_champion(
        report.rows[CANDIDATE],
        champion_metrics,
        {name: report.rows[name] for name in BASELINES if name in report.rows},
        config.gate,
        retention=report.retention_pair(),
    )
    all_tags = {"parent_version": before or "", **tags}
    logged = reg.log_candidate(
        recommender,
        report,
        tags=all_tags,
        decision=decision,
        extra_metrics=extra_metrics,
        artifacts=artifacts,
        key=candidate_key,
        run_id=run_id,
    )
    baseline_version = None
    if decision.promote:
        reg.set_champion(logged.version, decision.reason)
    elif decision.baseline:
        baseline = report.baselines.get(decision.baseline)
        if baseline is None:
            raise ValueError(f"the report holds no fitted {decision.baseline} baseline to serve")
        lineage = ("trained_batches", "data_fingerprint")
        baseline.metadata.update(
            {key: recommender.metadata[key] for key in lineage if key in recommender.metadata}
        )
        served = reg.register_baseline(
            baseline,
            report,
            all_tags,
            decision,
            key=f"{logged.run_id}:{decision.baseline}",
        )
        baseline_version = served.version
        reg.set_champion(served.version, decision.reason)
    if decision.promote:
        serving = registry.LEARNED
    elif decision.baseline:
        serving = decision.baseline
    elif before is not None:
        serving = registry.model_kind(reg.version_info(before)["tags"]).removeprefix("baseline:")
    else:
        serving = ""
    logger.info("candidate version %s: %s", logged.version, decision.reason)
    return PromotionResult(
        version=logged.version,
        decision=decision,
        champion_version_before=before,
        promoted=decision.promote,
        run_id=logged.run_id,
        run_url=reg.run_url(logged.run_id),
        tracking_uri=reg.uri,
        experiment_id=reg.experiment_id,
        baseline_version=baseline_version,
        serving=serving,
    )


def finish_promotion(config: Config, home: Home) -> str | None:
    """Finish what a cycle killed between registering a version and moving its aliases left:
    a version that passed the gate against the current champion becomes champion (and, when
    learned, challenger), and its run, stopped without an end, is marked killed. Returns the
    version, or None when nothing was left half-done."""
    reg = registry.configure(home, config)
    champion = reg.champion_version()
    pending = reg.unfinished_promotion(champion)
    if pending is None:
        return None
    version, tags = pending["version"], pending["tags"]
    if registry.model_kind(tags) == registry.LEARNED:
        reg.client.set_registered_model_alias(reg.name, registry.CHALLENGER, version)
    reason = tags.get("reason", "passed the gate")
    reg.set_champion(version, f"{reason} (promoted when the next cycle found it not promoted)")
    run_id = reg.version_info(version)["run_id"]
    if run_id and reg.client.get_run(run_id).info.status == "RUNNING":
        reg.client.set_terminated(run_id, "KILLED")
    logger.warning(
        "version %s passed the gate against version %s but its cycle stopped before promoting "
        "it: promoted now",
        version,
        champion or "-",
    )
    return version


finish_promotion_task = task(
    name="finish_promotion", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE
)(finish_promotion)


# Retries: registry writes go through SQLite or a server and can meet a transient lock. A retry
# after a partial failure (registered, but the alias or a tag not yet written) finds the version
# its candidate run already registered, so it creates no second run or version.
promote_task = task(name="promote", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)(
    promote_candidate
)
