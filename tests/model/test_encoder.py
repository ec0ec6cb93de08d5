"""The text encoder: masking, MLM pretraining, cached embeddings, and the pretrain decision."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import encoder
from models.encoder import (
    TextEmbedder,
    base_encoder_path,
    mlm_collator,
    pretrain_mlm,
    tokenize_for_mlm,
)
from recloop.config import Config, EncoderConfig
from recloop.paths import Home
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


def test_pretraining_lowers_perplexity_and_saves_an_encoder(tmp_path: Path) -> None:
    config = EncoderConfig(
        max_length=16, max_steps=6, batch_size=8, learning_rate=1e-3, eval_fraction=0.3
    )
    texts = [f"{t} number {i}" for i in range(4) for t in CORPUS]
    report = pretrain_mlm(texts, base_encoder_path(), tmp_path / "enc", config, seed=3)
    assert report.steps == 6 and report.n_eval_texts >= 1
    assert math.isfinite(report.perplexity_before) and math.isfinite(report.perplexity_after)
    assert report.perplexity_after < report.perplexity_before
    for name in ("config.json", "tokenizer.json", encoder.FINGERPRINT_FILE, encoder.REPORT_FILE):
        assert (tmp_path / "enc" / name).exists(), name
    # the adapted encoder embeds, and differs from the base one
    adapted = TextEmbedder(tmp_path / "enc", None, config).embed(CORPUS[:2])
    base = TextEmbedder(base_encoder_path(), None, config).embed(CORPUS[:2])
    assert adapted.shape == (2, 384) and adapted.dtype == np.float32
    assert not np.allclose(adapted, base)


def test_embeddings_are_cached(tmp_path: Path) -> None:
    config = EncoderConfig(max_length=32, embed_batch_size=4)
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


def _fake_pretrain(texts, base_path, out_dir, config, seed, train_top_layers):
    """Stands in for MLM (the decision is under test here): writes an encoder-like folder."""
    assert train_top_layers == config.train_layers
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "config.json").write_text(json.dumps({"hidden_size": 384, "from": str(base_path)}))
    (out_dir / encoder.FINGERPRINT_FILE).write_text(f"{len(texts)}\n")
    return encoder.MLMReport(1, 0.1, 10.0, len(texts), 0, 2.0, 1.0, str(out_dir), "f")


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
