"""Baselines: hand-built interactions with known counts and transitions."""

import time

import numpy as np
import pandas as pd
import pytest

from recloop.baselines import ItemTransitions, Popularity, RecentPopularity

pytestmark = pytest.mark.unit


def events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


# u1: a b c, u2: a b d, u3: a c  ->  a->b 2, a->c 1, b->c 1, b->d 1; counts a3 b2 c2 d1
SEQUENCES = events(
    [
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3),
        ("u2", "a", 4), ("u2", "b", 5), ("u2", "d", 6),
        ("u3", "a", 7), ("u3", "c", 8),
    ]
)  # fmt: skip


def column(scorer, scores: np.ndarray, item: str) -> np.ndarray:
    return scores[:, scorer.item_ids.index(item)]


def test_popularity_counts_and_catalogue_columns():
    pop = Popularity(SEQUENCES, item_ids=["d", "c", "b", "a", "new"])
    scores = pop.score([["a"], []])
    assert scores.shape == (2, 5)
    np.testing.assert_array_equal(scores[0], [1, 2, 2, 3, 0])
    np.testing.assert_array_equal(scores[0], scores[1])
    assert Popularity(SEQUENCES).item_ids == ["a", "b", "c", "d"]  # first seen order


def test_recent_popularity_uses_the_last_fraction_of_the_span():
    # span 0..100, last 10% = timestamps >= 90: x twice, y once; z is all-time most popular.
    frame = events(
        [("u", "z", t) for t in range(0, 50, 5)]
        + [("u", "x", 90), ("v", "x", 95), ("v", "y", 100)]
        + [("w", "y", 10), ("w", "q", 20)]
    )
    recent = RecentPopularity(frame, recent_fraction=0.1)
    assert recent.since == 90
    scores = recent.score([[]])[0]
    order = [recent.item_ids[i] for i in np.argsort(-scores, kind="stable")]
    # x (2 recent) > y (1 recent) > z (0 recent, 10 all-time) > q (0 recent, 1 all-time)
    assert order == ["x", "y", "z", "q"]
    np.testing.assert_array_equal(np.floor(scores), [0, 2, 1, 0])  # z, x, y, q columns
    by_seconds = RecentPopularity(frame, window_seconds=5)
    assert by_seconds.since == 95
    assert by_seconds.recent_counts.tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError):
        RecentPopularity(frame, recent_fraction=0.0)


def test_transitions_hand_computed():
    trans = ItemTransitions(SEQUENCES, window=2)
    scores = trans.score([["a"], ["a", "b"]])
    # from a: P(b|a) = 2/3, P(c|a) = 1/3
    assert column(trans, scores, "b")[0] == pytest.approx(2 / 3, abs=1e-6)
    assert column(trans, scores, "c")[0] == pytest.approx(1 / 3, abs=1e-6)
    # from [a, b]: b weighted 1 (c .5, d .5), a weighted 1/2 (b 1/3, c 1/6)
    assert column(trans, scores, "c")[1] == pytest.approx(0.5 + 1 / 6, abs=1e-6)
    assert column(trans, scores, "d")[1] == pytest.approx(0.5, abs=1e-6)
    assert column(trans, scores, "b")[1] == pytest.approx(1 / 3, abs=1e-6)


def test_transitions_window_and_unknown_items():
    trans = ItemTransitions(SEQUENCES, window=1)
    only_last = trans.score([["c", "a", "b"]])[0]
    assert only_last[trans.item_ids.index("c")] == pytest.approx(0.5, abs=1e-6)
    assert only_last[trans.item_ids.index("b")] < 1e-6  # a is outside the window
    # unknown items are ignored: same as no history
    np.testing.assert_array_equal(trans.score([["zzz"]]), trans.score([[]]))


def test_transitions_break_ties_by_popularity():
    trans = ItemTransitions(SEQUENCES)
    scores = trans.score([["d"]])[0]  # d has no successors: pure tie-breaker
    assert trans.item_ids[int(np.argmax(scores))] == "a"
    assert scores.max() < 1e-3  # far below any real transition
    assert scores[trans.item_ids.index("b")] > scores[trans.item_ids.index("d")]


def test_transitions_fast_on_10k_items_and_100k_events():
    rng = np.random.default_rng(0)
    n_events = 100_000
    frame = events(
        list(
            zip(
                [f"u{u}" for u in rng.integers(0, 5_000, n_events)],
                [f"i{i}" for i in rng.integers(0, 10_000, n_events)],
                rng.integers(0, 1_000_000, n_events).tolist(),
                strict=True,
            )
        )
    )
    started = time.perf_counter()
    trans = ItemTransitions(frame, window=3)
    histories = [[f"i{i}" for i in rng.integers(0, 10_000, 20)] for _ in range(256)]
    scores = trans.score(histories)
    assert scores.shape == (256, len(trans.item_ids))
    assert trans.n_pairs == n_events - 5_000
    assert time.perf_counter() - started < 10


def test_a_baseline_is_a_model_saved_and_loaded_exactly(tmp_path):
    from models.baselines import Baseline
    from recloop.baselines import fit_baselines

    fitted = fit_baselines(SEQUENCES, ["a", "b", "c", "d", "e"])
    assert list(fitted) == ["popularity", "recent_popularity", "transitions"]
    histories = [["a"], ["a", "b"], [], ["unknown"]]
    for name, baseline in fitted.items():
        baseline.metadata["trained_batches"] = ["b1"]
        loaded = Baseline.load(baseline.save(tmp_path / f"{name}.npz"))
        assert type(loaded) is Baseline and loaded.name == name
        assert loaded.item_ids == baseline.item_ids and loaded.window == baseline.window
        assert loaded.metadata["trained_batches"] == ["b1"]
        np.testing.assert_array_equal(loaded.score(histories), baseline.score(histories))


def test_a_baseline_recommends_like_the_recommender():
    trans = ItemTransitions(SEQUENCES, ["a", "b", "c", "d", "e"])
    items, scores = trans.recommend([["a"], ["a"], []], k=2, exclude_seen=True)
    assert items[0] == ["b", "c"] and scores[0][0] == pytest.approx(2 / 3, rel=1e-3)
    assert trans.recommend([["a"]], k=2, exclude_seen=False)[0][0][0] == "b"
    # an empty history gets the popularity tie-breaker order; the seen item is never returned
    assert items[2][0] == "a" and "a" not in items[0]
    with pytest.raises(ValueError, match="unknown baseline"):
        from models.baselines import Baseline

        Baseline("trending", ["a"], np.zeros(1))
