"""GRU4Rec: a recurrent network over the behaviour sequence (GRU or LSTM cells).

Each position's input is the item embedding plus the event-type embedding (and the time-gap bucket
embedding when enabled); a stacked GRU/LSTM reads the sequence left to right and its hidden state
``h_t`` scores item ``j`` as ``h_t · E_item[j]`` (output tied to the input embedding, as in the
Transformer, so the two differ only in the sequence encoder).

References: Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016;
Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains", CIKM 2018. Trained here with the same
full or sampled softmax cross-entropy as the Transformer, which is what recent re-evaluations show
makes GRU4Rec competitive (Klenitskiy & Vasilev, RecSys 2023; Hidasi & Czapp, RecSys 2023).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from behaviorlm.models.base import register
from behaviorlm.models.sequential import ItemSideFeatures, SequentialRecommender, with_item_side
from behaviorlm.training.options import DEFAULT_TRAINING, TrainingOptions


class GRU4RecNet(nn.Module):
    """Embeddings, a ``n_layers`` GRU/LSTM, a projection back to the embedding size, a final norm."""

    def __init__(
        self,
        *,
        n_items: int,
        n_event_types: int,
        d_model: int,
        hidden_size: int,
        n_layers: int,
        dropout: float,
        cell: str,
        n_time_buckets: int,
        item_features: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, d_model, padding_idx=n_items)
        self.type_emb = nn.Embedding(n_event_types + 1, d_model, padding_idx=n_event_types)
        self.gap_emb = nn.Embedding(n_time_buckets, d_model, padding_idx=0) if n_time_buckets else None
        self.drop = nn.Dropout(dropout)
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(
            d_model,
            hidden_size,
            num_layers=n_layers,
            batch_first=True,
            dropout=dropout if n_layers > 1 else 0.0,
        )
        self.proj = nn.Linear(hidden_size, d_model)
        self.norm = nn.LayerNorm(d_model)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.type_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()
            self.type_emb.weight[n_event_types].zero_()
        self.item_side = None if item_features is None else ItemSideFeatures(item_features, d_model)

    def item_vectors(self) -> torch.Tensor:
        return with_item_side(self.item_emb.weight, self.item_side, n_items=self.n_items)

    def item_table(self) -> torch.Tensor:
        return self.item_vectors()[: self.n_items]

    def forward(self, items: torch.Tensor, types: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        x = nn.functional.embedding(items, self.item_vectors()) + self.type_emb(types)
        if self.gap_emb is not None:
            x = x + self.gap_emb(buckets)
        # Sequences arrive left-padded (the latest event in the last column). A recurrence must not run
        # over the padding, so shift each row to the left edge, pack it with its true length, and shift
        # the outputs back; padding positions get arbitrary outputs that no loss or score reads.
        length = items.shape[1]
        lengths = (items != self.n_items).sum(1)
        shift = (length - lengths)[:, None]
        positions = torch.arange(length, device=items.device)[None]
        to_right = (positions + shift).clamp(max=length - 1)
        x = self.drop(x).gather(1, to_right[..., None].expand(-1, -1, x.shape[-1]))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        to_left = (positions - shift).clamp(min=0)
        out = out.gather(1, to_left[..., None].expand(-1, -1, out.shape[-1]))
        return self.norm(self.proj(self.drop(out)))


@register
class GRU4Rec(SequentialRecommender):
    """GRU4Rec as a recommender; ``cell="gru"`` or ``"lstm"``. ``training`` as the Transformer's."""

    name = "gru4rec"

    def __init__(
        self,
        *,
        cell: str = "gru",
        d_model: int = 64,
        hidden_size: int = 128,
        n_layers: int = 1,
        dropout: float = 0.3,
        max_len: int = 50,
        n_time_buckets: int = 0,
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
        self.cell = cell
        self.d_model = d_model
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.dropout = dropout

    def _build_net(
        self, *, n_items: int, n_event_types: int, item_features: dict[str, torch.Tensor] | None = None
    ) -> nn.Module:
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"GRU4Rec: cell must be 'gru' or 'lstm', got {self.cell!r}")
        return GRU4RecNet(
            n_items=n_items,
            n_event_types=n_event_types,
            d_model=self.d_model,
            hidden_size=self.hidden_size,
            n_layers=self.n_layers,
            dropout=self.dropout,
            cell=self.cell,
            n_time_buckets=self.n_time_buckets,
            item_features=item_features,
        )
