"""Top-k selection shared by every servable model (numpy only)."""

from __future__ import annotations

import numpy as np


def top_k(
    scores: np.ndarray, item_ids: list[str], seen: list[list[int]] | None, k: int
) -> tuple[list[list[str]], list[list[float]]]:
    """The top-``k`` item ids and their scores per row of ``scores`` (``(B, len(item_ids))``),
    best first. ``seen`` holds each row's columns never to recommend (a user's history), or None;
    non-finite scores are never recommended either. Ties keep column order. ``scores`` is
    modified in place."""
    k = min(k, len(item_ids))
    ids_out: list[list[str]] = []
    scores_out: list[list[float]] = []
    for b, row in enumerate(scores):
        if seen is not None:
            row[seen[b]] = -np.inf
        top = np.argpartition(-row, k - 1)[:k] if k > 0 else np.array([], dtype=int)
        top = top[np.argsort(-row[top], kind="stable")]
        top = top[np.isfinite(row[top])]
        ids_out.append([item_ids[i] for i in top])
        scores_out.append([float(row[i]) for i in top])
    return ids_out, scores_out
