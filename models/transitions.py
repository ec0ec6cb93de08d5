"""Item-to-item transition counts in CSR form: shared by the transitions baseline and the
recommender's transition prior (numpy only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def transition_csr(
    sequences: Iterable[np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First-order transitions of integer ``sequences`` (codes in ``[0, n)``; negative codes are
    unknown items, and a pair with one is skipped), row-normalised: ``(indptr, indices, data,
    row_sums)``, where row ``a`` holds P(b | a) in the CSR layout (``indices`` sorted within a
    row) and ``row_sums[a]`` counts the pairs that start at ``a``."""
    src_parts, dst_parts = [], []
    for codes in sequences:
        if codes.size < 2:
            continue
        src, dst = codes[:-1], codes[1:]
        keep = (src >= 0) & (dst >= 0)
        src_parts.append(src[keep])
        dst_parts.append(dst[keep])
    src = np.concatenate(src_parts) if src_parts else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(dst_parts) if dst_parts else np.zeros(0, dtype=np.int64)
    # Unique (src, dst) pairs sorted by src, then dst: the CSR layout.
    pairs, counts = np.unique(src * max(n, 1) + dst, return_counts=True)
    rows, indices = np.divmod(pairs, max(n, 1))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    row_sums = np.bincount(rows, weights=counts, minlength=n)
    data = counts / row_sums[rows] if counts.size else counts.astype(np.float64)
    return indptr, indices, data, row_sums


def add_transition_scores(
    out: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    history: Sequence[int],
    window: int,
) -> None:
    """Add to ``out`` (one row, ``(n,)``) the transition probabilities from the last ``window``
    codes of ``history`` (oldest first), the most recent weighted 1, the one before 1/2, ..."""
    for age, code in enumerate(reversed(history[-window:])):
        start, end = indptr[code], indptr[code + 1]
        # Column indices are unique within a row, so fancy-index += is exact.
        out[indices[start:end]] += data[start:end] / (age + 1)
