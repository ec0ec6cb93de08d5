"""Settings chosen on validation at a full training (``train.search``).

A training from scratch trains the default model and one model per alternative setting of
``train.search`` (``"dropout=0.4"``: a key of the recommender's architecture and its value), each
with its own early stopping and prior weights, and keeps an alternative only when it beats the
default on the validation cases by more than their noise: its mean NDCG@10 per case must exceed
the default's by :data:`MIN_Z` standard errors of the paired per-case differences. On a few
hundred validation cases most settings are within that noise of each other, and a choice made on
noise does not carry over to the test data; the default then stays.

The keys are architecture keys only: an incremental update copies its parent's network, so it
reuses the choice of the full training its lineage started from without storing anything else.

Standard library and numpy only: the decision is tested without training anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT = "default"
# The architecture keys a search may set (they live in the network a warm start copies).
SEARCHABLE = ("hidden_size", "num_layers", "num_heads", "dropout")
# Standard errors of the paired per-case NDCG differences an alternative must win by.
MIN_Z = 2.0


def parse_setting(setting: str) -> tuple[str, float | int]:
    """``"dropout=0.4"`` -> ``("dropout", 0.4)``; the key must be in :data:`SEARCHABLE` and the
    value a number (an integer for the integer keys)."""
    key, sep, raw = setting.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or key not in SEARCHABLE:
        raise ValueError(
            f"train.search entry {setting!r}: expected KEY=VALUE with KEY one of "
            f"{', '.join(SEARCHABLE)}"
        )
    try:
        value: float | int = float(raw) if key == "dropout" else int(raw)
    except ValueError:
        kind = "a number" if key == "dropout" else "an integer"
        raise ValueError(f"train.search entry {setting!r}: {key} must be {kind}") from None
    return key, value


def apply_setting(model_config: Any, setting: str) -> Any:
    """``model_config`` (a frozen :class:`models.sasrec.RecommenderConfig`) with ``setting``
    applied; the default (``"default"``) returns it unchanged."""
    if setting == DEFAULT:
        return model_config
    key, value = parse_setting(setting)
    return dataclasses.replace(model_config, **{key: value})


@dataclass(frozen=True)
class SearchChoice:
    """The setting kept, and the numbers it was chosen by."""

    chosen: str
    mean_ndcg: dict[str, float]  # per setting, over the validation cases
    z: dict[str, float]  # per alternative: (mean difference to the default) / its standard error

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "mean_ndcg": {k: round(v, 6) for k, v in self.mean_ndcg.items()},
            "z": {k: round(v, 3) for k, v in self.z.items()},
            "min_z": MIN_Z,
        }


def paired_z(alternative: np.ndarray, default: np.ndarray) -> float:
    """How many standard errors ``alternative``'s mean per-case score is above ``default``'s,
    the two scored on the same cases (0 when they are the same on every case)."""
    diff = np.asarray(alternative, dtype=float) - np.asarray(default, dtype=float)
    if diff.size < 2:
        return 0.0
    spread = float(diff.std(ddof=1))
    if spread == 0.0:
        return 0.0 if float(diff.mean()) == 0.0 else math.copysign(math.inf, float(diff.mean()))
    return float(diff.mean()) / (spread / math.sqrt(diff.size))


def choose_setting(case_ndcgs: Mapping[str, Sequence[float] | np.ndarray]) -> SearchChoice:
    """Keep the default (``case_ndcgs["default"]``) unless an alternative beats it by at least
    :data:`MIN_Z` paired standard errors; of several that do, the one with the highest mean."""
    if DEFAULT not in case_ndcgs:
        raise KeyError("choose_setting needs the default's per-case NDCG")
    default = np.asarray(case_ndcgs[DEFAULT], dtype=float)
    means = {name: float(np.mean(v)) if len(v) else 0.0 for name, v in case_ndcgs.items()}
    z = {
        name: paired_z(np.asarray(v, dtype=float), default)
        for name, v in case_ndcgs.items()
        if name != DEFAULT
    }
    winners = [name for name, value in z.items() if value >= MIN_Z]
    chosen = max(winners, key=lambda name: means[name]) if winners else DEFAULT
    return SearchChoice(chosen, means, z)
