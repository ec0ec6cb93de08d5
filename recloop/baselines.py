"""The simple baselines every candidate is compared against, fitted from interactions.

Popularity, recent popularity and item transitions are models too: each is a
:class:`models.baselines.Baseline` (scores with the protocol of ``models.sasrec.Recommender``:
``item_ids`` and ``score(histories) -> (len(histories), len(item_ids))``, higher is better), so it
can be registered, served and made champion. They are fitted on the training interactions only
(never on the held-out events) and use numpy alone, so they stay fast on 10k items and millions of
events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.baselines import Baseline
from models.transitions import transition_csr
from recloop.data import build_sequences, recent_since

logger = logging.getLogger(__name__)


def _item_index(interactions: pd.DataFrame, item_ids: Sequence[str] | None) -> list[str]:
    """The scorer's columns: ``item_ids`` if given, else the training items in first-seen order."""
    if item_ids is not None:
        return [str(i) for i in item_ids]
    return [str(i) for i in pd.unique(interactions["item_id"].astype(str))]


def _counts(items: pd.Series, lookup: dict[str, int], n: int) -> np.ndarray:
    codes = items.astype(str).map(lookup).dropna().to_numpy(dtype=np.int64)
    return np.bincount(codes, minlength=n).astype(np.float64)


def _fitted_on(interactions: pd.DataFrame) -> dict[str, int]:
    timestamps = interactions["timestamp"]
    return {
        "events": len(interactions),
        "users": int(interactions["user_id"].nunique()),
        "last_timestamp": int(timestamps.max()) if len(interactions) else 0,
    }


class Popularity(Baseline):
    """All-time interaction counts: the same ranking for every user."""

    def __init__(self, interactions: pd.DataFrame, item_ids: Sequence[str] | None = None) -> None:
        ids = _item_index(interactions, item_ids)
        self.counts = _counts(interactions["item_id"], {i: j for j, i in enumerate(ids)}, len(ids))
        super().__init__("popularity", ids, self.counts, metadata=_fitted_on(interactions))


class RecentPopularity(Baseline):
    """Interaction counts within the most recent part of the training period.

    The window is ``window_seconds`` before the last training timestamp when given, else the last
    ``recent_fraction`` of the training time span (timestamps may be positions, not seconds, for
    sources that only record order, so a fraction is the safe default). Ties — notably items with
    no recent events — are broken by all-time popularity, scaled to stay below one recent event.
    """

    def __init__(
        self,
        interactions: pd.DataFrame,
        item_ids: Sequence[str] | None = None,
        recent_fraction: float = 0.1,
        window_seconds: int | None = None,
    ) -> None:
        if not 0.0 < recent_fraction <= 1.0:
            raise ValueError(f"recent_fraction must be in (0, 1], got {recent_fraction}")
        ids = _item_index(interactions, item_ids)
        lookup = {item: i for i, item in enumerate(ids)}
        n = len(ids)
        self.since = recent_since(interactions, recent_fraction, window_seconds)
        recent = interactions[interactions["timestamp"].to_numpy(dtype=np.int64) >= self.since]
        all_time = _counts(interactions["item_id"], lookup, n)
        self.recent_counts = _counts(recent["item_id"], lookup, n)
        # Below 0.5 so it can never overturn a difference of one recent event.
        self.counts = self.recent_counts + 0.5 * all_time / (all_time.max() + 1.0 if n else 1.0)
        fitted = _fitted_on(interactions) | {"since": self.since}
        super().__init__("recent_popularity", ids, self.counts, metadata=fitted)
        logger.debug(
            "recent popularity: %d of %d events since %d",
            len(recent),
            len(interactions),
            self.since,
        )


class ItemTransitions(Baseline):
    """First-order item-to-item transitions: "users who had A next had B".

    Counts every consecutive pair (A, B) in the training sequences
    (``recloop.data.build_sequences``) and normalises each row to P(B | A). A user is scored from
    their last ``window`` known items, the most recent weighted 1, the one before 1/2, then 1/3, ...
    A tiny popularity term breaks ties, notably among the many items with no transition from the
    history, so the baseline degrades to popularity instead of to an arbitrary order. Storage is
    CSR-like numpy arrays.
    """

    def __init__(
        self,
        interactions: pd.DataFrame,
        item_ids: Sequence[str] | None = None,
        window: int = 3,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        ids = _item_index(interactions, item_ids)
        lookup = {item: i for i, item in enumerate(ids)}
        n = len(ids)
        sequences = (
            np.array([lookup.get(item, -1) for item in sequence], dtype=np.int64)
            for sequence in build_sequences(interactions).values()
        )
        indptr, indices, data, row_sums = transition_csr(sequences, n)
        self.n_pairs = int(row_sums.sum())

        popularity = _counts(interactions["item_id"], lookup, n)
        # The smallest non-zero transition score is 1 / (window * max row sum); a millionth of it
        # orders the zeros without visibly moving any real score.
        floor = 1.0 / (window * max(float(row_sums.max()) if n else 1.0, 1.0))
        self.tie_breaker = 1e-6 * floor * popularity / (popularity.max() + 1.0 if n else 1.0)
        super().__init__(
            "transitions",
            ids,
            self.tie_breaker,
            (indptr, indices, data),
            window,
            _fitted_on(interactions),
        )


def fit_baselines(
    interactions: pd.DataFrame, item_ids: Sequence[str] | None = None
) -> dict[str, Baseline]:
    """The three baselines, with their default settings, fitted on ``interactions``: popularity,
    recent popularity and transitions, by name."""
    return {
        "popularity": Popularity(interactions, item_ids),
        "recent_popularity": RecentPopularity(interactions, item_ids),
        "transitions": ItemTransitions(interactions, item_ids),
    }
