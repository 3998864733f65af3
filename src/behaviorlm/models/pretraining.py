"""Masked behaviour modelling: BERT4Rec-style cloze pretraining of the behaviour Transformer encoder.

A share ``mask_prob`` of the real events of each sequence is hidden: the event's item is replaced by a
``[MASK]`` item and its event type by a ``[MASK]`` event type (the time-gap bucket stays, since time is
an input, not a target). The encoder attends in both directions (``causal=False``) and, at every masked
position ``t``, predicts

    p(item = j | x)       = softmax_j(h_t · E_item[j])     (full catalogue, tied to the input embedding)
    p(event type = e | x) = softmax_e(W h_t + b)            (a linear head over the event types)

and the loss is the sum of the two cross-entropies averaged over masked positions. Every sequence with
an event gets at least one mask, so no sequence is wasted.

The ``[MASK]`` tokens are one extra row in each of the item and event-type embedding tables, placed
*after* the padding row, so the encoder reads them as real events and its padding index is unchanged.
:meth:`MaskedBehaviorPretrainer.encoder_state` drops those rows again: what it returns loads directly
into a :class:`~behaviorlm.models.transformer.BehaviorTransformerNet` of the same architecture and
catalogue: every model on that encoder takes it as ``fit(..., init_encoder=state)`` — the task heads of
:mod:`behaviorlm.models.heads` and the next-item :class:`~behaviorlm.models.transformer.BehaviorTransformer`.

References: Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations
from Transformer", CIKM 2019 (the cloze objective over items); Devlin et al., "BERT", NAACL 2019.

This module also holds :class:`EncoderModel`, the base that the pretrainer and the task heads share:
constructor conventions (scikit-learn style), the one training loop, and persistence (``model.json`` +
``weights.safetensors``, no pickle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from behaviorlm.data.sequences import Interactions
from behaviorlm.estimator import Estimator, json_params
from behaviorlm.models.sequential import (
    IGNORE,
    EventHistory,
    SequenceTensors,
    raw_history,
)
from behaviorlm.models.transformer import BehaviorTransformerNet
from behaviorlm.training import loop
from behaviorlm.training.loop import Batch, TrainerConfig, TrainingHistory, seed_everything
from behaviorlm.training.options import TrainingOptions

ENCODER_TRAINING = TrainingOptions(epochs=50)
"""The pretrainer's and task heads' default training: at most 50 epochs (early stopping needs ``fit(valid=...)``)."""

MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"


# ---------------------------------------------------------------------------------------- shared base
class EncoderModel(Estimator):
    """Base of the models built on :class:`BehaviorTransformerNet` outside next-item recommendation.

    scikit-learn conventions: the constructor only stores its keyword arguments, learned state ends in
    ``_``, ``fit`` returns ``self``. Architecture arguments (``d_model``, ``n_layers``, ``n_heads``,
    ``dropout``, ``max_len``, ``n_time_buckets``) mean what they mean for
    :class:`~behaviorlm.models.transformer.BehaviorTransformer`; an encoder can only be transferred
    between models whose architecture arguments (and catalogue) agree, see :meth:`encoder_params`.
    How it trains is ``training`` (:class:`~behaviorlm.training.options.TrainingOptions`, default
    :data:`ENCODER_TRAINING`); early stopping with its ``patience`` only happens when ``fit`` gets
    validation data.
    """

    name: ClassVar[str]
    """Stored in ``model.json`` so that :meth:`load` can check it reads the right kind of model."""

    ENCODER_PARAMS: ClassVar[tuple[str, ...]] = (
        "d_model",
        "n_layers",
        "n_heads",
        "dropout",
        "max_len",
        "n_time_buckets",
    )

    def __init__(
        self,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.1,
        max_len: int = 50,
        n_time_buckets: int = 24,
        training: TrainingOptions = ENCODER_TRAINING,
    ) -> None:
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.dropout = dropout
        self.max_len = max_len
        self.n_time_buckets = n_time_buckets
        self.training = training

    net_: nn.Module
    n_items_: int
    event_type_vocab_: tuple[str, ...]
    item_ids_: np.ndarray | None
    history_: TrainingHistory

    # ------------------------------------------------------------------ parameters
    def encoder_params(self) -> dict[str, Any]:
        """The architecture arguments, to build a compatible model: ``SequenceClassifier(**p.encoder_params())``."""
        return {k: getattr(self, k) for k in self.ENCODER_PARAMS}

    def _check_params(self) -> None:
        if self.max_len < 1:
            raise ValueError(f"{type(self).__name__}: max_len must be >= 1, got {self.max_len}")

    # ------------------------------------------------------------------ building and training
    def _build_encoder(self, *, n_items: int, n_event_types: int) -> BehaviorTransformerNet:
        return BehaviorTransformerNet(
            n_items=n_items,
            n_event_types=n_event_types,
            max_len=self.max_len,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            n_time_buckets=self.n_time_buckets,
        )

    def _remember_space(self, interactions: Interactions) -> None:
        self.n_items_ = interactions.n_items
        self.event_type_vocab_ = tuple(interactions.event_type_vocab)
        self.item_ids_ = np.asarray(interactions.item_ids).astype(str)

    def history_from_events(
        self,
        item_ids: Sequence[str],
        *,
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[int] | None = None,
        unknown_event_types: str = "error",
    ) -> EventHistory:
        """A raw event history in this model's index space (one user, index 0), e.g. to ask a head about a
        request's history; see :func:`~behaviorlm.models.sequential.raw_history`."""
        self._fitted()
        if getattr(self, "item_ids_", None) is None:
            raise ValueError(
                f"this {type(self).__name__} was saved without its item ids (an older save): refit it to read raw histories"
            )
        return raw_history(
            item_ids,
            event_types=event_types,
            timestamps=timestamps,
            item_space=self.item_ids_,
            event_type_vocab=self.event_type_vocab_,
            unknown_event_types=unknown_event_types,
        )

    def _check_space(self, interactions: Interactions, *, where: str) -> None:
        """The data must share the item index space and event types the model was fitted on."""
        if interactions.n_items != self.n_items_:
            raise ValueError(
                f"{type(self).__name__}.{where}: the data has {interactions.n_items} items, "
                f"the model was fitted on {self.n_items_}"
            )
        if tuple(interactions.event_type_vocab) != self.event_type_vocab_:
            raise ValueError(
                f"{type(self).__name__}.{where}: the data's event types {list(interactions.event_type_vocab)} "
                f"differ from the model's {list(self.event_type_vocab_)}"
            )

    def _train(
        self,
        *,
        n_rows: int,
        make_batch: Callable[[torch.Tensor, torch.Generator], Batch],
        loss_fn: Callable[[Batch], torch.Tensor],
        validate: Callable[[], float] | None,
    ) -> None:
        """Run :func:`behaviorlm.training.loop.train` on ``self.net_`` over ``n_rows`` shuffled rows.

        ``make_batch(rows, generator)`` builds one batch; ``generator`` is seeded from the epoch (for
        random masking), so that a resumed run sees exactly the batches of an uninterrupted one.
        """

        def batches(epoch: int) -> Iterator[Batch]:
            generator = torch.Generator().manual_seed(self.training.seed * 100_003 + epoch)
            order = torch.randperm(n_rows, generator=generator)
            for start in range(0, n_rows, self.training.batch_size):
                yield make_batch(order[start : start + self.training.batch_size], generator)

        config = TrainerConfig.from_options(self.training)
        self.history_ = loop.train(
            self.net_,
            batches=batches,
            steps_per_epoch=math.ceil(n_rows / self.training.batch_size),
            loss_fn=loss_fn,
            validate=validate,
            config=config,
        )
        self.net_.eval()

    def _device(self) -> torch.device:
        return next(self.net_.parameters()).device

    def _fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(...) first")

    # ------------------------------------------------------------------ persistence
    def _extra_meta(self) -> dict[str, Any]:
        """Learned plain metadata beyond the index space (e.g. class labels); subclasses extend."""
        return {}

    def _restore_extra(self, meta: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_meta` wrote; models without extra metadata keep this no-op."""

    def _build_fitted_net(self) -> nn.Module:
        """A fresh module of the fitted shapes, for :meth:`load`."""
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` (class, constructor arguments, index space) and ``weights.safetensors``."""
        self._fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(tensors, str(path / WEIGHTS_FILE))
        meta = {
            "model": self.name,
            "params": json_params(self),
            "n_items": self.n_items_,
            "event_type_vocab": list(self.event_type_vocab_),
            "item_ids": None if getattr(self, "item_ids_", None) is None else self.item_ids_.tolist(),
            **self._extra_meta(),
        }
        (path / MODEL_JSON).write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model written by :meth:`save` (on the CPU; ``device`` is kept as a parameter)."""
        path = Path(path)
        meta_file = path / MODEL_JSON
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file} not found: {path} is not a saved behaviorlm model")
        meta = json.loads(meta_file.read_text())
        if meta.get("model") != cls.name:
            raise ValueError(f"{meta_file}: holds a {meta.get('model')!r} model, not {cls.name!r}")
        model = cls.from_params(meta["params"])
        model.n_items_ = int(meta["n_items"])
        model.event_type_vocab_ = tuple(meta["event_type_vocab"])
        model.item_ids_ = None if meta.get("item_ids") is None else np.asarray(meta["item_ids"]).astype(str)
        model._restore_extra(meta)
        model.net_ = model._build_fitted_net()
        model.net_.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        model.net_.eval()
        return model


# ---------------------------------------------------------------------------------------- masking
class _MaskableEncoder(BehaviorTransformerNet):
    """The encoder with one ``[MASK]`` row appended to the item and event-type tables.

    The mask rows sit after the padding rows (item ``n_items + 1``, type ``n_event_types + 1``), so
    padding keeps its index and the encoder treats a masked position as a real event; the output item
    table (:meth:`item_table`) still covers only the real items.
    """

    def __init__(self, *, n_items: int, n_event_types: int, **architecture: Any) -> None:
        super().__init__(n_items=n_items, n_event_types=n_event_types, **architecture)
        d_model = self.item_emb.embedding_dim
        self.item_emb = _with_extra_row(self.item_emb, d_model=d_model)
        self.type_emb = _with_extra_row(self.type_emb, d_model=d_model)
        self.mask_item = n_items + 1
        self.mask_type = n_event_types + 1


def _with_extra_row(table: nn.Embedding, *, d_model: int) -> nn.Embedding:
    grown = nn.Embedding(table.num_embeddings + 1, d_model, padding_idx=table.padding_idx)
    with torch.no_grad():
        grown.weight[:-1] = table.weight
        nn.init.normal_(grown.weight[-1:], std=0.02)
    return grown


def mask_events(
    items: torch.Tensor,
    types: torch.Tensor,
    *,
    n_items: int,
    n_event_types: int,
    mask_prob: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Cloze masking of left-padded ``[B, L]`` sequences (padding: ``n_items`` / ``n_event_types``).

    Each real event is masked with probability ``mask_prob``; a sequence with events but no mask gets
    one at a random real position. Returns ``items``/``types`` with masked positions set to the mask
    tokens ``n_items + 1`` / ``n_event_types + 1`` and ``item_targets``/``type_targets`` holding the
    hidden values at masked positions and ``IGNORE`` elsewhere.
    """
    real = items != n_items
    masked = (torch.rand(items.shape, generator=generator) < mask_prob) & real
    unmasked_rows = ~masked.any(dim=1) & real.any(dim=1)
    # A random real position of each row: the argmax of uniform noise over the real positions.
    pick = torch.rand(items.shape, generator=generator).masked_fill(~real, -1.0).argmax(dim=1)
    rows = unmasked_rows.nonzero().squeeze(1)
    masked[rows, pick[rows]] = True
    ignore = torch.full_like(items, IGNORE)
    return {
        "items": torch.where(masked, torch.full_like(items, n_items + 1), items),
        "types": torch.where(masked, torch.full_like(types, n_event_types + 1), types),
        "item_targets": torch.where(masked, items, ignore),
        "type_targets": torch.where(masked, types, ignore),
    }


class _MaskedBehaviorNet(nn.Module):
    def __init__(self, encoder: _MaskableEncoder, *, n_event_types: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.type_head = nn.Linear(encoder.item_emb.embedding_dim, n_event_types)

    def forward(
        self, items: torch.Tensor, types: torch.Tensor, buckets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item logits ``[B, L, n_items]`` and event-type logits ``[B, L, n_event_types]``."""
        hidden = self.encoder(items, types, buckets, causal=False)
        return hidden @ self.encoder.item_table().T, self.type_head(hidden)


class MaskedBehaviorPretrainer(EncoderModel):
    """BERT4Rec-style masked behaviour modelling over items and event types (see the module docstring).

    ``fit(interactions)`` pretrains on each user's last ``max_len`` events; with ``valid`` (sequences
    in the same index space) it early-stops on the masked-item accuracy of a fixed masking of them.
    :meth:`encoder_state` hands the encoder on to a task model.
    """

    name = "masked_behavior_pretrainer"

    def __init__(
        self,
        *,
        mask_prob: float = 0.2,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.1,
        max_len: int = 50,
        n_time_buckets: int = 24,
        training: TrainingOptions = ENCODER_TRAINING,
    ) -> None:
        super().__init__(
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            dropout=dropout,
            max_len=max_len,
            n_time_buckets=n_time_buckets,
            training=training,
        )
        self.mask_prob = mask_prob

    def _build_fitted_net(self) -> _MaskedBehaviorNet:
        n_types = len(self.event_type_vocab_)
        encoder = _MaskableEncoder(
            n_items=self.n_items_,
            n_event_types=n_types,
            max_len=self.max_len,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            n_time_buckets=self.n_time_buckets,
        )
        return _MaskedBehaviorNet(encoder, n_event_types=n_types)

    def fit(self, interactions: Interactions, *, valid: Interactions | None = None) -> Self:
        """Pretrain on the last ``max_len`` events of every user with at least one event."""
        self._check_params()
        if not 0 < self.mask_prob <= 1:
            raise ValueError(f"{type(self).__name__}: mask_prob must be in (0, 1], got {self.mask_prob}")
        users = np.flatnonzero(interactions.lengths() >= 1)
        if len(users) == 0:
            raise ValueError(f"{type(self).__name__}.fit: the data has no events")
        if valid is not None and (
            valid.n_items != interactions.n_items or valid.event_type_vocab != interactions.event_type_vocab
        ):
            raise ValueError(
                f"{type(self).__name__}.fit: valid must share the training items and event types"
            )
        seed_everything(self.training.seed)
        self._remember_space(interactions)
        self.net_ = self._build_fitted_net().to(torch.device(self.training.device))
        data = SequenceTensors(
            interactions, users, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=False
        )
        n_items, n_types = self.n_items_, len(self.event_type_vocab_)

        def make_batch(rows: torch.Tensor, generator: torch.Generator) -> Batch:
            batch = data.batch(rows)
            masked = mask_events(
                batch["items"],
                batch["types"],
                n_items=n_items,
                n_event_types=n_types,
                mask_prob=self.mask_prob,
                generator=generator,
            )
            return {**masked, "buckets": batch["buckets"]}

        def loss_fn(batch: Batch) -> torch.Tensor:
            hidden = self.net_.encoder(batch["items"], batch["types"], batch["buckets"], causal=False)
            keep = batch["item_targets"] != IGNORE
            h = hidden[keep]
            item_loss = F.cross_entropy(h @ self.net_.encoder.item_table().T, batch["item_targets"][keep])
            type_loss = F.cross_entropy(self.net_.type_head(h), batch["type_targets"][keep])
            return item_loss + type_loss

        validate = None
        if valid is not None and valid.n_events:

            def validate() -> float:
                return self.evaluate(valid, seed=self.training.seed)["masked_item_accuracy"]

        self._train(n_rows=len(users), make_batch=make_batch, loss_fn=loss_fn, validate=validate)
        return self

    def evaluate(self, interactions: Interactions, *, seed: int = 0) -> dict[str, Any]:
        """Top-1 accuracy of recovering masked items and event types, under a masking drawn from ``seed``.

        Protocol: each user's last ``max_len`` events, ``mask_prob`` of them masked (at least one per
        user), full-catalogue prediction at masked positions. ``chance_item_accuracy`` is ``1/n_items``.
        """
        self._fitted()
        self._check_space(interactions, where="evaluate")
        users = np.flatnonzero(interactions.lengths() >= 1)
        if len(users) == 0:
            raise ValueError(f"{type(self).__name__}.evaluate: the data has no events")
        data = SequenceTensors(
            interactions, users, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=False
        )
        generator = torch.Generator().manual_seed(seed)
        device = self._device()
        item_hits = type_hits = n_masked = 0
        was_training = self.net_.training
        self.net_.eval()
        with torch.no_grad():
            for start in range(0, len(users), 4 * self.training.batch_size):
                batch = data.batch(torch.arange(start, min(start + 4 * self.training.batch_size, len(users))))
                masked = mask_events(
                    batch["items"],
                    batch["types"],
                    n_items=self.n_items_,
                    n_event_types=len(self.event_type_vocab_),
                    mask_prob=self.mask_prob,
                    generator=generator,
                )
                item_logits, type_logits = self.net_(
                    masked["items"].to(device), masked["types"].to(device), batch["buckets"].to(device)
                )
                keep = masked["item_targets"] != IGNORE
                item_hits += int((item_logits.argmax(-1).cpu()[keep] == masked["item_targets"][keep]).sum())
                type_hits += int((type_logits.argmax(-1).cpu()[keep] == masked["type_targets"][keep]).sum())
                n_masked += int(keep.sum())
        self.net_.train(was_training)
        return {
            "protocol": f"cloze: last {self.max_len} events per user, mask_prob={self.mask_prob}, "
            f"mask seed {seed}, full-catalogue top-1",
            "n_masked": n_masked,
            "masked_item_accuracy": item_hits / n_masked,
            "masked_type_accuracy": type_hits / n_masked,
            "chance_item_accuracy": 1.0 / self.n_items_,
        }

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The pretrained encoder without its ``[MASK]`` rows, ready for :func:`load_encoder_state`.

        The keys and shapes are those of a :class:`BehaviorTransformerNet` with the same architecture
        arguments (:meth:`encoder_params`), catalogue and event types. Tensors are detached CPU copies.
        """
        self._fitted()
        state = {k: v.detach().cpu().clone() for k, v in self.net_.encoder.state_dict().items()}
        state["item_emb.weight"] = state["item_emb.weight"][: self.n_items_ + 1].clone()
        state["type_emb.weight"] = state["type_emb.weight"][: len(self.event_type_vocab_) + 1].clone()
        return state

    def save_encoder(self, path: str | Path) -> Path:
        """Write :meth:`encoder_state` as one safetensors file (read it with ``safetensors.torch.load_file``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.encoder_state().items()}, str(path))
        return path
