"""The evaluator on hand-built cases with known ranks (fake scorers are legitimate test doubles)."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from recloop.config import Config
from recloop.data import EvalCases
from recloop.evaluation import EvaluationReport, evaluate_all, evaluate_scorer

pytestmark = pytest.mark.unit

CATALOGUE = ["a", "b", "c", "d", "e"]


class Fixed:
    """The same scores for every user."""

    def __init__(self, item_ids: list[str], scores: list[float]) -> None:
        self.item_ids = item_ids
        self.scores = np.asarray(scores, dtype=np.float64)

    def score(self, histories: list[list[str]]) -> np.ndarray:
        return np.tile(self.scores, (len(histories), 1))


class Oracle:
    """Knows each history's answer: scores it 1, everything else 0."""

    def __init__(self, item_ids: list[str], answers: dict[tuple[str, ...], str]) -> None:
        self.item_ids = item_ids
        self.answers = answers

    def score(self, histories: list[list[str]]) -> np.ndarray:
        out = np.zeros((len(histories), len(self.item_ids)))
        for b, history in enumerate(histories):
            out[b, self.item_ids.index(self.answers[tuple(history)])] = 1.0
        return out


def test_known_ranks_with_history_excluded():
    scorer = Fixed(CATALOGUE, [5, 4, 3, 2, 1])
    cases = EvalCases(["u1", "u2", "u3"], [["a"], ["b"], ["c"]], ["c", "a", "e"])
    # u1: a excluded -> b, c: rank 1. u2: b excluded -> a: rank 0. u3: a, b, d above e: rank 3.
    out = evaluate_scorer(scorer, cases, CATALOGUE, ks=(1, 3))
    assert out["ndcg_at_1"] == pytest.approx(1 / 3)
    assert out["recall_at_1"] == pytest.approx(1 / 3)
    assert out["ndcg_at_3"] == pytest.approx((1 / math.log2(3) + 1 + 0) / 3)
    assert out["recall_at_3"] == pytest.approx(2 / 3)
    assert out["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
    assert out["n_cases"] == 3
    # batching does not change anything
    assert evaluate_scorer(scorer, cases, CATALOGUE, ks=(1, 3), batch_size=1) == out


def test_constant_scorer_ranks_targets_last():
    cases = EvalCases(["u1", "u2"], [["a"], ["b", "c"]], ["c", "a"])
    out = evaluate_scorer(Fixed(CATALOGUE, [1.0] * 5), cases, CATALOGUE, ks=(2,))
    # pessimistic ties: every other non-history item ranks above the target
    assert out["recall_at_2"] == 0.0
    assert out["mrr"] == pytest.approx((1 / 4 + 1 / 3) / 2)  # ranks 3 and 2


def test_scorer_columns_are_mapped_onto_the_catalogue():
    # scorer knows e, a and an item outside the catalogue (z, dropped); b, c, d score -inf.
    scorer = Fixed(["e", "z", "a"], [1.0, 100.0, 0.5])
    cases = EvalCases(["u1", "u2", "u3"], [["c"], ["e"], ["a"]], ["e", "a", "b"])
    out = evaluate_scorer(scorer, cases, CATALOGUE, ks=(1,))
    # u1 rank 0 (hit), u2 rank 0 (e excluded), u3: b unknown to the scorer -> ranked last (3)
    assert out["recall_at_1"] == pytest.approx(2 / 3)
    assert out["mrr"] == pytest.approx((1 + 1 + 1 / 4) / 3)


def test_repeats_and_unknown_targets_are_counted_and_left_out():
    cases = EvalCases(["u1", "u2", "u3"], [["a", "b"], ["c"], ["d"]], ["b", "zzz", "a"])
    out = evaluate_scorer(Fixed(CATALOGUE, [5, 4, 3, 2, 1]), cases, CATALOGUE, ks=(1,))
    assert out["n_target_in_history"] == 1
    assert out["n_target_unknown"] == 1
    assert out["n_cases"] == 1
    assert out["recall_at_1"] == 1.0


def test_nan_scores_and_bad_shape():
    cases = EvalCases(["u1"], [["a"]], ["b"])
    out = evaluate_scorer(Fixed(CATALOGUE, [0, np.nan, 1, 1, 1]), cases, CATALOGUE, ks=(1,))
    assert out["mrr"] == pytest.approx(1 / 4)  # NaN is treated as -inf, ties pessimistic

    class Broken(Fixed):
        def score(self, histories):
            return np.zeros((len(histories), 2))

    with pytest.raises(ValueError, match="shape"):
        evaluate_scorer(Broken(CATALOGUE, [0] * 5), cases, CATALOGUE)


def test_evaluate_all_report():
    train = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u4"],
            "item_id": ["a", "b", "a", "b", "c", "d", "a"],
            "timestamp": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    cases = EvalCases(
        ["u1", "u2", "u3", "u4"], [["a", "b"], ["a", "b"], ["c", "d"], ["a"]], ["c", "c", "e", "b"]
    )
    answers = {tuple(h): t for h, t in zip(cases.histories, cases.targets, strict=True)}
    config = Config()
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, ks=(1, 3)))
    retention = EvalCases(["u1"], [["a"]], ["b"], scope="previous window")
    answers[("a",)] = "b"
    report = evaluate_all(
        Oracle(CATALOGUE, answers),
        Fixed(CATALOGUE, [0] * 5),
        train,
        cases,
        CATALOGUE,
        config,
        retention=retention,
    )
    assert report.retention_scope == "previous window"
    assert report.retention_pair() is not None
    assert report.retention["candidate"]["ndcg_at_1"] == 1.0
    assert list(report.rows) == [
        "candidate", "champion", "popularity", "recent_popularity", "transitions"
    ]  # fmt: skip
    assert report.metric("candidate", "ndcg_at_1") == 1.0
    assert report.metric("champion", "recall_at_1") == 0.0  # constant: ties are not hits
    # transitions: only u4 (history [a], a -> b twice) is a hit at rank 0
    assert report.metric("transitions", "ndcg_at_1") == pytest.approx(1 / 4)
    assert report.n_users == 4 and report.n_items == 5 and report.seed == config.seed
    assert EvaluationReport.from_dict(report.to_dict()) == report
    table = report.to_markdown()
    assert "| model | ndcg_at_1 | recall_at_1 | ndcg_at_3 | recall_at_3 | mrr |" in table
    assert "| candidate | 1.0000 |" in table
    assert "| champion on previous window | 0.0000 |" in table
    flat = report.flat_metrics()
    assert flat["ndcg_at_1"] == 1.0 and "popularity_ndcg_at_1" in flat
    with pytest.raises(KeyError):
        report.metric("nobody", "mrr")


def test_evaluate_all_without_champion_and_sampled():
    train = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [1, 2]})
    cases = EvalCases([f"u{i}" for i in range(6)], [["a"]] * 6, ["b", "c", "d", "e", "b", "c"])
    config = Config()
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, max_users=3))
    report = evaluate_all(Fixed(CATALOGUE, [1, 2, 3, 4, 5]), None, train, cases, CATALOGUE, config)
    assert "champion" not in report.rows and report.get("champion") is None
    assert report.n_users == 3
    again = evaluate_all(Fixed(CATALOGUE, [1, 2, 3, 4, 5]), None, train, cases, CATALOGUE, config)
    assert again.rows == report.rows  # the sample is seeded
