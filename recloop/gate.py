"""The promotion decision: a pure function of metrics and a policy (standard library only).

The registry I/O that acts on the decision lives in :mod:`recloop.registry`; keeping the decision
pure means it is tested without MLflow and its reason is the same string everywhere it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing only: the decision itself needs nothing beyond the standard library
    from recloop.config import GateConfig


@dataclass(frozen=True)
class Decision:
    """Whether to promote, and a one-line reason that quotes the numbers behind it."""

    promote: bool
    reason: str


def _value(metrics: Mapping[str, float], name: str, whose: str) -> float:
    if name not in metrics:
        raise KeyError(f"{whose} metrics lack {name!r} (have: {', '.join(sorted(metrics))})")
    return float(metrics[name])


def should_promote(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    popularity: Mapping[str, float] | None,
    policy: GateConfig,
    retention: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
) -> Decision:
    """Decide whether ``candidate`` replaces ``champion`` under ``policy``.

    All metrics must come from the same evaluation cases. Without a champion the candidate is
    promoted if it beats popularity (or unconditionally when ``policy.must_beat_popularity`` is
    off). With a champion it must reach ``champion * (1 + min_relative_gain)`` *and* be strictly
    better (a tie never replaces a working model), and beat popularity when required.

    ``retention`` is ``(candidate, champion)`` metrics on earlier data both were trained on (the
    forgetting check): with a champion and ``policy.max_retention_drop`` >= 0, the candidate may
    fall at most that relative amount below the champion there.
    """
    name = policy.metric
    cand = _value(candidate, name, "candidate")
    parts: list[str] = []
    ok = True

    if champion is not None:
        champ = _value(champion, name, "champion")
        needed = champ * (1.0 + policy.min_relative_gain)
        gain = (cand - champ) / champ if champ > 0 else float("inf") if cand > 0 else 0.0
        beats = cand >= needed and cand > champ
        ok = ok and beats
        op = ">" if beats else "<="
        gain_text = "n/a" if gain == float("inf") else f"{gain:+.1%}"
        parts.append(
            f"{name} {cand:.4f} {op} champion {champ:.4f} ({gain_text}, "
            f"needs {policy.min_relative_gain:+.1%})"
        )
    else:
        parts.append(f"{name} {cand:.4f} (no champion yet)")

    if policy.must_beat_popularity:
        if popularity is None:
            raise ValueError("policy.must_beat_popularity is set but no popularity metrics given")
        pop = _value(popularity, name, "popularity")
        beats_pop = cand > pop
        ok = ok and beats_pop
        parts.append(f"{'>' if beats_pop else '<='} popularity {pop:.4f}")

    if champion is not None and retention is not None and policy.max_retention_drop >= 0:
        cand_old = _value(retention[0], name, "candidate retention")
        champ_old = _value(retention[1], name, "champion retention")
        floor = champ_old * (1.0 - policy.max_retention_drop)
        kept = cand_old >= floor
        ok = ok and kept
        drop = (champ_old - cand_old) / champ_old if champ_old > 0 else 0.0
        parts.append(
            f"earlier data {cand_old:.4f} {'>=' if kept else '<'} {floor:.4f} (champion "
            f"{champ_old:.4f}, drop {drop:+.1%}, allowed {policy.max_retention_drop:.1%})"
        )

    verdict = "promote" if ok else "keep champion" if champion is not None else "no promotion"
    return Decision(promote=ok, reason=f"{verdict}: " + " and ".join(parts))
