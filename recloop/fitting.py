"""Train the sequential recommender: from scratch, or warm-started from the current champion.

A warm start copies the parent, appends the catalogue's new items (their ID rows start at zero, so
they are scored from text), refreshes every item's text vector with the current encoder, shrinks
the copied weights towards a fresh initialisation (``train.warm_shrink``, ``train.warm_noise``:
an unshrunk parent stays overconfident in what it memorised and its updates generalise worse;
the parent as it was stays the fallback when no epoch beats it on validation), and trains
on the events that arrived since the parent (each predicted from the user's full history), on
the earlier events in those users' recent history (encoded anyway) and on a seeded replay sample
of other users' earlier events, so the update does not forget them. Its cost thus grows with
the users of the new data, not with the whole history, and a budget in full-data epochs caps it.
The loss (a softmax over every item) is computed only at target positions. Early stopping
watches NDCG@10 (full ranking, history excluded) on each focus user's last training item.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.sasrec import PAD, Recommender, SeqRec, TransitionPrior
from recloop.config import Config
from recloop.data import EvalCases, build_sequences, sort_events
from recloop.metrics import metrics_from_ranks
from recloop.training import param_groups, train_loop

logger = logging.getLogger(__name__)

MAX_VAL_USERS = 2000  # a seeded sample of validation users keeps each epoch's check cheap
MIN_VAL_LENGTH = 3  # a user needs this many training items to give one up for validation


@dataclass
class FineTuneResult:
    """The trained recommender and what its training did."""

    recommender: Recommender
    report: dict[str, Any] = field(default_factory=dict)


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


def sample_replay(
    sequences: dict[str, list[int]],
    new_flags: dict[str, np.ndarray],
    size: int,
    rng: np.random.Generator,
    max_seq_len: int | None = None,
    per_chunk: int = 0,
) -> tuple[dict[str, np.ndarray], int, int]:
    """Target masks for an incremental update: every new event, every earlier event in the
    stretch of history the update encodes anyway, and ``size`` events from the rest.

    A position is a candidate target when it has an item before it in the user's sequence.
    The "near" tier is the last ``max_seq_len`` positions of the users with new events (the chunk
    :func:`training_examples` makes around them): each of its earlier events costs one more row of
    the softmax and no extra sequence to encode, so all of them are targets (the update then
    learns these users' recent history with them, as a full retrain would). ``size`` more
    earlier events come from every other chunk, the "far" tier, so that users without new events
    are not forgotten: the chunks :func:`training_examples` would cut (a whole sequence without
    ``max_seq_len``) are visited in a seeded random order and each gives up to ``per_chunk`` of
    its earlier events (0 = all of them), drawn uniformly. Every such chunk is one more sequence
    to encode, so drawing far events one by one would encode up to ``size`` chunks for ``size``
    targets.
    Returns one boolean mask per user with at least one target, and the numbers of earlier
    events replayed from the near and from the far tier.
    """
    masks: dict[str, np.ndarray] = {}
    n_near = 0
    far_chunks: list[tuple[str, np.ndarray]] = []
    for user in sorted(sequences):
        n = len(sequences[user])
        flags = _user_flags(new_flags, user, n)
        mask = flags.copy()
        mask[:1] = False  # the first event has nothing before it to predict it from
        masks[user] = mask
        earlier = np.flatnonzero(~flags)
        earlier = earlier[earlier >= 1]
        near_from = n - max_seq_len if (max_seq_len and mask.any()) else n + 1
        near = earlier[earlier >= near_from]
        mask[near] = True
        n_near += len(near)
        far = earlier[earlier < near_from]
        if len(far) and size > 0:
            # training_examples' chunk of target position p: (n - 1 - p) // max_seq_len
            chunk_of = (n - 1 - far) // (max_seq_len or n)
            far_chunks += [(user, far[chunk_of == c]) for c in np.unique(chunk_of)]
    replayed = 0
    for index in rng.permutation(len(far_chunks)) if size > 0 else []:
        user, chunk = far_chunks[index]
        take = min(size - replayed, len(chunk), per_chunk or len(chunk))
        chosen = chunk if take == len(chunk) else rng.choice(chunk, size=take, replace=False)
        masks[user][chosen] = True
        replayed += take
        if replayed >= size:
            break
    return {user: mask for user, mask in masks.items() if mask.any()}, n_near, replayed


def validation_ndcg(
    model: SeqRec,
    histories: list[list[int]],
    targets: list[int],
    k: int = 10,
    batch_size: int = 64,
) -> float:
    """Mean NDCG@k of the next item over the full catalogue, history items excluded (a target
    that is itself in the history stays rankable); rank = items scored strictly higher."""
    return prior_weight_ndcgs(model, histories, targets, None, (0.0,), k, batch_size)[0]


def prior_weight_ndcgs(
    model: SeqRec,
    histories: list[list[int]],
    targets: list[int],
    prior: TransitionPrior | None,
    weights: Sequence[float],
    k: int = 10,
    batch_size: int = 64,
) -> list[float]:
    """:func:`validation_ndcg` of the model's scores with ``prior`` added at each of
    ``weights``, as :meth:`Recommender.score` adds it (the model's logits at weight 0)."""
    if not targets:
        return [float("nan")] * len(weights)
    model.eval()
    # Users in order of history length: a batch is padded to its longest history, and most
    # histories are short (the ranks, and so the metric, do not depend on the order).
    order = sorted(range(len(targets)), key=lambda u: len(histories[u]))
    histories = [histories[u] for u in order]
    targets = [targets[u] for u in order]
    ranks: list[list[np.ndarray]] = [[] for _ in weights]
    with torch.no_grad():
        items = model.item_repr()
        limit = model.config.max_seq_len
        for start in range(0, len(targets), batch_size):
            seqs = [h[-limit:] for h in histories[start : start + batch_size]]
            target = torch.tensor(targets[start : start + batch_size], device=items.device)
            inputs = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
            for row, seq in enumerate(seqs):
                inputs[row, -len(seq) :] = torch.tensor(seq)
            inputs = inputs.to(items.device)
            h = model.encode_last(inputs, items)
            logits = model.logits(h, items)  # (b, N+1)
            logits[:, PAD] = float("-inf")
            chunk = histories[start : start + batch_size]
            rows = torch.tensor([r for r, h in enumerate(chunk) for _ in h], dtype=torch.long)
            cols = torch.tensor([i for h in chunk for i in h], dtype=torch.long)
            rows, cols = rows.to(items.device), cols.to(items.device)
            log_scores = None
            if prior is not None and any(w > 0 for w in weights):
                log_scores = torch.zeros_like(logits)
                log_scores[:, 1:] = torch.from_numpy(prior.log_scores(seqs)).to(logits.device)
                log_probs = torch.log_softmax(logits, dim=-1)
            for weight, out in zip(weights, ranks, strict=True):
                if weight > 0 and log_scores is not None:
                    scores = log_probs + weight * log_scores
                else:
                    scores = logits.clone()
                target_score = scores.gather(1, target[:, None])
                # One indexed write for the whole batch (per-row writes are slow on a GPU).
                scores[rows, cols] = float("-inf")
                out.append((scores > target_score).sum(1).cpu().numpy())  # 0-based
    return [metrics_from_ranks(np.concatenate(r), (k,))[f"ndcg_at_{k}"] for r in ranks]


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


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` of the softmaxes at temperature ``T`` over the items
    (column ``PAD``, ``-inf`` on both sides, left out), averaged over the rows ``(M, N+1)``."""
    student = nn.functional.log_softmax(logits[:, PAD + 1 :] / temperature, dim=-1)
    teacher = nn.functional.log_softmax(teacher_logits[:, PAD + 1 :] / temperature, dim=-1)
    kl = nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


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
) -> FineTuneResult:
    """Train a recommender on ``train_interactions`` for the catalogue ``item_ids``.

    ``text_embeddings`` holds one row per entry of ``item_ids``. With a ``parent``, ``item_ids``
    must start with the parent's ids (new items appended) and training is a warm-started update:
    its targets are the events of ``new_interactions`` (the rows of ``train_interactions`` that
    arrived since the parent; default: every event of the focus users), the earlier events in
    the chunks of history around them, and ``config.train.replay_size`` earlier events of other
    chunks drawn with the seed (:func:`sample_replay`), each predicted from the user's history,
    for at most ``finetune_epochs`` and ``finetune_budget`` full-data epochs' worth of steps.
    Without a parent, every event is trained on from scratch (``focus_users`` then only selects
    the validation users; empty = all users).

    Early stopping watches NDCG@10 on ``validation`` when given (e.g. the leave-one-out validation
    cases, whose targets are not in ``train_interactions``): every training event is then trained
    on. Without it, each (focus) user's last training item is held out of training for it.
    """
    start = time.perf_counter()
    warm = parent is not None
    train_cfg = config.train
    if len(text_embeddings) != len(item_ids):
        raise ValueError(f"{len(text_embeddings)} text embeddings for {len(item_ids)} items")
    if warm and item_ids[: len(parent.item_ids)] != parent.item_ids:
        raise ValueError("a warm start's item ids must extend the parent's, in its order")

    device = torch.device(train_cfg.device)
    # Model init and dropout are seeded without global effects.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        emb = torch.as_tensor(np.asarray(text_embeddings, dtype=np.float32))
        if warm:
            recommender = parent.copy()
            n_new = len(item_ids) - len(parent.item_ids)
            recommender.add_items(item_ids[len(parent.item_ids) :], emb[len(parent.item_ids) :])
            # The encoder may have been re-pretrained: every item gets its current text vector.
            recommender.model.set_text_embeddings(torch.arange(1, len(item_ids) + 1), emb)
        else:
            model = SeqRec(config.model, len(item_ids), emb.shape[1])
            model.set_text_embeddings(torch.arange(1, len(item_ids) + 1), emb)
            recommender = Recommender(model, item_ids)
            n_new = len(item_ids)
        model = recommender.model.to(device)
        index = recommender.index

        known = train_interactions["item_id"].astype(str).isin(index)
        if not bool(known.all()):
            logger.warning(
                "fine_tune: %d interactions name items outside the catalogue; ignored",
                int((~known).sum()),
            )
        interactions = train_interactions[known]
        counts = interactions["item_id"].astype(str).map(index).value_counts()
        popularity = np.zeros(len(item_ids))
        popularity[counts.index.to_numpy(dtype=int) - 1] = counts.to_numpy()
        recommender.popularity = popularity
        model.set_id_gate(popularity)

        sequences = {
            user: [index[i] for i in items] for user, items in build_sequences(interactions).items()
        }
        users = sorted(sequences)
        if warm and new_interactions is not None:
            new_flags = new_event_flags(interactions, new_interactions)
            focus_users = focus_users or {u for u, f in new_flags.items() if f.any()}
        focus = sorted(u for u in (focus_users or set()) if u in sequences)
        if not focus:
            focus = users
        if warm and new_interactions is None:
            new_flags = {u: np.ones(len(sequences[u]), dtype=bool) for u in focus}
        rng = np.random.default_rng(config.seed)

        if validation is not None:
            # Given cases: a history of known items (the last max_seq_len) and a known target.
            eligible, val_histories, val_targets = [], [], []
            for user, history, target in zip(
                validation.user_ids, validation.histories, validation.targets, strict=True
            ):
                known = [index[i] for i in history if i in index]
                if known and target in index:
                    eligible.append(user)
                    val_histories.append(known)
                    val_targets.append(index[target])
            val_users: set[str] = set()
        else:
            # Validation: focus users' last training item, held out of training.
            eligible = [u for u in focus if len(sequences[u]) >= MIN_VAL_LENGTH]
            if len(eligible) > MAX_VAL_USERS:
                eligible = sorted(rng.choice(eligible, size=MAX_VAL_USERS, replace=False).tolist())
            val_users = set(eligible)
            val_histories = [sequences[u][:-1] for u in eligible]
            val_targets = [sequences[u][-1] for u in eligible]

        def train_seq(user: str) -> list[int]:
            return sequences[user][:-1] if user in val_users else sequences[user]

        if warm:
            train_seqs = {u: train_seq(u) for u in users}
            masks, n_near, n_far = sample_replay(
                train_seqs,
                new_flags,
                train_cfg.replay_size,
                rng,
                config.model.max_seq_len,
                train_cfg.replay_per_chunk,
            )
            chosen = sorted(masks)
            n_targets = sum(int(m.sum()) for m in masks.values())
            n_replay = n_near + n_far
            n_new_targets = n_targets - n_replay
            x, y = training_examples(
                [train_seqs[u] for u in chosen],
                config.model.max_seq_len,
                [masks[u] for u in chosen],
            )

            # Shrink only a parent that has memorised its training data (see warm_shrink_gap);
            # without both new and earlier targets there is no gap to go by: shrink.
            gap = memorisation_gap(
                model,
                [train_seqs[u] for u in chosen],
                [masks[u] for u in chosen],
                [_user_flags(new_flags, u, len(masks[u])) for u in chosen],
                config.model.max_seq_len,
                len(parent.item_ids),
            )
            threshold = train_cfg.warm_shrink_gap
            shrink = (
                train_cfg.warm_shrink
                if threshold <= 0 or math.isnan(gap) or gap >= threshold
                else 1.0
            )
            logger.info(
                "fine_tune: the parent predicts the new events %.3f nats worse than the earlier "
                "ones: shrink %.2f (threshold %.2f)",
                gap,
                shrink,
                threshold,
            )
            epochs, lr = train_cfg.finetune_epochs, train_cfg.finetune_learning_rate
            patience = train_cfg.finetune_patience
            patience_steps = train_cfg.finetune_patience_steps
            max_steps, min_steps = None, 0
            if train_cfg.finetune_budget > 0:
                # The steps of one epoch over every training event, as a retrain would take them.
                full_epoch = (
                    sum(chunk_count(len(train_seqs[u]), config.model.max_seq_len) for u in users)
                    / train_cfg.batch_size
                )
                max_steps = max(1, math.ceil(train_cfg.finetune_budget * full_epoch))
                min_steps = math.ceil(train_cfg.finetune_min_share * max_steps)
        else:
            chosen, n_replay, n_far = users, 0, 0
            x, y = training_examples([train_seq(u) for u in chosen], config.model.max_seq_len)
            n_targets = n_new_targets = int((y != PAD).sum())
            epochs, lr = train_cfg.epochs, train_cfg.learning_rate
            patience, patience_steps, max_steps, min_steps = train_cfg.patience, 0, None, 0
            gap, shrink = float("nan"), 1.0
        logger.info(
            "fine_tune: %s, %d items (%d new), %d sequences, %d targets (%d replayed, %d far), "
            "%d examples, %d validation users",
            "warm start" if warm else "from scratch",
            len(item_ids),
            n_new,
            len(chosen),
            n_targets,
            n_replay,
            n_far,
            len(x),
            len(eligible),
        )

        def make_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            order = torch.randperm(len(x), generator=generator)
            for s in range(0, len(order), train_cfg.batch_size):
                batch = order[s : s + train_cfg.batch_size]
                yield trim_padding(x[batch], y[batch], device)

        # The parent as loaded (grown, not shrunk), frozen, as the teacher of a distilled update.
        distill = warm and train_cfg.distill_weight > 0
        teacher = copy.deepcopy(model).eval() if distill else None

        def step_loss(m: SeqRec, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            if teacher is None:
                return m.loss(*batch)
            logits, loss = m(*batch)
            assert loss is not None
            with torch.no_grad():
                teacher_logits, _ = teacher(*batch)
            kd = distillation_loss(logits, teacher_logits, train_cfg.distill_temperature)
            return (1 - train_cfg.distill_weight) * loss + train_cfg.distill_weight * kd

        optimizer = torch.optim.AdamW(param_groups(model, train_cfg.weight_decay), lr=lr)
        report = train_loop(
            model,
            make_batches,
            step_loss,
            optimizer,
            max_epochs=epochs,
            max_steps=max_steps,
            validate=(lambda: validation_ndcg(model, val_histories, val_targets))
            if eligible
            else None,
            # An update that only hurts keeps the parent's weights.
            validate_first=warm and train_cfg.finetune_parent_fallback,
            # ... as they were: training starts from the shrunk parent, epoch 0 is the parent.
            before_training=(lambda: model.shrink_perturb(shrink, train_cfg.warm_noise))
            if warm
            else None,
            patience=patience,
            patience_steps=patience_steps,
            min_steps=min_steps,
            max_seconds=train_cfg.max_minutes * 60,
            log_every=100,
            desc="fine_tune" if warm else "train",
        )

        prior_report = _fit_prior(
            recommender,
            config,
            [train_seq(u) for u in users] if val_users else None,
            list(sequences.values()),
            val_histories,
            val_targets,
            parent,
        )

    recommender.model.to("cpu").eval()  # the deployable recommender scores on the CPU
    recommender.metadata = {
        **(metadata or {}),
        "warm_start": warm,
        "n_items": len(item_ids),
        "n_train_sequences": len(chosen),
        "trained_at": int(time.time()),
    }
    result_report = {
        "epochs": report.epochs,
        "steps": report.steps,
        "seconds": time.perf_counter() - start,
        "train_seconds": report.seconds,
        "train_loss": report.train_loss,
        "best_val_ndcg": report.best_val,
        "best_epoch": report.best_epoch,
        "stopped_reason": report.stopped_reason,
        "max_steps": max_steps,
        "min_steps": min_steps,
        "memorisation_gap": None if math.isnan(gap) else gap,
        "shrink": shrink,
        "distill_weight": train_cfg.distill_weight if warm else 0.0,
        "n_new_items": n_new,
        "n_items": len(item_ids),
        "n_train_sequences": len(chosen),
        "n_train_examples": len(x),
        "n_train_targets": n_targets,
        "n_new_targets": n_new_targets,
        "n_val_users": len(eligible),
        "warm_start": warm,
        "replay_size": n_replay,  # earlier events trained on again, near and far
        "replay_far": n_far,
        "history": report.history,
        **prior_report,
    }
    return FineTuneResult(recommender, result_report)


def _fit_prior(
    recommender: Recommender,
    config: Config,
    trained: list[list[int]] | None,
    every: list[list[int]],
    val_histories: list[list[int]],
    val_targets: list[int],
    parent: Recommender | None,
) -> dict[str, Any]:
    """Give ``recommender`` the transition prior of ``every`` training sequence, weighted by the
    ``config.model.prior_weights`` entry that scores best on the validation cases -- scored with
    the prior of the ``trained`` sequences, which leave out the held-out validation items (None:
    nothing was held out, ``every`` was trained on); the first weight wins ties. One weight is
    taken as it is; without validation cases a warm start keeps its parent's weight and a fresh
    model the smallest. Returns the report's entries."""
    window, weights = config.model.prior_window, tuple(config.model.prior_weights)
    if any(w < 0 for w in weights):
        raise ValueError(f"model.prior_weights must be >= 0, got {list(weights)}")
    if window <= 0 or not any(w > 0 for w in weights):
        recommender.prior, recommender.prior_weight = None, 0.0
        return {"prior_weight": 0.0, "prior_validation": None}
    started = time.perf_counter()
    n = recommender.model.num_items
    prior = TransitionPrior.fit(every, n, window)
    by_weight = None
    if len(weights) == 1:
        chosen = weights[0]
    elif val_targets:
        ndcgs = prior_weight_ndcgs(
            recommender.model,
            val_histories,
            val_targets,
            prior if trained is None else TransitionPrior.fit(trained, n, window),
            weights,
        )
        by_weight = {str(w): round(v, 6) for w, v in zip(weights, ndcgs, strict=True)}
        chosen = weights[int(np.argmax(ndcgs))]
    else:
        chosen = parent.prior_weight if parent is not None else min(weights)
    recommender.prior = prior
    recommender.prior_weight = float(chosen)
    logger.info(
        "fine_tune: transition prior weight %.2f (validation NDCG@10 by weight: %s), %.1fs",
        chosen,
        by_weight,
        time.perf_counter() - started,
    )
    return {"prior_weight": float(chosen), "prior_validation": by_weight}
