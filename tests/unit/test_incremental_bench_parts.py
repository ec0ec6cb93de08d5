"""The incremental benchmark's pieces on hand-built data: windows, new items, top-k, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.incremental import (
    BASELINES,
    ROWS,
    ServedLine,
    after_gate,
    build_timeline,
    new_item_cases,
    new_item_share,
    next_window_metrics,
    summarise,
    top_k_items,
)
from recloop.cli import app
from recloop.config import load_config
from recloop.data import Dataset, EvalCases

pytestmark = pytest.mark.unit

CATALOGUE = [f"i{j:02d}" for j in range(15)]


class FixedScorer:
    """Scores every item by a fixed number whatever the history: i00 best, i14 worst."""

    def __init__(self, item_ids: list[str]) -> None:
        self.item_ids = item_ids

    def score(self, histories: list[list[str]]) -> np.ndarray:
        row = -np.array([float(item[1:]) for item in self.item_ids])
        return np.tile(row, (len(histories), 1))


def test_top_k_excludes_history_and_unknown_items() -> None:
    # The scorer does not know i01: it is never recommended, even though it would rank second.
    scorer = FixedScorer([i for i in CATALOGUE if i != "i01"])
    tops = top_k_items(scorer, [["i00", "i05"], []], CATALOGUE, k=3)
    assert tops == [["i02", "i03", "i04"], ["i00", "i02", "i03"]]


def test_new_item_share_pools_every_list() -> None:
    assert new_item_share([["a", "b"], ["c", "a"]], {"a"}) == pytest.approx(2 / 4)
    assert new_item_share([["a", "b", "c"], ["d"]], {"d", "x"}) == pytest.approx(1 / 4)
    assert math.isnan(new_item_share([[], []], {"a"}))


def test_new_item_cases_keep_only_new_targets() -> None:
    cases = EvalCases(["u1", "u2", "u3"], [["a"], ["b"], ["c"]], ["n1", "old", "n2"])
    picked = new_item_cases(cases, {"n1", "n2"})
    assert picked.user_ids == ["u1", "u3"] and picked.targets == ["n1", "n2"]
    assert picked.histories == [["a"], ["c"]]


def test_next_window_metrics_by_hand() -> None:
    """New items i03 and i12; the fixed ranking is i00, i01, ... minus each history.

    u1 (history i00) gets i01..i10: i03 is its target, a hit at rank 3 (0-based 2).
    u2 (history i01) gets i00, i02..i10: target i12 ranks 11th (0-based 11): a miss.
    u3 (history i02, i03) gets i00, i01, i04..i11: target i05 is old, a hit at 0-based rank 3.
    New-item share: u1 and u2 each list i03 once, u3 none: 2 of 30 recommendations.
    New-item recall@10: the cases with a new target are u1 (hit) and u2 (miss): 1/2.
    """
    cases = EvalCases(["u1", "u2", "u3"], [["i00"], ["i01"], ["i02", "i03"]], ["i03", "i12", "i05"])
    config = load_config()
    out = next_window_metrics(FixedScorer(CATALOGUE), cases, CATALOGUE, {"i03", "i12"}, config)
    assert out["new_item_share_at_10"] == pytest.approx(2 / 30)
    assert out["new_item_recall_at_10"] == pytest.approx(0.5)
    assert out["n_new_item_cases"] == 2
    assert out["recall_at_10"] == pytest.approx(2 / 3)
    assert out["ndcg_at_10"] == pytest.approx((1 / np.log2(4) + 1 / np.log2(5)) / 3)
    # No case with a new target: the new-item recall is missing, not zero.
    none = next_window_metrics(FixedScorer(CATALOGUE), cases, CATALOGUE, {"i14"}, config)
    assert math.isnan(none["new_item_recall_at_10"]) and none["n_new_item_cases"] == 0


def _timeline_dataset() -> Dataset:
    """16 events at t = 1..16 for users u1..u4: base t 1-8 (items a, b, c), window 1 t 9-12
    (introduces d), window 2 t 13-16 (introduces e). Item f is never interacted with."""
    rows = [
        ("u1", "a"), ("u2", "b"), ("u3", "a"), ("u4", "c"),
        ("u1", "b"), ("u2", "c"), ("u3", "b"), ("u4", "a"),
        ("u1", "d"), ("u2", "a"), ("u3", "d"), ("u1", "c"),
        ("u2", "e"), ("u1", "e"), ("u4", "b"), ("u3", "c"),
    ]  # fmt: skip
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id"])
    interactions["timestamp"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    items = pd.DataFrame({"item_id": list("fedcba"), "title": list("FEDCBA"), "text": [""] * 6})
    return Dataset(items, interactions)


def test_timeline_windows_catalogue_and_cases() -> None:
    timeline = build_timeline(_timeline_dataset(), updates=1, base_fraction=0.5, targets="first")
    assert [len(p) for p in timeline.parts] == [8, 4, 4]
    # Items arrive with the first window naming them (never-used f with the base), table order.
    assert timeline.catalogue(0) == ["f", "c", "b", "a"]
    assert timeline.catalogue(1) == ["f", "c", "b", "a", "d"]
    assert timeline.new_items(1) == {"d"}
    assert len(timeline.train(1)) == 12
    # Next window (t 13-16): each user's first event there, history = everything before.
    nxt = timeline.next_cases(1)
    assert list(zip(nxt.user_ids, nxt.targets, strict=True)) == [
        ("u1", "e"),
        ("u2", "e"),
        ("u3", "c"),
        ("u4", "b"),
    ]
    assert nxt.histories[0] == ["a", "b", "d", "c"]
    # The window the update learns (t 9-12) and the base tail before it (t 5-8).
    learned = timeline.update_cases(1)
    assert list(zip(learned.user_ids, learned.targets, strict=True)) == [
        ("u1", "d"),
        ("u2", "a"),
        ("u3", "d"),
    ]
    before = timeline.before_cases(1)
    assert list(zip(before.user_ids, before.targets, strict=True)) == [
        ("u1", "b"),
        ("u2", "c"),
        ("u3", "b"),
        ("u4", "a"),
    ]


def test_timeline_all_targets_add_later_window_events() -> None:
    timeline = build_timeline(_timeline_dataset(), updates=1, base_fraction=0.5)  # "all"
    # Every user has one event in the next window: the same cases as "first".
    assert timeline.next_cases(1).targets == ["e", "e", "c", "b"]
    # u1 has two events in the learned window (t 9 and 12): the second is a case too, with the
    # first in its history.
    learned = timeline.update_cases(1)
    assert list(zip(learned.user_ids, learned.targets, strict=True)) == [
        ("u1", "d"),
        ("u1", "c"),
        ("u2", "a"),
        ("u3", "d"),
    ]
    assert learned.histories[1] == ["a", "b", "d"]


def test_timeline_pending_windows() -> None:
    timeline = build_timeline(_timeline_dataset(), updates=1, base_fraction=0.5)
    assert timeline.pending(0, 1)["timestamp"].tolist() == [9, 10, 11, 12]
    assert timeline.pending(0, 2)["timestamp"].tolist() == list(range(9, 17))
    assert timeline.pending(1, 2)["timestamp"].tolist() == [13, 14, 15, 16]
    with pytest.raises(ValueError, match="nothing pending"):
        timeline.pending(1, 1)


# Stand-ins: the served line only passes models around.
M0, L1, L2, L3 = "M0", "L1", "L2", "L3"


def _fitted(step: int) -> dict[str, str]:
    return {name: f"{name}@{step}" for name in BASELINES}


def test_served_line_starts_with_the_initial_model() -> None:
    line = ServedLine.initial(M0)
    assert (line.champion, line.kind, line.name) == (M0, "learned", "initial")
    assert (line.parent, line.parent_name, line.learned) == (M0, "initial", 0)


def test_after_gate_promoted_candidate_serves_and_is_the_next_parent() -> None:
    line = after_gate(ServedLine.initial(M0), "candidate", 1, L1, _fitted(1))
    assert (line.champion, line.kind, line.name) == (L1, "learned", "learned 1")
    assert (line.parent, line.parent_name, line.learned) == (L1, "learned 1", 1)


def test_after_gate_kept_learned_champion_stays_parent_and_leaves_the_window_pending() -> None:
    line = after_gate(ServedLine.initial(M0), "champion", 1, L1, _fitted(1))
    assert (line.champion, line.kind, line.name) == (M0, "learned", "initial")
    # The rejected candidate is not the parent: the product starts from the champion.
    assert (line.parent, line.parent_name, line.learned) == (M0, "initial", 0)


def test_after_gate_baseline_serves_and_the_newest_candidate_is_the_next_parent() -> None:
    line = after_gate(ServedLine.initial(M0), "transitions", 1, L1, _fitted(1))
    assert (line.champion, line.kind, line.name) == (
        "transitions@1",
        "baseline:transitions",
        "transitions 1",
    )
    # Registered with the candidate's lineage: window 1 is learned.
    assert (line.parent, line.parent_name, line.learned) == (L1, "learned 1", 1)
    # The baseline kept at update 2: still serving, window 2 pending, the parent is now L2.
    kept = after_gate(line, "champion", 2, L2, _fitted(2))
    assert (kept.champion, kept.kind, kept.name) == (line.champion, line.kind, line.name)
    assert (kept.parent, kept.parent_name, kept.learned) == (L2, "learned 2", 1)
    # Replaced by another baseline fitted at update 3.
    other = after_gate(kept, "popularity", 3, L3, _fitted(3))
    assert (other.champion, other.kind, other.parent, other.learned) == (
        "popularity@3",
        "baseline:popularity",
        L3,
        3,
    )


def test_after_gate_rejects_an_unknown_winner() -> None:
    with pytest.raises(ValueError, match="neither a model nor a fitted baseline"):
        after_gate(ServedLine.initial(M0), "oracle", 1, L1, _fitted(1))


def _step(window: int, ndcg: dict[str, float]) -> dict:
    """A step with only what summarise reads: next-window NDCG@10 per row, training figures."""
    training = {"wall_seconds": 1.0, "cpu_seconds": 1.0, "steps": 10}
    rows = {name: {"next": {"ndcg_at_10": ndcg.get(name, 0.1), "n_cases": 5}} for name in ROWS}
    for name in ("incremental", "full", "learned"):
        rows[name]["training"] = dict(training)
    return {"window": window, "rows": rows}


def test_summarise_served_against_each_windows_best_baseline() -> None:
    """Window 1: best baseline transitions 0.2, served 0.22 = 1.1x (at target).
    Window 2: best baseline popularity 0.4, served 0.3 = 0.75x (below)."""
    steps = [
        _step(1, {"served": 0.22, "popularity": 0.1, "transitions": 0.2}),
        _step(2, {"served": 0.3, "popularity": 0.4, "transitions": 0.2}),
    ]
    mean, targets = summarise(steps)
    assert mean["served"]["ndcg_at_10"] == pytest.approx(0.26)
    assert targets["served_best_baselines"] == ["transitions", "popularity"]
    assert targets["served_vs_best_baseline_windows"] == pytest.approx([1.1, 0.75])
    assert targets["served_vs_best_baseline"] == pytest.approx(0.925)
    assert targets["served_windows_at_target"] == 1 and not targets["served_met"]
    # Both windows at target: met.
    steps[1]["rows"]["served"]["next"]["ndcg_at_10"] = 0.5
    assert summarise(steps)[1]["served_met"]


def test_timeline_needs_an_update() -> None:
    with pytest.raises(ValueError, match="at least 1 update"):
        build_timeline(_timeline_dataset(), updates=0, base_fraction=0.5)


def test_cli_unknown_data_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["bench", "incremental", "--data", str(tmp_path / "nope"), "--no-mlflow"]
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith("recloop: ")
    assert "nope" in result.output and len(result.output.strip().splitlines()) == 1
