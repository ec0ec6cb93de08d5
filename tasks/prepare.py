"""Assemble what one cycle trains and evaluates on, from the archive and the champion's lineage."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop import registry
from recloop.config import Config
from recloop.data import EvalCases, holdout_last_events, last_events, sort_events
from recloop.landing import archived_batches, read_archive
from recloop.paths import Home

logger = logging.getLogger(__name__)

RETENTION_USERS = 1000  # users sampled for the forgetting check (scored by two models)
# Fewer users than this with a target in the previous window: the check takes earlier events.
MIN_WINDOW_USERS = 30


@dataclass
class CycleData:
    """The inputs of one incremental cycle."""

    pending: list[str]  # batch ids this cycle learns from (landed since the champion was trained)
    trained_batches: list[str]  # every batch the candidate will have learned (lineage)
    items: pd.DataFrame  # the whole catalogue as archived (raw text, before cleaning)
    train_interactions: pd.DataFrame  # everything archived minus the held-out events
    cases: EvalCases  # one held-out next item per user active in the pending batches
    focus_users: set[str] = field(default_factory=set)  # users active in the pending batches
    data_fingerprint: str = ""
    # The rows of train_interactions that arrived with the pending batches: an incremental update
    # trains on these (and its users' recent history), not on the whole history again.
    new_interactions: pd.DataFrame | None = None
    # Forgetting check: earlier events of users absent from the pending batches that both the
    # champion and the candidate trained on (see retention_cases).
    retention: EvalCases | None = None
    # Every event of trained_batches, and the held-out ones among them: after evaluation the
    # candidate learns these too (tasks.fine_tune.learn_judged_stage).
    interactions: pd.DataFrame | None = None
    heldout_events: pd.DataFrame | None = None

    def summary(self) -> dict[str, int | str]:
        return {
            "pending_batches": len(self.pending),
            "catalogue_items": len(self.items),
            "train_interactions": len(self.train_interactions),
            "eval_users": len(self.cases),
            "focus_users": len(self.focus_users),
            "new_interactions": 0 if self.new_interactions is None else len(self.new_interactions),
            "retention_users": 0 if self.retention is None else len(self.retention),
            "retention_scope": "" if self.retention is None else self.retention.scope,
        }


def fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a table, recorded as a lineage tag."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def retention_cases(
    prior: pd.DataFrame,
    arriving_users: set[str],
    max_users: int,
    previous_window: pd.DataFrame | None = None,
    min_window_users: int = MIN_WINDOW_USERS,
) -> EvalCases:
    """Earlier events both the champion and a candidate trained on, to measure forgetting.

    For users absent from the arriving batches: their second-to-last earlier event is the target,
    the events before it the history. (Their last one may have been held out from the champion's
    training when it was judged on it, so it is not used.) A seeded sample of ``max_users``.

    With ``previous_window`` (the events of the batch the champion learned last, a subset of
    ``prior``), only users whose target is one of those events are taken: the check is then on
    the previous window, the data a warm-started update is most likely to overwrite. When fewer
    than ``min_window_users`` such users exist, every absent user is taken (see
    :attr:`EvalCases.scope`).
    """
    ordered = sort_events(prior)
    in_window = np.zeros(len(ordered), dtype=bool)
    if previous_window is not None and len(previous_window):
        keys = ["user_id", "item_id", "timestamp"]
        marked = previous_window[keys].drop_duplicates().assign(_in_window=True)
        in_window = (
            ordered[keys].merge(marked, on=keys, how="left")["_in_window"].eq(True).to_numpy()
        )
    grouped = ordered.assign(_in_window=in_window).groupby("user_id", sort=False)
    sequences = {user: list(items) for user, items in grouped["item_id"]}
    target_in_window = {
        user: bool(flags.iloc[-2]) for user, flags in grouped["_in_window"] if len(flags) >= 2
    }
    users = sorted(u for u, seq in sequences.items() if u not in arriving_users and len(seq) >= 3)
    scope = "earlier events"
    if previous_window is not None:
        windowed = [u for u in users if target_in_window[u]]
        if len(windowed) >= min_window_users:
            users, scope = windowed, "previous window"
    if len(users) > max_users:
        users = sorted(np.random.default_rng(0).choice(users, size=max_users, replace=False))
    return EvalCases(
        [str(u) for u in users],
        [sequences[u][:-2] for u in users],
        [sequences[u][-2] for u in users],
        scope=scope,
    )


def _hold_out(
    home: Home, prior_ids: list[str], arriving_ids: list[str], *, pending: list[str], label: str
) -> CycleData:
    """Hold out the last event of every user active in the arriving batches (see below)."""
    # Only the batches this cycle learns from: a later batch (still pending for a later cycle)
    # must not reach the catalogue, the fingerprint or the evaluation.
    archive = read_archive(home, [*prior_ids, *arriving_ids])
    prior = (
        read_archive(home, prior_ids).interactions if prior_ids else archive.interactions.iloc[:0]
    )
    arriving = read_archive(home, arriving_ids).interactions
    train, cases = holdout_last_events(prior, arriving)
    # The batch the champion learned last. The events it was judged on then were held out of its
    # training, so they are new to it: an update learns them now, with the arriving ones.
    last_batch = read_archive(home, prior_ids[-1:]).interactions if prior_ids else None
    judged = None if last_batch is None else last_events(last_batch)
    data = CycleData(
        pending=pending,
        trained_batches=[*prior_ids, *arriving_ids],
        items=archive.items,
        train_interactions=train,
        cases=cases,
        # Early stopping watches the arriving users in both flows, so an incremental update and
        # a full retrain are tuned on the same slice.
        focus_users=set(arriving["user_id"]),
        data_fingerprint=fingerprint(archive.interactions),
        # holdout_last_events puts the arriving batches' training rows after the prior ones.
        new_interactions=pd.concat([judged, train.iloc[len(prior) :]], ignore_index=True),
        retention=retention_cases(
            prior,
            set(arriving["user_id"]),
            RETENTION_USERS,
            previous_window=last_batch,  # the previous window
        ),
        interactions=archive.interactions,
        heldout_events=last_events(arriving),
    )
    logger.info("%s data: %s", label, data.summary())
    return data


def prepare_cycle(
    home: Home, applied: list[str], batches: list[str] | None = None
) -> CycleData | None:
    """Split the archive into what the champion has seen and what has arrived since.

    ``applied`` lists the batches the champion was trained on. ``batches`` (from
    :func:`plan_batches`) limits the cycle to those pending batches, a prefix in landing order;
    None takes every pending batch. Returns ``None`` when no batch is pending. The last event of
    every user active in the pending batches is held out, so that the candidate, the champion and
    the baselines are all judged on the same newest events, none of which any of them has
    trained on.
    """
    archived = [b.batch_id for b in archived_batches(home)]
    seen = set(applied)
    pending = [b for b in archived if b not in seen]
    if batches is not None:
        # Learning a later batch before an earlier one would train on events that come after
        # the ones held out for evaluation.
        if pending[: len(batches)] != list(batches):
            raise ValueError(
                f"batches {batches} are not the first pending batches in landing order {pending}"
            )
        pending = list(batches)
    if not pending:
        return None
    known = [b for b in archived if b in seen]
    return _hold_out(home, known, pending, pending=pending, label="cycle")


def prepare_full(home: Home) -> CycleData | None:
    """Everything archived, for a model trained from scratch (the ``full-retrain`` flow).

    Returns ``None`` when nothing is archived. The evaluation cases are defined as in
    :func:`prepare_cycle` with the newest archived batch as the arriving one: the last event of
    every user active in it is held out. These are the events the incremental loop holds out when
    it consumes that batch, so candidate, champion and baselines are judged on the same events.
    A champion registered from that batch has learned them since it was judged on them: its row
    is then the metrics it was judged with (``flows.cycle._champion_as_judged``).
    """
    ids = [b.batch_id for b in archived_batches(home)]
    if not ids:
        return None
    return _hold_out(home, ids[:-1], ids[-1:], pending=ids, label="full retrain")


@dataclass(frozen=True)
class BatchPlan:
    """What a run triggered for one batch learns next (see :func:`plan_batches`)."""

    batches: list[str]  # pending batches to learn from, in landing order; empty: nothing to do
    decides: str | None  # the batch this candidate is the first to be judged on
    reason: str  # why (logged and returned in the flow's summary)


def plan_batches(
    archived: list[str], trained: list[str], tried: list[str], until: str
) -> BatchPlan:
    """The next candidate's batches for a run triggered by the landing of batch ``until``.

    The rule (one candidate per landed batch, decided in landing order): a batch is *decided*
    when the champion has learned it or a candidate warm-started from this same champion has been
    judged on it (``tried``: the batch ids of the latest candidate, when its parent is the current
    champion; a candidate the gate rejected leaves its batches pending but decided). The next
    candidate learns every pending batch up to and including the first undecided one, so a batch
    the gate rejected is learned again together with the next one. When every batch up to
    ``until`` is decided there is nothing to do. Several runs triggered at once therefore make one
    candidate each, in landing order, whichever of them takes the training lock first.

    Raises :class:`LookupError` when ``until`` is not an archived batch.
    """
    if until not in archived:
        raise LookupError(f"batch {until} is not archived in this home")
    done = set(trained)
    pending = [b for b in archived if b not in done]
    if until not in pending:
        return BatchPlan([], None, f"batch {until} is already learned by the champion")
    judged = set(tried)
    upto = pending[: pending.index(until) + 1]
    undecided = [b for b in upto if b not in judged]
    if not undecided:
        return BatchPlan(
            [], None, f"batch {until} was already judged by a candidate of this champion"
        )
    first = undecided[0]
    batches = pending[: pending.index(first) + 1]
    return BatchPlan(batches, first, f"learning {len(batches)} pending batch(es) up to {first}")


def tried_batches(config: Config, home: Home, champion_version: str | None) -> list[str]:
    """Batch ids of the newest learned candidate judged against ``champion_version`` (its
    ``parent_version``): those batches are decided for this champion. Read from the versions'
    tags, so a cycle killed before it moved any alias counts too."""
    judged = judged_candidate(config, home, champion_version)
    return registry.batch_list(judged["tags"].get("batch_ids")) if judged else []


def judged_candidate(
    config: Config, home: Home, champion_version: str | None, batches: list[str] | None = None
) -> dict[str, Any] | None:
    """The newest learned version judged against ``champion_version`` (on exactly ``batches``
    when given), as ``{"version", "tags"}``, or None."""
    reg = registry.configure(home, config)
    for info in reg.judged_versions(champion_version):
        if registry.model_kind(info["tags"]) != registry.LEARNED:
            continue
        if batches is None or registry.batch_list(info["tags"].get("batch_ids")) == list(batches):
            return info
        return None  # a newer candidate judged other batches
    return None


@task(name="plan_batches", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def plan_task(
    config: Config, home: Home, champion_info: dict[str, Any] | None, trained: list[str], until: str
) -> BatchPlan:
    """Prefect task: :func:`plan_batches` with the archive's ledger and the registry's lineage."""
    version = str(champion_info["version"]) if champion_info else None
    archived = [b.batch_id for b in archived_batches(home)]
    plan = plan_batches(archived, trained, tried_batches(config, home, version), until)
    logger.info("plan for batch %s: %s", until, plan.reason)
    return plan


@task(name="judged_candidate", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def judged_task(
    config: Config, home: Home, champion_info: dict[str, Any] | None, batches: list[str]
) -> dict[str, Any] | None:
    """Prefect task: :func:`judged_candidate` for the champion and the pending ``batches``."""
    return judged_candidate(
        config, home, str(champion_info["version"]) if champion_info else None, batches
    )


@task(name="load_champion", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_champion_task(config: Config, home: Home):  # noqa: ANN201 - (Recommender, info) | None
    """The current champion, rebuilt from its registered checkpoint (None before the first)."""
    return registry.load_champion(config, home)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(
    home: Home, applied: list[str], batches: list[str] | None = None
) -> CycleData | None:
    """Prefect task: :func:`prepare_cycle`."""
    return prepare_cycle(home, applied, batches)


@task(name="load_catalogue", cache_policy=NO_CACHE)
def load_catalogue_task(home: Home) -> pd.DataFrame:
    """The archived catalogue (raw text, the latest row of each item), for pretraining alone."""
    return read_archive(home).items


@task(name="prepare_full", cache_policy=NO_CACHE)
def prepare_full_task(home: Home) -> CycleData | None:
    """Prefect task: :func:`prepare_full`."""
    return prepare_full(home)
