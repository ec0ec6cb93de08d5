"""Cut a dataset into arriving batches for ``recloop run`` (a replay of history)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from recloop.config import load_config
from recloop.data import Dataset, read_dataset, split_windows
from recloop.paths import get_home

logger = logging.getLogger(__name__)


def batch_items(items: pd.DataFrame, parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The catalogue rows each batch introduces.

    An item arrives with the batch that first mentions it, the way a shop adds products over time;
    items nobody interacted with arrive with the first batch.
    """
    first_seen: dict[str, int] = {}
    for index, part in enumerate(parts):
        for item in part["item_id"].unique():
            first_seen.setdefault(item, index)
    arrival = items["item_id"].map(first_seen).fillna(0).astype(int)
    return [items[arrival == index].reset_index(drop=True) for index in range(len(parts))]


def load_replay_dataset(data: Path | None, seed: int) -> tuple[Dataset, str]:
    """The dataset at ``data``, else the embedded demo data; with a name for the staging folder."""
    if data is None:
        from recloop.demo import simulate

        return simulate(seed=seed), "demo"
    return read_dataset(data), Path(data).resolve().name


def stage_windows(
    data: Path | None, windows: int, home: Path | None, config_path: Path | None
) -> list[tuple[Path, Path]]:
    """Write each window as an arriving batch (interactions + the items it introduces).

    The files go to ``RECLOOP_HOME/replay/<dataset>-<windows>w/`` (not to ``landing/``, which a
    watcher may consume); the feedback-loop flow lands each one through validation like any batch.
    """
    config = load_config(config_path)
    dataset, name = load_replay_dataset(data, config.seed)
    parts = split_windows(dataset.interactions, windows, config.replay.base_fraction)
    items = batch_items(dataset.items, parts)
    folder = get_home(home).ensure().root / "replay" / f"{name}-{windows}w"
    staged = []
    for index, (part, part_items) in enumerate(zip(parts, items, strict=True), start=1):
        window_dir = folder / f"window-{index:02d}"
        window_dir.mkdir(parents=True, exist_ok=True)
        interactions_file = window_dir / "interactions.parquet"
        items_file = window_dir / "items.parquet"
        part.to_parquet(interactions_file, index=False)
        part_items.to_parquet(items_file, index=False)
        staged.append((interactions_file, items_file))
    logger.info(
        "staged %d windows of %s under %s (%s events)",
        len(staged),
        name,
        folder,
        [len(p) for p in parts],
    )
    return staged
