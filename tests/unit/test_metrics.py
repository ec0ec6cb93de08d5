"""Ranking metrics against hand-computed values."""

import math

import numpy as np
import pytest

from recloop.metrics import (
    dcg_at_k,
    metrics_from_ranks,
    mrr,
    ndcg_at_k,
    recall_at_k,
    target_ranks,
)

pytestmark = pytest.mark.unit

LOG2_3 = math.log2(3)  # discount of 1-based rank 2


def test_perfect_ranking_scores_one():
    ranked = ["a", "b", "c", "d"]
    assert ndcg_at_k(ranked, {"a", "b"}, 3) == pytest.approx(1.0)
    assert recall_at_k(ranked, {"a", "b"}, 3) == pytest.approx(1.0)
    assert mrr(ranked, {"a", "b"}) == pytest.approx(1.0)


def test_no_hit_scores_zero():
    ranked = ["a", "b", "c", "d"]
    assert ndcg_at_k(ranked, {"x"}, 3) == 0.0
    assert recall_at_k(ranked, {"x"}, 3) == 0.0
    assert mrr(ranked, {"x"}) == 0.0
    # a hit beyond k does not count for the @k metrics, but does for MRR
    assert ndcg_at_k(ranked, {"d"}, 3) == 0.0
    assert recall_at_k(ranked, {"d"}, 3) == 0.0
    assert mrr(ranked, {"d"}) == pytest.approx(0.25)


def test_worked_example():
    # ranked [a, b, c, d], relevant {b, d}, k = 3: only b (rank 2) is in the top 3.
    ranked, relevant = ["a", "b", "c", "d"], {"b", "d"}
    dcg = 1 / LOG2_3  # 0.6309
    idcg = 1 + 1 / LOG2_3  # 1.6309: two relevant items at ranks 1 and 2
    assert dcg_at_k(ranked, relevant, 3) == pytest.approx(0.6309, abs=1e-4)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(0.3869, abs=1e-4)
    assert recall_at_k(ranked, relevant, 3) == pytest.approx(0.5)
    assert mrr(ranked, relevant) == pytest.approx(0.5)


def test_ideal_dcg_is_capped_at_k():
    # five relevant items but k = 2: the ideal has only two hits, so two hits score 1.
    relevant = {"a", "b", "c", "d", "e"}
    assert ndcg_at_k(["a", "b", "x"], relevant, 2) == pytest.approx(1.0)
    assert recall_at_k(["a", "b", "x"], relevant, 2) == pytest.approx(2 / 5)


def test_empty_relevant_and_bad_k():
    assert ndcg_at_k(["a"], set(), 5) == 0.0
    assert recall_at_k(["a"], set(), 5) == 0.0
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a"}, 0)


def test_metrics_from_ranks_hand_computed():
    out = metrics_from_ranks(np.array([0, 1, 10]), ks=(10,))
    assert out["ndcg_at_10"] == pytest.approx((1 + 1 / LOG2_3 + 0) / 3)
    assert out["recall_at_10"] == pytest.approx(2 / 3)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)
    assert set(out) == {"ndcg_at_10", "recall_at_10", "mrr"}


def test_metrics_from_ranks_agrees_with_list_metrics():
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 30, size=50)
    out = metrics_from_ranks(ranks, ks=(5, 20))
    for k in (5, 20):
        lists = [[f"x{j}" for j in range(r)] + ["t"] for r in ranks]
        assert out[f"ndcg_at_{k}"] == pytest.approx(
            np.mean([ndcg_at_k(x, {"t"}, k) for x in lists])
        )
        assert out[f"recall_at_{k}"] == pytest.approx(
            np.mean([recall_at_k(x, {"t"}, k) for x in lists])
        )
    assert out["mrr"] == pytest.approx(np.mean([mrr([*["x"] * r, "t"], {"t"}) for r in ranks]))


def test_metrics_from_ranks_empty():
    assert metrics_from_ranks(np.array([], dtype=int), ks=(10,)) == {
        "ndcg_at_10": 0.0,
        "recall_at_10": 0.0,
        "mrr": 0.0,
    }


def test_target_ranks_count_ties_against_the_model_in_numpy_and_torch():
    import torch

    nan = float("nan")
    # Row 0: target 0.5 (column 1) ties with column 3, column 0 above it: rank 2.
    # Row 1: a constant scorer ranks its target (column 0) last among the 3 others.
    # Row 2: column 2 (0.9) is out of the ranking (NaN), the target 0.7 is first: rank 0.
    scores = [[0.9, 0.5, 0.1, 0.5], [1.0, 1.0, 1.0, 1.0], [0.2, 0.7, nan, 0.1]]
    targets = [[0.5], [1.0], [0.7]]
    expected = [2, 3, 0]
    as_numpy = target_ranks(np.array(scores), np.array(targets))
    as_torch = target_ranks(torch.tensor(scores), torch.tensor(targets))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.tolist() == expected
    assert isinstance(as_torch, torch.Tensor) and as_torch.tolist() == expected
