"""Offline evaluation: full ranking over the whole catalogue, candidate vs champion vs baselines.

Protocol (the same for every scorer, so their numbers are comparable):

- Each case is one user's held-out next item and the history before it (``recloop.data.EvalCases``).
- The scorer's columns are mapped onto the catalogue; catalogue items the scorer does not know (and
  NaN scores) score ``-inf``. Items of the user's history are taken out of the ranking, as
  serving excludes them (docs/interfaces.md).
- Cases whose target is already in the history (a repeat) cannot be hit once history is excluded;
  they are left out of the metrics and counted in ``n_target_in_history``. Cases whose target is not
  in the catalogue are left out likewise and counted in ``n_target_unknown``.
- Ties are counted against the model (``recloop.metrics.target_ranks``, the rule training
  validates by too): the target's 0-based rank is the number of other items scoring ``>=`` it, so
  a constant scorer ranks every target last instead of scoring by luck of the sort (and a target
  the scorer does not know ranks last).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from models.baselines import KINDS, Baseline
from recloop.baselines import fit_baselines
from recloop.config import Config
from recloop.data import EvalCases
from recloop.metrics import metrics_from_ranks, target_ranks

logger = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
EVAL_BATCH_SIZE = 256  # cases scored at once (a memory and speed trade-off; ranks do not change)
BASELINES = KINDS  # popularity, recent_popularity, transitions


class Scorer(Protocol):
    """What the evaluator needs from a model: the Recommender and the baselines all fit."""

    item_ids: list[str]

    def score(self, histories: list[list[str]]) -> np.ndarray: ...


@dataclass
class RankingCases:
    """Cases resolved against one catalogue once, to be ranked by any number of scorers.

    ``keep`` indexes the cases that are ranked (target known and not in the history; the others
    are counted in ``n_target_unknown`` / ``n_target_in_history``), ``target_pos`` holds their
    targets' catalogue positions, and every case's history items in the catalogue are
    ``history_pos[indptr[i]:indptr[i + 1]]``.
    """

    cases: EvalCases
    catalogue_ids: list[str]
    catalogue: dict[str, int]
    keep: np.ndarray
    target_pos: np.ndarray
    indptr: np.ndarray
    history_pos: np.ndarray
    n_target_in_history: int
    n_target_unknown: int

    @classmethod
    def build(cls, cases: EvalCases | RankingCases, catalogue_ids: Sequence[str]) -> RankingCases:
        """Resolve ``cases`` against ``catalogue_ids`` (prepared cases pass through unchanged)."""
        if isinstance(cases, RankingCases):
            if cases.catalogue_ids != list(catalogue_ids):
                raise ValueError("cases were prepared for another catalogue")
            return cases
        catalogue = {item: j for j, item in enumerate(catalogue_ids)}
        keep: list[int] = []
        in_history = unknown = 0
        lengths = np.zeros(len(cases), dtype=np.int64)
        positions: list[int] = []
        for i, (history, target) in enumerate(zip(cases.histories, cases.targets, strict=True)):
            seen = [catalogue[item] for item in history if item in catalogue]
            positions.extend(seen)
            lengths[i] = len(seen)
            if target not in catalogue:
                unknown += 1
            elif target in set(history):
                in_history += 1
            else:
                keep.append(i)
        indptr = np.zeros(len(cases) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(
            cases=cases,
            catalogue_ids=list(catalogue_ids),
            catalogue=catalogue,
            keep=np.asarray(keep, dtype=np.int64),
            target_pos=np.asarray([catalogue[cases.targets[i]] for i in keep], dtype=np.int64),
            indptr=indptr,
            history_pos=np.asarray(positions, dtype=np.int64),
            n_target_in_history=in_history,
            n_target_unknown=unknown,
        )

    def __len__(self) -> int:
        return len(self.cases)


def rank_cases(
    scorer: Scorer,
    prepared: RankingCases,
    batch_size: int = EVAL_BATCH_SIZE,
    top_k: int = 0,
) -> tuple[np.ndarray, list[list[str]] | None]:
    """Each kept case's target rank (see the module docstring) and, with ``top_k``, every case's
    top ``top_k`` catalogue items (history excluded; unknown items and NaN scores never
    recommended; ties in catalogue order), from one scoring pass.

    Without ``top_k`` only the kept cases are scored.
    """
    cases, n = prepared.cases, len(prepared.catalogue)
    cols = np.array([prepared.catalogue.get(i, -1) for i in scorer.item_ids], dtype=np.int64)
    known_cols = np.flatnonzero(cols >= 0)  # scorer columns that are catalogue items
    positions = cols[known_cols]  # their catalogue positions
    scored = np.arange(len(cases)) if top_k else prepared.keep
    # Where each scored case's rank goes (-1: scored for its top k only).
    slot = np.full(len(cases), -1, dtype=np.int64)
    slot[prepared.keep] = np.arange(len(prepared.keep))
    ranks = np.empty(len(prepared.keep), dtype=np.int64)
    tops: list[list[str]] | None = [] if top_k else None
    for start in range(0, len(scored), batch_size):
        index = scored[start : start + batch_size]
        raw = np.asarray(scorer.score([cases.histories[i] for i in index]), dtype=np.float64)
        if raw.shape != (len(index), len(scorer.item_ids)):
            raise ValueError(
                f"scorer returned shape {raw.shape}, expected {(len(index), len(scorer.item_ids))}"
            )
        full = np.full((len(index), n), -np.inf)
        full[:, positions] = raw[:, known_cols]
        full[np.isnan(full)] = -np.inf
        # The batch's history items, gathered from their CSR segments without a Python loop.
        lo, lengths = prepared.indptr[index], np.diff(prepared.indptr)[index]
        rows = np.repeat(np.arange(len(index)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        seen = prepared.history_pos[np.repeat(lo, lengths) + offsets]
        # History items are out of the ranking altogether: NaN compares False with everything.
        full[rows, seen] = np.nan
        ranked = np.flatnonzero(slot[index] >= 0)
        if len(ranked):
            target_score = full[ranked, prepared.target_pos[slot[index[ranked]]]][:, None]
            ranks[slot[index[ranked]]] = target_ranks(full[ranked], target_score)
        if tops is not None:
            full[rows, seen] = -np.inf
            order = np.argsort(-full, axis=1, kind="stable")[:, :top_k]
            for b, top in enumerate(order):
                tops.append([prepared.catalogue_ids[j] for j in top if np.isfinite(full[b, j])])
    return ranks, tops


def ranking_metrics(
    prepared: RankingCases, ranks: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """``metrics_from_ranks`` keys, ``n_cases``, ``n_target_in_history``, ``n_target_unknown``."""
    out: dict[str, float] = dict(metrics_from_ranks(ranks, ks))
    out["n_cases"] = len(ranks)
    out["n_target_in_history"] = prepared.n_target_in_history
    out["n_target_unknown"] = prepared.n_target_unknown
    return out


def evaluate_scorer(
    scorer: Scorer,
    cases: EvalCases | RankingCases,
    catalogue_ids: Sequence[str],
    ks: Sequence[int] = (10, 20),
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, float]:
    """Rank the whole catalogue for every case and average NDCG@k, Recall@k and MRR.

    Returns ``metrics_from_ranks`` keys plus ``n_cases`` (cases scored), ``n_target_in_history``
    and ``n_target_unknown`` (cases left out; see the module docstring). ``cases`` may be
    prepared once (:class:`RankingCases`) for several scorers.
    """
    prepared = RankingCases.build(cases, catalogue_ids)
    ranks, _ = rank_cases(scorer, prepared, batch_size)
    return ranking_metrics(prepared, ranks, ks)


@dataclass
class EvaluationReport:
    """Metrics of every compared model on the same cases, plus how those cases were drawn."""

    rows: dict[str, dict[str, float]]  # model name -> metrics; candidate first, baselines last
    n_users: int
    n_items: int
    seed: int
    ks: tuple[int, ...]
    seconds: dict[str, float] = field(default_factory=dict)  # evaluation time per model
    # Candidate and champion on earlier data both trained on (the gate's forgetting check), and
    # where those cases come from ("previous window" or "earlier events", tasks.prepare).
    retention: dict[str, dict[str, float]] = field(default_factory=dict)
    retention_scope: str = ""
    # The fitted baselines behind the baseline rows (not serialised): the gate may serve one.
    baselines: dict[str, Baseline] = field(default_factory=dict, repr=False, compare=False)

    def metric(self, model: str, name: str) -> float:
        """One number, e.g. ``report.metric("candidate", "ndcg_at_10")``."""
        if model not in self.rows:
            raise KeyError(f"no {model!r} in the report (have: {', '.join(self.rows)})")
        return float(self.rows[model][name])

    def get(self, model: str) -> dict[str, float] | None:
        """A model's metrics, or None when it was not evaluated (e.g. no champion yet)."""
        return self.rows.get(model)

    def flat_metrics(self, primary: str = CANDIDATE) -> dict[str, float]:
        """``{"ndcg_at_10": candidate's, "champion_ndcg_at_10": ..., "popularity_mrr": ...}``.

        ``primary``'s metrics are unprefixed (the run metrics of docs/interfaces.md); every
        model's are also there prefixed with its name, but the candidate's when it is primary.
        """
        out: dict[str, float] = {}
        for model, metrics in self.rows.items():
            prefixes = [f"{model}_"]
            if model == primary:
                prefixes = [""] + ([] if model == CANDIDATE else prefixes)
            for prefix in prefixes:
                out.update({f"{prefix}{key}": float(value) for key, value in metrics.items()})
        for model, metrics in self.retention.items():
            prefix = "retention_" if model == CANDIDATE else f"{model}_retention_"
            out.update({f"{prefix}{key}": float(value) for key, value in metrics.items()})
        return out

    def retention_pair(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """(candidate, champion) metrics on the earlier data, when both were measured."""
        if CANDIDATE in self.retention and CHAMPION in self.retention:
            return self.retention[CANDIDATE], self.retention[CHAMPION]
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the MLflow artifact ``evaluation.json``)."""
        return {
            "rows": {model: dict(metrics) for model, metrics in self.rows.items()},
            "n_users": self.n_users,
            "n_items": self.n_items,
            "seed": self.seed,
            "ks": list(self.ks),
            "seconds": dict(self.seconds),
            "retention": {model: dict(metrics) for model, metrics in self.retention.items()},
            "retention_scope": self.retention_scope,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            rows={m: dict(v) for m, v in values["rows"].items()},
            n_users=int(values["n_users"]),
            n_items=int(values["n_items"]),
            seed=int(values["seed"]),
            ks=tuple(values["ks"]),
            seconds=dict(values.get("seconds", {})),
            retention={m: dict(v) for m, v in values.get("retention", {}).items()},
            retention_scope=str(values.get("retention_scope", "")),
        )

    def to_markdown(self) -> str:
        """A table: one row per model, one column per metric."""
        names = [f"{m}_at_{k}" for k in self.ks for m in ("ndcg", "recall")] + ["mrr"]
        header = "| model | " + " | ".join(names) + " |"
        lines = [
            f"Evaluation on {self.n_users} users, {self.n_items} catalogue items "
            f"(full ranking, history excluded, seed {self.seed}).",
            "",
            header,
            "|" + "---|" * (len(names) + 1),
        ]
        for model, metrics in self.rows.items():
            cells = [f"{metrics[name]:.4f}" if name in metrics else "" for name in names]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        for model, metrics in self.retention.items():
            cells = [f"{metrics[name]:.4f}" if name in metrics else "" for name in names]
            scope = self.retention_scope or "earlier events"
            lines.append(f"| {model} on {scope} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def evaluate_all(
    candidate: Scorer,
    champion: Scorer | None,
    train_interactions: pd.DataFrame,
    cases: EvalCases,
    catalogue_ids: Sequence[str],
    config: Config,
    retention: EvalCases | None = None,
) -> EvaluationReport:
    """Evaluate the candidate, the champion (if any) and the three baselines on the same cases.

    The baselines are fitted on ``train_interactions`` (never on the held-out targets). Cases are a
    seeded sample of ``config.eval.max_users`` users (all when 0). With ``retention`` cases and a
    champion, both models are also scored there (the gate's forgetting check).
    """
    cases = cases.sample(config.eval.max_users, config.seed)
    catalogue_ids = [str(item) for item in catalogue_ids]
    scorers: dict[str, Scorer] = {CANDIDATE: candidate}
    if champion is not None:
        scorers[CHAMPION] = champion
    baselines = fit_baselines(train_interactions, catalogue_ids)
    scorers.update(baselines)
    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        rows[name] = evaluate_scorer(scorer, cases, catalogue_ids, config.eval.ks)
        seconds[name] = round(time.perf_counter() - started, 3)
        logger.info(
            "%s: ndcg_at_10=%.4f over %d cases (%.1fs)",
            name,
            rows[name].get("ndcg_at_10", float("nan")),
            rows[name]["n_cases"],
            seconds[name],
        )
    kept: dict[str, dict[str, float]] = {}
    if champion is not None and retention is not None and len(retention) > 0:
        for name in (CANDIDATE, CHAMPION):
            kept[name] = evaluate_scorer(scorers[name], retention, catalogue_ids, config.eval.ks)
        logger.info(
            "forgetting check on %s (%d cases): candidate ndcg_at_10=%.4f, champion %.4f",
            retention.scope or "earlier events",
            len(retention),
            kept[CANDIDATE].get("ndcg_at_10", float("nan")),
            kept[CHAMPION].get("ndcg_at_10", float("nan")),
        )
    return EvaluationReport(
        rows=rows,
        n_users=len(cases),
        n_items=len(catalogue_ids),
        seed=config.seed,
        ks=tuple(config.eval.ks),
        seconds=seconds,
        retention=kept,
        retention_scope=(retention.scope or "earlier events") if kept else "",
        baselines=baselines,
    )
