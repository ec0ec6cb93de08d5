"""One typed configuration for the whole loop.

The frozen dataclasses below are the one place the defaults live (``docs/config.md`` lists every
key). A user's YAML file (``--config FILE``) holds only the keys it changes; an unknown key
anywhere is an error, so a misspelt setting never silently falls back to a default. The resolved
config is passed down whole and logged to MLflow as the run's params.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from models.encoder import EncoderConfig
from models.sasrec import RecommenderConfig
from recloop.search import parse_setting


@dataclass(frozen=True)
class TextConfig:
    """Text cleaning."""

    max_tokens: int = 128  # cap on an item's cleaned text, in whitespace-separated tokens


@dataclass(frozen=True)
class TrainConfig:
    """Recommender training: from scratch (a full retrain) and warm-started updates."""

    epochs: int = 100  # most epochs of a training from scratch (early stopping ends it sooner)
    patience: int = 10  # epochs without a better validation NDCG@10 before it stops
    learning_rate: float = 1e-3  # AdamW learning rate of a training from scratch
    batch_size: int = 64  # training sequences per optimiser step
    finetune_epochs: int = 10  # most epochs of an update
    finetune_patience: int = 2  # epochs without a better validation NDCG@10 before it stops...
    finetune_patience_steps: int = 8  # ...that also took at least this many optimiser steps
    finetune_budget: float = 2.0  # most steps of an update, in full-data epochs' steps (0 = no cap)
    finetune_min_share: float = 0.4  # share of that budget run before early stopping may end it
    finetune_learning_rate: float = 1e-3  # AdamW learning rate of an update
    warm_shrink: float = 0.85  # factor an update scales its parent's weights by before training
    warm_shrink_gap: float = 0.8  # nats worse on new than on earlier events to shrink (0 = always)
    max_minutes: float = 0.0  # wall-clock cap on one training, in minutes (0 = none)
    device: str = "cpu"  # torch device to train on, e.g. "cuda" (scoring runs on the CPU)
    # Alternatives to the model's default architecture ("dropout=0.4", keys: hidden_size,
    # num_layers, num_heads, dropout) trained beside it from scratch, each for at most the
    # default's optimiser steps; one is kept only when it beats the default clearly on
    # validation (recloop.search). Empty = no search.
    search: tuple[str, ...] = ("hidden_size=32",)

    def __post_init__(self) -> None:
        for setting in self.search:
            parse_setting(setting)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: full ranking over all catalogue items, history excluded."""

    ks: tuple[int, ...] = (10, 20)  # cut-offs of NDCG@k and Recall@k, in items
    max_users: int = 0  # users evaluated: a seeded sample of this many (0 = all)


@dataclass(frozen=True)
class GateConfig:
    """Promotion policy."""

    metric: str = "ndcg_at_10"  # the metric the candidate must win on
    min_relative_gain: float = 0.0  # relative margin it must beat the champion by (0.05 = 5 %)
    max_retention_drop: float = (
        0.2  # most relative drop below the champion on earlier data (<0 = off)
    )


@dataclass(frozen=True)
class RegistryConfig:
    """MLflow names."""

    model_name: str = "recloop"  # registered model name
    experiment: str = "recloop"  # experiment the loop's runs are logged to


@dataclass(frozen=True)
class ReplayConfig:
    """How ``recloop run`` cuts a dataset into arriving batches."""

    base_fraction: float = 0.5  # share of the events (by time) in the first of several batches


@dataclass(frozen=True)
class OrchestrationConfig:
    """``recloop serve`` schedules (deployments/prefect.yaml carries its own copy of both, since
    ``prefect deploy`` reads only that file)."""

    feedback_cron: str = "0 3 * * *"  # when the scheduled feedback loop runs (cron)
    pretrain_cron: str = "0 2 * * 0"  # when the scheduled encoder pretraining runs (cron)
    timezone: str = "UTC"  # of both crons


@dataclass(frozen=True)
class Config:
    """Everything the loop needs, in one object."""

    seed: int = 42  # seeds every random choice: same seed, same data, same results
    text: TextConfig = field(default_factory=TextConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: RecommenderConfig = field(default_factory=RecommenderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    orchestration: OrchestrationConfig = field(default_factory=OrchestrationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"model.hidden_size": 64, ...}``: the form MLflow params take."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                for key, value in values.items():
                    out[f"{section}.{key}"] = value
            else:
                out[section] = values
        return out


class ConfigError(ValueError):
    """A config file names a key that does not exist or a value of the wrong type."""


T = TypeVar("T")


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{name}: expected true/false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, float) and isinstance(value, int):
            kwargs[name] = float(value)
        elif default is not None and not isinstance(value, type(default)):
            raise ConfigError(f"{where}.{name}: expected {type(default).__name__}, got {value!r}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The defaults (the dataclasses above), updated by the YAML file at ``path`` (only the keys
    it changes) and then by ``overrides``."""
    values: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        where = str(path)
    if overrides:
        values = _merge(values, overrides)
    return _build(Config, values, where)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a config from :meth:`Config.to_dict` output (e.g. a checkpoint's copy)."""
    return _build(Config, values, "config")
