"""Ranking metrics for next-item recommendation (numpy and the standard library only).

Binary relevance throughout. Definitions:

- NDCG@k: Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 20(4),
  2002 (https://doi.org/10.1145/582415.582418), with the ``1 / log2(rank + 1)`` discount (1-based
  rank) and the ideal DCG over ``min(|relevant|, k)`` hits, as in microsoft/recommenders
  ``recommenders/evaluation/python_evaluation.py::ndcg_at_k``
  (https://github.com/recommenders-team/recommenders/blob/main/recommenders/evaluation/python_evaluation.py).
- Recall@k: share of the relevant items found in the top k (same module, ``recall_at_k``).
- MRR: reciprocal rank of the first relevant item (Voorhees, TREC-8 QA track, 1999), 0 when none.

For a single held-out target per user (the leave-last-out protocol), NDCG@k reduces to
``1 / log2(rank + 2)`` for a 0-based rank below k, and Recall@k to a hit indicator. That rank comes
from :func:`target_ranks`, the one ranking rule of early stopping, of the choice of the prior's
weight and of evaluation: ties count against the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def dcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Discounted cumulative gain of the top ``k`` of ``ranked`` with binary relevance."""
    _check_k(k)
    return sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """NDCG@k (Järvelin & Kekäläinen 2002): DCG@k over the ideal DCG of ``min(|relevant|, k)`` hits.

    0.0 when ``relevant`` is empty (nothing can be found).
    """
    _check_k(k)
    n_ideal = min(len(relevant), k)
    if n_ideal == 0:
        return 0.0
    ideal = sum(1.0 / math.log2(i + 2) for i in range(n_ideal))
    return dcg_at_k(ranked, relevant, k) / ideal


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Recall@k: the share of ``relevant`` found in the top ``k`` of ``ranked`` (0.0 if none)."""
    _check_k(k)
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def mrr(ranked: Sequence[str], relevant: set[str]) -> float:
    """Reciprocal rank of the first relevant item in ``ranked`` (1-based); 0.0 if there is none."""
    for i, item in enumerate(ranked):
        if item in relevant:
            return 1.0 / (i + 1)
    return 0.0


def target_ranks(scores: Any, target_scores: Any) -> Any:
    """Each case's 0-based target rank: how many *other* candidates score at least as high as the
    target. Ties count against the model, so a constant scorer ranks every target last instead of
    scoring by luck of the sort order, and a model is selected by the rule it is judged by.

    ``scores`` ``(B, N)`` holds every candidate's score, the target's own included (it counts
    itself once, hence the ``- 1``); an item out of the ranking (e.g. in the user's history) is
    NaN, which compares false. ``target_scores`` ``(B, 1)`` are the targets' scores, never NaN.
    Works alike on numpy arrays (evaluation) and torch tensors (validation during training) and
    returns the same kind.
    """
    return (scores >= target_scores).sum(1) - 1


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = (10, 20)) -> dict[str, float]:
    """Mean metrics for single-target cases given each target's 0-based rank.

    ``ranks[i]`` is how many items were ranked above case i's target. Returns
    ``{"ndcg_at_<k>", "recall_at_<k>" for each k, "mrr"}``; every value is 0.0 when there are no
    cases. With one relevant item the ideal DCG is 1, so NDCG@k = ``1 / log2(rank + 2)`` if
    ``rank < k`` else 0, and Recall@k = HitRate@k.
    """
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    out: dict[str, float] = {}
    empty = ranks.size == 0
    gains = 1.0 / np.log2(ranks + 2.0)
    for k in ks:
        _check_k(int(k))
        hit = ranks < k
        out[f"ndcg_at_{k}"] = 0.0 if empty else float(np.mean(np.where(hit, gains, 0.0)))
        out[f"recall_at_{k}"] = 0.0 if empty else float(np.mean(hit))
    out["mrr"] = 0.0 if empty else float(np.mean(1.0 / (ranks + 1.0)))
    return out
