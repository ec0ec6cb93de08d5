"""The one training loop shared by MLM pretraining and recommender training.

Callers supply what differs (how batches are made, how a batch becomes a loss, how a model is
validated); the loop owns what is common: epochs and a step budget, gradient clipping, early
stopping on a validation score with the best weights restored, progress logs, deterministic
kernels, and a wall-clock cap only when the caller asks for one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Torch's deterministic kernels while the block runs (the previous setting is restored).

    On the CPU the backward pass of an embedding lookup (``items[input_ids]``) accumulates its
    gradient across threads in whatever order they finish: two trainings with the same seed then
    drift apart in the last bits and end with different weights. The deterministic kernel adds in
    a fixed order. Ops without one warn rather than fail.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@dataclass
class _EarlyStopping:
    """The best validation score so far, the weights that scored it, and what came since."""

    higher_is_better: bool
    patience: int  # epochs without improvement before stopping (0 = never)
    patience_steps: int  # ...that together took at least this many steps
    min_steps: int  # never stop before this many steps in all
    state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    best_steps: int = 0  # optimiser steps taken when the best score was seen

    def record(self, model: nn.Module, report: TrainReport, epoch: int, score: float) -> None:
        """Keep ``model``'s weights when ``score`` (of ``epoch``) beats the best so far."""
        best = report.best_val
        better = not math.isnan(score) and (
            best is None or (score > best if self.higher_is_better else score < best)
        )
        if better:
            report.best_val, report.best_epoch = score, epoch
            self.state = _snapshot(model)
            self.bad_epochs, self.best_steps = 0, report.steps
        else:
            self.bad_epochs += 1

    def should_stop(self, report: TrainReport) -> bool:
        return (
            self.patience > 0
            and self.bad_epochs >= self.patience
            and report.steps - self.best_steps >= self.patience_steps
            and report.steps >= self.min_steps
        )


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
    the first step (a warm start's shrink: epoch 0 is then the parent as it was). ``max_steps``
    caps the work, and so does ``max_seconds`` of wall clock when given (off by default: a cap in
    seconds makes the result depend on how busy the machine is); a capped epoch still counts and
    is validated. Torch's deterministic kernels are on throughout (:func:`deterministic_kernels`).
    """
    clock = _Clock(time.perf_counter(), max_seconds)
    report = TrainReport()
    stopping = _EarlyStopping(higher_is_better, patience, patience_steps, min_steps)

    def run_validation(epoch: int) -> float:
        assert validate is not None
        model.eval()
        with torch.no_grad():
            score = float(validate())
        stopping.record(model, report, epoch, score)
        return score

    with deterministic_kernels():
        if validate is not None and validate_first:
            score = run_validation(0)
            report.history.append({"epoch": 0, "train_loss": None, "val": score, "steps": 0})
            logger.info("%s: epoch 0 (before training) val=%.4f", desc, score)
        if before_training is not None:
            before_training()
        for epoch in range(1, max_epochs + 1):
            model.train()
            losses, capped = _run_epoch(
                model,
                make_batches(epoch),
                step_loss,
                optimizer,
                report,
                clock,
                max_steps=max_steps,
                grad_clip=grad_clip,
                log_every=log_every,
                where=f"{desc}: epoch {epoch}",
            )
            row = _end_epoch(report, epoch, losses)
            if validate is not None:
                row["val"] = run_validation(epoch)
            report.history.append(row)
            _log_epoch(desc, row, clock)
            if capped:
                report.stopped_reason = capped
                break
            if validate is not None and stopping.should_stop(report):
                report.stopped_reason = "early_stopping"
                break
            if not losses:  # nothing to train on: further epochs would be empty too
                report.stopped_reason = "no_batches"
                break
        if stopping.state is not None:
            model.load_state_dict(stopping.state)
    model.eval()
    report.seconds = clock.elapsed()
    _log_stop(desc, report)
    return report


@dataclass(frozen=True)
class _Clock:
    """Seconds since ``start``, and whether an optional wall-clock cap is reached."""

    start: float
    max_seconds: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds


def _run_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    step_loss: Callable[[nn.Module, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    report: TrainReport,
    clock: _Clock,
    *,
    max_steps: int | None,
    grad_clip: float | None,
    log_every: int,
    where: str,
) -> tuple[list[float], str]:
    """One epoch's optimiser steps (counted in ``report.steps``): the batch losses, and
    ``"max_steps"`` or ``"max_seconds"`` when a cap cut it short (else ``""``)."""
    losses: list[float] = []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{where}: loss is {loss.item()} at step {report.steps + 1}")
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        report.steps += 1
        losses.append(float(loss.detach()))
        if log_every and report.steps % log_every == 0:
            logger.info(
                "%s step %d loss %.4f (%.1fs)", where, report.steps, losses[-1], clock.elapsed()
            )
        if max_steps is not None and report.steps >= max_steps:
            return losses, "max_steps"
        if clock.out_of_time():
            return losses, "max_seconds"
    return losses, ""


def _end_epoch(report: TrainReport, epoch: int, losses: list[float]) -> dict[str, Any]:
    """Record the epoch in ``report``; its history row (validation not yet in it)."""
    report.epochs = epoch
    report.train_loss = sum(losses) / len(losses) if losses else None
    return {"epoch": epoch, "train_loss": report.train_loss, "steps": report.steps}


def _log_stop(desc: str, report: TrainReport) -> None:
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


def _log_epoch(desc: str, row: dict[str, Any], clock: _Clock) -> None:
    loss, val = row["train_loss"], row.get("val")
    logger.info(
        "%s: epoch %d done, loss %s, val %s, %.1fs",
        desc,
        row["epoch"],
        "n/a" if loss is None else f"{loss:.4f}",
        "n/a" if val is None else f"{val:.4f}",
        clock.elapsed(),
    )
