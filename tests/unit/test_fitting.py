"""What a training trains and validates on: new events and their users' recent history, masked
examples, the memorisation gap, validation ranks; and that a seed repeats a training exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.sasrec import PAD, Recommender, SeqRec
from recloop.config import Config, RecommenderConfig, load_config
from recloop.data import EvalCases
from recloop.evaluation import RankingCases, rank_cases
from recloop.fitting import (
    chunk_count,
    fit_recommender,
    memorisation_gap,
    new_event_flags,
    training_examples,
    update_targets,
    validation_ndcg,
    validation_ranks,
)

pytestmark = pytest.mark.unit


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_new_event_flags_follow_each_users_time_order() -> None:
    old = _events([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3)])
    new = _events([("u1", "c", 5), ("u2", "b", 4), ("u3", "a", 6)])
    # Arrival order differs from time order: flags must line up with build_sequences' order.
    everything = pd.concat([new, old], ignore_index=True)
    flags = new_event_flags(everything, new)
    assert {u: f.tolist() for u, f in flags.items()} == {
        "u1": [False, False, True],
        "u2": [False, True],
        "u3": [True],
    }


def _history() -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    sequences = {"u1": [1, 2, 3, 4, 5], "u2": [2, 3, 4], "u3": [6], "u4": [5, 6]}
    flags = {
        "u1": np.array([False, False, False, True, True]),
        "u2": np.array([False, False, False]),
        "u3": np.array([True]),
        "u4": np.array([True, True]),
    }
    return sequences, flags


def test_training_examples_with_target_masks_drop_chunks_without_targets() -> None:
    seq = list(range(1, 12))  # 11 items -> chunks ending at 11, 7, 3 (max_seq_len 4)
    mask = np.zeros(11, dtype=bool)
    mask[[9, 10]] = True  # targets: items 10 and 11, both in the last chunk
    x, y = training_examples([seq, [4, 5]], max_seq_len=4, target_masks=[mask, [False, True]])
    assert x.shape == (2, 4)
    assert x[0].tolist() == [7, 8, 9, 10] and y[0].tolist() == [PAD, PAD, 10, 11]
    assert x[1].tolist() == [PAD, PAD, PAD, 4] and y[1].tolist() == [PAD, PAD, PAD, 5]


def test_an_update_trains_on_every_new_event_and_the_history_it_encodes_anyway() -> None:
    sequences, flags = _history()
    # max_seq_len 3: u1's chunk around its new events covers positions 2..4, so position 2 is
    # its only earlier event among the targets; u2 has no new event, u3 only a first event.
    masks, n_earlier = update_targets(sequences, flags, max_seq_len=3)
    assert n_earlier == 1
    assert masks["u1"].tolist() == [False, False, True, True, True]
    assert masks["u4"].tolist() == [False, True]  # a first event has nothing to predict it from
    assert set(masks) == {"u1", "u4"}
    # A chunk as long as the history: every earlier event of u1 but the first.
    masks, n_earlier = update_targets(sequences, flags, max_seq_len=10)
    assert n_earlier == 2 and masks["u1"].tolist() == [False, True, True, True, True]


def test_chunk_count_matches_the_chunks_training_examples_cuts() -> None:
    for length in range(0, 30):
        x, _ = training_examples([list(range(1, length + 1))], max_seq_len=4)
        assert chunk_count(length, 4) == len(x), length


def test_memorisation_gap_is_the_cross_entropy_of_new_events_minus_earlier_ones() -> None:
    config = RecommenderConfig(hidden_size=16, num_layers=1, num_heads=2, max_seq_len=6)
    torch.manual_seed(0)
    model = SeqRec(config, 9, 4)
    # Memorise 1 -> 2 -> 3 -> 4 -> 5 (the earlier events).
    x, y = training_examples([[1, 2, 3, 4, 5]], 6)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        model(x, y)[1].backward()
        optimiser.step()
    seqs = [[1, 2, 3, 4, 5, 8, 7]]  # the new events 8 and 7 were never seen
    masks = [np.array([False, True, True, True, True, True, True])]
    flags = [np.array([False] * 5 + [True, True])]
    gap = memorisation_gap(model, seqs, masks, flags, 6, known_items=9)
    assert gap > 2.0  # memorised: the new events cost far more than the earlier ones
    # Targets outside the first known_items items are left out: only 7 is new and known here.
    only_seven = memorisation_gap(model, seqs, masks, flags, 6, known_items=7)
    without_eight = [np.array([False, True, True, True, True, False, True])]
    same = memorisation_gap(model, seqs, without_eight, flags, 6, known_items=9)
    assert only_seven == pytest.approx(same)
    # Nothing new (or nothing earlier): no gap to go by.
    assert np.isnan(memorisation_gap(model, seqs, masks, [np.zeros(7, dtype=bool)], 6, 9))


def _tiny_model(max_seq_len: int = 6, items: int = 9):
    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=16, num_layers=1, num_heads=2, max_seq_len=max_seq_len)
    return SeqRec(config, items, 4).eval()


def test_memorisation_gap_matches_the_cross_entropies_taken_one_target_at_a_time() -> None:
    model = _tiny_model(max_seq_len=4)
    # Several chunks per sequence, new and earlier events interleaved across chunk borders.
    seqs = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 1], [3, 5, 7], [2, 4]]
    flags = [np.arange(10) % 3 == 0, np.array([False, True, True]), np.array([False, False])]
    masks = [np.arange(10) >= 1, np.array([False, True, True]), np.array([False, True])]
    losses = {}
    for kind in (True, False):
        # Each kind on its own: the same chunks, the other kind's targets blanked.
        x, y = training_examples(
            seqs, 4, [m & (f == kind) for m, f in zip(masks, flags, strict=True)]
        )
        with torch.no_grad():
            logits, _ = model(x, y)
        losses[kind] = torch.nn.functional.cross_entropy(logits, y[y != PAD], reduction="none")
    expected = float(losses[True].mean() - losses[False].mean())
    assert memorisation_gap(model, seqs, masks, flags, 4, known_items=9) == pytest.approx(
        expected, abs=1e-5
    )


def test_validation_ndcg_does_not_depend_on_the_order_or_batching_of_users() -> None:
    model = _tiny_model()
    histories = [[1, 2, 3, 4, 5, 6, 7], [2], [3, 4], [5, 6, 7, 8], [1, 9], [4]]
    targets = [8, 3, 9, 1, 2, 4]  # the last target is in its own history and stays rankable
    expected = []
    for history, target in zip(histories, targets, strict=True):
        with torch.no_grad():
            logits, _ = model(torch.tensor([history[-6:]]))
        score = logits[0].clone()
        others = [i for i in range(1, 10) if i != target and i not in history]
        rank = int((score[others] >= logits[0, target]).sum())  # ties count against the model
        expected.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    for batch_size in (1, 2, 64):
        assert validation_ndcg(model, histories, targets, batch_size=batch_size) == pytest.approx(
            np.mean(expected), abs=1e-6
        )
    order = [3, 0, 5, 1, 4, 2]
    shuffled = validation_ndcg(model, [histories[i] for i in order], [targets[i] for i in order])
    assert shuffled == pytest.approx(np.mean(expected), abs=1e-6)


def _tied_recommender() -> Recommender:
    """Item i's representation is text vector i (an identity adaptor, no ID embedding): items 1-6
    share one vector and so one score whatever the history, items 7 and 8 another."""
    config = RecommenderConfig(
        hidden_size=4, num_layers=1, num_heads=1, max_seq_len=6, dropout=0.0, use_id=False
    )
    torch.manual_seed(0)
    model = SeqRec(config, 8, 4)
    with torch.no_grad():
        model.adaptor.weight.copy_(torch.eye(4))
        model.adaptor.bias.zero_()
    text = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 6 + [[0.0, 1.0, 0.0, 0.0]] * 2)
    model.set_text_embeddings(torch.arange(1, 9), text)
    return Recommender(model, [f"i{k}" for k in range(1, 9)])


def test_validation_and_evaluation_rank_ties_alike_against_the_model() -> None:
    recommender = _tied_recommender()
    ids = recommender.item_ids
    histories = [[1], [1, 2], [7], [3, 8]]
    targets = [2, 5, 8, 1]
    (validated,) = validation_ranks(recommender.model, histories, targets)
    cases = EvalCases(
        [f"u{k}" for k in range(4)],
        [[ids[i - 1] for i in h] for h in histories],
        [ids[t - 1] for t in targets],
    )
    evaluated, _ = rank_cases(recommender, RankingCases.build(cases, ids))
    np.testing.assert_array_equal(validated, evaluated)
    # Every tie ranks above the target: items 1-6 tie, so target 2 of history [1] has the four
    # other free items of its group above it at least; and no case is ranked first by luck.
    scores = recommender.score(cases.histories)
    for row, (history, target) in enumerate(zip(histories, targets, strict=True)):
        free = [i for i in range(1, 9) if i != target and i not in history]
        tied_or_above = sum(scores[row, i - 1] >= scores[row, target - 1] for i in free)
        assert validated[row] == tied_or_above


def test_a_constant_scorer_ranks_every_target_last_in_validation_and_evaluation() -> None:
    recommender = _tied_recommender()
    with torch.no_grad():
        recommender.model.adaptor.weight.zero_()  # every item scores 0
    histories, targets = [[1], [1, 2, 3]], [4, 8]
    (ranks,) = validation_ranks(recommender.model, histories, targets)
    assert ranks.tolist() == [8 - 1 - 1, 8 - 3 - 1]  # every other item not in the history
    lowest = (1 / np.log2(6 + 2) + 1 / np.log2(4 + 2)) / 2  # as low as these catalogues allow
    assert validation_ndcg(recommender.model, histories, targets) == pytest.approx(lowest)


def _simulated_shop(
    seed: int, n_users: int, n_items: int
) -> tuple[list[str], np.ndarray, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A simulated shop: item ids, random text vectors, every event in time order, and its
    older and newer halves."""
    from recloop.demo import simulate

    demo = simulate(seed=seed, n_users=n_users, n_items=n_items)
    items = demo.items["item_id"].tolist()
    text = np.random.default_rng(0).normal(size=(len(items), 16)).astype(np.float32)
    events = demo.interactions.sort_values("timestamp", kind="stable")
    return items, text, events, events.iloc[: len(events) // 2], events.iloc[len(events) // 2 :]


def _small_config(finetune_epochs: int) -> Config:
    """A network small enough for the simulated shop; the update never shrinks its parent."""
    return load_config(
        overrides={
            "model": {"hidden_size": 16, "num_layers": 1, "max_seq_len": 12},
            "train": {"epochs": 3, "finetune_epochs": finetune_epochs, "warm_shrink_gap": 0.0},
        }
    )


def test_a_training_repeats_exactly_with_the_same_seed() -> None:
    items, text, events, old, new = _simulated_shop(seed=3, n_users=60, n_items=80)
    config = _small_config(finetune_epochs=2)

    def train() -> tuple[dict[str, torch.Tensor], list[dict], dict[str, torch.Tensor], list]:
        first = fit_recommender(old, items, text, config)
        update = fit_recommender(
            events, items, text, config, parent=first.recommender, new_interactions=new
        )
        return (
            first.recommender.model.state_dict(),
            first.report["history"],
            update.recommender.model.state_dict(),
            update.report["history"],
        )

    one, two = train(), train()
    for left, right in ((one[0], two[0]), (one[2], two[2])):
        assert left.keys() == right.keys()
        for name in left:
            assert torch.equal(left[name], right[name]), name
    assert one[1] == two[1] and one[3] == two[3]  # every epoch's loss and validation NDCG
    assert len(one[3]) == 3 and one[3][0]["epoch"] == 0  # the update validated its parent


def test_recent_counts_are_the_recent_popularity_baselines_or_those_of_an_earlier_window() -> None:
    from recloop.baselines import RecentPopularity
    from recloop.fitting import recent_counts

    rng = np.random.default_rng(0)
    events = pd.DataFrame(
        {
            "user_id": [f"u{i % 7}" for i in range(200)],
            "item_id": [f"i{j}" for j in rng.integers(0, 12, 200)],
            "timestamp": np.arange(200) * 10,
        }
    )
    items = [f"i{j}" for j in range(14)]
    counts = recent_counts(events, items)
    np.testing.assert_array_equal(counts, RecentPopularity(events, items).recent_counts)
    assert counts.sum() == 20  # the last 10 % of the span: since 1791, so timestamps 1800..1990
    # The window of the same width (199) that ends just before 1000: timestamps 810..990.
    earlier = recent_counts(events, items, before=1000)
    window = events[(events["timestamp"] >= 801) & (events["timestamp"] < 1000)]
    expected = window["item_id"].value_counts()
    assert earlier.sum() == 19
    for item, count in expected.items():
        assert earlier[items.index(item)] == count


def test_a_full_training_searches_its_settings_and_an_update_keeps_the_choice() -> None:
    items, text, events, old, new = _simulated_shop(seed=5, n_users=80, n_items=60)
    overrides = {
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 1, "max_seq_len": 12},
        "train": {"epochs": 3, "finetune_epochs": 1},
    }
    plain = fit_recommender(old, items, text, load_config(overrides=overrides))
    overrides["train"]["search"] = ["hidden_size=8", "dropout=0.0"]
    searched = fit_recommender(old, items, text, load_config(overrides=overrides))
    search = searched.report["search"]
    assert set(search["mean_ndcg"]) == {"default", "hidden_size=8", "dropout=0.0"}
    assert set(search["z"]) == {"hidden_size=8", "dropout=0.0"}
    # Time-bounded: no alternative takes more optimiser steps than the default did.
    assert search["steps"]["default"] == plain.report["steps"]
    assert max(search["steps"].values()) == search["steps"]["default"]
    chosen = search["chosen"]
    assert searched.recommender.metadata["setting"] == chosen
    if chosen == "default":
        # The default's training is the plain one: the same seed gives the same weights.
        assert search["z"]["hidden_size=8"] < 2 and search["z"]["dropout=0.0"] < 2
        for name, weight in plain.recommender.model.state_dict().items():
            assert torch.equal(weight, searched.recommender.model.state_dict()[name]), name
    width = 8 if chosen == "hidden_size=8" else 16
    assert searched.recommender.model.config.hidden_size == width
    # An update copies the chosen network and searches nothing.
    update = fit_recommender(
        events,
        items,
        text,
        load_config(overrides=overrides),
        parent=searched.recommender,
        new_interactions=new,
    )
    assert "search" not in update.report and update.recommender.metadata["setting"] == chosen
    assert update.recommender.model.config.hidden_size == width


def test_refreshed_counts_are_those_of_every_event_and_the_network_is_untouched() -> None:
    from models.sasrec import TransitionPrior
    from recloop.baselines import RecentPopularity
    from recloop.fitting import recent_counts, refresh_counts

    rec = _tied_recommender()
    trained = _events([("u1", "i1", 1), ("u1", "i2", 2), ("u2", "i2", 3), ("u2", "i3", 40)])
    codes = [[1, 2], [2, 3]]
    rec.prior, rec.prior_weight = TransitionPrior.fit(codes, 8, window=2), 0.5
    rec.recent_counts, rec.recency_weight = recent_counts(trained, rec.item_ids), 1.0
    # The events judged on: the newest of each user (and one outside the catalogue, ignored).
    judged = _events([("u1", "i4", 58), ("u2", "i4", 60), ("u2", "unknown", 61)])
    every = pd.concat([trained, judged], ignore_index=True)
    state = {k: v.clone() for k, v in rec.model.state_dict().items()}

    refresh_counts(rec, every)

    assert rec.popularity.tolist() == [1, 2, 1, 2, 0, 0, 0, 0]
    # i2 -> i4 and i3 -> i4 are transitions now; the weights chosen on validation stay.
    expected = TransitionPrior.fit([[1, 2, 4], [2, 3, 4]], 8, window=2)
    np.testing.assert_array_equal(rec.prior.log_scores([[3]]), expected.log_scores([[3]]))
    assert rec.prior.window == 2 and (rec.prior_weight, rec.recency_weight) == (0.5, 1.0)
    # The recent window now ends at the newest event, as the recent-popularity baseline's does.
    known = every[every["item_id"] != "unknown"]
    np.testing.assert_array_equal(
        rec.recent_counts, RecentPopularity(known, rec.item_ids).recent_counts
    )
    assert rec.recent_counts[3] == 2  # both judged i4 events are recent
    for key, value in rec.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_the_judged_update_is_trained_again_with_the_events_it_was_judged_on() -> None:
    from recloop.data import holdout_last_events, last_events
    from recloop.fitting import kept_steps, learn_judged, target_losses

    items, text, events, old, new = _simulated_shop(seed=3, n_users=60, n_items=80)
    config = _small_config(finetune_epochs=3)
    first = fit_recommender(old, items, text, config)
    train, cases = holdout_last_events(old, new)  # the gate's held-out newest events
    heldout = last_events(new)
    arrived = train.iloc[len(old) :]
    judged = fit_recommender(
        train, items, text, config, parent=first.recommender, new_interactions=arrived
    )
    weights = {k: v.clone() for k, v in judged.recommender.model.state_dict().items()}
    steps = kept_steps(judged.report)
    assert 0 < steps <= judged.report["steps"]

    served = learn_judged(
        judged,
        events,
        config,
        first.recommender,
        set(new["user_id"]),
        pd.concat([arrived, heldout]),
    )

    report = served.report["learned_judged"]
    assert report["how"] == "retrained" and report["steps"] == steps
    model = served.recommender
    assert model is not judged.recommender
    # The judged model is left as it was judged; the new one counts every event and keeps the
    # prior weights chosen on validation.
    for name, weight in judged.recommender.model.state_dict().items():
        assert torch.equal(weight, weights[name]), name
    assert model.popularity.sum() == len(events)
    assert (model.prior_weight, model.recency_weight) == (
        judged.recommender.prior_weight,
        judged.recommender.recency_weight,
    )
    # It learned the held-out events: it predicts them better than the judged model does.
    index = model.index
    histories = [[index[i] for i in h] for h in cases.histories]
    targets = [index[t] for t in cases.targets]
    sequences = [h + [t] for h, t in zip(histories, targets, strict=True)]
    x, y = training_examples(sequences, 12, [np.arange(len(s)) == len(s) - 1 for s in sequences])

    def loss(m: Recommender) -> float:
        return float(target_losses(m.model, x, y).mean())

    assert loss(model) < loss(judged.recommender)

    # From scratch there is no second training: the counts take the held-out events in.
    scratch = fit_recommender(train, items, text, config)
    kept = learn_judged(scratch, events, config, None, None, None)
    assert (kept.report["learned_judged"]["how"], kept.report["learned_judged"]["steps"]) == (
        "counts",
        0,
    )
    assert kept.recommender.popularity.sum() == len(events)
    assert scratch.recommender.popularity.sum() == len(train)  # judged as it was
    for name, weight in scratch.recommender.model.state_dict().items():
        assert torch.equal(weight, kept.recommender.model.state_dict()[name]), name
