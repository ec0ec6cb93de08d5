"""The settings search's decision: the default stays unless an alternative wins beyond the noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.sasrec import RecommenderConfig
from recloop.config import load_config
from recloop.search import MIN_Z, apply_setting, choose_setting, paired_z, parse_setting

pytestmark = pytest.mark.unit


def test_parse_setting_reads_architecture_keys_and_rejects_the_rest() -> None:
    assert parse_setting("dropout=0.4") == ("dropout", 0.4)
    assert parse_setting(" hidden_size = 128 ") == ("hidden_size", 128)
    with pytest.raises(ValueError, match="KEY one of"):
        parse_setting("learning_rate=0.01")  # not in the network a warm start copies
    with pytest.raises(ValueError, match="must be an integer"):
        parse_setting("hidden_size=1.5")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_setting("dropout")


def test_a_config_with_a_bad_search_entry_is_refused() -> None:
    assert load_config(overrides={"train": {"search": ["dropout=0.4"]}}).train.search == (
        "dropout=0.4",
    )
    with pytest.raises(ValueError, match="train.search entry 'prior_window=2'"):
        load_config(overrides={"train": {"search": ["prior_window=2"]}})


def test_apply_setting_changes_one_key_and_the_default_none() -> None:
    base = RecommenderConfig()
    assert apply_setting(base, "default") is base
    changed = apply_setting(base, "hidden_size=32")
    assert changed.hidden_size == 32 and changed.dropout == base.dropout


def test_paired_z_by_hand() -> None:
    default = np.array([0.0, 1.0, 0.5, 0.0])
    alternative = default + np.array([0.1, 0.3, 0.1, 0.3])  # diffs: mean 0.2, sd 0.11547
    assert paired_z(alternative, default) == pytest.approx(0.2 / (0.115470054 / 2), rel=1e-6)
    assert paired_z(default, default) == 0.0
    assert paired_z(default + 0.25, default) == math.inf  # better on every case by the same


def test_the_default_stays_when_an_alternative_is_ahead_only_by_noise() -> None:
    rng = np.random.default_rng(0)
    default = rng.random(400)
    noisy = default + rng.normal(0.0, 0.2, size=400) + 0.005  # ahead on average, within noise
    choice = choose_setting({"default": default, "dropout=0.4": noisy})
    assert choice.mean_ndcg["dropout=0.4"] > choice.mean_ndcg["default"]
    assert choice.z["dropout=0.4"] < MIN_Z and choice.chosen == "default"


def test_the_clearest_winner_with_the_highest_mean_is_kept() -> None:
    rng = np.random.default_rng(1)
    default = rng.random(400) * 0.5
    small = default + 0.05 + rng.normal(0.0, 0.01, size=400)
    large = default + 0.10 + rng.normal(0.0, 0.05, size=400)
    worse = default - 0.10
    choice = choose_setting({"default": default, "a": small, "b": large, "c": worse})
    assert choice.z["a"] >= MIN_Z and choice.z["b"] >= MIN_Z and choice.z["c"] < 0
    assert choice.chosen == "b"
    assert choice.to_dict()["chosen"] == "b" and choice.to_dict()["min_z"] == MIN_Z
