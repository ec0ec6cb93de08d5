"""The text encoder: masking, MLM pretraining, cached embeddings, and the pretrain decision."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models import encoder
from models.encoder import TextEmbedder, base_encoder_path
from recloop import pretraining
from recloop.config import Config, EncoderConfig
from recloop.paths import Home
from recloop.pretraining import (
    fit_mlm_head,
    head_perplexity,
    mlm_collator,
    mlm_perplexity,
    pretrain_mlm,
    split_texts,
    tokenize_for_mlm,
    unigram_log_prior,
)
from tasks import pretrain

pytestmark = pytest.mark.model

CORPUS = [
    "cast iron skillet pre-seasoned for searing steaks",
    "trail running shoe with aggressive lugs and a rock plate",
    "jazz vinyl record pressed on heavy black wax",
    "dutch oven with helper handle for slow braises",
    "hydration vest with two soft flasks",
    "headlamp with reflective trim for night runs",
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_encoder_path()))


def test_collator_masks_about_fifteen_percent(tokenizer) -> None:
    features = tokenize_for_mlm(tokenizer, CORPUS * 40, max_length=32)
    batch = mlm_collator(tokenizer, 0.15, seed=0)(features)
    special = np.array(
        [
            tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
            for ids in batch["labels"].where(batch["labels"] != -100, batch["input_ids"]).tolist()
        ]
    )
    padded = (batch["attention_mask"] == 0).numpy()
    labelled = (batch["labels"] != -100).numpy()
    real = ~padded & (special == 0)
    assert not (labelled & ~real).any()  # never a special or padding token
    share = labelled.sum() / real.sum()
    assert 0.12 < share < 0.18
    # the same seed draws the same masks
    again = mlm_collator(tokenizer, 0.15, seed=0)(tokenize_for_mlm(tokenizer, CORPUS * 40, 32))
    assert (again["labels"] == batch["labels"]).all()


# A repetitive catalogue: every held-out text is a training phrase with another prefix, which
# the adapted top layers learn in a few steps and a frozen encoder with a fitted head does not
# (seeds 3, 4, 5 gave after/before ratios of 0.34, 0.46 and 0.42).
PREFIXES = ("new", "classic", "deluxe", "compact", "vintage", "premium", "budget", "travel")
REPETITIVE = [f"{p} {t}" for p in PREFIXES for t in CORPUS]
TINY = EncoderConfig(
    max_length=16, max_steps=20, batch_size=8, learning_rate=2e-4, head_warmup_steps=40
)


@pytest.fixture
def tiny_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A larger held-out share and a smaller head warm-up sample than a real catalogue's, so the
    48 texts of :data:`REPETITIVE` give enough of each."""
    monkeypatch.setattr(pretraining, "EVAL_FRACTION", 0.3)
    monkeypatch.setattr(pretraining, "HEAD_WARMUP_TOKENS", 512)


@pytest.mark.usefixtures("tiny_recipe")
def test_pretraining_lowers_perplexity_and_saves_an_encoder(tmp_path: Path) -> None:
    report = pretrain_mlm(REPETITIVE, base_encoder_path(), tmp_path / "enc", TINY, seed=3)
    assert report.steps == 20 and report.n_eval_texts >= 10
    # a tiny catalogue: the warm-up stops after HEAD_MAX_EPOCHS passes over its masked tokens
    assert report.head_initialised and 0 < report.head_warmup_steps <= 40
    # The shipped checkpoint has no MLM head: the random one is near-uniform over 30k tokens.
    assert report.perplexity_untrained_head > 5_000
    # Fitting the head alone makes "before" a measure of the base encoder...
    assert report.perplexity_before < report.perplexity_untrained_head / 10
    # ...and adapting the encoder lowers it further on the same held-out texts and masks.
    assert math.isfinite(report.perplexity_after)
    assert report.perplexity_after < 0.8 * report.perplexity_before
    for name in ("config.json", "tokenizer.json", encoder.FINGERPRINT_FILE, encoder.REPORT_FILE):
        assert (tmp_path / "enc" / name).exists(), name
    saved = json.loads((tmp_path / "enc" / encoder.REPORT_FILE).read_text())
    assert saved["perplexity_before"] == report.perplexity_before
    # the adapted encoder embeds, and differs from the base one
    adapted = TextEmbedder(tmp_path / "enc", None, TINY).embed(CORPUS[:2])
    base = TextEmbedder(base_encoder_path(), None, TINY).embed(CORPUS[:2])
    assert adapted.shape == (2, 384) and adapted.dtype == np.float32
    assert not np.allclose(adapted, base)
    # Continuing from the adapted encoder: its head is loaded, not warmed up again.
    one_step = dataclasses.replace(TINY, max_steps=1)
    again = pretrain_mlm(REPETITIVE, tmp_path / "enc", tmp_path / "enc2", one_step, seed=3)
    assert not again.head_initialised and again.head_warmup_steps == 0
    assert again.perplexity_before == again.perplexity_untrained_head
    # the saved head and encoder round-trip: "before" now is the first run's "after"
    assert again.perplexity_before == pytest.approx(report.perplexity_after, rel=1e-4)


@pytest.mark.usefixtures("tiny_recipe")
def test_head_warmup_fits_the_head_and_leaves_the_encoder_alone(tokenizer) -> None:
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(str(base_encoder_path()))
    train, held = split_texts(REPETITIVE, 0.3, seed=3)
    features = tokenize_for_mlm(tokenizer, train, TINY.max_length)
    held_features = tokenize_for_mlm(tokenizer, held, TINY.max_length)
    held_out = pretraining._masked_states(
        model,
        mlm_collator(tokenizer, pretraining.MLM_PROBABILITY, 3),
        held_features,
        TINY.batch_size,
    )
    encoder_before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.cls.state_dict().items()}
    untrained = head_perplexity(model, *held_out)

    report = fit_mlm_head(model, tokenizer, features, TINY, seed=3, init_bias=True)

    assert 0 < report.steps <= TINY.head_warmup_steps
    assert report.epochs <= pretraining.HEAD_MAX_EPOCHS
    for key, value in model.bert.state_dict().items():  # the tied decoder is in here too
        assert torch.equal(value, encoder_before[key]), key
    changed = [k for k, v in model.cls.state_dict().items() if not torch.equal(v, head_before[k])]
    assert "predictions.bias" in changed and "predictions.transform.dense.weight" in changed
    fitted = head_perplexity(model, *held_out)
    assert fitted < untrained / 10
    # The cached-state perplexity is mlm_perplexity's (same seed, same masks): "before" and
    # "after" are measured alike.
    assert fitted == pytest.approx(mlm_perplexity(model, tokenizer, held, TINY, seed=3), rel=1e-4)


def test_unigram_prior_counts_only_real_tokens() -> None:
    features = [
        {"input_ids": [0, 5, 5, 6, 1], "special_tokens_mask": [1, 0, 0, 0, 1]},
        {"input_ids": [0, 5, 1], "special_tokens_mask": [1, 0, 1]},
    ]
    prior = unigram_log_prior(features, vocab_size=8)
    assert prior.shape == (8,)
    assert float(prior.exp().sum()) == pytest.approx(1.0, rel=1e-5)
    # add-0.1 smoothing: token 5 seen 3 times, 6 once, specials (0, 1) never counted
    total = 3.1 + 1.1 + 6 * 0.1
    assert float(prior[5].exp()) == pytest.approx(3.1 / total, rel=1e-5)
    assert float(prior[6].exp()) == pytest.approx(1.1 / total, rel=1e-5)
    assert float(prior[0]) == pytest.approx(float(prior[7]))


def test_split_texts_caps_the_held_out_share() -> None:
    texts = [f"item {i}" for i in range(100)]
    train, held = split_texts(texts, 0.2, seed=1, max_eval=5)
    assert len(held) == 5 and len(train) == 95 and not set(train) & set(held)
    assert split_texts(texts, 0.2, seed=1) == split_texts(texts, 0.2, seed=1)
    assert len(split_texts(texts, 0.2, seed=1)[1]) == 20


def test_embeddings_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder, "EMBED_BATCH_SIZE", 4)  # several batches
    config = EncoderConfig(max_length=32)
    first = TextEmbedder(base_encoder_path(), tmp_path, config)
    vectors = first.embed(CORPUS + CORPUS[:2])  # duplicates are encoded once
    assert vectors.shape == (8, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert first.stats.encoded == len(CORPUS)
    np.testing.assert_array_equal(vectors[6:], vectors[:2])
    # similar texts are closer than unrelated ones
    assert vectors[0] @ vectors[3] > vectors[0] @ vectors[2]

    second = TextEmbedder(base_encoder_path(), tmp_path, config)
    again = second.embed(list(reversed(CORPUS)))
    assert second.stats.encoded == 0 and second.stats.cached == len(CORPUS)
    assert second._model is None  # a fully cached call never loads the model
    np.testing.assert_allclose(again, vectors[: len(CORPUS)][::-1])
    second.embed(CORPUS + ["a brand new item"])
    assert second.stats.encoded == 1
    assert len(list(tmp_path.glob("*.npz"))) == 1


def _fake_pretrain(texts, base_path, out_dir, config, seed):
    """Stands in for MLM (the decision is under test here): writes an encoder-like folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "config.json").write_text(json.dumps({"hidden_size": 384, "from": str(base_path)}))
    (out_dir / encoder.FINGERPRINT_FILE).write_text(f"{len(texts)}\n")
    return pretraining.MLMReport(1, 0.1, 10.0, len(texts), 0, 2.0, 1.0, str(out_dir), "f")


def test_pretrain_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrain, "pretrain_mlm", _fake_pretrain)
    home = Home(tmp_path).ensure()
    catalogue = pd.DataFrame(
        {"item_id": [str(i) for i in range(10)], "clean_text": [f"item {i}" for i in range(10)]}
    )
    config = Config()

    off = pretrain.pretrain_encoder(catalogue, home, Config(encoder=EncoderConfig(enabled=False)))
    assert not off.ran and off.encoder_path == base_encoder_path()

    first = pretrain.pretrain_encoder(catalogue, home, config)
    assert first.ran and first.encoder_path.parent == home.encoders
    assert json.loads((home.encoders / "current.json").read_text())["encoder_path"] == str(
        first.encoder_path
    )

    # 1 of 10 texts changed: below the 20% threshold, the last encoder is reused
    changed = catalogue.copy()
    changed.loc[0, "clean_text"] = "a rewritten item"
    reuse = pretrain.pretrain_encoder(changed, home, config)
    assert not reuse.ran and reuse.encoder_path == first.encoder_path
    assert "10.0%" in reuse.reason

    forced = pretrain.pretrain_encoder(changed, home, config, force=True)
    assert forced.ran and forced.encoder_path != first.encoder_path

    # 3 more new texts: 3 of 10 unseen by the last pretraining
    changed.loc[1:3, "clean_text"] = ["x", "y", "z"]
    rerun = pretrain.pretrain_encoder(changed, home, config)
    assert rerun.ran and rerun.report["change_share"] == pytest.approx(0.3)
    assert rerun.report["started_from"] == str(forced.encoder_path)
