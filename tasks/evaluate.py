"""The evaluate stage: candidate, champion and baselines ranked on the same held-out events."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop.evaluation import evaluate_all

# NO_CACHE: the inputs hold models and DataFrames; hashing them for a cache key is slow and useless.
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(evaluate_all)
