"""The evaluation protocols on hand-built datasets with known answers (issue 3, item 3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from models.sasrec import Recommender, SeqRec
from recloop.baselines import ItemTransitions, Popularity
from recloop.cli import app
from recloop.config import RecommenderConfig
from recloop.data import Dataset, EvalCases, write_dataset
from recloop.evaluation import evaluate_scorer
from recloop.protocols import PROTOCOLS, Split, loo_split, make_splits, temporal_split

pytestmark = pytest.mark.unit


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype(
        {"timestamp": "int64"}
    )


def events(df: pd.DataFrame) -> list[tuple[str, str, int]]:
    """Rows as sorted tuples: the protocols promise contents, not a row order across users."""
    return sorted(zip(df["user_id"], df["item_id"], df["timestamp"].astype(int), strict=True))


def as_tuples(cases: EvalCases) -> list[tuple[str, list[str], str]]:
    return list(zip(cases.user_ids, cases.histories, cases.targets, strict=True))


# Rows deliberately out of time order. b's i3 and i5 share timestamp 4 and arrived in that order,
# so i5 is b's last event. c (2 events) and d (1 event) are too short for leave-last-out.
LOO_ROWS = [
    ("c", "i5", 6),
    ("a", "i4", 5),
    ("b", "i3", 4),
    ("a", "i1", 1),
    ("b", "i5", 4),
    ("d", "i4", 3),
    ("a", "i3", 3),
    ("c", "i3", 1),
    ("b", "i2", 2),
    ("a", "i2", 2),
]
CATALOGUE = ["i1", "i2", "i3", "i4", "i5", "i6"]  # i6: never interacted with


@pytest.fixture
def loo() -> Split:
    return loo_split(frame(LOO_ROWS))


def test_loo_holds_out_the_last_two_events_of_users_with_three_or_more(loo: Split) -> None:
    assert loo.name == "loo"
    assert as_tuples(loo.test) == [
        ("a", ["i1", "i2", "i3"], "i4"),
        ("b", ["i2", "i3"], "i5"),  # the tie at t=4 resolved by arrival order
    ]
    assert as_tuples(loo.validation) == [
        ("a", ["i1", "i2"], "i3"),
        ("b", ["i2"], "i3"),
    ]
    assert events(loo.train) == [
        ("a", "i1", 1),
        ("a", "i2", 2),
        ("b", "i2", 2),
        ("c", "i3", 1),  # short users: every event is training data
        ("c", "i5", 6),
        ("d", "i4", 3),
    ]
    assert events(loo.train_full) == sorted([*events(loo.train), ("a", "i3", 3), ("b", "i3", 4)])
    assert loo.train["timestamp"].is_monotonic_increasing
    assert loo.summary() == {
        "name": "loo",
        "train_events": 6,
        "train_full_events": 8,
        "train_users": 4,
        "validation_cases": 2,
        "test_cases": 2,
    }


def test_loo_keeps_extra_columns_and_handles_no_eligible_user() -> None:
    df = frame([("u", "x", 1), ("u", "y", 2)]).assign(rating=[4.0, 5.0])
    split = loo_split(df)
    assert len(split.test) == len(split.validation) == 0
    assert list(split.train.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert len(split.train) == len(split.train_full) == 2


# 12 events. With 2 windows and base_fraction 0.5 the cuts fall after 6 events and after 9, but
# events 9 and 10 share t=8, so the second cut moves to 10: base = t1..6, window 1 = t7..8 (4
# events), window 2 = t9..10. u3 is active only in the base, u4 first appears in window 1.
TEMPORAL_ROWS = [
    ("u1", "i1", 1),
    ("u2", "i2", 2),
    ("u1", "i2", 3),
    ("u3", "i3", 4),
    ("u2", "i3", 5),
    ("u1", "i3", 6),
    ("u1", "i4", 7),
    ("u4", "i1", 7),
    ("u2", "i4", 8),
    ("u1", "i5", 8),
    ("u2", "i5", 9),
    ("u1", "i6", 10),
]


def test_temporal_tests_each_window_on_the_next_event_after_the_training_data() -> None:
    df = frame(TEMPORAL_ROWS).sample(frac=1.0, random_state=0)  # arrival order must not matter
    first, second = temporal_split(df, windows=2, base_fraction=0.5)
    assert [first.name, second.name] == ["temporal-1of2", "temporal-2of2"]

    base = [(u, i, t) for u, i, t in TEMPORAL_ROWS if t <= 6]
    window_1 = [(u, i, t) for u, i, t in TEMPORAL_ROWS if 7 <= t <= 8]
    assert events(first.train_full) == sorted(base)
    # u1's first event in window 1 is i4 (not i5, later in the window); u4 has no history.
    assert as_tuples(first.test) == [
        ("u1", ["i1", "i2", "i3"], "i4"),
        ("u2", ["i2", "i3"], "i4"),
    ]
    # Window 1's validation period is the base's last 4 events (t3..6), trained on t1..2.
    assert events(first.train) == sorted(base[:2])
    assert as_tuples(first.validation) == [("u1", ["i1"], "i2"), ("u2", ["i2"], "i3")]

    assert events(second.train_full) == sorted(base + window_1)
    assert as_tuples(second.test) == [
        ("u1", ["i1", "i2", "i3", "i4", "i5"], "i6"),
        ("u2", ["i2", "i3", "i4"], "i5"),
    ]
    # Window 2 validates on window 1, exactly as window 1 was tested, and trains on the base.
    assert events(second.train) == sorted(base)
    assert as_tuples(second.validation) == as_tuples(first.test)


def test_temporal_all_targets_score_every_window_event_with_the_model_frozen() -> None:
    df = frame(TEMPORAL_ROWS).sample(frac=1.0, random_state=0)
    first, second = temporal_split(df, windows=2, base_fraction=0.5, targets="all")
    assert [first.name, second.name] == ["temporal-1of2-all", "temporal-2of2-all"]
    # Training data is the same as with "first" targets: only the case sets differ.
    plain = temporal_split(df, windows=2, base_fraction=0.5)
    assert events(first.train_full) == events(plain[0].train_full)
    assert events(second.train) == events(plain[1].train)
    # Window 1: u1's second window event (i5) is a target too, with i4 (same window) in its
    # history; u4's only event has no history and is skipped.
    assert as_tuples(first.test) == [
        ("u1", ["i1", "i2", "i3"], "i4"),
        ("u1", ["i1", "i2", "i3", "i4"], "i5"),
        ("u2", ["i2", "i3"], "i4"),
    ]
    # Validation on the base's tail (t3..6) after t1..2: u3's first event has no history.
    assert as_tuples(first.validation) == [
        ("u1", ["i1"], "i2"),
        ("u1", ["i1", "i2"], "i3"),
        ("u2", ["i2"], "i3"),
    ]
    assert as_tuples(second.test) == [
        ("u1", ["i1", "i2", "i3", "i4", "i5"], "i6"),
        ("u2", ["i2", "i3", "i4"], "i5"),
    ]
    assert as_tuples(second.validation) == as_tuples(first.test)
    with pytest.raises(ValueError, match="temporal targets"):
        temporal_split(df, windows=2, base_fraction=0.5, targets="last")


def test_temporal_first_window_without_room_to_validate() -> None:
    # The base (t=1, one timestamp) cannot be cut: no validation cases, train = train_full.
    df = frame([("u1", "i1", 1), ("u2", "i2", 1), ("u1", "i3", 2), ("u2", "i1", 3)])
    (split,) = temporal_split(df, windows=1, base_fraction=0.5)
    assert len(split.validation) == 0
    assert events(split.train) == events(split.train_full) == [("u1", "i1", 1), ("u2", "i2", 1)]
    assert as_tuples(split.test) == [("u1", ["i1"], "i3"), ("u2", ["i2"], "i1")]


def test_make_splits_dispatches_and_rejects_bad_arguments() -> None:
    df = frame(TEMPORAL_ROWS)
    assert PROTOCOLS == ("loo", "temporal")
    assert [s.name for s in make_splits(df, "loo")] == ["loo"]
    temporal = make_splits(df, "temporal", windows=2, base_fraction=0.5)
    assert [s.name for s in temporal] == ["temporal-1of2", "temporal-2of2"]
    with pytest.raises(ValueError, match="unknown protocol 'random'"):
        make_splits(df, "random")
    with pytest.raises(ValueError, match="at least 1"):
        make_splits(df, "temporal", windows=0)
    with pytest.raises(ValueError, match="base_fraction"):
        make_splits(df, "temporal", windows=2, base_fraction=1.0)
    with pytest.raises(ValueError, match="non-empty time windows"):
        make_splits(df, "temporal", windows=20)


# Known answers on the LOO split, baselines fitted on train_full (a: i1 i2 i3, b: i2 i3,
# c: i3 i5, d: i4). Popularity counts: i1 1, i2 2, i3 3, i4 1, i5 1, i6 0. History excluded,
# ties pessimistic (every other item scoring >= the target ranks above it).
# - popularity, a (history i1 i2 i3 -> i4): i4 1, i5 1, i6 0 -> i5 ties above: rank 1.
# - popularity, b (history i2 i3 -> i5): i1 1, i4 1, i5 1, i6 0 -> i1 and i4 tie above: rank 2.
# - transitions (i1->i2, i2->i3 twice, i3->i5; each row sums to 1; last item weight 1, the one
#   before 1/2, then 1/3, plus a far smaller popularity tie-breaker):
#   a: from i3 -> i5 scores 1, above i4 (tie-breaker only): rank 1.
#   b: from i3 -> i5 scores 1: rank 0.
L3, L4 = math.log2(3), math.log2(4)
KNOWN = {
    "popularity": {
        "ndcg_at_1": 0.0,
        "recall_at_1": 0.0,
        "ndcg_at_3": (1 / L3 + 1 / L4) / 2,
        "recall_at_3": 1.0,
        "mrr": (1 / 2 + 1 / 3) / 2,
    },
    "transitions": {
        "ndcg_at_1": 0.5,
        "recall_at_1": 0.5,
        "ndcg_at_3": (1 / L3 + 1.0) / 2,
        "recall_at_3": 1.0,
        "mrr": (1 / 2 + 1) / 2,
    },
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_baselines_on_the_loo_split_have_hand_computed_metrics(loo: Split, name: str) -> None:
    if name == "popularity":
        scorer = Popularity(loo.train_full, CATALOGUE)
    else:
        scorer = ItemTransitions(loo.train_full, CATALOGUE, window=3)
    out = evaluate_scorer(scorer, loo.test, CATALOGUE, ks=(1, 3))
    assert out["n_cases"] == 2 and out["n_target_in_history"] == out["n_target_unknown"] == 0
    for metric, expected in KNOWN[name].items():
        assert out[metric] == pytest.approx(expected), metric


# -- recloop evaluate with a checkpoint file (the registry path is in tests/model) ---------------


def write_data(rows: list[tuple[str, str, int]], path: Path) -> Path:
    items = pd.DataFrame({"item_id": CATALOGUE, "title": CATALOGUE, "text": ""})
    return write_dataset(Dataset(items, frame(rows)), path)


def tiny_checkpoint(path: Path) -> Path:
    """An untrained but real recommender over the catalogue, saved as a checkpoint file."""
    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=8, num_layers=1, num_heads=2, max_seq_len=8, dropout=0)
    model = SeqRec(config, num_items=len(CATALOGUE), text_dim=4)
    return Recommender(model, CATALOGUE).save(path)


def table_rows(output: str) -> dict[tuple[str, str], list[str]]:
    """``(split, model) -> cells`` from the table (log lines on stderr may be mixed in)."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("split "))
    rows = {}
    for line in lines[header + 2 :]:
        cells = line.split()
        if len(cells) == 8 and cells[0] in {"loo", "mean"} | {f"temporal-{w}of2" for w in (1, 2)}:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_evaluate_command_with_a_checkpoint_file(tmp_path: Path) -> None:
    data = write_data(LOO_ROWS, tmp_path / "data")
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    home = tmp_path / "home"
    args = ["evaluate", "--data", str(data), "--model", str(checkpoint), "--home", str(home)]
    result = CliRunner().invoke(app, [*args, "--protocol", "loo"])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert list(rows) == [
        ("loo", name) for name in ("model", "popularity", "recent_popularity", "transitions")
    ]
    # columns: ndcg@10 ndcg@20 recall@10 recall@20 mrr cases; 6 items, so every target is in top 10
    assert float(rows[("loo", "popularity")][0]) == pytest.approx((1 / L3 + 1 / L4) / 2, abs=1e-4)
    assert float(rows[("loo", "transitions")][4]) == pytest.approx(0.75, abs=1e-4)
    assert all(cells[2] == "1.0000" and cells[5] == "2" for cells in rows.values())

    (report_path,) = (home / "reports").glob("evaluate-loo-*.json")
    report = json.loads(report_path.read_text())
    assert report["protocol"] == "loo" and report["model_uri"] == str(checkpoint)
    (split,) = report["splits"]
    assert split["name"] == "loo" and split["test_cases"] == 2 and report["mean"] is None
    assert split["rows"]["popularity"]["mrr"] == pytest.approx(KNOWN["popularity"]["mrr"])
    assert split["rows"]["transitions"]["ndcg_at_10"] == pytest.approx((1 / L3 + 1) / 2)
    assert split["rows"]["model"]["n_cases"] == 2

    args[2] = str(write_data(TEMPORAL_ROWS, tmp_path / "temporal"))
    temporal = CliRunner().invoke(app, [*args, "--protocol", "temporal", "--windows", "2"])
    assert temporal.exit_code == 0, temporal.output
    rows = table_rows(temporal.output)
    assert {split for split, _ in rows} == {"temporal-1of2", "temporal-2of2", "mean"}
    assert rows[("mean", "model")][5] == "4"  # 2 cases per window
    (report_path,) = (home / "reports").glob("evaluate-temporal-*.json")
    report = json.loads(report_path.read_text())
    assert [s["name"] for s in report["splits"]] == ["temporal-1of2", "temporal-2of2"]
    assert report["windows"] == 2 and report["mean"]["rows"]["model"]["n_cases"] == 4


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--protocol", "random"], "unknown protocol 'random'"),
        (["--data", "missing"], "no items.parquet or items.csv"),
        ([], "no model registry at"),
        (["--model", "model.pt"], "not a recloop checkpoint"),
    ],
)
def test_evaluate_command_fails_with_one_line(
    tmp_path: Path, extra: list[str], reason: str
) -> None:
    data = write_data(LOO_ROWS, tmp_path / "data")
    (tmp_path / "model.pt").write_text("not a checkpoint")
    (tmp_path / "missing").mkdir()
    args = ["evaluate", "--data", str(data), "--home", str(tmp_path / "home"), *extra]
    args = [str(tmp_path / a) if a in {"missing", "model.pt"} else a for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recloop: ") and reason in lines[0], lines
    assert not (tmp_path / "home" / "mlflow.db").exists()  # no registry created on the way
