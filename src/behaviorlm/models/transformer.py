"""Behaviour Transformer: causal self-attention over a user's behaviour sequence (SASRec family).

Reads a sequence of events the way a language model reads tokens. Each position's input is

    x_t = E_item[i_t] · sqrt(d) + P[t] + E_type[e_t] + E_gap[b_t]

with ``E_item`` the item embedding (tied to the output layer), ``P`` learned positions, ``E_type`` the
event-type embedding (view / cart / fav / purchase / ...) and ``E_gap`` the embedding of the log2 bucket
of the time since the previous event. A stack of pre-norm Transformer blocks with causal attention turns
``x`` into hidden states ``h_t``; the score of item ``j`` as the next event after ``t`` is
``h_t · E_item[j]``.

References: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (the architecture);
Klenitskiy & Vasilev, RecSys 2023 (training with full-catalogue cross-entropy, "SASRec+");
Vaswani et al., NeurIPS 2017 and Xiong et al., ICML 2020 (pre-norm blocks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.models.base import register
from behaviorlm.models.sequential import ItemSideFeatures, SequentialRecommender, with_item_side
from behaviorlm.training.options import DEFAULT_TRAINING, TrainingOptions


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t`` that are not padding."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.out_drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, *, is_causal: bool = False, last_only: bool = False
    ) -> torch.Tensor:
        """``mask`` ``[B, 1, L, L]`` (True: may attend), or ``None`` with ``is_causal`` for plain causal
        attention over a batch without padding. ``last_only``: only the last position's output
        ``[B, 1, d]`` (its query sees every key the mask's last row allows)."""
        batch, length, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        if last_only:
            q = q[:, -1:]
            mask = None if mask is None else mask[:, :, -1:]
            is_causal = False  # the last query may see every earlier position anyway
        q = q.reshape(batch, q.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)
        k, v = (t.view(batch, length, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        y = y.transpose(1, 2).reshape(batch, q.shape[2], d)
        return self.out_drop(self.out(y))


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, *, is_causal: bool = False, last_only: bool = False
    ) -> torch.Tensor:
        """``[B, L, d]``, or with ``last_only`` the last position's ``[B, 1, d]`` alone."""
        attended = self.attn(self.norm1(x), mask, is_causal=is_causal, last_only=last_only)
        x = (x[:, -1:] if last_only else x) + attended
        return x + self.mlp(self.norm2(x))


class BehaviorTransformerNet(nn.Module):
    """The encoder: embeddings, ``n_layers`` blocks, a final norm. Padding uses the last index of each table."""

    def __init__(
        self,
        *,
        n_items: int,
        n_event_types: int,
        max_len: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        n_time_buckets: int,
        item_features: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.scale = math.sqrt(d_model)
        self.item_emb = nn.Embedding(n_items + 1, d_model, padding_idx=n_items)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.type_emb = nn.Embedding(n_event_types + 1, d_model, padding_idx=n_event_types)
        self.gap_emb = nn.Embedding(n_time_buckets, d_model, padding_idx=0) if n_time_buckets else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.apply(_init_weights)
        self.item_side = None if item_features is None else ItemSideFeatures(item_features, d_model)

    def item_vectors(self) -> torch.Tensor:
        """Every row of the item embedding (real items, padding, any extra rows), with the item-side
        features added to the real items."""
        return with_item_side(self.item_emb.weight, self.item_side, n_items=self.n_items)

    def item_table(self) -> torch.Tensor:
        """Output embeddings of the real items, ``[n_items, d]`` (tied to the input embedding)."""
        return self.item_vectors()[: self.n_items]

    def last_hidden(self, items: torch.Tensor, types: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """The causal hidden state of each row's last position, ``[B, d]``: what scoring a user reads.

        The same numbers as ``forward(...)[:, -1]`` (tested) for less work: the last block computes only
        the last position (its attention query, output projection and MLP), which is what one request
        needs (ML-100k's demo model, 100-event window, one thread: see docs/transformer.md).
        """
        return self.forward(items, types, buckets, last_only=True)[:, -1]

    def forward(
        self,
        items: torch.Tensor,
        types: torch.Tensor,
        buckets: torch.Tensor,
        *,
        causal: bool = True,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Hidden states ``[B, L, d]`` for left-padded ``items``/``types``/``buckets`` of shape ``[B, L]``.

        ``causal=False`` lets every position attend to the whole sequence (masked-behaviour pretraining
        and sequence-level heads, as in BERT4Rec); next-event prediction uses the causal default.
        ``last_only``: the last block computes the last position alone, ``[B, 1, d]`` (see
        :meth:`last_hidden`).
        """
        length = items.shape[1]
        real = items != self.n_items
        # Windows are left-padded and the latest event always takes the last position, so a window cut to
        # its last ``length`` columns (no padding-only columns, see SequenceTensors.batch) keeps each
        # event's position: the same hidden states as the full window, for less work.
        first = self.pos_emb.num_embeddings - length
        if first < 0:
            raise ValueError(
                f"a window of {length} events is longer than max_len={self.pos_emb.num_embeddings}"
            )
        positions = torch.arange(first, first + length, device=items.device)
        x = F.embedding(items, self.item_vectors()) * self.scale
        x = x + self.pos_emb(positions)[None] + self.type_emb(types)
        if self.gap_emb is not None:
            x = x + self.gap_emb(buckets)
        x = self.drop(x)
        mask: torch.Tensor | None = None
        if self.training or not bool(real.all()):
            x = x * real[..., None]
            # Causal mask, restricted to real keys. Every query may also see itself, so padding rows (which
            # no loss or score reads) never have an all-masked row that would give NaN.
            allowed = torch.ones(length, length, dtype=torch.bool, device=items.device)
            if causal:
                allowed = allowed.tril()
            eye = torch.eye(length, dtype=torch.bool, device=items.device)
            mask = (allowed[None] & real[:, None, :]) | eye[None]
            mask = mask[:, None]  # broadcast over heads
        # Without padding at inference (one request's window, say) there is no mask to build: plain
        # causal attention (or none) gives the masked path's hidden states with fewer tensor operations.
        for n, block in enumerate(self.blocks):
            last = last_only and n == len(self.blocks) - 1
            x = block(x, mask, is_causal=causal and mask is None, last_only=last)
        return self.norm(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


@register
class BehaviorTransformer(SequentialRecommender):
    """The behaviour Transformer as a recommender (see the module docstring for the model).

    Architecture arguments: ``d_model``, ``n_layers``, ``n_heads``, ``dropout``; sequence arguments
    ``max_len`` and ``n_time_buckets`` (0 disables time-gap embeddings); the loss and batching arguments
    as in :class:`~behaviorlm.models.sequential.SequentialRecommender` (``loss="full"`` is SASRec+); how it
    trains: ``training=TrainingOptions(...)`` (:mod:`behaviorlm.training.options`).

    Defaults were chosen on validation NDCG@10 only. ``d_model=128`` beat 64 on both sets swept: Amazon
    Beauty 0.0444 vs 0.0434 (GPU sweep, docs/benchmarks.md; 256 with dropout 0.5 0.0434, 128 with
    dropout 0.5 0.0429) and ML-100k 0.1141 vs 0.1132 at dropout 0.1.
    """

    name = "transformer"

    def __init__(
        self,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.3,
        max_len: int = 50,
        n_time_buckets: int = 24,
        loss: str = "auto",
        n_negatives: int = 4096,
        group_by_length: bool | str = "auto",
        item_init: str = "random",
        training: TrainingOptions = DEFAULT_TRAINING,
    ) -> None:
        super().__init__(
            max_len=max_len,
            n_time_buckets=n_time_buckets,
            loss=loss,
            n_negatives=n_negatives,
            group_by_length=group_by_length,
            item_init=item_init,
            training=training,
        )
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout

    def _load_encoder(self, state: Mapping[str, torch.Tensor]) -> None:
        load_encoder_state(self.net_, state)

    def _build_net(
        self, *, n_items: int, n_event_types: int, item_features: dict[str, torch.Tensor] | None = None
    ) -> nn.Module:
        return BehaviorTransformerNet(
            n_items=n_items,
            n_event_types=n_event_types,
            max_len=self.max_len,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            n_time_buckets=self.n_time_buckets,
            item_features=item_features,
        )


def load_encoder_state(encoder: BehaviorTransformerNet, state: Mapping[str, torch.Tensor]) -> None:
    """Copy pretrained encoder weights into ``encoder``, or say which key or shape does not fit.

    ``state`` is what :meth:`MaskedBehaviorPretrainer.encoder_state` returns (or the state dict of any
    :class:`BehaviorTransformerNet`). A mismatch means the two models differ in architecture arguments
    (``d_model``, ``n_layers``, ``max_len``, ``n_time_buckets``, ...) or in catalogue / event types.
    """
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"pretrained encoder state does not fit: missing keys {missing[:5]}, unexpected keys {unexpected[:5]} "
            "(were both models built with the same n_layers and n_time_buckets?)"
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"pretrained encoder state does not fit: {key} has shape {tuple(state[key].shape)}, "
                f"this model needs {tuple(value.shape)} (same d_model, max_len, catalogue and event types?)"
            )
    encoder.load_state_dict(dict(state))
