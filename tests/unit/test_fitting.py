"""What an incremental update trains on: new events, a seeded replay sample, masked examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.sasrec import PAD, SeqRec
from recloop.config import RecommenderConfig
from recloop.fitting import (
    chunk_count,
    distillation_loss,
    memorisation_gap,
    new_event_flags,
    sample_replay,
    training_examples,
    validation_ndcg,
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


def test_replay_keeps_every_new_event_and_adds_the_requested_number_of_earlier_ones() -> None:
    sequences, flags = _history()
    masks, near, far = sample_replay(sequences, flags, 3, np.random.default_rng(0))
    assert (near, far) == (0, 3)  # without max_seq_len no history is encoded "anyway"
    # New events are always targets, except a first event (nothing to predict it from).
    assert masks["u1"][3:].all() and masks["u4"].tolist() == [False, True]
    assert "u3" not in masks  # its only event is a first event
    # Earlier candidates: u1 positions 1, 2 and u2 positions 1, 2 (never position 0).
    earlier = masks["u1"][1:3].sum() + (masks["u2"][1:].sum() if "u2" in masks else 0)
    assert earlier == 3
    assert not masks["u1"][0] and ("u2" not in masks or not masks["u2"][0])


def test_replay_sample_is_seeded() -> None:
    sequences, flags = _history()

    def sample(seed: int) -> dict[str, list[bool]]:
        masks, *_ = sample_replay(sequences, flags, 2, np.random.default_rng(seed))
        return {u: m.tolist() for u, m in masks.items()}

    assert sample(1) == sample(1)
    assert len({str(sample(seed)) for seed in range(10)}) > 1  # the seed matters


def test_replay_size_larger_than_the_history_replays_all_of_it() -> None:
    sequences, flags = _history()
    masks, near, far = sample_replay(sequences, flags, 100, np.random.default_rng(0))
    assert (near, far) == (0, 4)
    assert masks["u1"].tolist() == [False, True, True, True, True]
    assert masks["u2"].tolist() == [False, True, True]


def test_training_examples_with_target_masks_drop_chunks_without_targets() -> None:
    seq = list(range(1, 12))  # 11 items -> chunks ending at 11, 7, 3 (max_seq_len 4)
    mask = np.zeros(11, dtype=bool)
    mask[[9, 10]] = True  # targets: items 10 and 11, both in the last chunk
    x, y = training_examples([seq, [4, 5]], max_seq_len=4, target_masks=[mask, [False, True]])
    assert x.shape == (2, 4)
    assert x[0].tolist() == [7, 8, 9, 10] and y[0].tolist() == [PAD, PAD, 10, 11]
    assert x[1].tolist() == [PAD, PAD, PAD, 4] and y[1].tolist() == [PAD, PAD, PAD, 5]


def test_replay_takes_all_of_the_history_the_update_encodes_anyway() -> None:
    sequences, flags = _history()
    # max_seq_len 3: u1's chunk around its new events covers positions 2..4, so position 2 is
    # the only "near" earlier event (u2 has no new event: all of it is "far").
    masks, near, far = sample_replay(sequences, flags, 0, np.random.default_rng(0), max_seq_len=3)
    assert (near, far) == (1, 0)  # the near tier is taken whole, even with no replay asked for
    assert masks["u1"].tolist() == [False, False, True, True, True] and "u2" not in masks
    # replay_size counts the far tier only: u1's position 1 or one of u2's positions.
    masks, near, far = sample_replay(sequences, flags, 1, np.random.default_rng(0), max_seq_len=3)
    assert (near, far) == (1, 1) and masks["u1"][2]
    assert masks["u1"][1] + (masks["u2"].sum() if "u2" in masks else 0) == 1


def test_far_replay_is_taken_by_chunk_so_few_extra_sequences_are_encoded() -> None:
    # 20 users with 12 earlier events each and no new event: everything is "far". With
    # max_seq_len 4 each user's targets (positions 1..11) fall in chunks of 4, 4 and 3 positions.
    sequences = {f"u{k:02d}": list(range(1, 13)) for k in range(20)}
    flags = {user: np.zeros(12, dtype=bool) for user in sequences}
    masks, near, far = sample_replay(
        sequences, flags, 6, np.random.default_rng(0), max_seq_len=4, per_chunk=3
    )
    assert (near, far) == (0, 6)
    x, y = training_examples([sequences[u] for u in masks], 4, list(masks.values()))
    assert len(x) == 2  # 6 targets from 2 chunks of 3, not from up to 6 chunks
    assert int((y != PAD).sum()) == 6
    # per_chunk 0 takes whole chunks: 6 targets from 2 chunks (4 + 2, or 3 + 3, ...).
    masks, near, far = sample_replay(sequences, flags, 6, np.random.default_rng(0), max_seq_len=4)
    x, _ = training_examples([sequences[u] for u in masks], 4, list(masks.values()))
    assert (near, far) == (0, 6) and len(x) == 2


def test_chunk_count_matches_the_chunks_training_examples_cuts() -> None:
    for length in range(0, 30):
        x, _ = training_examples([list(range(1, length + 1))], max_seq_len=4)
        assert chunk_count(length, 4) == len(x), length


def test_memorisation_gap_is_the_cross_entropy_of_new_events_minus_earlier_ones() -> None:
    import torch

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
    import torch

    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=16, num_layers=1, num_heads=2, max_seq_len=max_seq_len)
    return SeqRec(config, items, 4).eval()


def test_memorisation_gap_matches_the_cross_entropies_taken_one_target_at_a_time() -> None:
    import torch

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
    import torch

    model = _tiny_model()
    histories = [[1, 2, 3, 4, 5, 6, 7], [2], [3, 4], [5, 6, 7, 8], [1, 9], [4]]
    targets = [8, 3, 9, 1, 2, 4]  # the last target is in its own history and stays rankable
    expected = []
    for history, target in zip(histories, targets, strict=True):
        with torch.no_grad():
            logits, _ = model(torch.tensor([history[-6:]]))
        score = logits[0].clone()
        score[history] = float("-inf")
        rank = int((score > logits[0, target]).sum())
        expected.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    for batch_size in (1, 2, 64):
        assert validation_ndcg(model, histories, targets, batch_size=batch_size) == pytest.approx(
            np.mean(expected), abs=1e-6
        )
    order = [3, 0, 5, 1, 4, 2]
    shuffled = validation_ndcg(model, [histories[i] for i in order], [targets[i] for i in order])
    assert shuffled == pytest.approx(np.mean(expected), abs=1e-6)


def test_distillation_loss_is_the_tempered_kl_divergence_over_the_items() -> None:
    import torch

    pad = torch.full((2, 1), float("-inf"))
    teacher = torch.cat([pad, torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])], dim=1)
    student = torch.cat([pad, torch.tensor([[0.0, 1.0, 0.0], [1.0, -2.0, 0.0]])], dim=1)
    assert float(distillation_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    for temperature in (1.0, 2.0):
        p = torch.softmax(teacher[:, 1:] / temperature, dim=-1)
        q = torch.softmax(student[:, 1:] / temperature, dim=-1)
        expected = (p * (p / q).log()).sum(-1).mean() * temperature**2
        assert float(distillation_loss(student, teacher, temperature)) == pytest.approx(
            float(expected), rel=1e-5
        )
