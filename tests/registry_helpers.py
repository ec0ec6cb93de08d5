"""Tiny real models and reports for the registry and serving tests.

Imported by name (``from registry_helpers import ...``) from any test folder: pytest puts this
folder (it holds the top conftest.py) on ``sys.path``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.sasrec import Recommender, SeqRec
from recloop.baselines import fit_baselines
from recloop.config import RecommenderConfig
from recloop.evaluation import EvaluationReport

ITEMS = [f"i{j}" for j in range(12)]


def tiny_recommender(seed: int) -> Recommender:
    """Untrained but real: a 1-layer SeqRec over 12 items with random text vectors."""
    torch.manual_seed(seed)
    config = RecommenderConfig(
        hidden_size=16, num_layers=1, num_heads=2, max_seq_len=8, dropout=0.0
    )
    model = SeqRec(config, num_items=len(ITEMS), text_dim=8)
    with torch.no_grad():
        model.text_emb[1:] = torch.randn(len(ITEMS), 8)
    return Recommender(model, ITEMS, popularity=np.arange(len(ITEMS), 0, -1), metadata={"s": seed})


def report(
    candidate: float,
    champion: float | None,
    popularity: float,
    recent: float = 0.01,
    transitions: float = 0.02,
) -> EvaluationReport:
    """An evaluation report with the given NDCG@10 for candidate, champion and baselines, and
    the baselines themselves, fitted on a few real events over :data:`ITEMS`."""

    def row(v: float) -> dict[str, float]:
        return {"ndcg_at_10": v, "recall_at_10": 2 * v, "mrr": v / 2, "n_cases": 5}

    rows = {"candidate": row(candidate)}
    if champion is not None:
        rows["champion"] = row(champion)
    rows |= {
        "popularity": row(popularity),
        "recent_popularity": row(recent),
        "transitions": row(transitions),
    }
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2", "u3"],
            "item_id": ["i0", "i1", "i2", "i1", "i2", "i5"],
            "timestamp": [1, 2, 3, 4, 5, 100],
        }
    )
    return EvaluationReport(
        rows=rows,
        n_users=5,
        n_items=len(ITEMS),
        seed=42,
        ks=(10,),
        baselines=fit_baselines(events, ITEMS),
    )
