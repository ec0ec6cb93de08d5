"""The promotion decision: a pure function of metrics and a policy (standard library only).

The champion is always the best of three kinds of model, measured on the same held-out newest
events: the learned candidate, the current champion, and the simple baselines (popularity, recent
popularity, item transitions), which are models too and can serve. So no version below a simple
baseline is ever champion, and the decision names every number it used.

The registry I/O that acts on the decision lives in :mod:`recloop.registry`; keeping the decision
pure means it is tested without MLflow and its reason is the same string everywhere it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing only: the decision itself needs nothing beyond the standard library
    from recloop.config import GateConfig

CANDIDATE, CHAMPION = "candidate", "champion"


@dataclass(frozen=True)
class Decision:
    """Who serves after this decision, and a one-line reason that quotes the numbers behind it.

    ``winner`` is ``"candidate"`` (the candidate is promoted), ``"champion"`` (the champion stays)
    or a baseline's name (that baseline, fitted on the same data as the candidate, is registered
    and promoted)."""

    winner: str
    reason: str

    @property
    def promote(self) -> bool:
        """Whether the learned candidate becomes champion."""
        return self.winner == CANDIDATE

    @property
    def baseline(self) -> str | None:
        """The baseline that becomes champion, if one does."""
        return None if self.winner in (CANDIDATE, CHAMPION) else self.winner


def _value(metrics: Mapping[str, float], name: str, whose: str) -> float:
    if name not in metrics:
        raise KeyError(f"{whose} metrics lack {name!r} (have: {', '.join(sorted(metrics))})")
    return float(metrics[name])


def _retention_kept(
    retention: tuple[Mapping[str, float], Mapping[str, float]], name: str, max_drop: float
) -> tuple[bool, str]:
    cand_old = _value(retention[0], name, "candidate retention")
    champ_old = _value(retention[1], name, "champion retention")
    floor = champ_old * (1.0 - max_drop)
    kept = cand_old >= floor
    drop = (champ_old - cand_old) / champ_old if champ_old > 0 else 0.0
    return kept, (
        f"earlier data {cand_old:.4f} {'>=' if kept else '<'} {floor:.4f} (champion "
        f"{champ_old:.4f}, drop {drop:+.1%}, allowed {max_drop:.1%})"
    )


def choose_champion(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    baselines: Mapping[str, Mapping[str, float]],
    policy: GateConfig,
    retention: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
) -> Decision:
    """Choose who serves: the candidate, the champion, or the best baseline.

    All metrics must come from the same evaluation cases; ``baselines`` maps each simple
    baseline's name to its metrics (at least one). The candidate is eligible when it beats every
    baseline strictly and, with a champion and ``retention`` = ``(candidate, champion)`` metrics
    on earlier data both were trained on, falls at most ``policy.max_retention_drop`` below the
    champion there (the forgetting check; < 0 = off). Then:

    - no champion yet: the candidate if eligible, else the best baseline;
    - a champion at least as good as every baseline: the candidate if eligible and it reaches
      ``champion * (1 + min_relative_gain)`` and is strictly better (a tie never replaces a
      working model), else the champion stays;
    - a champion below a baseline must go: the candidate if eligible (it is then above the
      champion too), else the best baseline.
    """
    if not baselines:
        raise ValueError("the gate needs the baselines' metrics on the same cases")
    name = policy.metric
    cand = _value(candidate, name, "candidate")
    scores = {base: _value(metrics, name, base) for base, metrics in baselines.items()}
    best = max(scores, key=lambda base: scores[base])  # the first of equals
    beats = {base: cand > score for base, score in scores.items()}
    parts = [
        f"{name} {cand:.4f}",
        ", ".join(
            f"{'>' if beats[base] else '<='} {base.replace('_', ' ')} {scores[base]:.4f}"
            for base in scores
        ),
    ]
    eligible = all(beats.values())

    if champion is not None and retention is not None and policy.max_retention_drop >= 0:
        kept, text = _retention_kept(retention, name, policy.max_retention_drop)
        eligible = eligible and kept
        parts.append(text)

    if champion is None:
        parts.append("no champion yet")
        winner = CANDIDATE if eligible else best
    else:
        champ = _value(champion, name, "champion")
        needed = champ * (1.0 + policy.min_relative_gain)
        wins = cand >= needed and cand > champ
        gain = (cand - champ) / champ if champ > 0 else float("inf") if cand > 0 else 0.0
        gain_text = "n/a" if gain == float("inf") else f"{gain:+.1%}"
        parts.append(
            f"{'>' if wins else '<='} champion {champ:.4f} ({gain_text}, "
            f"needs {policy.min_relative_gain:+.1%})"
        )
        if champ >= scores[best]:
            winner = CANDIDATE if eligible and wins else CHAMPION
        else:
            parts.append(f"champion below {best.replace('_', ' ')}")
            winner = CANDIDATE if eligible else best

    verdict = {
        CANDIDATE: "promote",
        CHAMPION: "keep champion",
    }.get(winner, f"serve {winner.replace('_', ' ')}")
    return Decision(winner=winner, reason=f"{verdict}: " + "; ".join(parts))
