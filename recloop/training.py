"""The one training loop shared by MLM pretraining and recommender training.

Callers supply what differs (how batches are made, how a batch becomes a loss, how a model is
validated); the loop owns what is common: epochs and a step budget, gradient clipping, early
stopping on a validation score with the best weights restored, a wall-clock cap and progress logs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Parameters whose names end like this are not decayed: decaying a bias or a norm's gain only
# pulls it towards zero without regularising anything (as in transformers' run_mlm_no_trainer).
NO_DECAY_SUFFIXES = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass
class TrainReport:
    """What one call of :func:`train_loop` did."""

    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    best_val: float | None = None
    best_epoch: int | None = None  # 0 = the weights before training (when validated first)
    train_loss: float | None = None  # mean loss of the last epoch run
    stopped_reason: str = "max_epochs"  # max_epochs | max_steps | max_seconds | early_stopping
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on weights, none on biases and normalisation gains."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_norm_or_bias = name.endswith(NO_DECAY_SUFFIXES) or param.ndim < 2
        (no_decay if is_norm_or_bias else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_loop(
    model: nn.Module,
    make_batches: Callable[[int], Iterable[Any]],
    step_loss: Callable[[nn.Module, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    max_epochs: int,
    max_steps: int | None = None,
    validate: Callable[[], float] | None = None,
    validate_first: bool = False,
    before_training: Callable[[], None] | None = None,
    patience: int = 0,
    patience_steps: int = 0,
    min_steps: int = 0,
    higher_is_better: bool = True,
    max_seconds: float | None = None,
    grad_clip: float | None = 1.0,
    log_every: int = 50,
    desc: str = "train",
) -> TrainReport:
    """Train ``model`` in place and return a :class:`TrainReport`.

    ``make_batches(epoch)`` yields the batches of epoch ``epoch`` (1-based; the caller seeds its
    shuffling from it), ``step_loss(model, batch)`` returns the scalar loss of one batch.
    With ``validate``, the score is computed after every epoch (and before training when
    ``validate_first``, so a warm start that only gets worse keeps its parent's weights); the loop
    stops after ``patience`` epochs without improvement (0 = never stop early) that together took
    at least ``patience_steps`` optimiser steps (where an epoch is a few steps, a few epochs are
    too little training to judge by), never before ``min_steps`` steps in all, and the best weights
    are restored at the end. ``before_training()`` runs after that first validation and before
    the first step (a warm start's shrink: epoch 0 is then the parent as it was). ``max_steps`` and
    ``max_seconds`` cap the work; a capped epoch still counts and is validated.
    """
    start = time.perf_counter()
    report = TrainReport()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    best_steps = 0  # optimiser steps taken when the best score was seen

    def better(score: float) -> bool:
        if math.isnan(score):
            return False
        if report.best_val is None:
            return True
        return score > report.best_val if higher_is_better else score < report.best_val

    def run_validation(epoch: int) -> float:
        nonlocal best_state, bad_epochs, best_steps
        assert validate is not None
        model.eval()
        with torch.no_grad():
            score = float(validate())
        if better(score):
            report.best_val, report.best_epoch = score, epoch
            best_state = _snapshot(model)
            bad_epochs, best_steps = 0, report.steps
        else:
            bad_epochs += 1
        return score

    if validate is not None and validate_first:
        score = run_validation(0)
        report.history.append({"epoch": 0, "train_loss": None, "val": score, "steps": 0})
        logger.info("%s: epoch 0 (before training) val=%.4f", desc, score)
    if before_training is not None:
        before_training()

    for epoch in range(1, max_epochs + 1):
        model.train()
        losses: list[float] = []
        capped = ""
        for batch in make_batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss is {loss.item()} at step {report.steps + 1}"
                )
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            report.steps += 1
            losses.append(float(loss.detach()))
            if log_every and report.steps % log_every == 0:
                logger.info(
                    "%s: epoch %d step %d loss %.4f (%.1fs)",
                    desc,
                    epoch,
                    report.steps,
                    losses[-1],
                    time.perf_counter() - start,
                )
            if max_steps is not None and report.steps >= max_steps:
                capped = "max_steps"
                break
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                capped = "max_seconds"
                break
        report.epochs = epoch
        report.train_loss = sum(losses) / len(losses) if losses else None
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": report.train_loss,
            "steps": report.steps,
        }
        if validate is not None:
            row["val"] = run_validation(epoch)
        report.history.append(row)
        logger.info(
            "%s: epoch %d done, loss %s, val %s, %.1fs",
            desc,
            epoch,
            "n/a" if report.train_loss is None else f"{report.train_loss:.4f}",
            "n/a" if "val" not in row else f"{row['val']:.4f}",
            time.perf_counter() - start,
        )
        if capped:
            report.stopped_reason = capped
            break
        if (
            validate is not None
            and patience > 0
            and bad_epochs >= patience
            and report.steps - best_steps >= patience_steps
            and report.steps >= min_steps
        ):
            report.stopped_reason = "early_stopping"
            break
        if not losses:  # nothing to train on: further epochs would be empty too
            report.stopped_reason = "no_batches"
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.perf_counter() - start
    logger.info(
        "%s: stopped (%s) after %d epochs, %d steps, %.1fs; best val %s at epoch %s",
        desc,
        report.stopped_reason,
        report.epochs,
        report.steps,
        report.seconds,
        report.best_val,
        report.best_epoch,
    )
    return report
