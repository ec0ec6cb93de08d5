"""The evaluate stage: candidate, champion and baselines ranked on the same held-out events."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop.baselines import fit_baselines
from recloop.evaluation import EvaluationReport, evaluate_all

logger = logging.getLogger(__name__)

# NO_CACHE: the inputs hold models and DataFrames; hashing them for a cache key is slow and useless.
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(evaluate_all)


def refit_baselines(
    report: EvaluationReport, interactions: pd.DataFrame, catalogue_ids: Sequence[str]
) -> None:
    """Once the report holds every number the gate uses: the baselines the gate may serve
    refitted on ``interactions``, the training events and the held-out ones they were judged on,
    as the candidate learns them (:func:`tasks.fine_tune.learn_judged_stage`). The metrics stay
    those measured before."""
    report.baselines = fit_baselines(interactions, [str(i) for i in catalogue_ids])
    logger.info("the baselines the gate may serve now count %d events", len(interactions))
