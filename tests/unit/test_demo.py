"""The embedded demo simulator: deterministic, canonical, and with the structure the loop needs."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from recloop.data import build_sequences, normalise_interactions, normalise_items
from recloop.demo import TOPICS, simulate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def demo():
    start = time.perf_counter()
    dataset = simulate(seed=7)
    return dataset, time.perf_counter() - start


def test_fast(demo) -> None:
    _, seconds = demo
    # Measured ~1.5 s on 2 cores; the bound leaves room for a loaded CI machine.
    assert seconds < 5.0


def test_deterministic_given_seed(demo) -> None:
    dataset, _ = demo
    again = simulate(seed=7)
    assert again.items.equals(dataset.items)
    assert again.interactions.equals(dataset.interactions)
    other = simulate(seed=8)
    assert not other.interactions.equals(dataset.interactions)


def test_the_demo_data_is_pinned(demo) -> None:
    """The demo is the README's table: a change to any row of it (e.g. while refactoring the
    simulator) shows up here first."""
    import hashlib

    dataset, _ = demo
    digest = hashlib.sha256()
    for frame in (dataset.items, dataset.interactions):
        digest.update(frame.to_csv(index=False).encode())
    assert digest.hexdigest() == "b985ce7dc1df0bc8bb85401783129bfd9947321802f6d8c248a046a0a63000b4"


def test_counts(demo) -> None:
    dataset, _ = demo
    summary = dataset.summary()
    assert summary["users"] == 600
    assert summary["items"] == 800
    assert 25_000 <= summary["interactions"] <= 45_000
    assert dataset.interactions.groupby("user_id").size().min() >= 5


def test_canonical_form(demo) -> None:
    dataset, _ = demo
    items, interactions = dataset.items, dataset.interactions
    assert items.equals(normalise_items(items))
    assert interactions.equals(normalise_interactions(interactions))
    assert items["item_id"].is_unique
    assert all(isinstance(v, str) for v in interactions["user_id"].head(100))
    assert all(isinstance(v, str) for v in interactions["item_id"].head(100))
    assert interactions["timestamp"].dtype == np.int64
    assert set(interactions["item_id"]) <= set(items["item_id"])
    assert not interactions.duplicated(["user_id", "item_id"]).any()  # no re-consumption
    assert (items["title"] != "").all() and (items["text"] != "").all()
    # About six months of unix seconds from 2024-01-01.
    span_days = (interactions["timestamp"].max() - interactions["timestamp"].min()) / 86_400
    assert 150 <= span_days <= 183
    assert interactions["timestamp"].min() >= 1_704_067_200


def test_new_items_appear_in_later_periods(demo) -> None:
    dataset, _ = demo
    interactions = dataset.interactions
    first_seen = interactions.groupby("item_id")["timestamp"].min()
    cuts = np.quantile(interactions["timestamp"], [0.25, 0.5, 0.75])
    assert (first_seen > cuts[1]).sum() >= 50  # second half of the events brings new items
    assert (first_seen > cuts[2]).sum() >= 20
    # No item is interacted with before its release.
    released = dataset.items.set_index("item_id")["released_at"]
    assert (first_seen >= released.loc[first_seen.index]).all()


def test_text_reveals_topic(demo) -> None:
    dataset, _ = demo
    items = dataset.items
    assert items["topic"].nunique() == len(TOPICS)
    words = {
        topic: Counter(w for text in group for w in text.lower().split())
        for topic, group in items.groupby("topic")["text"]
    }
    # Each topic's most distinctive word appears in none of the other topics' texts.
    for topic, counts in words.items():
        others = set().union(*(set(c) for t, c in words.items() if t != topic))
        own = [w for w, _ in counts.most_common() if w not in others]
        assert own, f"no word specific to {topic}"
    assert items.loc[items["topic"] == "jazz vinyl", "text"].str.contains("jazz").all()


def _ndcg10(rank: int) -> float:
    return 1.0 / math.log2(rank + 2) if rank < 10 else 0.0


def test_item_to_item_beats_popularity(demo) -> None:
    """Leave-last-out: last-item transitions rank the next item far better than popularity."""
    dataset, _ = demo
    sequences = build_sequences(dataset.interactions)
    train = {u: s[:-1] for u, s in sequences.items()}
    popularity = Counter(i for s in train.values() for i in s)
    ranked_popular = [i for i, _ in popularity.most_common()]
    transitions: dict[str, Counter[str]] = defaultdict(Counter)
    for seq in train.values():
        for a, b in zip(seq, seq[1:], strict=False):
            transitions[a][b] += 1
    pop_scores, transition_scores = [], []
    for user, seq in sequences.items():
        history, target = set(train[user]), seq[-1]
        by_pop = [i for i in ranked_popular[:50] if i not in history]
        pop_scores.append(_ndcg10(by_pop.index(target)) if target in by_pop else 0.0)
        nexts = [i for i, _ in transitions[train[user][-1]].most_common() if i not in history]
        transition_scores.append(_ndcg10(nexts.index(target)) if target in nexts else 0.0)
    assert np.mean(transition_scores) > 3 * np.mean(pop_scores)
    assert np.mean(transition_scores) > 0.1
