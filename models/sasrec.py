"""A text-aware SASRec-style sequential recommender and the deployable :class:`Recommender`.

Items are represented from their text embeddings through a learned adaptor, plus (optionally) a
learned ID embedding. A new item's ID row starts at zero, so until it has been trained on it is
scored from its text alone — the cold-start path. A user is encoded by causal self-attention over
their most recent items; the next item is scored against every item in the catalogue (full softmax).

Index 0 of the item table is padding; catalogue item ``i`` (0-based in ``item_ids``) has
index ``i+1``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.ranking import top_k
from models.transitions import add_transition_scores, transition_csr

logger = logging.getLogger(__name__)

PAD = 0
# What a checkpoint saved before a RecommenderConfig key existed meant by it.
LEGACY_MODEL_ARGS: dict[str, Any] = {"id_min_count": 0, "prior_window": 0, "prior_weights": (0.0,)}
# Keys an older checkpoint may hold that were removed, each with the only value it still loads
# with (None: any, as ID dropout acted in training only); cosine scores are no longer computed.
REMOVED_MODEL_ARGS: dict[str, float | None] = {"id_dropout": None, "temperature": 0.0}
# Added to a transition probability before its log (see TransitionPrior.log_scores): an item that
# none of the user's recent items led to keeps the model's score, so the prior reorders the
# model's ranking but never vetoes an item. 0.01 = one transition in a hundred.
PRIOR_FLOOR = 0.01


@dataclass(frozen=True)
class RecommenderConfig:
    """The sequential recommender: SASRec-style causal self-attention over item sequences."""

    hidden_size: int = 64  # width of item representations and user states, in units
    num_layers: int = 2  # transformer blocks over the user's history
    num_heads: int = 2  # attention heads per block (must divide hidden_size)
    dropout: float = 0.2  # dropout probability in training, on inputs and inside every block
    max_seq_len: int = 200  # most recent items of a history the model reads, in items
    use_text: bool = True  # items represented from their text embedding through a learned map
    use_id: bool = True  # items also get a learned ID embedding (zero until trained on)
    id_min_count: int = 1  # training events an item needs before its ID embedding counts
    prior_window: int = 3  # last items of a history the transition prior reads (0 = no prior)
    prior_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # tried on validation


class SeqRec(nn.Module):
    """Causal self-attention over item sequences (pre-LN transformer blocks).

    ``num_items`` excludes padding; ``text_dim`` is the text-embedding size (ignored when
    ``config.use_text`` is False, but the buffer is kept so the item table grows uniformly).
    """

    def __init__(self, config: RecommenderConfig, num_items: int, text_dim: int) -> None:
        super().__init__()
        if not (config.use_text or config.use_id):
            raise ValueError("the recommender needs use_text or use_id (or both)")
        self.config = config
        hidden = config.hidden_size
        # Not trained: the text vectors come from the (separately pretrained) encoder.
        self.register_buffer("text_emb", torch.zeros(num_items + 1, text_dim))
        # 1 where an item's ID embedding counts (see set_id_gate); the padding row is 0.
        gate = torch.ones(num_items + 1)
        gate[PAD] = 0.0
        self.register_buffer("id_gate", gate)
        # A plain linear map: a LayerNorm here would give every item a norm of ~sqrt(H) from the
        # start, and logits that large make the first epochs of full-softmax training unstable.
        self.adaptor = nn.Linear(text_dim, hidden) if config.use_text else None
        self.id_emb = (
            nn.Embedding(num_items + 1, hidden, padding_idx=PAD) if config.use_id else None
        )
        self.pos_emb = nn.Embedding(config.max_seq_len, hidden)
        self.input_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden,
            nhead=config.num_heads,
            dim_feedforward=4 * hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(
            layer, num_layers=config.num_layers, enable_nested_tensor=False
        )
        self.final_norm = nn.LayerNorm(hidden)
        self.apply(self._init_weights)
        if self.id_emb is not None:
            with torch.no_grad():
                self.id_emb.weight[PAD].zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def num_items(self) -> int:
        return self.text_emb.shape[0] - 1

    @property
    def text_dim(self) -> int:
        return self.text_emb.shape[1]

    def text_repr(self) -> torch.Tensor:
        """The text path of every item's representation, ``(N+1, H)`` (zeros without text)."""
        if self.adaptor is None:
            return torch.zeros(
                self.num_items + 1, self.config.hidden_size, device=self.text_emb.device
            )
        return self.adaptor(self.text_emb)

    def item_repr(self) -> torch.Tensor:
        """Every item's representation, ``(N+1, H)``: adaptor(text) + ID embedding (the latter
        only for items whose ``id_gate`` is open)."""
        out = self.text_repr()
        if self.id_emb is not None:
            out = out + self.id_emb.weight * self.id_gate.unsqueeze(-1)
        return out

    @torch.no_grad()
    def set_id_gate(self, counts: torch.Tensor | np.ndarray) -> None:
        """Open the ID embedding of the items with at least ``config.id_min_count`` training
        events (``counts``, ``(N,)``, in catalogue order); the others score from text alone."""
        counts = torch.as_tensor(np.asarray(counts), device=self.id_gate.device)
        if counts.shape != (self.num_items,):
            raise ValueError(f"expected {self.num_items} item counts, got {tuple(counts.shape)}")
        self.id_gate[1:] = (counts >= self.config.id_min_count).to(self.id_gate.dtype)

    def encode(self, input_ids: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``(B, T, H)`` of left-padded sequences ``input_ids`` ``(B, T)``."""
        x, mask = self._block_inputs(input_ids, items)
        return self.final_norm(self.blocks(x, mask=mask))  # (B, T, H)

    def encode_last(
        self, input_ids: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``encode(input_ids, items)[:, -1]``, ``(B, H)``: the state that scores what follows
        each sequence. The last block computes that position only: its attention query and
        feed-forward run on one row, while every position is still a key and value (so the
        blocks before it run in full). Measured on Office's validation histories (2 blocks,
        batches of 64): 36 -> 27 ms per pass; short histories gain less (per-call overhead)."""
        x, mask = self._block_inputs(input_ids, items)
        *first, last = self.blocks.layers
        for layer in first:
            x = layer(x, src_mask=mask)
        # The last block as nn.TransformerEncoderLayer computes it with norm_first=True.
        normed = last.norm1(x)
        attended = last.self_attn(
            normed[:, -1:], normed, normed, attn_mask=mask[:, -1:], need_weights=False
        )[0]
        h = x[:, -1:] + last.dropout1(attended)
        inner = last.dropout(last.activation(last.linear1(last.norm2(h))))
        h = h + last.dropout2(last.linear2(inner))
        return self.final_norm(h[:, 0])  # (B, H)

    def _block_inputs(
        self, input_ids: torch.Tensor, items: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input ``(B, T, H)`` and the attention mask ``(B*heads, T, T)``
        (True = may not attend) of left-padded ``input_ids``."""
        batch, length = input_ids.shape
        if length > self.config.max_seq_len:
            raise ValueError(f"sequence length {length} > max_seq_len {self.config.max_seq_len}")
        items = self.item_repr() if items is None else items
        # Positions count back from the most recent item, so the last item always has the same
        # position embedding whatever the batch was padded to (training pads to max_seq_len,
        # scoring only to the longest history in the batch).
        positions = torch.arange(
            self.config.max_seq_len - length, self.config.max_seq_len, device=input_ids.device
        )
        x = items[input_ids] + self.pos_emb(positions)  # (B, T, H)
        pad = input_ids == PAD  # (B, T)
        x = self.input_dropout(x) * (~pad).unsqueeze(-1)
        # Position i sees the non-padding positions j <= i, and always itself: a fully padded
        # prefix row would otherwise have nothing to attend to (NaN softmax).
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=x.device))
        allowed = causal & ~pad.unsqueeze(1)  # (B, T, T)
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=x.device)
        return x, ~allowed.repeat_interleave(self.config.num_heads, dim=0)

    def logits(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``(M, N+1)`` of user states ``hidden`` ``(M, H)`` against ``items`` ``(N+1, H)``:
        their dot products."""
        return hidden @ items.T

    def forward(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-item logits and loss.

        Without ``targets``: logits ``(B, N+1)`` at the last position (the prediction for what
        follows the sequence). With ``targets`` ``(B, T)`` (``PAD`` = no target): logits
        ``(M, N+1)`` for the M positions that have a target, and the mean full-softmax
        cross-entropy.
        Column ``PAD`` is always ``-inf``.
        """
        if targets is None:
            items = self.item_repr()  # (N+1, H)
            logits = self.logits(self.encode_last(input_ids, items), items)  # (B, N+1)
            logits[:, PAD] = float("-inf")
            return logits, None
        hidden, items, targets = self._target_states(input_ids, targets)
        logits = self.logits(hidden, items)  # (M, N+1)
        logits[:, PAD] = float("-inf")
        loss = nn.functional.cross_entropy(logits, targets)
        return logits, loss

    def _target_states(
        self, input_ids: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The hidden states ``(M, H)`` of the M positions that have a target, every item's
        representation ``(N+1, H)`` and those targets ``(M,)``."""
        items = self.item_repr()
        h = self.encode(input_ids, items)  # (B, T, H)
        valid = targets != PAD
        return h[valid], items, targets[valid]

    def loss(
        self, input_ids: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """The full-softmax cross-entropy of :meth:`forward` with ``targets`` (``"mean"``, or
        ``"none"``: one per target, row-major), computed by :func:`linear_cross_entropy`: same
        values and gradients, without the ``(M, N+1)`` logits (the training step's fast path)."""
        hidden, items, targets = self._target_states(input_ids, targets)
        return linear_cross_entropy(hidden, items[1:], targets - 1, reduction=reduction)

    @torch.no_grad()
    def grow_items(self, new_text_embeddings: torch.Tensor | np.ndarray) -> None:
        """Append items (rows of ``new_text_embeddings``, ``(K, text_dim)``) to the item table.

        Their ID embeddings are zero, so they score from their text alone until trained on.
        """
        new = torch.as_tensor(np.asarray(new_text_embeddings), dtype=self.text_emb.dtype)
        if new.ndim != 2 or new.shape[1] != self.text_dim:
            raise ValueError(
                f"expected (K, {self.text_dim}) text embeddings, got {tuple(new.shape)}"
            )
        if new.shape[0] == 0:
            return
        self.text_emb = torch.cat([self.text_emb, new.to(self.text_emb.device)])
        # A new item has no training events yet: text alone, until set_id_gate says otherwise.
        closed = torch.zeros(new.shape[0], dtype=self.id_gate.dtype, device=self.id_gate.device)
        self.id_gate = torch.cat([self.id_gate, closed])
        if self.id_emb is not None:
            old = self.id_emb.weight
            grown = nn.Embedding(old.shape[0] + new.shape[0], old.shape[1], padding_idx=PAD)
            grown.weight.zero_()
            grown.weight[: old.shape[0]] = old
            self.id_emb = grown.to(old.device)

    @torch.no_grad()
    def shrink_weights(self, shrink: float) -> None:
        """Scale every trained weight by ``shrink`` (θ ← shrink·θ: the "shrink" of shrink and
        perturb; Ash & Adams, "On Warm-Starting Neural Network Training", 2020).

        A warm start that keeps the parent's weights as they are keeps its overconfidence on what
        it memorised; shrinking them lets the new data move the model as far as a fresh one would
        while it keeps what it learned (in direction, if not in scale). The text vectors (a
        buffer, not trained) are left alone; the padding row stays zero.
        """
        if not 0.0 < shrink <= 1.0:
            raise ValueError(f"shrink must be in (0, 1], got {shrink}")
        if shrink == 1.0:
            return
        for param in self.parameters():
            param.mul_(shrink)
        if self.id_emb is not None:
            self.id_emb.weight[PAD].zero_()

    @torch.no_grad()
    def set_text_embeddings(self, index: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Replace the text vectors of items ``index`` (after their text or encoder changed)."""
        self.text_emb[index] = embeddings.to(self.text_emb.dtype)


# Rows of logits per chunk in linear_cross_entropy: 128 x 10k items x 4 bytes = 5 MB, which stays
# in cache between the matmul, the softmax and the gradient matmuls (larger chunks ran slower).
CE_CHUNK_ROWS = 128


def _chunked_cross_entropy(
    hidden: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    chunk: int,
    need_hidden: bool,
    need_items: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-row cross-entropies of ``hidden @ items.T`` against ``targets`` and, when asked for,
    the gradients of their mean, computed chunk by chunk while each chunk's logits are in cache
    (the softmax is taken once and turned into the gradient in place)."""
    rows = hidden.shape[0]
    losses = hidden.new_empty(rows)
    grad_hidden = torch.empty_like(hidden) if need_hidden else None
    grad_items = torch.zeros_like(items) if need_items else None
    for start in range(0, rows, chunk):
        h = hidden[start : start + chunk]
        t = targets[start : start + chunk]
        logits = h @ items.T  # (c, N)
        target_logit = logits.gather(1, t[:, None])[:, 0]
        peak = logits.max(1, keepdim=True).values
        probs = logits.sub_(peak).exp_()  # in place: the logits are not needed again
        norm = probs.sum(1, keepdim=True)
        losses[start : start + chunk] = norm[:, 0].log() + peak[:, 0] - target_logit
        if grad_hidden is None and grad_items is None:
            continue
        # d(mean CE)/d(logits) = (softmax - onehot) / rows
        probs.div_(norm * rows)
        probs[torch.arange(len(t), device=t.device), t] -= 1.0 / rows
        if grad_hidden is not None:
            grad_hidden[start : start + chunk] = probs @ items
        if grad_items is not None:
            grad_items.addmm_(probs.T, h)
    return losses, grad_hidden, grad_items


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ items.T`` against ``targets``, chunked over rows.

    The gradients are computed in the forward pass (:func:`_chunked_cross_entropy`); backward
    only scales them. Materialising the full ``(M, N)`` logits, then log-softmax forward and
    backward over them, took twice as long per MovieLens training step (12800 positions x 9742
    items).
    """

    @staticmethod
    def forward(ctx, hidden, items, targets, chunk):  # type: ignore[override]
        losses, grad_hidden, grad_items = _chunked_cross_entropy(
            hidden, items, targets, chunk, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        ctx.save_for_backward(grad_hidden, grad_items)
        return losses.double().mean().to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        grad_hidden, grad_items = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_output,
            None if grad_items is None else grad_items * grad_output,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = CE_CHUNK_ROWS,
    reduction: str = "mean",
) -> torch.Tensor:
    """``cross_entropy(hidden @ items.T, targets, reduction=reduction)`` without the full logits.

    ``hidden`` ``(M, H)``, ``items`` ``(N, H)``, ``targets`` ``(M,)`` in ``[0, N)``. The mean's
    backward supports one call (the training step), not double differentiation; ``"none"`` (the
    per-row losses) is not differentiable.
    """
    if hidden.shape[0] == 0:
        raise ValueError("no target to compute a cross-entropy over")
    if reduction == "none":
        with torch.no_grad():
            return _chunked_cross_entropy(hidden, items, targets, chunk, False, False)[0]
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return _LinearCrossEntropy.apply(hidden, items, targets, chunk)


def _left_pad(histories: list[list[int]], length: int) -> torch.Tensor:
    out = torch.zeros(len(histories), max(1, length), dtype=torch.long)
    for row, seq in enumerate(histories):
        if seq:
            out[row, -len(seq) :] = torch.tensor(seq, dtype=torch.long)
    return out


def recency_log_shares(recent_counts: np.ndarray) -> np.ndarray:
    """``(N,)`` float32 ``log((c + 1) / (sum(c) + N))`` of each item's recent count ``c``: the
    log-probability of the item under "what is popular now" (add-one smoothing, so an item with no
    recent event is unlikely, not impossible). The recommender adds it to its log-probabilities
    with a weight chosen on validation, as it adds the transition prior."""
    counts = np.asarray(recent_counts, dtype=np.float64)
    return np.log((counts + 1.0) / (counts.sum() + max(len(counts), 1))).astype(np.float32)


class TransitionPrior:
    """First-order item-to-item transitions of the training sequences, in table order: the
    Markov-chain term that :class:`Recommender` adds to the model's log-probabilities.

    Row ``a`` holds P(b | a) over the consecutive pairs of the training sequences (as in
    ``recloop.baselines.ItemTransitions``, whose CSR layout it shares); a user's last ``window``
    items vote, the most recent with weight 1, the one before 1/2, ... Self-attention over a
    sequence learns such transitions only as far as the ID rows of rare items allow; the counts
    keep them exact (the idea of FPMC and Fossil, Rendle et al. 2010, He & McAuley 2016). They are
    refitted from the training events at every training, so they grow with the data.
    """

    def __init__(
        self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, window: int
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.data = np.asarray(data, dtype=np.float64)
        self.window = int(window)

    @property
    def num_items(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def fit(cls, sequences: list[list[int]], num_items: int, window: int) -> TransitionPrior:
        """The transitions of ``sequences`` of table indices (``1..num_items``)."""
        codes = (np.asarray(seq, dtype=np.int64) - 1 for seq in sequences)
        indptr, indices, data, _ = transition_csr(codes, num_items)
        return cls(indptr, indices, data, window)

    def log_scores(self, histories: list[list[int]]) -> np.ndarray:
        """``(B, N)`` float32 ``log(1 + T / PRIOR_FLOOR)`` of each history's (table indices)
        transition scores ``T``: 0 where no recent item leads, log 101 for a sure transition
        from the last item."""
        out = np.zeros((len(histories), self.num_items), dtype=np.float64)
        for row, history in zip(out, histories, strict=True):
            recent = [i - 1 for i in history[-self.window :]]
            add_transition_scores(row, self.indptr, self.indices, self.data, recent, self.window)
        return np.log1p(out / PRIOR_FLOOR).astype(np.float32)

    def grow(self, count: int) -> None:
        """Append ``count`` items without transitions (until the next fit)."""
        self.indptr = np.concatenate([self.indptr, np.full(count, self.indptr[-1])])

    def copy(self) -> TransitionPrior:
        return TransitionPrior(
            self.indptr.copy(), self.indices.copy(), self.data.copy(), self.window
        )

    def state(self) -> dict[str, Any]:
        """Plain tensors and ints (a ``weights_only`` checkpoint can hold them)."""
        return {
            "indptr": torch.as_tensor(self.indptr),
            "indices": torch.as_tensor(self.indices),
            "data": torch.as_tensor(self.data),
            "window": self.window,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TransitionPrior:
        return cls(
            state["indptr"].numpy(),
            state["indices"].numpy(),
            state["data"].numpy(),
            int(state["window"]),
        )


class Recommender:
    """The deployable recommender: a :class:`SeqRec`, its catalogue, a popularity fallback and
    (optionally) a :class:`TransitionPrior` with its weight.

    ``score`` / ``recommend`` take histories as lists of item-id strings, oldest first.
    """

    def __init__(
        self,
        model: SeqRec,
        item_ids: list[str],
        popularity: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        prior: TransitionPrior | None = None,
        prior_weight: float = 0.0,
        recent_counts: np.ndarray | None = None,
        recency_weight: float = 0.0,
    ) -> None:
        if len(item_ids) != model.num_items:
            raise ValueError(f"{len(item_ids)} item ids for a model with {model.num_items} items")
        if prior is not None and prior.num_items != model.num_items:
            raise ValueError(f"a prior over {prior.num_items} items for {model.num_items} items")
        if prior_weight < 0 or recency_weight < 0:
            raise ValueError(f"prior weights must be >= 0, got {prior_weight}, {recency_weight}")
        if recent_counts is not None and len(recent_counts) != model.num_items:
            raise ValueError(f"{len(recent_counts)} recent counts for {model.num_items} items")
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self.recent_counts = (
            None if recent_counts is None else np.asarray(recent_counts, dtype=np.float64)
        )
        self.recency_weight = float(recency_weight)
        self.model = model.eval()
        self.item_ids = list(item_ids)
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        counts = np.zeros(len(item_ids)) if popularity is None else np.asarray(popularity)
        self.popularity = counts.astype(np.float64)
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def config(self) -> RecommenderConfig:
        return self.model.config

    @property
    def text_dim(self) -> int:
        return self.model.text_dim

    def popularity_scores(self) -> np.ndarray:
        """log1p(count) scaled to [0, 1]: the fallback for a user with no known history."""
        scores = np.log1p(self.popularity)
        top = scores.max() if scores.size else 0.0
        return (scores / top if top > 0 else scores).astype(np.float32)

    def encode_histories(self, histories: list[list[str]]) -> list[list[int]]:
        """Item indices of the known items of each history, the last ``max_seq_len`` only."""
        limit = self.config.max_seq_len
        out = []
        for history in histories:
            known: list[int] = []
            for item in reversed(history):  # from the end: long histories stop early
                if item in self.index:
                    known.append(self.index[item])
                    if len(known) == limit:
                        break
            out.append(known[::-1])
        return out

    @torch.no_grad()
    def score(self, histories: list[list[str]], batch_size: int = 256) -> np.ndarray:
        """``(B, len(item_ids))`` float32 scores; unknown items are ignored, an empty (or all
        unknown) history gets the popularity scores.

        The model's logits; with a prior and ``prior_weight`` w > 0 (or recent counts and
        ``recency_weight`` r > 0), its log-probabilities plus w times the prior's
        :meth:`TransitionPrior.log_scores` plus r times :func:`recency_log_shares` of the recent
        counts (what is popular now)."""
        self.model.eval()
        encoded = self.encode_histories(histories)
        out = np.empty((len(histories), len(self.item_ids)), dtype=np.float32)
        fallback = self.popularity_scores()
        items = self.model.item_repr()
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            rows = [i for i, seq in enumerate(chunk) if seq]
            for i, seq in enumerate(chunk):
                if not seq:
                    out[start + i] = fallback
            if not rows:
                continue
            seqs = [chunk[i] for i in rows]
            inputs = _left_pad(seqs, max(len(s) for s in seqs))
            h = self.model.encode_last(inputs, items)  # (b, H)
            logits = self.model.logits(h, items)[:, 1:].float()  # (b, N): padding dropped
            transitions = self.prior is not None and self.prior_weight > 0
            recency = self.recent_counts is not None and self.recency_weight > 0
            if transitions or recency:
                logits = torch.log_softmax(logits, dim=-1)
            if transitions:
                logits += self.prior_weight * torch.from_numpy(self.prior.log_scores(seqs))
            if recency:
                logits += self.recency_weight * torch.from_numpy(
                    recency_log_shares(self.recent_counts)
                )
            out[[start + i for i in rows]] = logits.numpy()
        return out

    def recommend(
        self, histories: list[list[str]], k: int = 10, exclude_seen: bool = True
    ) -> tuple[list[list[str]], list[list[float]]]:
        """The top-``k`` item ids and their scores per history, best first."""
        seen = [[self.index[i] - 1 for i in h if i in self.index] for h in histories]
        return top_k(self.score(histories), self.item_ids, seen if exclude_seen else None, k)

    def copy(self) -> Recommender:
        """An independent copy (the warm start of a fine-tune)."""
        return Recommender(
            copy.deepcopy(self.model),
            list(self.item_ids),
            self.popularity.copy(),
            copy.deepcopy(self.metadata),
            None if self.prior is None else self.prior.copy(),
            self.prior_weight,
            None if self.recent_counts is None else self.recent_counts.copy(),
            self.recency_weight,
        )

    def add_items(self, item_ids: list[str], text_embeddings: np.ndarray) -> None:
        """Append new catalogue items (scored from text until trained on)."""
        if len(item_ids) != len(text_embeddings):
            raise ValueError("one text embedding per new item")
        duplicates = [i for i in item_ids if i in self.index]
        if duplicates:
            raise ValueError(f"items already in the catalogue: {duplicates[:5]}")
        self.model.grow_items(text_embeddings)
        for item in item_ids:
            self.item_ids.append(item)
            self.index[item] = len(self.item_ids)
        self.popularity = np.concatenate([self.popularity, np.zeros(len(item_ids))])
        if self.prior is not None:
            self.prior.grow(len(item_ids))
        if self.recent_counts is not None:
            self.recent_counts = np.concatenate([self.recent_counts, np.zeros(len(item_ids))])

    def save(self, path: str | Path) -> Path:
        """One torch file that rebuilds the recommender by itself (see :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "model_args": dataclasses.asdict(self.config),
            "state_dict": self.model.state_dict(),
            "item_ids": list(self.item_ids),
            "text_dim": int(self.text_dim),
            "popularity": torch.as_tensor(self.popularity, dtype=torch.float64),
            "metadata": self.metadata,
            "prior": None if self.prior is None else self.prior.state(),
            "prior_weight": self.prior_weight,
            "recent_counts": None
            if self.recent_counts is None
            else torch.as_tensor(self.recent_counts, dtype=torch.float64),
            "recency_weight": self.recency_weight,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Rebuild a recommender saved by :meth:`save` (plain contents: ``weights_only`` safe)."""
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
        # Keys added to RecommenderConfig later take the value that reproduces older checkpoints.
        args = {**LEGACY_MODEL_ARGS, **checkpoint["model_args"]}
        for key, loadable in REMOVED_MODEL_ARGS.items():
            value = args.pop(key, None)
            if value is not None and loadable is not None and value != loadable:
                raise ValueError(f"{path}: a checkpoint with {key}={value} is no longer supported")
        config = RecommenderConfig(**{**args, "prior_weights": tuple(args["prior_weights"])})
        model = SeqRec(config, len(checkpoint["item_ids"]), int(checkpoint["text_dim"]))
        state = dict(checkpoint["state_dict"])
        # A checkpoint from before the ID gate used every item's ID embedding (the open gate
        # the new model starts with).
        state.setdefault("id_gate", model.id_gate)
        model.load_state_dict(state)
        prior = checkpoint.get("prior")
        return cls(
            model,
            list(checkpoint["item_ids"]),
            checkpoint["popularity"].numpy(),
            dict(checkpoint["metadata"]),
            # A checkpoint from before the prior has none.
            None if prior is None else TransitionPrior.from_state(prior),
            float(checkpoint.get("prior_weight", 0.0)),
            # A checkpoint from before the recency prior has none.
            None
            if checkpoint.get("recent_counts") is None
            else checkpoint["recent_counts"].numpy(),
            float(checkpoint.get("recency_weight", 0.0)),
        )
