"""Domain-adaptive MLM pretraining of the text encoder.

:func:`pretrain_mlm` adapts the encoder to the catalogue's language with a few masked-language-model
steps (the recipe of transformers' ``run_mlm_no_trainer.py``: a masking collator, a no-decay
parameter group, perplexity = exp(mean held-out loss)), through the shared training loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.encoder import (
    FINGERPRINT_FILE,
    REPORT_FILE,
    EncoderConfig,
    encoder_fingerprint,
    file_sha1,
    offline,
    weights_files,
)
from recloop.training import TrainReport, param_groups, train_loop

logger = logging.getLogger(__name__)

# MLM updates only the top encoder layers (and the head): on two CPU cores backpropagating through
# all six layers and the 30k-token embedding table costs ~2x per step, and the lower layers carry
# general syntax that a few dozen steps on a catalogue would not improve anyway.
TRAIN_TOP_LAYERS = 3
MLM_PROBABILITY = 0.15  # share of tokens the collator masks (BERT's recipe)
MLM_WEIGHT_DECAY = 0.01  # AdamW decay of the encoder's weights (biases and norms: never)
# Held-out share of the catalogue's texts that the perplexities are measured on, and a cap on
# their number (0 = none) that keeps those evaluations cheap on a large catalogue.
EVAL_FRACTION = 0.1
EVAL_MAX_TEXTS = 256
# The shipped sentence-transformers checkpoint has no MLM head, so transformers starts a random
# one (held-out perplexity ~50,000: nothing said about the encoder). Up to
# EncoderConfig.head_warmup_steps steps fit the head alone (encoder frozen) before "perplexity
# before" is taken, on the states of about this many training-text tokens, encoded once, at a
# higher learning rate than fine-tuning (a fresh head has far to go).
HEAD_WARMUP_TOKENS = 32768
HEAD_LEARNING_RATE = 3e-3
# Masked positions per head warm-up step (on cached encoder states).
HEAD_BATCH_TOKENS = 64
# At most this many passes over the cached positions (the head then learns those masks, not the
# language), and a small catalogue's warm-up stays as short as its data.
HEAD_MAX_EPOCHS = 5


@dataclass
class MLMReport:
    """The outcome of one MLM pretraining."""

    steps: int
    seconds: float
    steps_per_second: float
    n_train_texts: int
    n_eval_texts: int
    perplexity_before: float  # the starting encoder, its MLM head fitted (see head_warmup_steps)
    perplexity_after: float  # the adapted encoder, same held-out texts and masks
    out_dir: str
    fingerprint: str
    # Before the head warm-up; with head_initialised, a random head: no measure of the encoder.
    perplexity_untrained_head: float = float("nan")
    head_initialised: bool = False  # the start had no MLM head (a sentence-transformers folder)
    head_warmup_steps: int = 0
    head_warmup_seconds: float = 0.0
    total_seconds: float = 0.0  # loading, warm-up, adaptation, the perplexities and saving

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mlm_collator(tokenizer: Any, mlm_probability: float, seed: int) -> Any:
    """The masking collator: ``mlm_probability`` of non-special tokens become labels (80% [MASK],
    10% random, 10% kept), padded per batch; seeded so the masks can be repeated."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(
        tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed
    )


def tokenize_for_mlm(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[dict]:
    """Tokenised texts (no padding: the collator pads each batch to its longest text)."""
    encoded = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    keys = ("input_ids", "attention_mask", "special_tokens_mask")
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


def mlm_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Masked-LM cross-entropy computed on the masked positions only.

    Same value as ``BertForMaskedLM(..., labels=...)``, but the 30k-way vocabulary projection runs
    on ~15% of the tokens instead of all of them: about half the cost of a step on two cores.
    """
    hidden = model.bert(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state  # (B, T, H)
    labels = batch["labels"]
    selected = labels != -100
    if not bool(selected.any()):
        # No masked token in this batch: a zero loss that still reaches the head (trainable in
        # every stage), so backward works with the encoder frozen too.
        return model.cls(hidden[:, 0]).sum() * 0.0
    logits = model.cls(hidden[selected])  # (M, V)
    return torch.nn.functional.cross_entropy(logits, labels[selected])


@torch.no_grad()
def mlm_perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], config: EncoderConfig, seed: int
) -> float:
    """exp(mean masked-LM loss) on ``texts``, with masks drawn from ``seed`` (so two calls on two
    models mask the same tokens and their perplexities compare)."""
    if not texts:
        return float("nan")
    was_training = model.training
    model.eval()
    collator = mlm_collator(tokenizer, MLM_PROBABILITY, seed)
    features = tokenize_for_mlm(tokenizer, texts, config.max_length)
    total, count = 0.0, 0
    for start in range(0, len(features), config.batch_size):
        batch = collator(features[start : start + config.batch_size])
        n_masked = int((batch["labels"] != -100).sum())
        if n_masked == 0:
            continue
        total += float(mlm_loss(model, batch)) * n_masked
        count += n_masked
    model.train(was_training)
    return math.exp(total / count) if count else float("nan")


def freeze_lower_layers(model: Any, train_top_layers: int) -> None:
    """Leave only the top ``train_top_layers`` encoder layers and the MLM head's transform and
    bias trainable (the decoder weight is the frozen, tied input embedding)."""
    layers = model.bert.encoder.layer
    keep = max(0, min(train_top_layers, len(layers)))
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in layers[len(layers) - keep :]:
        for param in layer.parameters():
            param.requires_grad_(True)
    _unfreeze_head(model)


def freeze_all_but_head(model: Any) -> None:
    """Leave only the MLM head's transform and bias trainable: the encoder is what
    "perplexity before" measures, so fitting the head must not change it."""
    freeze_lower_layers(model, 0)


def _unfreeze_head(model: Any) -> None:
    for param in model.cls.parameters():
        param.requires_grad_(True)
    # Tied to the input embeddings: training it would move the encoder's vocabulary as well.
    model.cls.predictions.decoder.weight.requires_grad_(False)


def _mlm_steps(
    model: Any,
    tokenizer: Any,
    features: list[dict],
    config: EncoderConfig,
    seed: int,
    *,
    steps: int,
    learning_rate: float,
    desc: str,
) -> TrainReport:
    """``steps`` AdamW steps (no decay on biases and norms) on the parameters that require
    grad, over seeded shuffles of ``features`` with seeded masks."""
    collator = mlm_collator(tokenizer, MLM_PROBABILITY, seed)

    def make_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = np.random.default_rng([seed, epoch]).permutation(len(features))
        for start in range(0, len(order), config.batch_size):
            yield collator([features[i] for i in order[start : start + config.batch_size]])

    optimizer = torch.optim.AdamW(param_groups(model, MLM_WEIGHT_DECAY), lr=learning_rate)
    epochs = math.ceil(steps / max(1, math.ceil(len(features) / config.batch_size)))
    return train_loop(
        model,
        make_batches,
        mlm_loss,
        optimizer,
        max_epochs=max(1, epochs),
        max_steps=steps,
        log_every=25,
        desc=desc,
    )


def unigram_log_prior(features: list[dict], vocab_size: int) -> torch.Tensor:
    """Log frequencies of the non-special tokens in ``features`` (add-0.1 smoothed): the
    bias of an MLM head that knows nothing but which words the catalogue uses."""
    ids = [
        token
        for feature in features
        for token, special in zip(feature["input_ids"], feature["special_tokens_mask"], strict=True)
        if not special
    ]
    counts = torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=vocab_size)
    logits = torch.log(counts[:vocab_size].double() + 0.1)
    return (logits - torch.logsumexp(logits, 0)).float()


@torch.no_grad()
def _masked_states(
    model: Any, collator: Any, features: list[dict], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's last hidden states at the masked positions of ``features`` (masked once by
    ``collator``) and their labels: ``(M, H)`` and ``(M,)``."""
    was_training = model.training
    model.eval()  # the head is fitted to the states it will be measured on: no dropout
    states, labels = [], []
    for start in range(0, len(features), batch_size):
        batch = collator(features[start : start + batch_size])
        hidden = model.bert(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state  # (B, T, H)
        selected = batch["labels"] != -100
        states.append(hidden[selected])
        labels.append(batch["labels"][selected])
    model.train(was_training)
    return torch.cat(states), torch.cat(labels)


@torch.no_grad()
def head_perplexity(model: Any, states: torch.Tensor, labels: torch.Tensor) -> float:
    """exp(mean cross-entropy) of the MLM head on cached masked-position ``states``: equal to
    :func:`mlm_perplexity` on the texts they came from while the encoder is unchanged."""
    if len(labels) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total = 0.0
    for index in torch.arange(len(labels)).split(1024):  # bounds the (n, V) logits' memory
        logits = model.cls(states[index])
        total += float(torch.nn.functional.cross_entropy(logits, labels[index], reduction="sum"))
    model.train(was_training)
    return math.exp(total / len(labels))


def fit_mlm_head(
    model: Any,
    tokenizer: Any,
    features: list[dict],
    config: EncoderConfig,
    seed: int,
    init_bias: bool,
) -> TrainReport:
    """Fit the MLM head alone (transform and bias; the encoder and the tied decoder frozen).

    With ``init_bias`` (a freshly initialised head) the bias starts from the catalogue's unigram
    log-frequencies: Adam moves a bias by about the learning rate per step, so a random bias
    would take thousands of steps to get there. As the encoder is frozen, it encodes seeded,
    masked training texts of about ``HEAD_WARMUP_TOKENS`` tokens once, and up to
    ``config.head_warmup_steps`` head steps (at most ``HEAD_MAX_EPOCHS`` passes) run on those
    cached states, each costing only the vocabulary projection, not a pass through the encoder.
    """
    if init_bias:
        with torch.no_grad():
            model.cls.predictions.bias.copy_(unigram_log_prior(features, model.config.vocab_size))
    freeze_all_but_head(model)
    # A seeded sample of training texts holding about HEAD_WARMUP_TOKENS tokens: a budget in
    # tokens, not texts, since encoding costs per token (64-token reviews vs 18-token titles).
    order = np.random.default_rng([seed, 1]).permutation(len(features))
    lengths = np.cumsum([len(features[i]["input_ids"]) for i in order])
    n_texts = max(1, int(np.searchsorted(lengths, HEAD_WARMUP_TOKENS)))
    sample = [features[i] for i in order[:n_texts]]
    # Its own mask stream (seed + 1), so the adaptation afterwards sees other masks.
    collator = mlm_collator(tokenizer, MLM_PROBABILITY, seed + 1)
    states, labels = _masked_states(model, collator, sample, config.batch_size)  # (M, H), (M,)
    if len(labels) == 0:
        return TrainReport(stopped_reason="no_batches")

    def make_batches(epoch: int) -> Iterator[torch.Tensor]:
        order = torch.from_numpy(np.random.default_rng([seed, 1, epoch]).permutation(len(labels)))
        yield from order.split(HEAD_BATCH_TOKENS)

    def head_loss(model: Any, index: torch.Tensor) -> torch.Tensor:
        logits = model.cls(states[index])  # (b, V)
        return torch.nn.functional.cross_entropy(logits, labels[index])

    optimizer = torch.optim.AdamW(param_groups(model, MLM_WEIGHT_DECAY), lr=HEAD_LEARNING_RATE)
    steps = config.head_warmup_steps
    epochs = math.ceil(steps / math.ceil(len(labels) / HEAD_BATCH_TOKENS))
    return train_loop(
        model,
        make_batches,
        head_loss,
        optimizer,
        max_epochs=max(1, min(epochs, HEAD_MAX_EPOCHS)),
        max_steps=steps,
        log_every=50,
        desc="mlm-head",
    )


def split_texts(
    texts: Sequence[str], eval_fraction: float, seed: int, max_eval: int = 0
) -> tuple[list[str], list[str]]:
    """A seeded train / held-out split (at least one text on each side when there are two);
    ``max_eval`` > 0 caps the held-out texts (the rest train)."""
    unique = sorted(set(t for t in texts if t.strip()))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_eval = int(round(eval_fraction * len(unique)))
    if max_eval > 0:
        n_eval = min(n_eval, max_eval)
    if len(unique) >= 2:
        n_eval = min(max(n_eval, 1), len(unique) - 1)
    held = [unique[i] for i in order[:n_eval]]
    train = [unique[i] for i in order[n_eval:]]
    return train, held


@dataclass
class _Adaptation:
    """What :func:`_adapt` measured: the three perplexities and the two trainings."""

    untrained: float
    before: float
    after: float
    head_initialised: bool
    warmup_steps: int
    warmup_seconds: float
    report: TrainReport


def pretrain_mlm(
    texts: Sequence[str],
    base_path: str | Path,
    out_dir: str | Path,
    config: EncoderConfig,
    seed: int,
    train_top_layers: int = TRAIN_TOP_LAYERS,
) -> MLMReport:
    """Adapt the encoder at ``base_path`` to ``texts`` with ``config.max_steps`` MLM steps.

    When the encoder at ``base_path`` has no MLM head (the shipped sentence-transformers model),
    ``config.head_warmup_steps`` first fit a fresh head alone (encoder frozen) on the training
    texts, so that "perplexity before" measures the starting encoder rather than a random head.
    Then only the top ``train_top_layers`` transformer layers and the head's transform and bias
    are trained; the embeddings (tied to the MLM decoder) and lower layers stay frozen. The three
    perplexities (untrained head, before, after) use the same held-out texts and masks.

    Saves the masked-LM model, its tokenizer, a weights fingerprint and the report to ``out_dir``
    (which :class:`TextEmbedder` then loads with ``AutoModel``), replacing what was there, all at
    once: the folder is written under a temporary name and renamed.
    """
    offline()
    from transformers import AutoTokenizer, BertForMaskedLM

    started = time.perf_counter()
    train_texts, eval_texts = split_texts(texts, EVAL_FRACTION, seed, EVAL_MAX_TEXTS)
    if not train_texts:
        raise ValueError("MLM pretraining needs at least one non-empty text")
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    with torch.random.fork_rng():  # the fresh MLM head's init and dropout, without global effects
        torch.manual_seed(seed)
        # The MLM head is not in a sentence-transformers checkpoint: transformers initialises it
        # and ties its decoder to the input embeddings (tie_word_embeddings defaults to True).
        model, info = BertForMaskedLM.from_pretrained(str(base_path), output_loading_info=True)
        head_initialised = any(key.startswith("cls.") for key in info["missing_keys"])
        run = _adapt(
            model,
            tokenizer,
            train_texts,
            eval_texts,
            config,
            seed,
            head_initialised=head_initialised,
            train_top_layers=train_top_layers,
        )

    staging = _save_staged(model, tokenizer, out_dir)
    result = MLMReport(
        steps=run.report.steps,
        seconds=run.report.seconds,
        steps_per_second=run.report.steps / run.report.seconds if run.report.seconds > 0 else 0.0,
        n_train_texts=len(train_texts),
        n_eval_texts=len(eval_texts),
        perplexity_before=run.before,
        perplexity_after=run.after,
        out_dir=str(out_dir),
        fingerprint=encoder_fingerprint(staging, config.max_length),  # content, not path
        perplexity_untrained_head=run.untrained,
        head_initialised=run.head_initialised,
        head_warmup_steps=run.warmup_steps,
        head_warmup_seconds=run.warmup_seconds,
        total_seconds=time.perf_counter() - started,
    )
    (staging / REPORT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    logger.info(
        "mlm: perplexity %.2f (untrained head) -> %.2f (head fitted in %d steps, %.1fs) -> %.2f "
        "(%d steps, %.1fs); %.1fs in all, saved to %s",
        run.untrained,
        run.before,
        run.warmup_steps,
        run.warmup_seconds,
        run.after,
        result.steps,
        result.seconds,
        result.total_seconds,
        out_dir,
    )
    return result


def _adapt(
    model: Any,
    tokenizer: Any,
    train_texts: list[str],
    eval_texts: list[str],
    config: EncoderConfig,
    seed: int,
    *,
    head_initialised: bool,
    train_top_layers: int,
) -> _Adaptation:
    """Fit a fresh MLM head (when ``head_initialised``), then adapt the top layers; measure the
    held-out perplexity with the untrained head, before and after the adaptation."""
    features = tokenize_for_mlm(tokenizer, train_texts, config.max_length)
    # The encoder is frozen until the adaptation, so its held-out states (with the masks
    # mlm_perplexity draws from ``seed``) serve both the untrained and the fitted head.
    eval_features = tokenize_for_mlm(tokenizer, eval_texts, config.max_length)
    held_out = _masked_states(
        model, mlm_collator(tokenizer, MLM_PROBABILITY, seed), eval_features, config.batch_size
    )
    untrained = head_perplexity(model, *held_out)
    warmup_started = time.perf_counter()
    warmup_seconds, warmup_steps = 0.0, 0
    # A head loaded with the encoder (a previous adaptation's) is fitted already.
    if config.head_warmup_steps > 0 and head_initialised:
        warmup = fit_mlm_head(model, tokenizer, features, config, seed, init_bias=True)
        warmup_seconds = time.perf_counter() - warmup_started
        warmup_steps = warmup.steps
    before = head_perplexity(model, *held_out)
    freeze_lower_layers(model, train_top_layers)
    report = _mlm_steps(
        model,
        tokenizer,
        features,
        config,
        seed,
        steps=config.max_steps,
        learning_rate=config.learning_rate,
        desc="mlm",
    )
    after = mlm_perplexity(model, tokenizer, eval_texts, config, seed)
    return _Adaptation(
        untrained, before, after, head_initialised, warmup_steps, warmup_seconds, report
    )


def _save_staged(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save ``model``, ``tokenizer`` and the weights' fingerprint next to ``out_dir``, under a
    dot-named staging folder: a half-written encoder is never named as one (a crash leaves only
    the staging folder, cleared by the next run). Returns the staging folder."""
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    weights = "".join(file_sha1(p) for p in weights_files(staging))
    (staging / FINGERPRINT_FILE).write_text(hashlib.sha1(weights.encode()).hexdigest() + "\n")
    return staging
