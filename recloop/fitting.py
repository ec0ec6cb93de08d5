"""Train the sequential recommender: from scratch, or warm-started from the current champion.

:func:`fit_recommender` runs four named steps:

1. :func:`build_examples`: every user's events as a sequence, the validation cases (given, or
   each focus user's last training item held out) and the (input, target) examples. From scratch
   every event is a target. A warm-started update trains on the events that arrived since its
   parent and on the earlier events in those users' recent history (encoded anyway), so its cost
   grows with the users of the new data, not with the whole history.
2. :func:`plan_training`: from scratch, ``train.epochs`` with ``train.patience``; an update,
   ``train.finetune_*`` within a budget of full-data epochs, from its parent shrunk towards zero
   when the parent has memorised what it was trained on (:func:`memorisation_gap`).
3. :func:`train_recommender`: the shared training loop, early-stopping on validation NDCG@10 (full
   ranking, history excluded, ties against the model as in evaluation). An update validates its
   parent first and keeps it as it was when no epoch beats it.
4. :func:`fit_prior`: the two priors the model's log-probabilities are combined with, what
   follows what (the transition counts of the training sequences) and what is popular now (the
   recent counts of the training events), each with a weight chosen on the validation cases.

The loss (a softmax over every item) is computed only at target positions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from models.sasrec import PAD, Recommender, SeqRec, TransitionPrior, recency_log_shares
from recloop.config import Config
from recloop.data import EvalCases, build_sequences, recent_since, sort_events
from recloop.metrics import metrics_from_ranks, target_ranks
from recloop.search import DEFAULT as DEFAULT_SETTING
from recloop.search import MIN_Z, apply_setting, choose_setting
from recloop.training import TrainReport, param_groups, train_loop

logger = logging.getLogger(__name__)

MAX_VAL_USERS = 2000  # a seeded sample of validation users keeps each epoch's check cheap
MIN_VAL_LENGTH = 3  # a user needs this many training items to give one up for validation
WEIGHT_DECAY = 0.0  # AdamW decay of the recommender's weights (biases and norms: never)
VAL_K = 10  # early stopping and the prior's weight watch NDCG at this cut-off
# Weights of the recency prior tried on validation, with every transition-prior weight; 0 first,
# so that a tie keeps the model without it. 1 multiplies the model's distribution by "popular
# now"; 4 lets "popular now" rank nearly alone, the model breaking its ties.
RECENCY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# Recent counts cover the last share of the training period (timestamps may be positions), as
# recloop.baselines.RecentPopularity's do by default.
RECENT_FRACTION = 0.1
# Fewer validation cases after the counting window than this: no recency prior (weight 0).
MIN_RECENCY_CASES = 50


@dataclass
class FineTuneResult:
    """The trained recommender and what its training did."""

    recommender: Recommender
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Examples:
    """What one training learns from and is validated on, in item-table indices."""

    sequences: dict[str, list[int]]  # every user's training events, in time order
    trained: dict[str, list[int]]  # the same, without the held-out validation items
    users: list[str]  # the users whose sequences give the examples, sorted
    inputs: torch.Tensor  # (E, max_seq_len), left-padded
    targets: torch.Tensor  # (E, max_seq_len), PAD = no target
    n_targets: int
    n_earlier_targets: int  # an update's targets that are not new events (0 from scratch)
    val_histories: list[list[int]]
    val_targets: list[int]
    held_out: bool  # the validation targets were held out of ``trained``
    # An update only, one per entry of ``users``: which positions are targets, which events new.
    masks: list[np.ndarray] = field(default_factory=list)
    new_flags: list[np.ndarray] = field(default_factory=list)
    # Held-out validation: whose last training event each validation case is, in case order.
    val_users: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingPlan:
    """How long and how one training runs, and from which weights."""

    warm: bool
    epochs: int
    learning_rate: float
    patience: int
    patience_steps: int = 0
    max_steps: int | None = None
    min_steps: int = 0
    shrink: float = 1.0  # applied to the parent once it has been validated as it was
    memorisation_gap: float = float("nan")


def chunk_count(length: int, max_seq_len: int) -> int:
    """How many (input, target) chunks :func:`training_examples` cuts from a sequence of
    ``length`` items when every position is a target."""
    return (length - 2) // max_seq_len + 1 if length >= 2 else 0


def training_examples(
    sequences: list[list[int]],
    max_seq_len: int,
    target_masks: list[np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (inputs, targets) ``(E, max_seq_len)`` pairs, targets shifted by one.

    Each sequence gives its last ``max_seq_len + 1`` items; a longer one also gives the earlier
    chunks (non-overlapping targets), so no event is wasted. With ``target_masks`` (one boolean
    array per sequence, True = train on predicting this position's item) the other targets are
    ``PAD`` and a chunk without any target is dropped.
    """
    inputs, targets = [], []
    for row, seq in enumerate(sequences):
        mask = None if target_masks is None else np.asarray(target_masks[row], dtype=bool)
        end = len(seq)
        while end >= 2:
            begin = max(0, end - max_seq_len - 1)
            chunk = seq[begin:end]
            target = list(chunk[1:])
            if mask is not None:
                keep = mask[begin + 1 : end]
                target = [t if k else PAD for t, k in zip(target, keep, strict=True)]
            if any(t != PAD for t in target):
                inputs.append(chunk[:-1])
                targets.append(target)
            end -= max_seq_len
    x = torch.full((len(inputs), max_seq_len), PAD, dtype=torch.long)
    y = torch.full((len(inputs), max_seq_len), PAD, dtype=torch.long)
    for row, (a, b) in enumerate(zip(inputs, targets, strict=True)):
        x[row, max_seq_len - len(a) :] = torch.tensor(a)
        y[row, max_seq_len - len(b) :] = torch.tensor(b)
    return x, y


def new_event_flags(
    interactions: pd.DataFrame, new_interactions: pd.DataFrame
) -> dict[str, np.ndarray]:
    """Per user (events in time order, as :func:`recloop.data.build_sequences`), which events are
    rows of ``new_interactions`` (matched on user, item and timestamp)."""
    key = ["user_id", "item_id", "timestamp"]
    ordered = sort_events(interactions)
    new = new_interactions[key].drop_duplicates().assign(_new=True)
    marked = ordered[key].merge(new, on=key, how="left", sort=False)
    flags = marked["_new"].eq(True).to_numpy()  # a left merge keeps the left rows' order
    return {user: flags[rows] for user, rows in ordered.groupby("user_id").indices.items()}


def _user_flags(new_flags: dict[str, np.ndarray], user: str, n: int) -> np.ndarray:
    """``user``'s new-event flags for the first ``n`` events (all False without any)."""
    return np.asarray(new_flags.get(user, np.zeros(n, dtype=bool)), dtype=bool)[:n]


def update_targets(
    sequences: dict[str, list[int]], new_flags: dict[str, np.ndarray], max_seq_len: int
) -> tuple[dict[str, np.ndarray], int]:
    """Target masks for an incremental update: every new event, and every earlier event in the
    stretch of history the update encodes anyway.

    A position is a target only when an item comes before it. The stretch is the last
    ``max_seq_len`` positions of each user with a new target (the chunk :func:`training_examples`
    cuts around them): each of its earlier events costs one more row of the softmax and no extra
    sequence to encode, so the update learns these users' recent history with them, as a full
    retrain would. Returns one boolean mask per user with at least one target, and the number of
    earlier events among the targets.
    """
    masks: dict[str, np.ndarray] = {}
    n_earlier = 0
    for user in sorted(sequences):
        n = len(sequences[user])
        flags = _user_flags(new_flags, user, n)
        mask = flags.copy()
        mask[:1] = False  # the first event has nothing before it to predict it from
        if not mask.any():
            continue
        earlier = np.flatnonzero(~flags)
        earlier = earlier[(earlier >= 1) & (earlier >= n - max_seq_len)]
        mask[earlier] = True
        n_earlier += len(earlier)
        masks[user] = mask
    return masks, n_earlier


Weights = Sequence[float] | Sequence[tuple[float, float]]


def _pairs(weights: Weights) -> list[tuple[float, float]]:
    """Each entry as (transition weight, recency weight); a bare number has no recency."""
    return [
        (float(w), 0.0) if isinstance(w, int | float) else (float(w[0]), float(w[1]))
        for w in weights
    ]


def validation_ranks(
    model: SeqRec,
    histories: list[list[int]],
    targets: list[int],
    prior: TransitionPrior | None = None,
    weights: Weights = (0.0,),
    batch_size: int = 64,
    recent_counts: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Each case's 0-based target rank over the full catalogue, by the one ranking rule
    (:func:`recloop.metrics.target_ranks`: ties count against the model), history items out of
    the ranking (a target that is itself in the history stays rankable), with ``prior`` and the
    recency prior of ``recent_counts`` added at each of ``weights`` (transition weight, or
    (transition, recency) weights) as :meth:`Recommender.score` adds them (the model's logits
    when both are 0). One array per weight, in the order of the cases."""
    weights = _pairs(weights)
    if not targets:
        return [np.zeros(0, dtype=np.int64) for _ in weights]
    model.eval()
    # Users in order of history length: a batch is padded to its longest history, and most
    # histories are short.
    order = sorted(range(len(targets)), key=lambda u: len(histories[u]))
    ranks: list[list[np.ndarray]] = [[] for _ in weights]
    with torch.no_grad():
        items = model.item_repr()
        for start in range(0, len(order), batch_size):
            chunk = [histories[u] for u in order[start : start + batch_size]]
            target = torch.tensor([targets[u] for u in order[start : start + batch_size]])
            scores = _validation_scores(model, items, chunk, prior, weights, recent_counts)
            for scored, out in zip(scores, ranks, strict=True):
                out.append(_ranks_without_history(scored, chunk, target.to(items.device)))
    result = []
    for per_batch in ranks:
        in_order = np.empty(len(targets), dtype=np.int64)
        in_order[order] = np.concatenate(per_batch)
        result.append(in_order)
    return result


def _validation_scores(
    model: SeqRec,
    items: torch.Tensor,
    histories: list[list[int]],
    prior: TransitionPrior | None,
    weights: list[tuple[float, float]],
    recent_counts: np.ndarray | None,
) -> list[torch.Tensor]:
    """The scores ``(b, N+1)`` of ``histories`` (the last ``max_seq_len`` items of each) at each
    pair of prior weights; column ``PAD`` is ``-inf``."""
    seqs = [h[-model.config.max_seq_len :] for h in histories]
    inputs = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
    for row, seq in enumerate(seqs):
        inputs[row, -len(seq) :] = torch.tensor(seq)
    logits = model.logits(model.encode_last(inputs.to(items.device), items), items)  # (b, N+1)
    logits[:, PAD] = float("-inf")
    if prior is None:
        weights = [(0.0, r) for _, r in weights]
    if recent_counts is None:
        weights = [(w, 0.0) for w, _ in weights]
    if not any(w > 0 or r > 0 for w, r in weights):
        return [logits.clone() for _ in weights]
    log_probs = torch.log_softmax(logits, dim=-1)
    transitions = torch.zeros_like(logits)
    if prior is not None:
        transitions[:, 1:] = torch.from_numpy(prior.log_scores(seqs)).to(logits.device)
    recency = torch.zeros(logits.shape[1], device=logits.device)
    if recent_counts is not None:
        recency[1:] = torch.from_numpy(recency_log_shares(recent_counts)).to(logits.device)
    return [
        log_probs + w * transitions + r * recency if w > 0 or r > 0 else logits.clone()
        for w, r in weights
    ]


def _ranks_without_history(
    scores: torch.Tensor, histories: list[list[int]], target: torch.Tensor
) -> np.ndarray:
    """:func:`target_ranks` of ``target`` ``(b,)`` in ``scores`` ``(b, N+1)`` (changed in
    place), with each row's history items out of the ranking."""
    target_score = scores.gather(1, target[:, None])  # (b, 1)
    rows = torch.tensor([r for r, h in enumerate(histories) for _ in h], dtype=torch.long)
    cols = torch.tensor([i for h in histories for i in h], dtype=torch.long)
    # One indexed write for the whole batch (per-row writes are slow on a GPU).
    scores[rows.to(scores.device), cols.to(scores.device)] = float("nan")
    scores[torch.arange(len(target), device=scores.device), target] = target_score[:, 0]
    return target_ranks(scores, target_score).cpu().numpy()


def validation_ndcg(
    model: SeqRec,
    histories: list[list[int]],
    targets: list[int],
    k: int = VAL_K,
    batch_size: int = 64,
) -> float:
    """Mean NDCG@k of the next item over :func:`validation_ranks` (the model alone)."""
    return prior_weight_ndcgs(model, histories, targets, None, (0.0,), k, batch_size)[0]


def prior_weight_ndcgs(
    model: SeqRec,
    histories: list[list[int]],
    targets: list[int],
    prior: TransitionPrior | None,
    weights: Weights,
    k: int = VAL_K,
    batch_size: int = 64,
    recent_counts: np.ndarray | None = None,
) -> list[float]:
    """:func:`validation_ndcg` with the priors added at each of ``weights`` (NaN without cases;
    see :func:`validation_ranks`)."""
    if not targets:
        return [float("nan")] * len(weights)
    ranks = validation_ranks(model, histories, targets, prior, weights, batch_size, recent_counts)
    return [metrics_from_ranks(r, (k,))[f"ndcg_at_{k}"] for r in ranks]


def trim_padding(
    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of left-padded examples without the columns that are padding in every row, on
    ``device``: positions are counted from the right, so a batch of short sequences costs what
    its longest one needs."""
    width = max(1, int((inputs != PAD).sum(1).max()))
    return inputs[:, -width:].to(device), targets[:, -width:].to(device)


def target_losses(
    model: SeqRec, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """The full-softmax cross-entropy of ``model`` (eval mode, no dropout) at each target of the
    examples ``(x, y)``, in the row-major order of ``y != PAD``."""
    model.eval()
    device = next(model.parameters()).device
    losses = [torch.zeros(0)]
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            inputs, targets = x[start : start + batch_size], y[start : start + batch_size]
            if not bool((targets != PAD).any()):
                continue
            inputs, targets = trim_padding(inputs, targets, device)
            losses.append(model.loss(inputs, targets, reduction="none").cpu())
    return torch.cat(losses)


def memorisation_gap(
    model: SeqRec,
    sequences: list[list[int]],
    masks: list[np.ndarray],
    new_flags: list[np.ndarray],
    max_seq_len: int,
    known_items: int,
) -> float:
    """How much worse ``model`` predicts the new events (``masks & new_flags``) than the
    earlier ones it was trained on (``masks & ~new_flags``): the difference of the mean
    cross-entropies, in nats. Only targets among the first ``known_items`` items count (an item
    the model has never been trained on says nothing about what it memorised). NaN when either
    side has no target."""
    x, y = training_examples(sequences, max_seq_len, masks)
    # The same chunks once more with each event replaced by its kind (1 earlier, 2 new): the
    # chunking depends only on the lengths and the masks, so the two line up target for target.
    kinds = [(np.asarray(f, dtype=np.int64) + 1).tolist() for f in new_flags]
    _, kind = training_examples(kinds, max_seq_len, masks)
    y = y.masked_fill(y > known_items, PAD)
    kind = kind.masked_fill(y == PAD, PAD)
    losses = target_losses(model, x, y)
    kind = kind[kind != PAD]
    new, old = losses[kind == 2], losses[kind == 1]
    if len(new) == 0 or len(old) == 0:
        return float("nan")
    return float(new.mean() - old.mean())


def catalogue_order(
    catalogue: pd.DataFrame, parent: Recommender | None
) -> tuple[list[str], list[str]]:
    """(all item ids in table order, the ids new relative to the parent)."""
    ids = list(dict.fromkeys(catalogue["item_id"].astype(str)))
    if parent is None:
        return ids, ids
    known = set(parent.item_ids)
    new = [i for i in ids if i not in known]
    return parent.item_ids + new, new


def start_recommender(
    item_ids: list[str], text_embeddings: np.ndarray, config: Config, parent: Recommender | None
) -> Recommender:
    """A fresh recommender for ``item_ids``, or a copy of ``parent`` grown by the new items;
    every item gets its current text vector (the encoder may have been re-pretrained)."""
    if len(text_embeddings) != len(item_ids):
        raise ValueError(f"{len(text_embeddings)} text embeddings for {len(item_ids)} items")
    emb = torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))
    if parent is None:
        model = SeqRec(config.model, len(item_ids), emb.shape[1])
        model.set_text_embeddings(torch.arange(1, len(item_ids) + 1), emb)
        return Recommender(model, item_ids)
    known = len(parent.item_ids)
    if item_ids[:known] != parent.item_ids:
        raise ValueError("a warm start's item ids must extend the parent's, in its order")
    recommender = parent.copy()
    recommender.add_items(item_ids[known:], emb[known:])
    recommender.model.set_text_embeddings(torch.arange(1, len(item_ids) + 1), emb)
    return recommender


def count_events(recommender: Recommender, train_interactions: pd.DataFrame) -> pd.DataFrame:
    """The interactions on catalogue items (others are ignored, with a warning); sets the
    recommender's popularity and opens the ID embeddings of the items with enough of them."""
    index = recommender.index
    known = train_interactions["item_id"].astype(str).isin(index)
    if not bool(known.all()):
        logger.warning(
            "fine_tune: %d interactions name items outside the catalogue; ignored",
            int((~known).sum()),
        )
    interactions = train_interactions[known]
    counts = interactions["item_id"].astype(str).map(index).value_counts()
    popularity = np.zeros(len(recommender.item_ids))
    popularity[counts.index.to_numpy(dtype=int) - 1] = counts.to_numpy()
    recommender.popularity = popularity
    recommender.model.set_id_gate(popularity)
    return interactions


def build_examples(
    index: dict[str, int],
    interactions: pd.DataFrame,
    config: Config,
    warm: bool,
    focus_users: set[str] | None = None,
    validation: EvalCases | None = None,
    new_interactions: pd.DataFrame | None = None,
) -> Examples:
    """The sequences, validation cases and training examples of one training (see
    :func:`fit_recommender` for the arguments; ``index`` maps item ids to table indices)."""
    sequences = {
        user: [index[i] for i in items] for user, items in build_sequences(interactions).items()
    }
    users = sorted(sequences)
    new_flags: dict[str, np.ndarray] = {}
    if warm and new_interactions is not None:
        new_flags = new_event_flags(interactions, new_interactions)
        focus_users = focus_users or {u for u, f in new_flags.items() if f.any()}
    focus = sorted(u for u in (focus_users or set()) if u in sequences) or users
    if warm and new_interactions is None:
        new_flags = {u: np.ones(len(sequences[u]), dtype=bool) for u in focus}
    rng = np.random.default_rng(config.seed)
    if validation is not None:
        val_histories, val_targets = _given_validation(index, validation)
        held_out: set[str] = set()
    else:
        val_users, val_histories, val_targets = _held_out_validation(sequences, focus, rng)
        held_out = set(val_users)
    trained = {u: sequences[u][:-1] if u in held_out else sequences[u] for u in users}
    max_seq_len = config.model.max_seq_len
    if not warm:
        x, y = training_examples([trained[u] for u in users], max_seq_len)
        n_targets = int((y != PAD).sum())
        return Examples(
            sequences,
            trained,
            users,
            x,
            y,
            n_targets,
            0,
            val_histories,
            val_targets,
            bool(held_out),
            val_users=sorted(held_out) if held_out else [],
        )
    masks, n_earlier = update_targets(trained, new_flags, max_seq_len)
    chosen = sorted(masks)
    x, y = training_examples([trained[u] for u in chosen], max_seq_len, [masks[u] for u in chosen])
    return Examples(
        sequences,
        trained,
        chosen,
        x,
        y,
        sum(int(m.sum()) for m in masks.values()),
        n_earlier,
        val_histories,
        val_targets,
        bool(held_out),
        masks=[masks[u] for u in chosen],
        new_flags=[_user_flags(new_flags, u, len(masks[u])) for u in chosen],
        val_users=sorted(held_out) if held_out else [],
    )


def _given_validation(
    index: dict[str, int], validation: EvalCases
) -> tuple[list[list[int]], list[int]]:
    """The given cases with a known target, each history reduced to its known items."""
    histories, targets = [], []
    for history, target in zip(validation.histories, validation.targets, strict=True):
        known = [index[i] for i in history if i in index]
        if known and target in index:
            histories.append(known)
            targets.append(index[target])
    return histories, targets


def _held_out_validation(
    sequences: dict[str, list[int]], focus: list[str], rng: np.random.Generator
) -> tuple[list[str], list[list[int]], list[int]]:
    """Focus users' last training item, held out of training (a seeded sample of at most
    ``MAX_VAL_USERS`` users with at least ``MIN_VAL_LENGTH`` items), in user order."""
    eligible = sorted(u for u in focus if len(sequences[u]) >= MIN_VAL_LENGTH)
    if len(eligible) > MAX_VAL_USERS:
        eligible = sorted(rng.choice(eligible, size=MAX_VAL_USERS, replace=False).tolist())
    return (
        eligible,
        [sequences[u][:-1] for u in eligible],
        [sequences[u][-1] for u in eligible],
    )


def plan_training(
    model: SeqRec, examples: Examples, config: Config, parent_items: int | None
) -> TrainingPlan:
    """From scratch (``parent_items`` None) or an update of a parent that knew the first
    ``parent_items`` items: its epochs, learning rate, patience, step budget and shrink."""
    train = config.train
    if parent_items is None:
        return TrainingPlan(False, train.epochs, train.learning_rate, train.patience)
    max_seq_len = config.model.max_seq_len
    # Shrink only a parent that has memorised its training data (see warm_shrink_gap);
    # without both new and earlier targets there is no gap to go by: shrink.
    gap = memorisation_gap(
        model,
        [examples.trained[u] for u in examples.users],
        examples.masks,
        examples.new_flags,
        max_seq_len,
        parent_items,
    )
    threshold = train.warm_shrink_gap
    shrink = train.warm_shrink if threshold <= 0 or math.isnan(gap) or gap >= threshold else 1.0
    logger.info(
        "fine_tune: the parent predicts the new events %.3f nats worse than the earlier ones: "
        "shrink %.2f (threshold %.2f)",
        gap,
        shrink,
        threshold,
    )
    max_steps, min_steps = None, 0
    if train.finetune_budget > 0:
        # The steps of one epoch over every training event, as a retrain would take them.
        chunks = sum(chunk_count(len(seq), max_seq_len) for seq in examples.trained.values())
        full_epoch = chunks / train.batch_size
        max_steps = max(1, math.ceil(train.finetune_budget * full_epoch))
        min_steps = math.ceil(train.finetune_min_share * max_steps)
    return TrainingPlan(
        True,
        train.finetune_epochs,
        train.finetune_learning_rate,
        train.finetune_patience,
        train.finetune_patience_steps,
        max_steps,
        min_steps,
        shrink,
        gap,
    )


def train_recommender(
    model: SeqRec, examples: Examples, plan: TrainingPlan, config: Config
) -> TrainReport:
    """Train ``model`` on ``examples`` by ``plan`` with the shared loop, early-stopping on
    validation NDCG@10; an update validates its parent first, then shrinks it and trains, and
    keeps the parent as it was when no epoch beats it."""
    device = next(model.parameters()).device
    x, y, batch_size = examples.inputs, examples.targets, config.train.batch_size

    def make_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=generator)
        for s in range(0, len(order), batch_size):
            batch = order[s : s + batch_size]
            yield trim_padding(x[batch], y[batch], device)

    def validate() -> float:
        return validation_ndcg(model, examples.val_histories, examples.val_targets)

    optimizer = torch.optim.AdamW(param_groups(model, WEIGHT_DECAY), lr=plan.learning_rate)
    max_minutes = config.train.max_minutes
    return train_loop(
        model,
        make_batches,
        lambda m, batch: m.loss(*batch),
        optimizer,
        max_epochs=plan.epochs,
        max_steps=plan.max_steps,
        validate=validate if examples.val_targets else None,
        # The parent as it was is epoch 0: an update that only hurts keeps its weights.
        validate_first=plan.warm,
        before_training=(lambda: model.shrink_weights(plan.shrink)) if plan.warm else None,
        patience=plan.patience,
        patience_steps=plan.patience_steps,
        min_steps=plan.min_steps,
        max_seconds=max_minutes * 60 if max_minutes > 0 else None,
        log_every=100,
        desc="fine_tune" if plan.warm else "train",
    )


def fit_recommender(
    train_interactions: pd.DataFrame,
    item_ids: list[str],
    text_embeddings: np.ndarray,
    config: Config,
    parent: Recommender | None = None,
    focus_users: set[str] | None = None,
    metadata: dict[str, Any] | None = None,
    validation: EvalCases | None = None,
    new_interactions: pd.DataFrame | None = None,
    step_cap: int | None = None,
) -> FineTuneResult:
    """Train a recommender on ``train_interactions`` for the catalogue ``item_ids``.

    ``text_embeddings`` holds one row per entry of ``item_ids``. With a ``parent``, ``item_ids``
    must start with the parent's ids (new items appended) and training is a warm-started update:
    its targets are the events of ``new_interactions`` (the rows of ``train_interactions`` that
    arrived since the parent; default: every event of the focus users) and the earlier events in
    the chunks of history around them (:func:`update_targets`), each predicted from the user's
    history, for at most ``finetune_epochs`` and ``finetune_budget`` full-data epochs' worth of
    steps. Without a parent, every event is trained on from scratch (``focus_users`` then only
    selects the validation users; empty = all users).

    Early stopping watches NDCG@10 on ``validation`` when given (e.g. the leave-one-out validation
    cases, whose targets are not in ``train_interactions``): every training event is then trained
    on. Without it, each (focus) user's last training item is held out of training for it.

    From scratch, each alternative of ``config.train.search`` is trained beside the default, for
    at most as many optimiser steps as the default took, and kept only when it beats it clearly
    on the validation cases (:mod:`recloop.search`); the report's ``search`` says what each
    scored. An update copies its parent's network, and with it
    the setting its lineage's full training chose. ``step_cap`` caps the optimiser steps.
    """
    settings = () if parent is not None else tuple(config.train.search)
    args = (train_interactions, item_ids, text_embeddings)
    kwargs: dict[str, Any] = {
        "parent": parent,
        "focus_users": focus_users,
        "metadata": metadata,
        "validation": validation,
        "new_interactions": new_interactions,
    }
    if not settings:
        return _fit_once(*args, config, **kwargs, step_cap=step_cap)[0]
    started = time.perf_counter()
    fits: dict[str, FineTuneResult] = {}
    case_ndcgs: dict[str, np.ndarray] = {}
    # An alternative may take as many steps as the default took.
    step_cap_given = step_cap
    for setting in (DEFAULT_SETTING, *settings):
        model = apply_setting(config.model, setting)
        fits[setting], ndcgs = _fit_once(
            *args, dataclasses.replace(config, model=model), **kwargs, step_cap=step_cap
        )
        step_cap = max(1, int(fits[DEFAULT_SETTING].report["steps"]))
        if step_cap_given is not None:
            step_cap = min(step_cap, step_cap_given)
        if ndcgs is None:  # no validation cases: nothing to choose by
            logger.warning("fine_tune: no validation cases, so no settings search: the default")
            return fits[setting]
        case_ndcgs[setting] = ndcgs
    choice = choose_setting(case_ndcgs)
    logger.info(
        "fine_tune: settings search kept %s (validation NDCG@10 %s; paired z %s, needs %.1f)",
        choice.chosen,
        {k: round(v, 4) for k, v in choice.mean_ndcg.items()},
        {k: round(v, 2) for k, v in choice.z.items()},
        MIN_Z,
    )
    result = fits[choice.chosen]
    result.recommender.metadata["setting"] = choice.chosen
    result.report["search"] = {
        **choice.to_dict(),
        "seconds": {k: round(float(f.report["seconds"]), 1) for k, f in fits.items()},
        "steps": {k: int(f.report["steps"]) for k, f in fits.items()},
    }
    result.report["seconds"] = time.perf_counter() - started
    return result


def _fit_once(
    train_interactions: pd.DataFrame,
    item_ids: list[str],
    text_embeddings: np.ndarray,
    config: Config,
    parent: Recommender | None = None,
    focus_users: set[str] | None = None,
    metadata: dict[str, Any] | None = None,
    validation: EvalCases | None = None,
    new_interactions: pd.DataFrame | None = None,
    step_cap: int | None = None,
) -> tuple[FineTuneResult, np.ndarray | None]:
    """One training (see :func:`fit_recommender`), of at most ``step_cap`` optimiser steps when
    given: the result, and each validation case's NDCG@10 with the transition prior at its
    chosen weight (None without validation cases)."""
    start = time.perf_counter()
    device = torch.device(config.train.device)
    # Model init and dropout are seeded without global effects.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        recommender = start_recommender(item_ids, text_embeddings, config, parent)
        model = recommender.model.to(device)
        interactions = count_events(recommender, train_interactions)
        examples = build_examples(
            recommender.index,
            interactions,
            config,
            parent is not None,
            focus_users,
            validation,
            new_interactions,
        )
        parent_items = None if parent is None else len(parent.item_ids)
        plan = plan_training(model, examples, config, parent_items)
        if step_cap is not None:
            plan = dataclasses.replace(plan, max_steps=min(plan.max_steps or step_cap, step_cap))
        n_new = len(item_ids) - (parent_items or 0)
        logger.info(
            "fine_tune: %s, %d items (%d new), %d sequences, %d targets (%d earlier events), "
            "%d examples, %d validation users",
            "warm start" if plan.warm else "from scratch",
            len(item_ids),
            n_new,
            len(examples.users),
            examples.n_targets,
            examples.n_earlier_targets,
            len(examples.inputs),
            len(examples.val_targets),
        )
        report = train_recommender(model, examples, plan, config)
        prior_report = fit_prior(recommender, config, examples, parent, interactions)

    recommender.model.to("cpu").eval()  # the deployable recommender scores on the CPU
    recommender.metadata = {
        **(metadata or {}),
        "warm_start": plan.warm,
        "n_items": len(item_ids),
        "n_train_sequences": len(examples.users),
        "trained_at": int(time.time()),
    }
    if parent is not None and "setting" in parent.metadata:  # the lineage's searched setting
        recommender.metadata["setting"] = parent.metadata["setting"]
    summary = _training_summary(report, plan, examples, n_new, len(item_ids))
    result = FineTuneResult(
        recommender, {"seconds": time.perf_counter() - start, **summary, **prior_report}
    )
    return result, _case_ndcgs(recommender, examples, config)


def _case_ndcgs(recommender: Recommender, examples: Examples, config: Config) -> np.ndarray | None:
    """Each validation case's NDCG@10 by the trained ``recommender`` with its transition prior
    at the chosen weight (the prior of what was trained on, as :func:`fit_prior` scores it)."""
    if not examples.val_targets:
        return None
    prior = recommender.prior
    if prior is not None and examples.held_out:
        trained = [examples.trained[u] for u in sorted(examples.sequences)]
        prior = TransitionPrior.fit(trained, recommender.model.num_items, config.model.prior_window)
    (ranks,) = validation_ranks(
        recommender.model,
        examples.val_histories,
        examples.val_targets,
        prior,
        (recommender.prior_weight,),
    )
    return np.where(ranks < VAL_K, 1.0 / np.log2(ranks + 2.0), 0.0)


def _training_summary(
    report: TrainReport, plan: TrainingPlan, examples: Examples, n_new: int, n_items: int
) -> dict[str, Any]:
    """The report's entries on the training itself (the prior's are added beside them)."""
    gap = plan.memorisation_gap
    return {
        "epochs": report.epochs,
        "steps": report.steps,
        "train_seconds": report.seconds,
        "train_loss": report.train_loss,
        "best_val_ndcg": report.best_val,
        "best_epoch": report.best_epoch,
        "stopped_reason": report.stopped_reason,
        "max_steps": plan.max_steps,
        "min_steps": plan.min_steps,
        "memorisation_gap": None if math.isnan(gap) else gap,
        "shrink": plan.shrink,
        "n_new_items": n_new,
        "n_items": n_items,
        "n_train_sequences": len(examples.users),
        "n_train_examples": len(examples.inputs),
        "n_train_targets": examples.n_targets,
        "n_new_targets": examples.n_targets - examples.n_earlier_targets,
        "n_earlier_targets": examples.n_earlier_targets,  # an update's events trained on again
        "n_val_users": len(examples.val_targets),
        "warm_start": plan.warm,
        "history": report.history,
    }


def _recent_window(interactions: pd.DataFrame) -> tuple[int, int]:
    """``(since, width)``: the recent window starts at ``since`` and is the last
    :data:`RECENT_FRACTION` of the period ``interactions`` span (``width`` long)."""
    if len(interactions) == 0:
        return 0, 0
    since = recent_since(interactions, RECENT_FRACTION)
    return since, int(interactions["timestamp"].max()) - since


def recent_counts(
    interactions: pd.DataFrame, item_ids: Sequence[str], before: int | None = None
) -> np.ndarray:
    """Each item's events in the recent window (the last :data:`RECENT_FRACTION` of the period
    ``interactions`` span, what the recent-popularity baseline counts), in ``item_ids`` order.
    With ``before``: in the window of the same width that ends just before that time instead.
    Only those events are read, so an update's cost does not grow with the whole history."""
    counts = np.zeros(len(item_ids))
    since, width = _recent_window(interactions)
    if len(interactions) == 0:
        return counts
    timestamps = interactions["timestamp"].to_numpy(dtype=np.int64)
    if before is None:
        inside = timestamps >= since
    else:
        inside = (timestamps >= before - width) & (timestamps < before)
    lookup = {item: i for i, item in enumerate(item_ids)}
    items = interactions.loc[inside, "item_id"].astype(str).map(lookup).dropna()
    np.add.at(counts, items.to_numpy(dtype=np.int64), 1.0)
    return counts


def _recency_cases(interactions: pd.DataFrame, examples: Examples) -> tuple[list[int], int | None]:
    """The validation cases the recency weight is judged on, and the time its counts end at.

    The weight must be judged the way the gate judges the model, on events that come after the
    counts: with held-out validation (each user's last training event), the cases whose target
    lies in the recent window, with counts from the window just before it; given validation cases
    come after the training data, so all of them, with the counts of the recent window."""
    if not examples.val_users:
        return list(range(len(examples.val_targets))), None
    since, _ = _recent_window(interactions)
    late = set(interactions.loc[interactions["timestamp"].to_numpy() >= since, "user_id"])
    return [i for i, user in enumerate(examples.val_users) if user in late], since


def fit_prior(
    recommender: Recommender,
    config: Config,
    examples: Examples,
    parent: Recommender | None,
    interactions: pd.DataFrame,
) -> dict[str, Any]:
    """Give ``recommender`` its two priors: the transitions of every training sequence (what
    follows what) and the recent counts of ``interactions`` (what is popular now), each with the
    weight that scores best on the validation cases: first the ``config.model.prior_weights``
    entry for the transitions alone, then the :data:`RECENCY_WEIGHTS` entry beside it, judged
    only on cases that come after the counts they are scored with (:func:`_recency_cases`; with
    fewer than :data:`MIN_RECENCY_CASES`, no recency prior). Weights are scored with the priors
    of what was trained on (the held-out validation events left out); the smallest wins ties.
    Without validation cases a warm start keeps its parent's weights and a fresh model the
    smallest. Returns the report's entries (``prior_validation``: NDCG@10 by transition weight,
    by recency weight, and the recency cases)."""
    window, weights = config.model.prior_window, tuple(config.model.prior_weights)
    if any(w < 0 for w in weights):
        raise ValueError(f"model.prior_weights must be >= 0, got {list(weights)}")
    transitions = window > 0 and any(w > 0 for w in weights)
    started = time.perf_counter()
    n = recommender.model.num_items
    prior = (
        TransitionPrior.fit(list(examples.sequences.values()), n, window) if transitions else None
    )
    counts = recent_counts(interactions, recommender.item_ids)
    weights = weights if transitions else (0.0,)
    by_weight: dict[str, Any] | None = None
    if examples.val_targets:
        held_out = examples.held_out
        trained = [examples.trained[u] for u in sorted(examples.sequences)]
        val_prior = TransitionPrior.fit(trained, n, window) if held_out and transitions else prior
        by_weight = {"transitions": {}, "recency": {}, "recency_cases": 0}

        def best(
            pairs: list[tuple[float, float]], cases: list[int], counts_then: np.ndarray | None
        ) -> tuple[float, float]:
            which = "recency" if counts_then is not None else "transitions"
            ndcgs = prior_weight_ndcgs(
                recommender.model,
                [examples.val_histories[i] for i in cases],
                [examples.val_targets[i] for i in cases],
                val_prior,
                pairs,
                recent_counts=counts_then,
            )
            by_weight[which].update(
                {
                    str(r if which == "recency" else w): round(v, 6)
                    for (w, r), v in zip(pairs, ndcgs, strict=True)
                }
            )
            return pairs[int(np.argmax(ndcgs))]

        every = list(range(len(examples.val_targets)))
        transition_weight = (
            best([(w, 0.0) for w in weights], every, None)[0] if len(weights) > 1 else weights[0]
        )
        cases, before = _recency_cases(interactions, examples)
        by_weight["recency_cases"] = len(cases)
        if len(cases) >= MIN_RECENCY_CASES:
            counts_then = recent_counts(interactions, recommender.item_ids, before)
            pairs = [(transition_weight, r) for r in RECENCY_WEIGHTS]
            chosen = best(pairs, cases, counts_then)
        else:
            chosen = (transition_weight, 0.0)
    elif parent is not None:
        chosen = (parent.prior_weight, parent.recency_weight)
    else:
        chosen = (weights[0], 0.0)
    recommender.prior, recommender.prior_weight = prior, float(chosen[0]) if prior else 0.0
    recommender.recent_counts, recommender.recency_weight = counts, float(chosen[1])
    logger.info(
        "fine_tune: prior weights %.2f (transitions), %.2f (recency) (validation NDCG@10 by "
        "weights: %s), %.1fs",
        chosen[0],
        chosen[1],
        by_weight,
        time.perf_counter() - started,
    )
    return {
        "prior_weight": recommender.prior_weight,
        "recency_weight": recommender.recency_weight,
        "prior_validation": by_weight,
    }


def refresh_counts(recommender: Recommender, interactions: pd.DataFrame) -> None:
    """Refit ``recommender``'s counts on ``interactions``, in place: the popularity fallback, the
    transition prior and the recent counts. The network, its ID gate and the prior weights stay.

    After the gate, the model that will serve learns the held-out events it was judged on this
    way (the baselines fitted beside it are refitted on the same events): they are the newest of
    each active user, a large share of a window, and counts take them in at no training cost."""
    index = recommender.index
    known = interactions[interactions["item_id"].astype(str).isin(index)]
    n = recommender.model.num_items
    codes = known["item_id"].astype(str).map(index).to_numpy(dtype=np.int64)
    popularity = np.zeros(n)
    np.add.at(popularity, codes - 1, 1.0)
    recommender.popularity = popularity
    if recommender.prior is not None:
        sequences = [[index[i] for i in items] for items in build_sequences(known).values()]
        recommender.prior = TransitionPrior.fit(sequences, n, recommender.prior.window)
    if recommender.recent_counts is not None:
        recommender.recent_counts = recent_counts(known, recommender.item_ids)


def kept_steps(report: dict[str, Any]) -> int:
    """The optimiser steps behind the weights a training kept (its best epoch; 0 when an update
    kept its parent as it was)."""
    best = report.get("best_epoch")
    for row in report.get("history") or []:
        if row.get("epoch") == best:
            return int(row.get("steps") or 0)
    return int(report.get("steps") or 0)  # without validation every step was kept


def learn_judged(
    judged: FineTuneResult,
    interactions: pd.DataFrame,
    config: Config,
    parent: Recommender | None,
    focus_users: set[str] | None,
    new_interactions: pd.DataFrame | None,
) -> FineTuneResult:
    """The candidate the gate judged, taught the held-out events it was judged on: what is
    registered, and serves when the gate promotes it.

    ``interactions`` holds every event, the held-out ones included; ``new_interactions`` the
    update's new events with them. An update is trained again from the same ``parent``, on
    them, for the optimiser steps behind the judged weights (:func:`kept_steps`) and without a
    validation hold-out (the held-out events were the validation); it keeps the judged prior
    weights and gets counts of every event. A training from scratch (no ``parent``), or an
    update that kept its parent as it was, only has its counts refitted (:func:`refresh_counts`):
    a second training from scratch would double the cost of the largest step. The judged model
    is left as it was; the report is its training's, with ``learned_judged`` saying what was
    done."""
    started = time.perf_counter()
    steps = kept_steps(judged.report)
    if parent is None or steps == 0:
        counted = judged.recommender.copy()
        refresh_counts(counted, interactions)
        seconds = round(time.perf_counter() - started, 2)
        judged.report["learned_judged"] = {"how": "counts", "steps": 0, "seconds": seconds}
        return FineTuneResult(counted, judged.report)
    # The judged model's catalogue and text vectors: nothing is embedded again.
    item_ids = list(judged.recommender.item_ids)
    text_embeddings = judged.recommender.model.text_emb[1:].detach().cpu().numpy()
    refit = fit_recommender(
        interactions,
        item_ids,
        text_embeddings,
        config,
        parent=parent,
        focus_users=focus_users,
        metadata=dict(judged.recommender.metadata),
        validation=EvalCases([], [], []),
        new_interactions=new_interactions,
        step_cap=steps,
    )
    model, chosen = refit.recommender, judged.recommender
    model.prior_weight = chosen.prior_weight if model.prior is not None else 0.0
    model.recency_weight = chosen.recency_weight
    model.metadata = {**chosen.metadata, "trained_at": model.metadata["trained_at"]}
    seconds = time.perf_counter() - started
    judged.report["learned_judged"] = {
        "how": "retrained",
        "steps": int(refit.report.get("steps") or 0),
        "seconds": round(seconds, 2),
    }
    logger.info(
        "fine_tune: trained again on %d events (the held-out ones included), %d steps, %.1fs",
        len(interactions),
        steps,
        seconds,
    )
    return FineTuneResult(model, judged.report)
