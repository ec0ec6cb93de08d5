"""The shared training loop: step caps, early stopping restoring the best weights, no-decay,
deterministic kernels, and no wall-clock cap unless one is asked for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recloop.training import param_groups, train_loop

pytestmark = pytest.mark.unit


def _regression():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def batches(epoch: int):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        for s in range(0, 64, 16):
            yield x[order[s : s + 16]], y[order[s : s + 16]]

    def loss(m, batch):
        return nn.functional.mse_loss(m(batch[0]).squeeze(-1), batch[1])

    return model, batches, loss


def _scripted(scores: list[float], **kwargs):
    """Train the regression (4 steps per epoch) with validation scores given in advance; the
    report, the weights each validation saw, and the model."""
    model, batches, loss = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    left = iter(scores)
    seen: list[torch.Tensor] = []

    def validate() -> float:
        seen.append(model.weight.detach().clone())
        return next(left)

    report = train_loop(model, batches, loss, opt, validate=validate, **kwargs)
    return report, seen, model


def test_max_steps_caps_training() -> None:
    model, batches, loss = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    report = train_loop(model, batches, loss, opt, max_epochs=10, max_steps=6)
    assert report.steps == 6 and report.epochs == 2 and report.stopped_reason == "max_steps"
    assert report.train_loss is not None


def test_early_stopping_restores_best_weights() -> None:
    report, seen, model = _scripted([0.1, 0.5, 0.4, 0.3, 0.2, 0.9], max_epochs=6, patience=3)
    assert report.stopped_reason == "early_stopping" and report.epochs == 5
    assert report.best_val == 0.5 and report.best_epoch == 2
    assert torch.equal(model.weight, seen[1])  # the epoch-2 weights are back
    assert [row["epoch"] for row in report.history] == [1, 2, 3, 4, 5]


def test_min_steps_holds_off_early_stopping_until_enough_steps_are_taken() -> None:
    scores = [0.5, 0.4, 0.3, 0.2, 0.9, 0.1, 0.1, 0.1]
    report, seen, model = _scripted(scores, max_epochs=8, patience=2, min_steps=20)
    # Patience alone would stop after epoch 3; the 20 steps run to the end of epoch 5, whose
    # score is the best, and patience then ends the run two epochs later.
    assert report.stopped_reason == "early_stopping" and report.epochs == 7
    assert report.best_epoch == 5 and torch.equal(model.weight, seen[4])


def test_patience_steps_holds_off_early_stopping_over_epochs_of_few_steps() -> None:
    scores = [0.5, 0.4, 0.3, 0.9, 0.1, 0.1, 0.1, 0.1]
    report, seen, model = _scripted(scores, max_epochs=8, patience=2, patience_steps=10)
    # Two bad epochs (8 steps) would stop after epoch 3; 10 steps since the best take a third
    # bad epoch, which brings the best score at epoch 4; after it, epoch 7 is 12 steps on.
    assert report.stopped_reason == "early_stopping" and report.epochs == 7
    assert report.best_epoch == 4 and torch.equal(model.weight, seen[3])


def test_validate_first_keeps_the_starting_weights_when_training_only_hurts() -> None:
    model, batches, loss = _regression()
    start = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scores = iter([1.0, 0.2, 0.1])
    report = train_loop(
        model,
        batches,
        loss,
        opt,
        max_epochs=5,
        validate=lambda: next(scores),
        validate_first=True,
        patience=2,
    )
    assert report.best_epoch == 0 and torch.equal(model.weight, start)


def test_before_training_runs_after_the_first_validation_and_before_the_first_step() -> None:
    model, batches, loss = _regression()
    start = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    events: list[str] = []
    validated: list[torch.Tensor] = []

    def validate() -> float:
        events.append("validate")
        validated.append(model.weight.detach().clone())
        return 1.0 if len(validated) == 1 else 0.0  # training only hurts

    def shrink() -> None:
        events.append("shrink")
        with torch.no_grad():
            model.weight.mul_(0.5)

    def step_loss(m, batch):
        events.append("step")
        return loss(m, batch)

    report = train_loop(
        model,
        batches,
        step_loss,
        opt,
        max_epochs=1,
        validate=validate,
        validate_first=True,
        before_training=shrink,
    )
    assert events[:3] == ["validate", "shrink", "step"]
    assert torch.equal(validated[0], start)  # epoch 0 is the model as it came
    # The fallback is the model before the hook ran, not the shrunk one.
    assert report.best_epoch == 0 and torch.equal(model.weight, start)


def test_param_groups_do_not_decay_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(5, 4))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 3  # linear bias, norm weight and bias


def test_training_runs_on_deterministic_kernels_and_restores_the_setting() -> None:
    model, batches, loss = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen: list[bool] = []

    def step_loss(m, batch):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return loss(m, batch)

    before = torch.are_deterministic_algorithms_enabled()
    train_loop(model, batches, step_loss, opt, max_epochs=1)
    assert seen and all(seen)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_no_wall_clock_cap_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that jumps an hour per reading: only an explicit max_seconds may stop on it.
    ticks = iter(range(0, 10**6, 3600))
    monkeypatch.setattr("recloop.training.time.perf_counter", lambda: float(next(ticks)))
    model, batches, loss = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    report = train_loop(model, batches, loss, opt, max_epochs=3)
    assert report.stopped_reason == "max_epochs" and report.steps == 12
    model, batches, loss = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    capped = train_loop(model, batches, loss, opt, max_epochs=3, max_seconds=60)
    assert capped.stopped_reason == "max_seconds" and capped.steps == 1
