"""Promotion: register every candidate, let the gate decide, move ``champion`` if it passes.

The decision is :func:`recloop.gate.should_promote` on the evaluation report's numbers (candidate,
champion and popularity all measured on the same cases); the registry I/O is
:mod:`recloop.registry`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop import registry
from recloop.config import Config
from recloop.gate import Decision, should_promote
from recloop.paths import Home
from tasks.evaluate import CANDIDATE, CHAMPION, EvaluationReport

if TYPE_CHECKING:
    from models.sasrec import Recommender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionResult:
    """What happened to one candidate."""

    version: str  # the candidate's registered version
    decision: Decision
    champion_version_before: str | None
    promoted: bool
    run_id: str

    @property
    def champion_version(self) -> str | None:
        """The champion after this promotion step."""
        return self.version if self.promoted else self.champion_version_before


def promote_candidate(
    recommender: Recommender,
    report: EvaluationReport,
    config: Config,
    home: Home,
    tags: dict[str, Any],
    *,
    extra_metrics: dict[str, float] | None = None,
    artifacts: dict[str, Any] | None = None,
) -> PromotionResult:
    """Log and register ``recommender`` as a candidate, gate it, and promote it if it passes.

    ``tags`` carry provenance (``batch_ids``, ``data_fingerprint``, ``parent_version``; the
    parent defaults to the current champion). ``extra_metrics`` (e.g. ``train_seconds``) are
    logged on the run next to the report's metrics.
    """
    reg = registry.configure(home, config)
    before = reg.champion_version()
    champion_metrics = report.get(CHAMPION)
    if before is not None and champion_metrics is None:
        # Without the champion's numbers on these cases the gate would compare against nothing.
        logger.warning(
            "registry has champion version %s but the report has no champion row; "
            "gating against popularity only",
            before,
        )
    decision = should_promote(
        report.rows[CANDIDATE],
        champion_metrics,
        report.get("popularity"),
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
    )
    if decision.promote:
        reg.set_champion(logged.version, decision.reason)
    logger.info("candidate version %s: %s", logged.version, decision.reason)
    return PromotionResult(
        version=logged.version,
        decision=decision,
        champion_version_before=before,
        promoted=decision.promote,
        run_id=logged.run_id,
    )


# Retries: registry writes go through SQLite or a server and can meet a transient lock.
@task(name="promote", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def promote_task(
    recommender: Recommender,
    report: EvaluationReport,
    config: Config,
    home: Home,
    tags: dict[str, Any],
    extra_metrics: dict[str, float] | None = None,
    artifacts: dict[str, Any] | None = None,
) -> PromotionResult:
    """Prefect task: :func:`promote_candidate`."""
    return promote_candidate(
        recommender,
        report,
        config,
        home,
        tags,
        extra_metrics=extra_metrics,
        artifacts=artifacts,
    )
