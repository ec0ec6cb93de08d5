"""Small canonical batches for the data tests.

Imported by name (``from batch_helpers import ...``): pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

T0 = 1_700_000_000  # a plausible unix time (November 2023)
DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def make_interactions(n_users: int = 3, per_user: int = 4, items: int = 5) -> pd.DataFrame:
    """A valid interactions table over item ids i0..i{items-1}."""
    rows = [
        {"user_id": f"u{u}", "item_id": f"i{(u + k) % items}", "timestamp": T0 + 60 * (u * 10 + k)}
        for u in range(n_users)
        for k in range(per_user)
    ]
    frame = pd.DataFrame(rows)
    frame["rating"] = 4.0
    return frame


def make_items(ids: list[str], title_prefix: str = "Title") -> pd.DataFrame:
    """A valid items table for ``ids``."""
    return pd.DataFrame(
        {"item_id": ids, "title": [f"{title_prefix} {i}" for i in ids], "text": ["" for _ in ids]}
    )
