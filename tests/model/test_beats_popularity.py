"""A recommender trained on the seeded demo data must beat popularity, and warm starts must work."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recloop.config import load_config
from recloop.data import EvalCases, holdout_last_events
from recloop.fitting import FineTuneResult, chunk_count, fit_recommender, training_examples

pytestmark = pytest.mark.model

TINY = {
    "model": {"hidden_size": 32, "num_layers": 1, "max_seq_len": 20, "dropout": 0.1},
    "train": {
        "epochs": 8,
        "finetune_epochs": 3,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "patience": 2,
    },
}


def _random_text(n: int, seed: int) -> np.ndarray:
    """Stand-in text embeddings (no encoder needed): the model must learn from IDs and order."""
    emb = np.random.default_rng(seed).normal(size=(n, 384)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _ndcg_at_10(scores: np.ndarray, item_ids: list[str], cases: EvalCases) -> float:
    """Full-ranking NDCG@10 with history items excluded; rank = other items scored at least as
    high (ties count against the model)."""
    index = {item: i for i, item in enumerate(item_ids)}
    total = 0.0
    for row, history, target in zip(scores, cases.histories, cases.targets, strict=True):
        row = row.astype(np.float64).copy()
        target_score = row[index[target]]
        row[[index[i] for i in history if i != target]] = -np.inf
        row[index[target]] = -np.inf  # the target is not ranked above itself
        rank = int((row >= target_score).sum())
        total += 1.0 / np.log2(rank + 2) if rank < 10 else 0.0
    return total / len(cases)


@pytest.fixture(scope="module")
def demo():
    from recloop.demo import simulate

    return simulate(seed=7, n_users=200, n_items=300)


def test_trained_model_beats_popularity(demo) -> None:
    config = load_config(overrides=TINY)
    train, cases = holdout_last_events(demo.interactions.iloc[:0], demo.interactions)
    item_ids = demo.items["item_id"].tolist()
    result = fit_recommender(train, item_ids, _random_text(len(item_ids), 0), config)
    rec = result.recommender
    assert rec.item_ids == item_ids
    assert result.report["steps"] > 0 and result.report["best_val_ndcg"] is not None

    counts = train["item_id"].value_counts().reindex(item_ids, fill_value=0).to_numpy()
    popularity = np.tile(counts.astype(np.float32), (len(cases), 1))
    model_ndcg = _ndcg_at_10(rec.score(cases.histories), item_ids, cases)
    pop_ndcg = _ndcg_at_10(popularity, item_ids, cases)
    print(f"NDCG@10 model {model_ndcg:.3f} popularity {pop_ndcg:.3f}")
    assert model_ndcg > 1.5 * pop_ndcg, (model_ndcg, pop_ndcg)
    assert model_ndcg > 0.1


def test_warm_start_keeps_order_and_adds_new_items(demo) -> None:
    config = load_config(overrides=TINY)
    items = demo.items
    old_ids = items["item_id"].tolist()[:250]
    new_ids = items["item_id"].tolist()[250:]
    events = demo.interactions.sort_values("timestamp", kind="stable")
    old_events = events[events["item_id"].isin(old_ids)]
    cut = int(len(old_events) * 0.7)
    first = fit_recommender(
        old_events.iloc[:cut],
        old_ids,
        _random_text(250, 0),
        load_config(overrides={**TINY, "train": {**TINY["train"], "epochs": 2}}),
    ).recommender
    text = _random_text(300, 0)  # same vectors for the old items, new ones appended
    later = events.iloc[cut:]
    focus = set(later["user_id"])
    result = fit_recommender(
        pd.concat([old_events.iloc[:cut], later]),
        old_ids + new_ids,
        text,
        config,
        parent=first,
        focus_users=focus,
    )
    rec = result.recommender
    assert rec.item_ids == old_ids + new_ids
    assert first.item_ids == old_ids  # the parent is not modified
    report = result.report
    assert report["warm_start"] and report["n_new_items"] == 50
    assert report["n_train_sequences"] <= len(focus)  # only the focus users' sequences
    assert report["history"][0]["epoch"] == 0  # the parent's weights are validated first
    assert rec.score([["i_unknown"], old_ids[:3]]).shape == (2, 300)


def test_an_items_id_embedding_opens_once_the_training_data_holds_enough_of_its_events(
    demo,
) -> None:
    gated = {**TINY, "model": {**TINY["model"], "id_min_count": 5}}
    one_epoch = {**gated, "train": {**TINY["train"], "epochs": 1, "finetune_epochs": 1}}
    item_ids = demo.items["item_id"].tolist()
    events = demo.interactions.sort_values("timestamp", kind="stable")
    cut = int(len(events) * 0.5)
    text = _random_text(len(item_ids), 0)

    def counts(part: pd.DataFrame) -> np.ndarray:
        return part["item_id"].value_counts().reindex(item_ids, fill_value=0).to_numpy()

    first = fit_recommender(events.iloc[:cut], item_ids, text, load_config(overrides=one_epoch))
    gate = first.recommender.model.id_gate[1:].numpy()
    np.testing.assert_array_equal(gate, (counts(events.iloc[:cut]) >= 5).astype(np.float32))
    assert 0 < gate.sum() < len(item_ids)  # both kinds of item are there
    later = fit_recommender(
        events, item_ids, text, load_config(overrides=one_epoch), parent=first.recommender
    )
    reopened = later.recommender.model.id_gate[1:].numpy()
    np.testing.assert_array_equal(reopened, (counts(events) >= 5).astype(np.float32))
    assert reopened.sum() > gate.sum()  # items that gained enough history gained their ID
    np.testing.assert_array_equal(first.recommender.model.id_gate[1:].numpy(), gate)


def _parent_of_the_last_events(demo):
    """(item ids, the first 80 % of events, the last 20 %, text vectors, a short-trained parent
    on the first 80 %)."""
    item_ids = demo.items["item_id"].tolist()
    events = demo.interactions.sort_values("timestamp", kind="stable")
    cut = int(len(events) * 0.8)
    old, new = events.iloc[:cut], events.iloc[cut:]
    text = _random_text(len(item_ids), 0)
    short = load_config(overrides={**TINY, "train": {**TINY["train"], "epochs": 2}})
    parent = fit_recommender(old, item_ids, text, short).recommender
    return item_ids, old, new, text, parent


def test_warm_start_trains_on_the_new_events_and_their_users_recent_history(demo) -> None:
    config = load_config(overrides=TINY)
    item_ids, old, new, text, parent = _parent_of_the_last_events(demo)
    result = fit_recommender(
        pd.concat([old, new]), item_ids, text, config, parent=parent, new_interactions=new
    )
    report = result.report
    # Targets: every new event with an earlier event of its user, minus each new user's last
    # event (held out for early stopping), plus the earlier events inside the last max_seq_len
    # positions of the users with new events.
    everything = pd.concat([old, new])
    position = everything.groupby("user_id").cumcount()
    is_new = np.r_[np.zeros(len(old), bool), np.ones(len(new), bool)]
    predictable = int((is_new & (position.to_numpy() >= 1)).sum())
    validation_users = report["n_val_users"]
    assert report["n_new_targets"] == predictable - validation_users
    assert report["n_train_targets"] == report["n_new_targets"] + report["n_earlier_targets"]
    # The earlier events (exact semantics: tests/unit/test_fitting.py) lie within the active
    # users' last max_seq_len events.
    active = everything[everything["user_id"].isin(new["user_id"])]
    recent = active.groupby("user_id").size().clip(upper=config.model.max_seq_len)
    assert 0 < report["n_earlier_targets"] <= int(recent.sum())
    # Cost follows the new data: the users with new events only.
    assert report["n_train_sequences"] <= new["user_id"].nunique()
    assert report["n_train_sequences"] < everything["user_id"].nunique()


def test_training_examples_chunk_long_sequences() -> None:
    x, y = training_examples([[1, 2, 3], list(range(1, 12)), [4]], max_seq_len=4)
    # [1,2,3] -> 1 example; 11 items -> chunks ending at 11, 7, 3; [4] -> none
    assert x.shape == (4, 4)
    assert x[0].tolist() == [0, 0, 1, 2] and y[0].tolist() == [0, 0, 2, 3]
    assert x[1].tolist() == [7, 8, 9, 10] and y[1].tolist() == [8, 9, 10, 11]
    assert x[2].tolist() == [3, 4, 5, 6] and y[2].tolist() == [4, 5, 6, 7]
    assert x[3].tolist() == [0, 0, 1, 2] and y[3].tolist() == [0, 0, 2, 3]


def test_fine_tune_end_to_end_with_the_real_encoder(tmp_path) -> None:
    from models.encoder import base_encoder_path
    from recloop.demo import simulate
    from recloop.paths import Home
    from tasks.fine_tune import fine_tune

    small = simulate(seed=3, n_users=40, n_items=120, events_per_user=12.0)
    home = Home(tmp_path).ensure()
    config = load_config(overrides={**TINY, "train": {**TINY["train"], "epochs": 2}})
    catalogue = small.items.iloc[:100]
    events = small.interactions[small.interactions["item_id"].isin(catalogue["item_id"])]
    first = fine_tune(events, catalogue, base_encoder_path(), home, config, None, set())
    assert first.report["n_encoded"] == 100 and not first.report["warm_start"]
    second = fine_tune(
        small.interactions,
        small.items,
        base_encoder_path(),
        home,
        config,
        first.recommender,
        set(small.interactions["user_id"][:50]),
    )
    assert second.report["n_encoded"] == 20 and second.report["n_cached"] == 100
    assert second.recommender.item_ids[:100] == first.recommender.item_ids
    assert second.recommender.metadata["encoder_path"] == str(base_encoder_path())
    assert len(list(home.embedding_cache.glob("*.npz"))) == 1


def test_an_updates_steps_are_capped_at_its_budget_of_full_data_epochs(demo) -> None:
    item_ids, old, new, text, parent = _parent_of_the_last_events(demo)
    budget = {**TINY["train"], "finetune_epochs": 50, "finetune_patience": 0}
    budget["finetune_budget"] = 0.5
    config = load_config(overrides={**TINY, "train": budget})
    everything = pd.concat([old, new])
    result = fit_recommender(
        everything, item_ids, text, config, parent=parent, new_interactions=new
    )
    report = result.report
    # One full-data epoch: every user's chunks (validation users hold out their last event).
    lengths = everything.groupby("user_id").size()
    chunks = [sum(chunk_count(n - cut, 20) for n in lengths) for cut in (1, 0)]
    assert math.ceil(0.5 * chunks[0] / 64) <= report["max_steps"] <= math.ceil(0.5 * chunks[1] / 64)
    assert report["steps"] == report["max_steps"] and report["stopped_reason"] == "max_steps"
    assert report["epochs"] < 50


def _frozen_update(parts, threshold: float) -> FineTuneResult:
    """One warm-started epoch that cannot move the weights (learning rate 0) from a 0.5 shrink
    applied when the parent's memorisation gap is at least ``threshold``."""
    item_ids, old, new, text, parent = parts
    frozen = {
        **TINY["train"],
        "finetune_epochs": 1,
        "finetune_learning_rate": 0.0,
        "warm_shrink": 0.5,
        "warm_shrink_gap": threshold,
    }
    return fit_recommender(
        pd.concat([old, new]),
        item_ids,
        text,
        load_config(overrides={**TINY, "train": frozen}),
        parent=parent,
        new_interactions=new,
    )


def test_warm_start_trains_from_the_shrunk_parent_and_falls_back_to_the_parent(demo) -> None:
    parts = _parent_of_the_last_events(demo)
    parent = parts[-1]
    # One epoch that cannot move the weights: it validates the shrunk parent itself.
    result = _frozen_update(parts, 0.0)  # always shrink
    history = result.report["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[0]["val"] != history[1]["val"]  # shrinking changes the ranking
    factor = 0.5 if result.report["best_epoch"] == 1 else 1.0  # else the parent as it was
    child = dict(result.recommender.model.named_parameters())
    for name, param in parent.model.named_parameters():
        torch.testing.assert_close(child[name], factor * param)


def test_the_shrink_is_applied_only_to_a_parent_that_memorised_its_training_data(demo) -> None:
    parts = _parent_of_the_last_events(demo)

    def update(threshold: float) -> dict:
        return _frozen_update(parts, threshold).report

    gap = update(0.0)["memorisation_gap"]
    assert gap is not None and math.isfinite(gap)
    below, above = update(gap + 0.01), update(max(gap - 0.01, 1e-6))
    assert below["memorisation_gap"] == pytest.approx(gap)  # measured on the parent, seeded
    assert below["shrink"] == 1.0 and above["shrink"] == 0.5
    # Unshrunk and untrained (learning rate 0): epoch 1 is the parent exactly.
    assert below["history"][0]["val"] == below["history"][1]["val"]


def test_the_prior_weight_is_chosen_on_validation_as_the_recommender_scores(demo) -> None:
    one_epoch = {**TINY, "train": {**TINY["train"], "epochs": 1}}
    train, cases = holdout_last_events(demo.interactions.iloc[:0], demo.interactions)
    item_ids = demo.items["item_id"].tolist()
    text = _random_text(len(item_ids), 0)
    result = fit_recommender(
        train, item_ids, text, load_config(overrides=one_epoch), validation=cases
    )
    rec, report = result.recommender, result.report
    chosen = report["prior_validation"]
    by_weight, by_recency = chosen["transitions"], chosen["recency"]
    assert list(by_weight) == ["0.0", "0.1", "0.2", "0.3", "0.5", "0.7", "1.0"]
    assert report["prior_weight"] == float(max(by_weight, key=by_weight.get))
    assert rec.prior is not None and rec.prior_weight == report["prior_weight"]
    # The cases come after the training data: every one judges the recency weight too.
    assert chosen["recency_cases"] == len(cases)
    assert list(by_recency) == ["0.0", "0.25", "0.5", "1.0", "2.0", "4.0"]
    assert report["recency_weight"] == float(max(by_recency, key=by_recency.get))
    assert rec.recent_counts is not None and rec.recency_weight == report["recency_weight"]
    # The choice scored the cases as the recommender does (both priors fitted on `train`).
    for weights in ((0.0, 0.0), (0.3, 0.0)):
        rec.prior_weight, rec.recency_weight = weights
        ndcg = _ndcg_at_10(rec.score(cases.histories), item_ids, cases)
        assert ndcg == pytest.approx(by_weight[str(weights[0])], abs=1e-5)
    for recency in (1.0, 4.0):
        rec.prior_weight, rec.recency_weight = report["prior_weight"], recency
        ndcg = _ndcg_at_10(rec.score(cases.histories), item_ids, cases)
        assert ndcg == pytest.approx(by_recency[str(recency)], abs=1e-5)

    fixed = {**one_epoch, "model": {**TINY["model"], "prior_weights": [0.3]}}
    result = fit_recommender(train, item_ids, text, load_config(overrides=fixed))
    assert result.recommender.prior_weight == 0.3
    assert result.report["prior_validation"]["transitions"] == {}  # one weight: no choice
    off = {**one_epoch, "model": {**TINY["model"], "prior_window": 0}}
    result = fit_recommender(train, item_ids, text, load_config(overrides=off))
    assert result.recommender.prior is None and result.report["prior_weight"] == 0.0
