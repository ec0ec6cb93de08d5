"""The canonical data form (docs/interfaces.md) and the sequences and splits built from it.

A dataset directory holds ``items.parquet|csv`` (``item_id``, ``title``, ``text``, any metadata) and
``interactions.parquet|csv`` (``user_id``, ``item_id``, ``timestamp`` int64, optional ``rating``,
optional ``event``). Ids are always strings.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ITEM_COLUMNS = ("item_id", "title", "text")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_INTERACTION_COLUMNS = ("rating", "event")


@dataclass
class Dataset:
    """A catalogue and the interactions on it."""

    items: pd.DataFrame
    interactions: pd.DataFrame

    def summary(self) -> dict[str, int]:
        return {
            "items": len(self.items),
            "users": int(self.interactions["user_id"].nunique()),
            "interactions": len(self.interactions),
            "interacted_items": int(self.interactions["item_id"].nunique()),
        }


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file by its suffix, keeping id-like columns as strings."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in {".csv", ".tsv"}:
        sep = "\t" if path.suffix == ".tsv" else ","
        return pd.read_csv(
            path,
            sep=sep,
            dtype={"user_id": str, "item_id": str},
            keep_default_na=False,
            na_values=[""],
        )
    raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")


def find_table(directory: str | Path, stem: str) -> Path:
    """``DIR/stem.parquet`` if present, else ``DIR/stem.csv``."""
    directory = Path(directory)
    for suffix in (".parquet", ".csv"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{directory}: no {stem}.parquet or {stem}.csv")


def normalise_items(items: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes for an items table: string ids, string title and text (empty, not null)."""
    items = items.copy()
    items["item_id"] = items["item_id"].astype(str)
    for column in ("title", "text"):
        if column not in items:
            items[column] = ""
        items[column] = items[column].fillna("").astype(str)
    front = list(ITEM_COLUMNS)
    return items[front + [c for c in items.columns if c not in front]].reset_index(drop=True)


def normalise_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes for an interactions table: string ids, int64 timestamps, float ratings."""
    out = interactions.copy()
    out["user_id"] = out["user_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    out["timestamp"] = out["timestamp"].astype("int64")
    if "rating" in out:
        out["rating"] = out["rating"].astype("float64")
    if "event" in out:
        out["event"] = out["event"].astype(str)
    columns = list(INTERACTION_COLUMNS) + [c for c in OPTIONAL_INTERACTION_COLUMNS if c in out]
    return out[columns].reset_index(drop=True)


def read_dataset(directory: str | Path) -> Dataset:
    """Read a canonical dataset directory."""
    items = read_table(find_table(directory, "items"))
    interactions = read_table(find_table(directory, "interactions"))
    return Dataset(normalise_items(items), normalise_interactions(interactions))


def write_dataset(dataset: Dataset, directory: str | Path, fmt: str = "parquet") -> Path:
    """Write ``dataset`` as ``items.<fmt>`` and ``interactions.<fmt>`` under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in (("items", dataset.items), ("interactions", dataset.interactions)):
        path = directory / f"{name}.{fmt}"
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        elif fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            raise ValueError(f"unsupported format {fmt!r}")
    return directory


def sort_events(interactions: pd.DataFrame) -> pd.DataFrame:
    """Events in time order; ties keep their order of arrival (stable sort)."""
    return interactions.sort_values(["timestamp"], kind="stable").reset_index(drop=True)


def build_sequences(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's item ids, oldest first."""
    ordered = sort_events(interactions)
    items = ordered["item_id"].to_numpy(dtype=object)
    # groupby(...).indices keeps each user's rows in order; one take per user is much cheaper
    # than iterating the groups of a string column.
    indices = ordered.groupby("user_id", sort=False).indices
    by_first_event = sorted(indices.items(), key=lambda entry: entry[1][0])
    return {user: items[rows].tolist() for user, rows in by_first_event}


@dataclass
class EvalCases:
    """One held-out next item per user, with the history that precedes it."""

    user_ids: list[str]
    histories: list[list[str]]
    targets: list[str]
    scope: str = ""  # what the cases are drawn from, for reports (e.g. "previous window")

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, n: int, seed: int) -> EvalCases:
        """A seeded sample of ``n`` cases (all of them when ``n`` is 0 or too large)."""
        if n <= 0 or n >= len(self):
            return self
        index = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return EvalCases(
            [self.user_ids[i] for i in index],
            [self.histories[i] for i in index],
            [self.targets[i] for i in index],
            scope=self.scope,
        )


def recent_since(interactions: pd.DataFrame, fraction: float, width: int | None = None) -> int:
    """Where the recent window of ``interactions`` starts: ``width`` before their last timestamp
    when given, else the last ``fraction`` of the period they span (timestamps may be positions,
    so a share of the span is the safe default). 0 when there are none."""
    timestamps = interactions["timestamp"].to_numpy(dtype=np.int64)
    if timestamps.size == 0:
        return 0
    last, first = int(timestamps.max()), int(timestamps.min())
    return int(np.floor(last - (width if width is not None else fraction * (last - first))))


def last_events(batch: pd.DataFrame) -> pd.DataFrame:
    """The last event (in time order) of every user in ``batch``: the events
    :func:`holdout_last_events` holds out of it. Index labels are ``batch``'s."""
    return sort_events(batch).groupby("user_id", sort=False).tail(1)


def holdout_last_events(prior: pd.DataFrame, batch: pd.DataFrame) -> tuple[pd.DataFrame, EvalCases]:
    """Split an arriving batch for a fair candidate-vs-champion comparison.

    The last event of every user active in ``batch`` is held out as that user's test target; its
    history is everything the user did before it (earlier batches and the rest of this one). Returns
    the training interactions (``prior`` plus the batch minus the held-out events) and the cases.
    Users whose held-out event has no history are dropped from the cases: nothing to personalise.
    """
    batch = sort_events(batch)
    held_out = last_events(batch)
    last_index = held_out.index
    train = pd.concat([prior, batch.drop(index=last_index)], ignore_index=True)
    sequences = build_sequences(train)
    users, histories, targets = [], [], []
    for user, item in zip(held_out["user_id"], held_out["item_id"], strict=True):
        history = sequences.get(user, [])
        if history:
            users.append(user)
            histories.append(history)
            targets.append(item)
    return train, EvalCases(users, histories, targets)


def split_windows(
    interactions: pd.DataFrame, windows: int, base_fraction: float
) -> list[pd.DataFrame]:
    """Cut a history into ``windows`` consecutive batches by time.

    With one window the whole history is one batch. Otherwise the first batch holds
    ``base_fraction`` of the events (the history the first model is trained on) and the rest is cut
    into ``windows - 1`` batches of equal event counts. Events with equal timestamps never straddle
    a cut, so a batch boundary is a real point in time.
    """
    if windows < 1:
        raise ValueError("windows must be at least 1")
    ordered = sort_events(interactions)
    n = len(ordered)
    if windows == 1:
        return [ordered]
    cuts = [int(round(base_fraction * n))]
    rest = n - cuts[0]
    cuts += [cuts[0] + int(round(rest * i / (windows - 1))) for i in range(1, windows - 1)]
    timestamps = ordered["timestamp"].to_numpy()
    # Move each cut forward past events sharing the timestamp just before it.
    snapped = []
    for cut in cuts:
        while 0 < cut < n and timestamps[cut] == timestamps[cut - 1]:
            cut += 1
        snapped.append(cut)
    bounds = [0, *snapped, n]
    parts = [ordered.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(bounds)]
    if any(part.empty for part in parts):
        raise ValueError(
            f"cannot cut {n} events into {windows} non-empty time windows "
            "(too few distinct timestamps)"
        )
    return parts


def items_for(items: pd.DataFrame, item_ids: Iterable[str]) -> pd.DataFrame:
    """The rows of ``items`` for ``item_ids`` (those present)."""
    wanted = set(item_ids)
    return items[items["item_id"].isin(wanted)].reset_index(drop=True)
