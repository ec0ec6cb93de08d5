"""Non-learned baselines that every candidate is compared against on the same evaluation cases.

Each baseline follows the scorer protocol shared with ``models.sasrec.Recommender``:
``item_ids: list[str]`` and ``score(histories: list[list[str]]) -> np.ndarray`` of shape
``(len(histories), len(item_ids))``, higher is better. They are fitted on the training interactions
only (never on the held-out events) and use numpy alone, so they stay fast on 10k items and
millions of events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.transitions import add_transition_scores, transition_csr
from recloop.data import build_sequences

logger = logging.getLogger(__name__)


def _item_index(interactions: pd.DataFrame, item_ids: Sequence[str] | None) -> list[str]:
    """The scorer's columns: ``item_ids`` if given, else the training items in first-seen order."""
    if item_ids is not None:
        return [str(i) for i in item_ids]
    return [str(i) for i in pd.unique(interactions["item_id"].astype(str))]


def _counts(items: pd.Series, lookup: dict[str, int], n: int) -> np.ndarray:
    codes = items.astype(str).map(lookup).dropna().to_numpy(dtype=np.int64)
    return np.bincount(codes, minlength=n).astype(np.float64)


class Popularity:
    """All-time interaction counts: the same ranking for every user."""

    name = "popularity"

    def __init__(self, interactions: pd.DataFrame, item_ids: Sequence[str] | None = None) -> None:
        self.item_ids = _item_index(interactions, item_ids)
        self._lookup = {item: i for i, item in enumerate(self.item_ids)}
        self.counts = _counts(interactions["item_id"], self._lookup, len(self.item_ids))

    def score(self, histories: list[list[str]]) -> np.ndarray:
        """``(B, n)`` counts, identical rows."""
        return np.tile(self.counts.astype(np.float32), (len(histories), 1))


class RecentPopularity:
    """Interaction counts within the most recent part of the training period.

    The window is ``window_seconds`` before the last training timestamp when given, else the last
    ``recent_fraction`` of the training time span (timestamps may be positions, not seconds, for
    sources that only record order, so a fraction is the safe default). Ties — notably items with
    no recent events — are broken by all-time popularity, scaled to stay below one recent event.
    """

    name = "recent_popularity"

    def __init__(
        self,
        interactions: pd.DataFrame,
        item_ids: Sequence[str] | None = None,
        recent_fraction: float = 0.1,
        window_seconds: int | None = None,
    ) -> None:
        if not 0.0 < recent_fraction <= 1.0:
            raise ValueError(f"recent_fraction must be in (0, 1], got {recent_fraction}")
        self.item_ids = _item_index(interactions, item_ids)
        self._lookup = {item: i for i, item in enumerate(self.item_ids)}
        n = len(self.item_ids)
        timestamps = interactions["timestamp"].to_numpy(dtype=np.int64)
        if timestamps.size == 0:
            self.since = 0
            recent = interactions
        else:
            last, first = int(timestamps.max()), int(timestamps.min())
            span = (
                window_seconds if window_seconds is not None else recent_fraction * (last - first)
            )
            self.since = int(np.floor(last - span))
            recent = interactions[timestamps >= self.since]
        all_time = _counts(interactions["item_id"], self._lookup, n)
        self.recent_counts = _counts(recent["item_id"], self._lookup, n)
        # Below 0.5 so it can never overturn a difference of one recent event.
        self.counts = self.recent_counts + 0.5 * all_time / (all_time.max() + 1.0 if n else 1.0)
        logger.debug(
            "recent popularity: %d of %d events since %d",
            len(recent),
            len(interactions),
            self.since,
        )

    def score(self, histories: list[list[str]]) -> np.ndarray:
        """``(B, n)`` recent counts (plus the all-time tie-breaker), identical rows."""
        # float64: the tie-breaker is a fraction of one event and must survive large counts.
        return np.tile(self.counts, (len(histories), 1))


class ItemTransitions:
    """First-order item-to-item transitions: "users who had A next had B".

    Counts every consecutive pair (A, B) in the training sequences
    (``recloop.data.build_sequences``) and normalises each row to P(B | A). A user is scored from
    their last ``window`` known items, the most recent weighted 1, the one before 1/2, then 1/3, ...
    A tiny popularity term breaks ties, notably among the many items with no transition from the
    history, so the baseline degrades to popularity instead of to an arbitrary order. Storage is
    CSR-like numpy arrays.
    """

    name = "transitions"

    def __init__(
        self,
        interactions: pd.DataFrame,
        item_ids: Sequence[str] | None = None,
        window: int = 3,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.item_ids = _item_index(interactions, item_ids)
        self._lookup = {item: i for i, item in enumerate(self.item_ids)}
        n = len(self.item_ids)
        sequences = (
            np.array([self._lookup.get(item, -1) for item in sequence], dtype=np.int64)
            for sequence in build_sequences(interactions).values()
        )
        self.indptr, self.indices, self.data, row_sums = transition_csr(sequences, n)
        self.n_pairs = int(row_sums.sum())

        popularity = _counts(interactions["item_id"], self._lookup, n)
        # The smallest non-zero transition score is 1 / (window * max row sum); a millionth of it
        # orders the zeros without visibly moving any real score.
        floor = 1.0 / (window * max(float(row_sums.max()) if n else 1.0, 1.0))
        self.tie_breaker = 1e-6 * floor * popularity / (popularity.max() + 1.0 if n else 1.0)

    def score(self, histories: list[list[str]]) -> np.ndarray:
        """``(B, n)`` weighted transition probabilities from each user's last ``window`` items."""
        out = np.tile(self.tie_breaker, (len(histories), 1))
        for b, history in enumerate(histories):
            recent: list[int] = []  # the last `window` known items, most recent first
            for item in reversed(history):
                if item in self._lookup:
                    recent.append(self._lookup[item])
                    if len(recent) == self.window:
                        break
            add_transition_scores(
                out[b], self.indptr, self.indices, self.data, recent[::-1], self.window
            )
        return out  # float64: the tie-breaker is far below float32 resolution next to 1
