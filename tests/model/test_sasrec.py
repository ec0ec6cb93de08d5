"""Behaviour of the sequential recommender: causal encoding, item growth, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sasrec import (
    PAD,
    PRIOR_FLOOR,
    Recommender,
    SeqRec,
    TransitionPrior,
    linear_cross_entropy,
    recency_log_shares,
)
from recloop.config import RecommenderConfig

pytestmark = pytest.mark.model

TEXT_DIM = 12


def _text(n: int, seed: int = 0) -> torch.Tensor:
    emb = torch.randn(n, TEXT_DIM, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(emb, dim=1)


def _recommender(n_items: int = 20, seed: int = 0, **overrides: object) -> Recommender:
    settings = {
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "dropout": 0.0,
        "max_seq_len": 8,
    }
    config = RecommenderConfig(**{**settings, **overrides})
    torch.manual_seed(seed)
    model = SeqRec(config, n_items, TEXT_DIM)
    model.set_text_embeddings(torch.arange(1, n_items + 1), _text(n_items, seed))
    if model.id_emb is not None:  # a "trained" model: non-zero ID rows
        with torch.no_grad():
            model.id_emb.weight[1:] = torch.randn(n_items, 16) * 0.5
    popularity = np.arange(n_items, dtype=float)
    return Recommender(model, [f"i{i}" for i in range(n_items)], popularity, {"note": "test"})


def test_forward_shapes_and_loss() -> None:
    rec = _recommender()
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    y = torch.tensor([[0, 0, 4, 5, 6], [2, 3, 4, 5, 6]])
    logits, loss = rec.model(x, y)
    assert logits.shape == (8, 21)  # 3 + 5 positions with a target, N+1 columns
    assert loss is not None and torch.isfinite(loss)
    last, none = rec.model(x)
    assert last.shape == (2, 21) and none is None
    assert torch.isinf(last[:, PAD]).all()


@pytest.mark.parametrize("chunk", [1, 3, 128])
def test_linear_cross_entropy_matches_the_full_logits(chunk: int) -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = (torch.randn(7, 5, generator=gen) * 3).requires_grad_()
    items = torch.randn(11, 5, generator=gen).requires_grad_()
    targets = torch.tensor([0, 10, 4, 4, 2, 9, 1])
    expected = torch.nn.functional.cross_entropy(hidden @ items.T, targets)
    grads = torch.autograd.grad(expected * 2.5, (hidden, items))
    loss = linear_cross_entropy(hidden, items, targets, chunk=chunk)
    assert torch.allclose(loss, expected, atol=1e-6)
    got = torch.autograd.grad(loss * 2.5, (hidden, items))  # backward scales by grad_output
    for a, b in zip(got, grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():  # no gradient asked for: the value alone
        assert torch.allclose(linear_cross_entropy(hidden, items, targets, chunk), expected)
    rows = torch.nn.functional.cross_entropy(hidden @ items.T, targets, reduction="none")
    got_rows = linear_cross_entropy(hidden, items, targets, chunk, reduction="none")
    assert got_rows.shape == (7,) and torch.allclose(got_rows, rows, atol=1e-5)


def test_training_loss_equals_the_forward_loss() -> None:
    model = _recommender().model.train()
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    y = torch.tensor([[0, 0, 4, 5, 20], [2, 3, 4, 5, 6]])
    _, expected = model(x, y)
    grads = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    loss = model.loss(x, y)
    got = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert torch.allclose(loss, expected, atol=1e-5)
    for a, b in zip(got, grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5)


def test_future_items_do_not_leak() -> None:
    model = _recommender().model.eval()
    with torch.no_grad():
        a = model.encode(torch.tensor([[3, 4, 5]]))[:, 1]
        b = model.encode(torch.tensor([[3, 4, 9]]))[:, 1]
    assert torch.allclose(a, b, atol=1e-6)  # position 1 does not see position 2


def test_padding_is_ignored() -> None:
    model = _recommender().model.eval()
    with torch.no_grad():
        a = model.encode(torch.tensor([[0, 0, 3, 4, 5]]))[:, -1]
        b = model.encode(torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]]))[:1, -1]
        other = model.encode(torch.tensor([[7, 7, 3, 4, 5]]))[:, -1]
    assert torch.allclose(a, b, atol=1e-6)  # batching does not change a row
    assert not torch.allclose(a, other, atol=1e-4)  # real items in place of padding do


@pytest.mark.parametrize("num_layers", [1, 3])
def test_encode_last_is_the_last_position_of_encode(num_layers: int) -> None:
    model = _recommender(num_layers=num_layers).model.eval()
    inputs = torch.tensor(
        [[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 9]]
    )
    with torch.no_grad():
        full = model.encode(inputs)[:, -1]
        last = model.encode_last(inputs)
        assert last.shape == (3, 16)
        assert torch.allclose(last, full, atol=1e-5)
        # A fully padded row (no history) stays defined: it attends to itself only, as in encode.
        empty = torch.zeros(1, 4, dtype=torch.long)
        assert torch.allclose(model.encode_last(empty), model.encode(empty)[:, -1], atol=1e-5)


def test_new_item_scores_from_text_alone() -> None:
    rec = _recommender()
    history = [["i1", "i2", "i3"]]
    before = rec.score(history)
    new_text = _text(1, seed=99)
    rec.add_items(["new"], new_text.numpy())
    model = rec.model
    assert rec.item_ids[-1] == "new" and rec.index["new"] == 21
    assert torch.count_nonzero(model.id_emb.weight[21]) == 0
    after = rec.score(history)
    assert after.shape == (1, 21)
    np.testing.assert_allclose(after[0, :20], before[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        inputs = torch.tensor([[rec.index[i] for i in history[0]]])
        h = model.encode(inputs)[0, -1]
        text_score = float(h @ model.text_repr()[21])
    assert after[0, 20] == pytest.approx(text_score, rel=1e-5, abs=1e-6)
    assert abs(text_score) > 1e-4  # the text path gives it a real score, not a constant 0
    assert rec.popularity[-1] == 0


def test_shrink_weights_scales_every_trained_weight() -> None:
    rec = _recommender()
    model = rec.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    text = model.text_emb.clone()
    model.shrink_weights(1.0)  # the parent as it is
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name])

    model.shrink_weights(0.5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, 0.5 * before[name])
    assert torch.equal(model.text_emb, text)  # the encoder's vectors are not weights to shrink
    assert not model.id_emb.weight[PAD].any()  # padding stays padding
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            model.shrink_weights(bad)


def test_id_only_model_has_no_adaptor() -> None:
    rec = _recommender(use_text=False)
    assert rec.model.adaptor is None
    assert rec.score([["i1"]]).shape == (1, 20)
    with pytest.raises(ValueError):
        SeqRec(RecommenderConfig(use_text=False, use_id=False), 3, TEXT_DIM)


def test_empty_or_unknown_history_gets_popularity() -> None:
    rec = _recommender()
    scores = rec.score([[], ["unknown"], ["i1"]])
    np.testing.assert_allclose(scores[0], rec.popularity_scores())
    np.testing.assert_allclose(scores[1], rec.popularity_scores())
    assert scores[0].max() == pytest.approx(1.0)
    assert not np.allclose(scores[2], scores[0])
    # unknown items in a history are ignored
    np.testing.assert_allclose(rec.score([["i1", "zzz"]]), rec.score([["i1"]]), atol=1e-6)


def test_recommend_excludes_seen_items() -> None:
    rec = _recommender()
    history = ["i1", "i2", "i3"]
    ids, scores = rec.recommend([history], k=5)
    assert len(ids[0]) == 5 and not set(ids[0]) & set(history)
    assert scores[0] == sorted(scores[0], reverse=True)
    ids_all, _ = rec.recommend([history], k=20, exclude_seen=False)
    assert set(ids_all[0]) == set(rec.item_ids)


def test_save_load_round_trip(tmp_path) -> None:
    rec = _recommender()
    rec.add_items(["new"], _text(1, seed=5).numpy())
    path = rec.save(tmp_path / "model.pt")
    # the checkpoint holds only plain types: a weights_only load works by itself
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {
        "model_args",
        "state_dict",
        "item_ids",
        "text_dim",
        "popularity",
        "metadata",
        "prior",
        "prior_weight",
        "recent_counts",
        "recency_weight",
    }
    loaded = Recommender.load(path)
    histories = [["i1", "i2"], [], ["new", "i5", "i6", "i7", "i8", "i9", "i10", "i11", "i12"]]
    np.testing.assert_array_equal(loaded.score(histories), rec.score(histories))
    assert loaded.item_ids == rec.item_ids
    assert loaded.metadata == {"note": "test"}
    assert loaded.config == rec.config


def test_id_gate_scores_items_with_too_little_history_from_text_alone() -> None:
    rec = _recommender(id_min_count=3)
    model = rec.model
    history = [["i1", "i2", "i3"]]
    open_scores = rec.score(history)
    counts = np.zeros(20)
    counts[:10] = 3  # items i0..i9 have enough history, i10..i19 do not
    model.set_id_gate(counts)
    assert model.id_gate[PAD] == 0 and model.id_gate[1:11].eq(1).all()
    assert model.id_gate[11:].eq(0).all()
    gated = rec.score(history)
    with torch.no_grad():
        inputs = torch.tensor([[rec.index[i] for i in history[0]]])
        h = model.encode(inputs)[0, -1]
        text_scores = (model.text_repr()[11:] @ h).numpy()
        full_scores = (model.item_repr()[1:11] @ h).numpy()
    np.testing.assert_allclose(gated[0, 10:], text_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gated[0, :10], full_scores, rtol=1e-5, atol=1e-6)
    # the history items i1..i3 are gated open, so the user state is as before: only the
    # scores of the gated items changed
    np.testing.assert_allclose(gated[0, :10], open_scores[0, :10], rtol=1e-5, atol=1e-6)
    assert not np.allclose(gated[0, 10:], open_scores[0, 10:], atol=1e-4)
    rec.add_items(["new"], _text(1, seed=3).numpy())
    assert model.id_gate.shape == (22,) and model.id_gate[21] == 0  # new: text alone
    with pytest.raises(ValueError, match="21 item counts"):
        model.set_id_gate(np.ones(20))


def test_checkpoint_from_before_the_id_gate_loads_with_every_id_open(tmp_path) -> None:
    rec = _recommender()
    path = rec.save(tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["id_gate"]  # as saved before the gate existed
    del raw["model_args"]["id_min_count"]
    del raw["model_args"]["prior_window"], raw["model_args"]["prior_weights"]
    del raw["prior"], raw["prior_weight"]  # nor the transition prior
    del raw["recent_counts"], raw["recency_weight"]  # nor the recency prior
    # ...and it had the keys of two switches since removed, at their values of the time.
    raw["model_args"].update(id_dropout=0.3, temperature=0.0)
    torch.save(raw, path)
    loaded = Recommender.load(path)
    assert loaded.config.id_min_count == 0 and loaded.model.id_gate[1:].eq(1).all()
    assert loaded.prior is None and loaded.config.prior_window == 0
    assert loaded.recent_counts is None and loaded.recency_weight == 0.0
    history = [["i1", "i2", "i3"]]
    np.testing.assert_array_equal(loaded.score(history), rec.score(history))
    # Cosine scores with a temperature are no longer computed: such a checkpoint says so.
    raw["model_args"]["temperature"] = 0.1
    torch.save(raw, path)
    with pytest.raises(ValueError, match="temperature=0.1"):
        Recommender.load(path)


def test_transition_prior_weights_the_recent_items_transitions() -> None:
    # table indices: 1 -> 2 twice, 1 -> 3 once, 2 -> 3 once; item 4 never follows anything
    prior = TransitionPrior.fit([[1, 2, 3], [1, 2], [1, 3]], num_items=4, window=2)
    scores = prior.log_scores([[1, 2], [4], [3, 4, 1]])
    # [1, 2]: the last item 2 -> 3 (weight 1); the one before, 1 -> 2 (2/3) and 3 (1/3), at 1/2
    expected = np.log1p(np.array([0.0, 1 / 3, 1 + 1 / 6, 0.0]) / PRIOR_FLOOR)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(scores[1], np.zeros(4))  # no transition from item 4
    # only the last `window` items vote: item 3 is out of it
    np.testing.assert_allclose(scores[2], np.log1p(np.array([0, 2 / 3, 1 / 3, 0]) / PRIOR_FLOOR))
    prior.grow(2)
    assert prior.num_items == 6 and prior.log_scores([[1]])[0, 4:].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="window"):
        TransitionPrior.fit([[1, 2]], num_items=2, window=0)


def test_the_prior_is_added_to_the_models_log_probabilities() -> None:
    rec = _recommender()
    histories = [["i1", "i2", "i3"], ["i4"], []]
    plain = rec.score(histories)
    codes = [[rec.index[i] for i in h] for h in histories]
    rec.prior = TransitionPrior.fit([c for c in codes if c] + [[2, 9, 4, 9]], 20, window=2)
    np.testing.assert_array_equal(rec.score(histories), plain)  # weight 0: the plain logits
    rec.prior_weight = 0.5
    fused = rec.score(histories)
    log_probs = torch.log_softmax(torch.from_numpy(plain[:2]), dim=-1).numpy()
    expected = log_probs + 0.5 * rec.prior.log_scores(codes[:2])
    np.testing.assert_allclose(fused[:2], expected, rtol=1e-5, atol=1e-5)
    assert (rec.prior.log_scores(codes[:2]) > 0).sum() >= 2  # the prior did move some scores
    np.testing.assert_array_equal(fused[2], plain[2])  # no history: popularity, as before
    with pytest.raises(ValueError, match="prior over 3 items"):
        Recommender(rec.model, rec.item_ids, prior=TransitionPrior.fit([[1, 2]], 3, 1))


def test_a_prior_survives_growth_copy_and_checkpoint(tmp_path) -> None:
    rec = _recommender()
    rec.prior = TransitionPrior.fit([[1, 2, 3, 2, 1]], 20, window=3)
    rec.prior_weight = 0.3
    copied = rec.copy()
    copied.add_items(["new"], _text(1, seed=5).numpy())
    assert rec.prior.num_items == 20 and copied.prior.num_items == 21  # the copy is its own
    loaded = Recommender.load(copied.save(tmp_path / "model.pt"))
    assert loaded.prior_weight == 0.3 and loaded.prior.window == 3
    histories = [["i0", "i1"], ["new", "i2"]]
    np.testing.assert_array_equal(loaded.score(histories), copied.score(histories))


def test_the_recency_prior_adds_what_is_popular_now() -> None:
    rec = _recommender()
    histories = [["i1", "i2", "i3"], ["i4"]]
    plain = rec.score(histories)
    counts = np.zeros(20)
    counts[[5, 7]] = [30.0, 10.0]  # i5 and i7 are what everyone consumed lately
    shares = recency_log_shares(counts)
    assert shares[5] > shares[7] > shares[0] and shares[0] == pytest.approx(np.log(1 / 60))
    rec.recent_counts = counts
    np.testing.assert_array_equal(rec.score(histories), plain)  # weight 0: the plain logits
    rec.recency_weight = 4.0
    fused = rec.score(histories)
    log_probs = torch.log_softmax(torch.from_numpy(plain), dim=-1).numpy()
    np.testing.assert_allclose(fused, log_probs + 4.0 * shares, rtol=1e-5, atol=1e-5)
    assert [ids[:2] for ids in rec.recommend(histories, k=2)[0]] == [["i5", "i7"]] * 2
    # new items have no recent event yet; the counts travel with the copy and the checkpoint
    rec.add_items(["new"], _text(1, seed=5).numpy())
    assert rec.recent_counts.tolist()[-1] == 0.0 and len(rec.recent_counts) == 21
    assert rec.copy().recency_weight == 4.0
