"""The config: defaults in the dataclasses only, a user file with only the keys it changes,
unknown keys an error, a lean key set, and every key documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from recloop.config import Config, ConfigError, load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the config, dotted (``train.epochs``)."""
    out = []
    for spec in dataclasses.fields(cls):
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        if dataclasses.is_dataclass(default):
            out += _keys(type(default), f"{prefix}{spec.name}.")
        else:
            out.append(f"{prefix}{spec.name}")
    return out


def test_the_defaults_are_the_dataclasses() -> None:
    assert load_config() == Config()
    assert not list((REPO / "recloop").glob("*.yaml"))  # no second copy of the defaults


def test_a_user_file_holds_only_the_keys_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("seed: 7\ntrain:\n  epochs: 3\n  max_minutes: 5\n", encoding="utf-8")
    config = load_config(path)
    assert config.seed == 7 and config.train.epochs == 3
    assert config.train.max_minutes == 5.0  # an int where a float is meant
    assert config.train.patience == Config().train.patience  # the rest keeps its default
    assert config.model == Config().model
    both = load_config(path, overrides={"train": {"patience": 1}})
    assert both.train.epochs == 3 and both.train.patience == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sede: 7\n", "unknown key(s) sede"),
        ("train:\n  epoch: 3\n", "train: unknown key(s) epoch"),
        ("train:\n  replay_size: 10\n", "replay_size"),  # a removed switch is unknown too
        ("train:\n  epochs: three\n", "train.epochs: expected int"),
        ("model:\n  use_id: 1\n", "model.use_id: expected true/false"),
    ],
)
def test_unknown_keys_and_wrong_types_are_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_no_training_is_cut_by_wall_clock_by_default() -> None:
    assert Config().train.max_minutes == 0  # a cap in minutes would depend on the machine's load


def test_every_key_is_documented() -> None:
    documented = set(
        re.findall(r"^\| `([a-z_.]+)` \|", (REPO / "docs" / "config.md").read_text(), re.M)
    )
    assert documented == set(_keys())
