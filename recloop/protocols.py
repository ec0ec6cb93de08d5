"""Offline evaluation protocols: how a dataset is cut into training data and held-out cases.

Two protocols, both on the canonical interactions (``recloop.data``), events in
time order with ties kept in their order of arrival (``recloop.data.sort_events``):

- ``loo`` (leave last out, as in the SASRec and BERT4Rec papers): per user, the last event is the
  test target and the one before it the validation target. Users with fewer than 3 events
  contribute training data only: with 2 events there would be no training event left before the
  validation target, and a case without history cannot be personalised.
- ``temporal``: the history is cut by time into a base period and K evaluation windows
  (``recloop.data.split_windows``: base ``base_fraction`` of the events, the rest in K windows of
  equal event counts, never cutting between equal timestamps). Window ``w`` is tested on what
  follows the training data, with the model frozen. Two case sets (``targets``):

  - ``"first"``: for every user active in window ``w`` who has events before it, the user's
    first event in the window is the target and their events before the window the history: the
    *next event after the training data*, nothing in the history that no model has seen.
  - ``"all"``: every event in window ``w`` is a target, its history everything the user did
    before it, earlier events of the same window included (as input only: no model trains on
    them, as a deployed model keeps serving while the window's events arrive). Only an event
    with no history at all is skipped. On data where few users span two windows (MovieLens:
    9-28 "first" cases per window, ~12,000 "all" cases) this is the set with enough cases to
    tell models apart.

  The validation cases are the same construction on the period just before window ``w``: the
  previous window, or for the first window the tail of the base period holding as many events
  as window 1.

Every :class:`Split` carries two training sets: ``train`` (nothing from the validation period or
later, what a model early-stopped on ``validation`` is fitted on) and ``train_full`` (everything
before the test targets: what baselines for the test cases are fitted on and what a model is
retrained on before the test). Test histories run up to the test targets, so they include the
validation events a model fitted on ``train`` never trained on — as in the original SASRec
protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recloop.data import EvalCases, build_sequences, sort_events, split_windows

logger = logging.getLogger(__name__)

PROTOCOLS = ("loo", "temporal")
TEMPORAL_TARGETS = ("first", "all")  # which window events are test targets (module docstring)
LOO_MIN_EVENTS = 3  # fewer events per user: training data only (see the module docstring)


@dataclass
class Split:
    """One train / validation / test cut of a dataset (see the module docstring)."""

    train: pd.DataFrame  # events before the validation period: fit with early stopping on these
    validation: EvalCases  # targets right after ``train``, histories from ``train``
    test: EvalCases  # targets right after ``train_full``, histories from ``train_full``
    train_full: pd.DataFrame  # every event before the test targets (train + validation period)
    name: str  # "loo", "temporal-1of3", ...

    def summary(self) -> dict[str, Any]:
        """Sizes, for reports and logs."""
        return {
            "name": self.name,
            "train_events": len(self.train),
            "train_full_events": len(self.train_full),
            "train_users": int(self.train["user_id"].nunique()),
            "validation_cases": len(self.validation),
            "test_cases": len(self.test),
        }


def _cases(sequences: dict[str, list[str]], targets: pd.DataFrame) -> EvalCases:
    """One case per row of ``targets`` whose user has a history; cases ordered by user id."""
    chosen = sorted(
        (user, item)
        for user, item in zip(targets["user_id"], targets["item_id"], strict=True)
        if sequences.get(user)
    )
    return EvalCases(
        [user for user, _ in chosen],
        [list(sequences[user]) for user, _ in chosen],
        [item for _, item in chosen],
    )


def loo_split(interactions: pd.DataFrame) -> Split:
    """Leave last out: per user the last event is the test, the one before it the validation.

    Users with fewer than ``LOO_MIN_EVENTS`` (3) events contribute only training data. ``train``
    holds every event before each user's validation target (all events of the short users);
    ``train_full`` adds the validation targets. Cases are ordered by user id.
    """
    ordered = sort_events(interactions)
    users = ordered.groupby("user_id", sort=False)
    from_end = users.cumcount(ascending=False).to_numpy()  # 0 = the user's last event
    eligible = (users["item_id"].transform("size") >= LOO_MIN_EVENTS).to_numpy()
    is_test = eligible & (from_end == 0)
    is_validation = eligible & (from_end == 1)

    train = ordered[~(is_test | is_validation)].reset_index(drop=True)
    train_full = ordered[~is_test].reset_index(drop=True)
    validation = _cases(build_sequences(train), ordered[is_validation])
    test = _cases(build_sequences(train_full), ordered[is_test])
    logger.info(
        "loo: %d users with >= %d events -> %d test cases; %d training events",
        int(is_test.sum()),
        LOO_MIN_EVENTS,
        len(test),
        len(train),
    )
    return Split(train=train, validation=validation, test=test, train_full=train_full, name="loo")


def _first_event_cases(before: pd.DataFrame, window: pd.DataFrame) -> EvalCases:
    """Each user's first event in ``window`` as the target, their events in ``before`` as history.

    Users with no event in ``before`` are skipped.
    """
    firsts = sort_events(window).groupby("user_id", sort=False).head(1)
    return _cases(build_sequences(before), firsts)


def _all_event_cases(before: pd.DataFrame, window: pd.DataFrame) -> EvalCases:
    """Every event in ``window`` as a target, the user's events before it (in ``before`` and
    earlier in ``window``) as history. Events without any history are skipped; cases are ordered
    by user id, then time."""
    running = build_sequences(before)
    chosen: list[tuple[str, int, list[str], str]] = []
    ordered = sort_events(window)
    for index, (user, item) in enumerate(zip(ordered["user_id"], ordered["item_id"], strict=True)):
        history = running.setdefault(user, [])
        if history:
            chosen.append((user, index, list(history), item))
        history.append(item)
    chosen.sort(key=lambda case: (case[0], case[1]))
    return EvalCases(
        [case[0] for case in chosen], [case[2] for case in chosen], [case[3] for case in chosen]
    )


def _window_cases(before: pd.DataFrame, window: pd.DataFrame, targets: str) -> EvalCases:
    """The test cases of ``window`` after ``before`` (``targets``: "first" or "all")."""
    if targets == "all":
        return _all_event_cases(before, window)
    return _first_event_cases(before, window)


def _tail(period: pd.DataFrame, n_events: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Cut ``period`` into (head, tail) with about ``n_events`` in the tail, on a timestamp
    boundary; None when no such cut leaves both parts non-empty."""
    n = len(period)
    if n_events <= 0 or n_events >= n:
        return None
    try:
        head, tail = split_windows(period, 2, (n - n_events) / n)
    except ValueError:  # every cut falls inside a run of equal timestamps
        return None
    return head, tail


def temporal_split(
    interactions: pd.DataFrame, windows: int, base_fraction: float, targets: str = "first"
) -> list[Split]:
    """Cut by time into a base period and ``windows`` evaluation windows; one Split per window.

    For window ``w`` (1-based): ``train_full`` is every event before it; ``test`` is, with
    ``targets="first"``, for each user active in the window with earlier events, their first event
    in the window (history: their events before the window); with ``targets="all"`` every window
    event that has a history (history: everything before it, earlier window events included).
    ``validation`` is the same construction on the period before window ``w`` (window ``w - 1``,
    or for ``w = 1`` the base period's tail with as many events as window 1; empty when the base
    cannot be cut there), and ``train`` every event before that period. Cases are ordered by user
    id (then time).
    """
    if targets not in TEMPORAL_TARGETS:
        raise ValueError(
            f"unknown temporal targets {targets!r} (use one of: {', '.join(TEMPORAL_TARGETS)})"
        )
    if windows < 1:
        raise ValueError(f"temporal protocol needs at least 1 evaluation window, got {windows}")
    if not 0.0 < base_fraction < 1.0:
        raise ValueError(f"base_fraction must be in (0, 1), got {base_fraction}")
    parts = split_windows(interactions, windows + 1, base_fraction)  # base + the windows
    splits = []
    for w in range(1, windows + 1):
        train_full = pd.concat(parts[:w], ignore_index=True)
        test = _window_cases(train_full, parts[w], targets)
        if w > 1:
            train = pd.concat(parts[: w - 1], ignore_index=True)
            validation = _window_cases(train, parts[w - 1], targets)
        else:
            cut = _tail(parts[0], len(parts[1]))
            if cut is None:
                logger.warning("temporal: the base period is too short to validate window 1 on")
                train, validation = train_full, EvalCases([], [], [])
            else:
                train = cut[0]
                validation = _window_cases(train, cut[1], targets)
        split = Split(
            train=train,
            validation=validation,
            test=test,
            train_full=train_full,
            name=f"temporal-{w}of{windows}" + ("" if targets == "first" else f"-{targets}"),
        )
        logger.info(
            "%s: window of %d events from t=%d, %d test cases, %d training events",
            split.name,
            len(parts[w]),
            int(parts[w]["timestamp"].iloc[0]),
            len(test),
            len(train_full),
        )
        splits.append(split)
    return splits


def make_splits(
    interactions: pd.DataFrame,
    protocol: str,
    windows: int = 3,
    base_fraction: float = 0.5,
    targets: str = "first",
) -> list[Split]:
    """The splits of ``protocol``: one for ``loo`` (``windows``, ``base_fraction`` and
    ``targets`` unused), ``windows`` for ``temporal``."""
    if protocol == "loo":
        return [loo_split(interactions)]
    if protocol == "temporal":
        return temporal_split(interactions, windows, base_fraction, targets)
    raise ValueError(f"unknown protocol {protocol!r} (use one of: {', '.join(PROTOCOLS)})")
