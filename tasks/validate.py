"""The validate stage: land a batch (validate with Great Expectations, archive or quarantine)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop.landing import LandingResult, land_batch
from recloop.paths import Home


def land(home: Home, interactions_file: Path, items_file: Path | None = None) -> LandingResult:
    """Validate a batch against the suites in ``expectations/``, then archive or quarantine it.

    Landing is idempotent (content-hash batch ids), so a retry after an I/O error cannot apply a
    batch twice.
    """
    return land_batch(home, interactions_file, items_file)


land_task = task(name="validate", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)(land)
