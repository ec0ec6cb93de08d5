"""The simple baselines as servable models (numpy only): fitted state, scores, save and load.

Every baseline recloop compares against (popularity, recent popularity, item transitions) is a
per-item base score plus, for transitions, the transition probabilities from the user's last
items. :class:`Baseline` holds that state, scores histories with the same protocol as
:class:`models.sasrec.Recommender` and serves through the same pyfunc wrapper, so a baseline can be
registered and become champion. ``recloop.baselines`` fits them from interactions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.ranking import top_k
from models.transitions import add_transition_scores

KINDS = ("popularity", "recent_popularity", "transitions")


class Baseline:
    """A fitted simple baseline.

    ``base`` holds one score per item of ``item_ids``; with ``transitions`` = ``(indptr, indices,
    data)`` (CSR rows of P(b | a), :func:`models.transitions.transition_csr`) the probabilities
    from a user's last ``window`` known items are added, the most recent weighted 1, the one
    before 1/2, ... ``fitted_on`` describes the data (for the registry and reports).
    """

    def __init__(
        self,
        name: str,
        item_ids: list[str],
        base: np.ndarray,
        transitions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        window: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if name not in KINDS:
            raise ValueError(f"unknown baseline {name!r} (known: {', '.join(KINDS)})")
        if len(base) != len(item_ids):
            raise ValueError(f"{len(base)} base scores for {len(item_ids)} items")
        if transitions is not None and window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.name = name
        self.item_ids = [str(item) for item in item_ids]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.base = np.asarray(base, dtype=np.float64)
        self.transitions = transitions
        self.window = int(window)
        self.metadata = dict(metadata or {})

    def score(self, histories: list[list[str]]) -> np.ndarray:
        """``(B, len(item_ids))`` float64 scores (float64: the tie-breakers sit far below float32
        resolution next to a count or a probability); unknown history items are ignored."""
        out = np.tile(self.base, (len(histories), 1))
        if self.transitions is None:
            return out
        indptr, indices, data = self.transitions
        for row, history in zip(out, histories, strict=True):
            recent: list[int] = []  # the last `window` known items, most recent first
            for item in reversed(history):
                if item in self.index:
                    recent.append(self.index[item])
                    if len(recent) == self.window:
                        break
            add_transition_scores(row, indptr, indices, data, recent[::-1], self.window)
        return out

    def recommend(
        self, histories: list[list[str]], k: int = 10, exclude_seen: bool = True
    ) -> tuple[list[list[str]], list[list[float]]]:
        """The top-``k`` item ids and their scores per history, best first."""
        seen = [[self.index[i] for i in h if i in self.index] for h in histories]
        return top_k(self.score(histories), self.item_ids, seen if exclude_seen else None, k)

    def save(self, path: str | Path) -> Path:
        """One ``.npz`` file that rebuilds the baseline by itself (see :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "window": self.window, "metadata": self.metadata}
        arrays = {"item_ids": np.asarray(self.item_ids, dtype=str), "base": self.base}
        if self.transitions is not None:
            arrays |= dict(zip(("indptr", "indices", "data"), self.transitions, strict=True))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, meta=np.asarray(json.dumps(meta)), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Rebuild a baseline saved by :meth:`save` (no pickles)."""
        with np.load(Path(path), allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            transitions = (
                (stored["indptr"], stored["indices"], stored["data"])
                if "indptr" in stored
                else None
            )
            return cls(
                meta["name"],
                stored["item_ids"].tolist(),
                stored["base"],
                transitions,
                meta["window"],
                meta["metadata"],
            )
