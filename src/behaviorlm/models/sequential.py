"""What every next-item sequence model shares: sequence tensors, the training losses, fitting, scoring.

A sequence model is an encoder ``net(items, event_types, gap_buckets) -> hidden [B, L, d]`` plus an item
table ``net.item_table() -> [n_items, d]`` whose rows are tied to the output layer: the score of item
``j`` after position ``t`` is ``hidden[t] · item_table[j]``. :class:`SequentialRecommender` turns any
such encoder into a :class:`~behaviorlm.models.base.Recommender`:

* **Training data**: each user's last ``max_len + 1`` training events; inputs are events ``0..n-2``,
  targets events ``1..n-1``, and the loss is taken at *every* position (not only the last), which is
  what makes whole-sequence training ~100x cheaper than one padded sample per prefix.
* **Losses** (``loss=``):
  ``"full"`` -- softmax cross-entropy over the whole catalogue (Klenitskiy & Vasilev, "Turning Dross
  Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023; "SASRec+");
  ``"sampled"`` -- sampled softmax over ``n_negatives`` items shared by the batch, drawn from the
  training popularity raised to 0.75, with the logQ correction ``s - log(n_negatives · q)`` applied to
  positives and negatives alike (Bengio & Senécal 2008; Yi et al., "Sampling-bias-corrected neural
  modeling for large corpus item recommendations", RecSys 2019) and accidental hits masked;
  ``"auto"`` (the default) -- full up to :data:`FULL_SOFTMAX_MAX_ITEMS` items (20,000 on a CPU), sampled
  above (see :func:`auto_training_settings`).
* **Batches** are random sets of ``batch_size`` users, each cut to its longest window; with
  ``group_by_length`` (``"auto"``: when random batches would be mostly padding, as on Amazon Beauty with
  its median of 4 events) users of similar length share a batch (:func:`distributed.group_by_length`).
* **Fitting** runs :func:`behaviorlm.training.loop.train` with early stopping on validation NDCG@10
  (full ranking, seen items masked) when validation targets are given. Under ``torchrun`` each process
  trains on its own shard of the users' sequences (:func:`behaviorlm.training.distributed.shard_rows`);
  ``batch_size`` stays the global batch, so the learning rate needs no scaling.
* **Distillation** (``fit(..., teacher=...)``): a fitted sequence model (the teacher, e.g. a larger
  Transformer) supervises this one (the student) at every position with its softmax over the whole
  catalogue, :func:`distillation_loss` (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
  Network", 2015; Tang & Wang, "Ranking Distillation", KDD 2018, for recommenders). After fit the
  student is an ordinary model of its class: it saves, loads and serves without its teacher.
* **Scoring** reads the last ``max_len`` events of each user's history in the batch.
* **Serving copy** (:meth:`SequentialRecommender.quantized`): int8 linear layers and a bfloat16 item
  table; it saves and loads like the float model (the float weights are stored and re-quantized on load).
"""

from __future__ import annotations

import copy
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from behaviorlm.data.features import ItemFeatures
from behaviorlm.data.sequences import Interactions, gather_padded
from behaviorlm.estimator import json_params
from behaviorlm.models.base import Recommendations, Recommender, ScoringBatch, Validation, active_validation
from behaviorlm.training import distributed, loop
from behaviorlm.training.loop import TrainerConfig, TrainingHistory, seed_everything
from behaviorlm.training.options import DEFAULT_TRAINING, TrainingOptions

IGNORE = -100
"""Target value of positions without a next event (padding); ignored by the losses."""

SERVING_TABLE_KEY = "serving.scoring_table"
"""Name of a serving copy's frozen item table among its saved tensors (see ``quantized``)."""

SCORING_TABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""The dtypes a serving copy's item table may be frozen in."""

FULL_SOFTMAX_MAX_ITEMS = {"cpu": 20_000, "cuda": 200_000}
"""``loss="auto"``: the largest catalogue trained with the full softmax, per device type; larger ones use
the sampled softmax. On 2 CPU cores the full softmax's forward and backward cost ~0.75 ms per position
per 54,542 items (d_model 128): 345 s of an epoch on Amazon Beauty (54k items) against ~30 s for the
rest, while at 12k items (s3rec/Beauty) it is the cheaper half and gives the best quality per epoch
(Klenitskiy & Vasilev 2023). On a GPU it is cheap until the ``[positions, items]`` logits outgrow memory:
a batch of 128 x 50 positions over 200k items is 5 GB in float32."""

GROUP_BY_LENGTH_PADDING = 0.5
"""``group_by_length="auto"``: group batches by sequence length when random batches, each cut to its
longest sequence, would be more than this share padding (Amazon Beauty, median 4 events in a window
of 50: 0.87; ML-100k, median 51: 0.24)."""

ANNEAL_EPOCHS = 3
"""When validation stalls while the learning rate is still high, the best weights are restored and the
rate decays to its floor over this many epochs (``TrainerConfig.anneal_epochs``)."""

LENGTH_POOL = 50
"""Batches per pool that are sorted by length when grouping (see ``distributed.group_by_length``)."""


def padding_share(lengths: np.ndarray, *, batch_size: int, seed: int = 0) -> float:
    """The share of padding in random batches of ``batch_size`` rows with real ``lengths``, each batch
    cut to its longest row (one seeded shuffle; deterministic)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return 0.0
    order = np.random.default_rng(seed).permutation(lengths.size)
    shuffled = lengths[order]
    starts = np.arange(0, lengths.size, batch_size)
    longest = np.maximum.reduceat(shuffled, starts)
    sizes = np.diff(np.append(starts, lengths.size))
    cells = float((longest * sizes).sum())
    return 0.0 if cells == 0 else 1.0 - float(shuffled.sum()) / cells


def auto_training_settings(
    lengths: np.ndarray, *, n_items: int, batch_size: int, device_type: str
) -> dict[str, Any]:
    """What ``loss="auto"`` and ``group_by_length="auto"`` become for this data: the full softmax up to
    :data:`FULL_SOFTMAX_MAX_ITEMS` items on this device type, sampled above; batches grouped by length
    when random ones would be more than :data:`GROUP_BY_LENGTH_PADDING` padding. ``lengths`` are the
    training rows' input positions (at most ``max_len``). The choice depends on the data and the device
    type only, never on the machine's load or core count, so the same data gives the same model."""
    limit = FULL_SOFTMAX_MAX_ITEMS.get(device_type, FULL_SOFTMAX_MAX_ITEMS["cuda"])
    share = padding_share(lengths, batch_size=batch_size)
    return {
        "loss": "full" if n_items <= limit else "sampled",
        "group_by_length": share > GROUP_BY_LENGTH_PADDING,
        "padding_share": round(share, 4),
    }


def _quantize_linear_layers(net: nn.Module) -> nn.Module:
    """``net`` (on the CPU) with its linear layers dynamically quantized to int8 (``torch.ao``)."""
    with warnings.catch_warnings():
        # torch.ao's dynamic quantization is deprecated in favour of torchao, which is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)


def gap_buckets(timestamps: ArrayLike, valid: ArrayLike, *, n_buckets: int) -> torch.Tensor:
    """Log2 buckets of the time since the previous event: ``1 + floor(log2(1 + gap_seconds))``.

    Bucket 0 marks padding and the first event of a sequence; gaps beyond the last bucket are clipped;
    ``n_buckets=0`` (no time buckets) gives 0 everywhere. ``timestamps`` and ``valid`` are ``[B, L]``
    host arrays or CPU tensors; returns ``int64 [B, L]``. Computed in numpy: the inputs are built on the
    host (a dataset's windows once per fit, one request's window per real-time call), where a dozen tiny
    tensor operations cost more than the arithmetic.
    """
    times = np.asarray(timestamps, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    buckets = np.zeros(times.shape, dtype=np.int64)
    if n_buckets:
        gaps = np.maximum(np.diff(times, axis=1), 0).astype(np.float64)
        steps = np.minimum(1 + np.floor(np.log2(1 + gaps)).astype(np.int64), n_buckets - 1)
        # A position has a gap when it and the one before it are real events.
        buckets[:, 1:] = np.where(valid[:, 1:] & valid[:, :-1], steps, 0)
    return torch.from_numpy(buckets)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    hard_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """Knowledge-distillation loss over the whole catalogue (Hinton, Vinyals & Dean 2015, eq. 2):

        (1 - alpha) · CE(student_logits, targets) + alpha · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))

    ``student_logits`` and ``teacher_logits`` are ``[N, n_items]`` (one row per position with a target),
    ``targets`` ``[N]``. The KL term is averaged over the ``N`` positions; ``T²`` keeps its gradient on
    the scale of the hard loss when the temperature changes. ``hard_loss`` replaces the full-catalogue
    cross-entropy (e.g. a sampled softmax); with ``alpha=0`` the result is exactly that hard loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distill_alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"distill_temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {list(student_logits.shape)} and teacher logits "
            f"{list(teacher_logits.shape)} differ in shape"
        )
    hard = F.cross_entropy(student_logits, targets) if hard_loss is None else hard_loss
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits.to(student_logits.dtype) / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


class SequenceTensors:
    """Left-padded ``[n_users, L]`` tensors of items, event types, gap buckets and next-item targets."""

    def __init__(
        self,
        interactions: Interactions,
        users: np.ndarray,
        *,
        length: int,
        n_buckets: int,
        with_targets: bool,
    ) -> None:
        n_items, n_types = interactions.n_items, len(interactions.event_type_vocab)
        take = length + 1 if with_targets else length
        items, types = interactions.padded_sequences(users, max_len=take, pad_value=-1)
        times = _padded_times(interactions, users, max_len=take)
        valid = items >= 0
        buckets = gap_buckets(times, valid, n_buckets=n_buckets)
        if with_targets:
            self.targets = torch.where(valid[:, 1:], items[:, 1:], torch.full_like(items[:, 1:], IGNORE))
            # An input position needs a following event to have a target.
            items, types, buckets, valid = items[:, :-1], types[:, :-1], buckets[:, :-1], valid[:, :-1]
            self.targets = torch.where(valid, self.targets, torch.full_like(self.targets, IGNORE))
        self.items = torch.where(valid, items, torch.full_like(items, n_items))
        self.types = torch.where(valid, types, torch.full_like(types, n_types))
        self.buckets = buckets
        self.lengths = valid.sum(1)
        """Real (non-padding) input positions per row."""

    def batch(self, rows: torch.Tensor, *, trim: bool = False) -> dict[str, torch.Tensor]:
        """The ``rows``' tensors; ``trim`` drops the leading columns that are padding in every row (the
        encoders give the same outputs at the real positions, and a batch of short sequences costs less)."""
        start = 0
        if trim and len(rows):
            start = self.items.shape[1] - max(1, int(self.lengths[rows].max()))
        out = {
            "items": self.items[rows, start:],
            "types": self.types[rows, start:],
            "buckets": self.buckets[rows, start:],
        }
        if hasattr(self, "targets"):
            out["targets"] = self.targets[rows, start:]
        return out


def _padded_times(interactions: Interactions, users: np.ndarray, *, max_len: int) -> torch.Tensor:
    """Timestamps laid out like :meth:`Interactions.padded_sequences` (0 at padding)."""
    index = interactions.padded_event_index(users, max_len=max_len)
    return torch.from_numpy(gather_padded(interactions.timestamps, index, pad_value=0))


class ItemSideFeatures(nn.Module):
    """Attribute and text vectors added to each item's ID embedding.

    ``e_j = E_id[j] + mean_{a in attrs(j)} E_attr[a] + W_text · t_j``: an item never seen in training
    still gets the part of its vector that it shares with other items (same genre, brand, similar
    title), which is what makes cold-start items rankable. The features are buffers, saved with the
    weights.
    """

    def __init__(self, features: dict[str, torch.Tensor], d_model: int) -> None:
        super().__init__()
        self.register_buffer("attribute_index", features["attribute_index"].long())
        self.register_buffer("attribute_offsets", features["attribute_offsets"].long())
        n_attributes = int(features["n_attributes"])
        self.attributes = nn.EmbeddingBag(max(1, n_attributes), d_model, mode="mean")
        nn.init.normal_(self.attributes.weight, std=0.02)
        self.text_proj: nn.Linear | None = None
        if "text" in features:
            self.register_buffer("text", features["text"].float())
            self.text_proj = nn.Linear(features["text"].shape[1], d_model, bias=False)
            nn.init.normal_(self.text_proj.weight, std=0.02)

    def forward(self) -> torch.Tensor:
        """``[n_items, d]`` feature part of every item's vector."""
        out = self.attributes(self.attribute_index, self.attribute_offsets)
        if self.text_proj is not None:
            out = out + self.text_proj(self.text)
        return out

    def frozen_table(self, weight: torch.Tensor, *, n_items: int) -> torch.Tensor:
        """:func:`with_item_side`'s table, computed once and reused while neither ``weight`` nor this
        module's parameters and buffers change (their storage and version counters are the key: an
        optimizer step, ``load_state_dict`` or a move to another device recomputes it).

        For inference only (no autograd). Without it every scoring call re-derived the whole catalogue's
        vectors -- the text projection alone is ``n_items x text_dim x d`` multiply-adds per request.
        """
        tensors = [weight, *self.parameters(), *self.buffers()]
        key = (n_items, *((t.data_ptr(), t._version) for t in tensors))
        cached = self.__dict__.get("_frozen")
        if cached is None or cached[0] != key:
            table = torch.cat([weight[:n_items] + self(), weight[n_items:]])
            self.__dict__["_frozen"] = cached = (key, table)
        return cached[1]


def with_item_side(weight: torch.Tensor, item_side: ItemSideFeatures | None, *, n_items: int) -> torch.Tensor:
    """Rows of an item embedding table (real items, then padding/extra rows) with the item-side
    features added to the first ``n_items`` rows; the table itself when there are no features.

    Outside training (module in eval mode, no autograd) the table is computed once and reused
    (:meth:`ItemSideFeatures.frozen_table`)."""
    if item_side is None:
        return weight
    if item_side.training or torch.is_grad_enabled():
        return torch.cat([weight[:n_items] + item_side(), weight[n_items:]])
    return item_side.frozen_table(weight, n_items=n_items)


def init_from_text(weight: torch.Tensor, text: torch.Tensor) -> None:
    """Set the first ``len(text)`` rows of an item embedding table to the items' text vectors projected
    on their top principal components (as many as the table has columns), rescaled to the table's
    current standard deviation, in place.

    Items with similar texts start close together, so a rare item begins where its neighbours in meaning
    are instead of at a random point (LLM-ESR, Liu et al., NeurIPS 2024, and LLMInit initialise ID
    embeddings from language-model item embeddings the same way). Columns beyond the text's rank keep
    their random values.
    """
    n_items, width = len(text), weight.shape[1]
    with torch.no_grad():
        scale = weight[:n_items].std()
        centred = text.float() - text.float().mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        k = min(width, v.shape[0])
        projected = centred @ v[:k].T
        weight[:n_items, :k] = projected / projected.std().clamp(min=1e-12) * scale


def feature_tensors_from_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    """Rebuild the constructor input of :class:`ItemSideFeatures` from saved weights (``None`` if absent)."""
    if f"{prefix}attribute_index" not in state:
        return None
    out = {
        "attribute_index": state[f"{prefix}attribute_index"],
        "attribute_offsets": state[f"{prefix}attribute_offsets"],
        "n_attributes": torch.tensor(state[f"{prefix}attributes.weight"].shape[0]),
    }
    if f"{prefix}text" in state:
        out["text"] = state[f"{prefix}text"]
    return out


@dataclass(frozen=True, eq=False)
class EventHistory:
    """A raw event history mapped into a model's index space: one user (index 0) in ``interactions``.

    ``unknown_items`` / ``unknown_event_types`` list the external ids and type names the model has never
    seen; their events are left out.
    """

    interactions: Interactions
    unknown_items: list[str]
    unknown_event_types: list[str]


def raw_history(
    item_ids: Sequence[str],
    *,
    event_types: Sequence[str] | None,
    timestamps: Sequence[int] | None,
    item_space: np.ndarray,
    event_type_vocab: tuple[str, ...],
    unknown_event_types: str = "error",
    item_index: dict[str, int] | None = None,
) -> EventHistory:
    """A raw history (external item ids, type names, UTC seconds; oldest first) in the index space of
    ``item_space`` / ``event_type_vocab``, as one user (index 0) -- what every model that reads a
    request's history uses.

    Items outside the space are left out and listed. A missing ``event_types`` means the vocabulary's
    first type; missing ``timestamps`` are one second apart. Event types outside the vocabulary raise
    ``ValueError`` (``unknown_event_types="error"``) or are left out and listed (``"skip"``: what a
    service reading a store with newer event types wants). ``item_index`` (id -> index) may be passed
    to avoid rebuilding it per request.
    """
    if unknown_event_types not in ("error", "skip"):
        raise ValueError(f"unknown_event_types must be 'error' or 'skip', got {unknown_event_types!r}")
    item_index = (
        item_index if item_index is not None else {str(i): n for n, i in enumerate(item_space.tolist())}
    )
    type_index = {name: i for i, name in enumerate(event_type_vocab)}
    n = len(item_ids)
    if event_types is not None and len(event_types) != n:
        raise ValueError(f"event_types has {len(event_types)} entries for {n} items")
    if timestamps is not None and len(timestamps) != n:
        raise ValueError(f"timestamps has {len(timestamps)} entries for {n} items")
    unknown_types = sorted({t for t in (event_types or []) if t not in type_index})
    if unknown_types and unknown_event_types == "error":
        raise ValueError(f"event types {unknown_types} are not in the model's vocabulary {list(type_index)}")
    # One pass over the request (it runs on every real-time call).
    items: list[int] = []
    times: list[int] = []
    types: list[int] = []
    unknown_items: list[str] = []
    for i, raw in enumerate(item_ids):
        index = item_index.get(str(raw))
        if index is None:
            unknown_items.append(str(raw))
            continue
        kind = 0 if event_types is None else type_index.get(event_types[i])
        if kind is None:
            continue
        items.append(index)
        types.append(kind)
        times.append(int(timestamps[i]) if timestamps else i)
    interactions = Interactions(
        user_ids=np.array(["request"]),
        item_ids=item_space,
        user_ptr=np.array([0, len(items)], dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        timestamps=np.array(times, dtype=np.int64),
        event_types=np.array(types, dtype=np.int16),
        event_type_vocab=tuple(event_type_vocab),
    )
    return EventHistory(
        interactions=interactions, unknown_items=unknown_items, unknown_event_types=unknown_types
    )


@dataclass(frozen=True)
class NextItemPrediction:
    """Result of :meth:`SequentialRecommender.predict_next`: best-first items and their scores."""

    item_ids: list[str]
    scores: list[float]
    unknown_items: list[str]


class SequentialRecommender(Recommender):
    """Base class turning a sequence encoder into a recommender (see the module docstring).

    How it trains is one :class:`~behaviorlm.training.options.TrainingOptions` (``training=``; default
    ``TrainingOptions()``). ``device="cuda"`` there trains on a GPU, where ``amp=True`` uses bfloat16
    autocast and ``compile=True`` compiles the loss with ``torch.compile``; both are ignored on CPU.

    Started by ``torchrun``, ``fit`` trains data-parallel: ``device="cuda"`` means the process's own GPU
    (``cuda:LOCAL_RANK``), ``batch_size`` is the *global* batch (each of the ``W`` processes runs
    ``ceil(batch_size / W)`` sequences per step; with ``batch_size`` a multiple of ``W`` a step sees the
    same sequences as a one-process step with the same seed), and the gradients are averaged over the
    processes, which keeps a two-process run comparable to one process at the same ``lr``. Each process
    averages the loss over its own positions, so the step is the mean of per-process means rather than
    the mean over all positions of the global batch: equal in expectation, not bit for bit. The sampled
    negatives and dropout draws differ per process.

    Subclasses define ``name``, store their architecture arguments in ``__init__`` (calling
    ``super().__init__`` with the shared ones and ``training``) and implement :meth:`_build_net`.
    """

    data_parallel = True
    """``fit`` shards its data over torchrun processes (what ``behaviorlm train`` checks under torchrun)."""

    scores_by_history_length = True

    def __init__(
        self,
        *,
        max_len: int = 50,
        n_time_buckets: int = 0,
        loss: str = "auto",
        n_negatives: int = 4096,
        group_by_length: bool | str = "auto",
        item_init: str = "random",
        training: TrainingOptions = DEFAULT_TRAINING,
    ) -> None:
        self.max_len = max_len
        self.n_time_buckets = n_time_buckets
        self.loss = loss
        self.n_negatives = n_negatives
        self.group_by_length = group_by_length
        self.item_init = item_init
        self.training = training

    def _load_encoder(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy pretrained encoder weights into the freshly built ``net_`` (models with a Transformer encoder)."""
        name = type(self).__name__
        raise TypeError(
            f"{name}.fit: init_encoder needs a Transformer encoder; {name} has none (pretrain a "
            "BehaviorTransformer, or train this model from scratch)"
        )

    @abstractmethod
    def _build_net(
        self, *, n_items: int, n_event_types: int, item_features: dict[str, torch.Tensor] | None
    ) -> nn.Module:
        """The encoder: ``forward(items, types, buckets) -> [B, L, d]`` and ``item_table() -> [n_items, d]``.

        With ``item_features``, the encoder adds an :class:`ItemSideFeatures` named ``item_side``.
        """

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: Interactions,
        *,
        valid: Validation | None = None,
        item_features: ItemFeatures | None = None,
        init_encoder: Mapping[str, torch.Tensor] | None = None,
        teacher: SequentialRecommender | None = None,
        distill_alpha: float | None = None,
        distill_temperature: float | None = None,
    ) -> SequentialRecommender:
        """Fit on ``train`` (early stopping on ``valid``, a :data:`~behaviorlm.models.base.Validation` such as
        ``RankingValidation(train, valid_targets)``), optionally with item attribute/text features.

        With ``teacher`` (a fitted sequence model over the same items and event types, reading at least
        this model's ``max_len`` events) this model is trained as its student: the loss at every position
        is :func:`distillation_loss` of this model's and the teacher's scores over the whole catalogue,
        with weight ``distill_alpha`` (default 0.5) on the teacher's softened distribution at temperature
        ``distill_temperature`` (default 2.0). The teacher reads its own window (its ``max_len`` and time
        buckets) of the same sequences, in eval mode and without gradients, and is left unchanged.

        ``init_encoder`` (``MaskedBehaviorPretrainer.encoder_state()``, pretrained with this model's
        architecture arguments, catalogue and event types) starts the network from those weights and
        fine-tunes all of it; a tensor that does not fit is a ``ValueError`` naming it.
        """
        self._init_encoder = init_encoder
        if item_features is not None and item_features.n_items != train.n_items:
            raise ValueError(
                f"item_features describe {item_features.n_items} items but the training data has {train.n_items}"
            )
        if teacher is None:
            for name, value in (
                ("distill_alpha", distill_alpha),
                ("distill_temperature", distill_temperature),
            ):
                if value is not None:
                    raise ValueError(f"{name}={value} needs a teacher: fit(..., teacher=fitted_model)")
            self._distillation = None
        else:
            self._distillation = self._check_teacher(
                teacher,
                train,
                alpha=0.5 if distill_alpha is None else distill_alpha,
                temperature=2.0 if distill_temperature is None else distill_temperature,
            )
        self._item_features = None if item_features is None else item_features.tensors()
        try:
            return super().fit(train, valid=valid)
        finally:
            del self._item_features, self._distillation, self._init_encoder

    def _check_teacher(
        self, teacher: SequentialRecommender, train: Interactions, *, alpha: float, temperature: float
    ) -> dict[str, Any]:
        """The distillation settings, after checking that ``teacher`` can supervise this model on ``train``."""
        name = type(self).__name__
        if not isinstance(teacher, SequentialRecommender):
            raise TypeError(
                f"{name}.fit: teacher must be a fitted sequence model (BehaviorTransformer, GRU4Rec), "
                f"got {type(teacher).__name__}"
            )
        if teacher is self:
            raise ValueError(f"{name}.fit: teacher must be another model, not the student itself")
        if not hasattr(teacher, "train_") or not hasattr(teacher, "net_"):
            raise ValueError(f"{name}.fit: teacher {type(teacher).__name__} is not fitted yet")
        taught = teacher.trained_on
        if taught.n_items != train.n_items or not np.array_equal(
            taught.item_ids.astype(str), train.item_ids.astype(str)
        ):
            raise ValueError(
                f"{name}.fit: teacher was trained on {taught.n_items} items, the training data has "
                f"{train.n_items} (or the same number in another order): student and teacher must share "
                "the item index space"
            )
        if tuple(taught.event_type_vocab) != tuple(train.event_type_vocab):
            raise ValueError(
                f"{name}.fit: teacher's event types {list(taught.event_type_vocab)} differ from the "
                f"training data's {list(train.event_type_vocab)}"
            )
        if teacher.max_len < self.max_len:
            raise ValueError(
                f"{name}.fit: teacher reads max_len={teacher.max_len} events, fewer than the student's "
                f"max_len={self.max_len}: every student position needs the teacher's scores"
            )
        # Checked here, before any training, so a bad value fails fast (distillation_loss checks again).
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{name}.fit: distill_alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"{name}.fit: distill_temperature must be > 0, got {temperature}")
        return {"teacher": teacher, "alpha": float(alpha), "temperature": float(temperature)}

    def _fit(self, train: Interactions) -> None:
        """Train on ``train``; with validation targets, stop early on their NDCG@10 and keep the best epoch."""
        if self.loss not in ("auto", "full", "sampled"):
            raise ValueError(
                f"{type(self).__name__}: loss must be 'auto', 'full' or 'sampled', got {self.loss!r}"
            )
        if self.group_by_length not in ("auto", True, False):
            raise ValueError(
                f"{type(self).__name__}: group_by_length must be 'auto', True or False, "
                f"got {self.group_by_length!r}"
            )
        if self.max_len < 1:
            raise ValueError(f"{type(self).__name__}: max_len must be >= 1, got {self.max_len}")
        if self.item_init not in ("random", "text"):
            raise ValueError(
                f"{type(self).__name__}: item_init must be 'random' or 'text', got {self.item_init!r}"
            )
        if self.item_init == "text" and (self._item_features is None or "text" not in self._item_features):
            raise ValueError(
                f"{type(self).__name__}: item_init='text' needs item text vectors (fit(item_features=...) "
                "built with text)"
            )
        seed_everything(self.training.seed)
        self.__dict__.pop("item_index_", None)  # the id lookup of a previous fit
        device = distributed.rank_device(self.training.device)
        rank, world_size = distributed.rank(), distributed.world_size()
        self.net_ = self._build_net(
            n_items=train.n_items,
            n_event_types=len(train.event_type_vocab),
            item_features=self._item_features,
        )
        if self._init_encoder is not None:  # pretrained weights (MaskedBehaviorPretrainer.encoder_state())
            self._load_encoder(self._init_encoder)
        if self.item_init == "text":
            init_from_text(self.net_.item_emb.weight, self._item_features["text"])
        self.net_ = self.net_.to(device)
        users = np.flatnonzero(train.lengths() >= 2)
        if len(users) == 0:
            raise ValueError(f"{type(self).__name__}.fit: no user has 2 or more training events")
        data = SequenceTensors(
            train, users, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=True
        )
        self.auto_settings_ = auto_training_settings(
            data.lengths.numpy(),
            n_items=train.n_items,
            batch_size=self.training.batch_size,
            device_type=device.type,
        )
        self.loss_ = self.auto_settings_["loss"] if self.loss == "auto" else self.loss
        group = self.group_by_length
        group = self.auto_settings_["group_by_length"] if group == "auto" else group
        self.group_by_length_ = bool(group)
        counts = torch.from_numpy(train.item_counts()).double()
        sampling = counts.pow(0.75) + 1e-12
        self.sampling_q_ = (sampling / sampling.sum()).float().to(device)
        # Negatives are drawn per process; rank 0 draws what a one-process run draws.
        generator = torch.Generator().manual_seed(self.training.seed + 1_000_003 * rank)
        n_batches = distributed.batches_per_epoch(
            len(users), batch_size=self.training.batch_size, world_size=world_size
        )

        distillation = self._distillation
        teacher_data = None
        if distillation is not None:
            teacher = distillation["teacher"]
            # The teacher reads its own window of the same sequences (its max_len and time buckets);
            # both windows end at the same event, so their last columns line up.
            teacher_data = SequenceTensors(
                train, users, length=teacher.max_len, n_buckets=teacher.n_time_buckets, with_targets=True
            )
            teacher.net_.eval()
            with torch.no_grad():
                teacher_table = teacher._scoring_table().detach()

        def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            shard = distributed.shard_rows(
                len(users),
                batch_size=self.training.batch_size,
                seed=self.training.seed,
                epoch=epoch,
                rank=rank,
                world_size=world_size,
            )
            # Random batches, cut to their longest sequence. Grouping users of similar length cuts the
            # padding but, on ML-100k (24% padding), lost a tenth of NDCG@10 at the same epochs: the
            # optimiser's steps on batches of short sequences weigh as much. So it is on only where random
            # batches are mostly padding (Amazon Beauty: 87%; there it trains 3x faster per epoch).
            if self.group_by_length_:
                shard = distributed.group_by_length(
                    shard, data.lengths, pool=LENGTH_POOL, seed=self.training.seed, epoch=epoch
                )
            for rows in shard:
                batch = data.batch(rows, trim=True)
                if teacher_data is not None:
                    seen_by_teacher = teacher_data.batch(rows, trim=True)
                    batch.update({f"teacher_{k}": seen_by_teacher[k] for k in ("items", "types", "buckets")})
                yield batch

        def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = self.net_(batch["items"], batch["types"], batch["buckets"])
            if distillation is None:
                return self._next_item_loss(hidden, batch["targets"], generator=generator)
            teacher = distillation["teacher"]
            targets = batch["targets"]
            keep = targets != IGNORE
            with torch.no_grad():
                teacher_device = teacher_table.device
                teacher_hidden = teacher.net_(
                    *(batch[f"teacher_{k}"].to(teacher_device) for k in ("items", "types", "buckets"))
                )
                teacher_hidden = teacher_hidden[:, -targets.shape[1] :][keep.to(teacher_device)]
                teacher_logits = (teacher_hidden.to(teacher_table.dtype) @ teacher_table.T).float()
            student_logits = hidden[keep] @ self.net_.item_table().T
            hard = None
            if self.loss_ != "full":
                hard = self._next_item_loss(hidden, targets, generator=generator)
            return distillation_loss(
                student_logits,
                teacher_logits.to(student_logits.device),
                targets[keep],
                alpha=distillation["alpha"],
                temperature=distillation["temperature"],
                hard_loss=hard,
            )

        validate = None
        valid = active_validation(self._valid)
        # The name training_summary() gives the validation score ("ndcg@10" for RankingValidation's default).
        self.validation_metric_ = str(getattr(valid, "metric", "validation"))
        if valid is not None:

            def validate() -> float:
                return float(valid(self))

        config = TrainerConfig.from_options(self.training, anneal_epochs=ANNEAL_EPOCHS)
        self.history_: TrainingHistory = loop.train(
            self.net_,
            batches=batches,
            steps_per_epoch=n_batches,
            loss_fn=loss_fn,
            validate=validate,
            config=config,
        )
        self.net_.eval()
        self.distilled_from_: dict[str, Any] | None = None
        if distillation is not None:
            self.distilled_from_ = {
                "teacher": distillation["teacher"].name,
                "teacher_params": json_params(distillation["teacher"]),
                "alpha": distillation["alpha"],
                "temperature": distillation["temperature"],
            }

    def _next_item_loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, *, generator: torch.Generator
    ) -> torch.Tensor:
        keep = targets != IGNORE
        h = hidden[keep]
        y = targets[keep]
        table = self.net_.item_table()
        if self.loss_ == "full":
            return F.cross_entropy(h @ table.T, y)
        n_neg = min(self.n_negatives, table.shape[0])
        negatives = torch.multinomial(self.sampling_q_.cpu(), n_neg, replacement=True, generator=generator)
        negatives = negatives.to(h.device)
        log_q = torch.log(self.sampling_q_ * n_neg)
        pos = (h * table[y]).sum(-1) - log_q[y]
        neg = h @ table[negatives].T - log_q[negatives][None, :]
        neg = neg.masked_fill(negatives[None, :] == y[:, None], -torch.inf)
        logits = torch.cat([pos[:, None], neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=h.device))

    # ------------------------------------------------------------------ scoring
    def encode(self, batch: ScoringBatch) -> torch.Tensor:
        """The representation of each user's latest state, ``[len(users), d]`` (last position's hidden)."""
        data = SequenceTensors(
            batch.history, batch.users, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=False
        )
        start = data.items.shape[1] - max(1, int(data.lengths.max()))  # padding-only columns: no work
        return self._last_hidden(data.items[:, start:], data.types[:, start:], data.buckets[:, start:])

    def _last_hidden(self, items: torch.Tensor, types: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """The network's hidden state at the last position of each ``[B, L]`` row, ``[B, d]``."""
        device = next(self.net_.parameters()).device
        inputs = (items.to(device), types.to(device), buckets.to(device))
        with torch.no_grad():
            last_hidden = getattr(self.net_, "last_hidden", None)  # a network that can skip the rest
            return last_hidden(*inputs) if last_hidden is not None else self.net_(*inputs)[:, -1]

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        train = self._fitted()
        if batch.history.n_items != train.n_items:
            raise ValueError(
                f"{type(self).__name__}.score: history has {batch.history.n_items} items, model has {train.n_items}"
            )
        return self._scores_of(self.encode(batch))

    def _scores_of(self, state: torch.Tensor) -> torch.Tensor:
        """``float32 [B, n_items]`` scores of user states ``[B, d]`` against the item table."""
        with torch.no_grad():
            table = self._scoring_table()
            scores = state.to(table.dtype) @ table.T
        return scores.float()

    def _scoring_table(self) -> torch.Tensor:
        """The ``[n_items, d]`` table user states are scored against (a serving copy's frozen one)."""
        table = getattr(self, "scoring_table_", None)
        return self.net_.item_table() if table is None else table

    def history_from_events(
        self,
        item_ids: Sequence[str],
        *,
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[int] | None = None,
        unknown_event_types: str = "error",
    ) -> EventHistory:
        """Map a raw history (external item ids, type names, UTC seconds; oldest first) into the model's
        index space, as one user (index 0); see :func:`raw_history`."""
        train = self._fitted()
        if not hasattr(self, "item_index_"):
            self.item_index_ = {str(item): i for i, item in enumerate(train.item_ids.tolist())}
        return raw_history(
            item_ids,
            event_types=event_types,
            timestamps=timestamps,
            item_space=train.item_ids,
            event_type_vocab=train.event_type_vocab,
            unknown_event_types=unknown_event_types,
            item_index=self.item_index_,
        )

    def predict_next(
        self,
        item_ids: Sequence[str],
        *,
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[int] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        unknown_event_types: str = "error",
    ) -> NextItemPrediction:
        """Top-``k`` next items for a raw event history, oldest first -- no store, no retraining.

        The history is read by :meth:`history_from_events` (unknown items are skipped and reported in
        ``unknown_items``). This is the real-time path: a new event changes the next recommendation
        immediately.
        """
        history = self.history_from_events(
            item_ids, event_types=event_types, timestamps=timestamps, unknown_event_types=unknown_event_types
        )
        train = self._fitted()
        recs = self.recommend_one(history.interactions, k=k, exclude_seen=exclude_seen)
        return NextItemPrediction(
            item_ids=[str(train.item_ids[i]) for i in recs.items[0]],
            scores=recs.scores[0].tolist(),
            unknown_items=history.unknown_items,
        )

    def recommend_one(
        self, history: Interactions, *, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` items for the one user (index 0) of ``history``.

        The same numbers as :meth:`recommend` (tested), without building a batch: the real-time path
        reads its last ``max_len`` events directly. On ML-100k this halves the fixed cost of a call
        (one thread: about 0.5 ms of a small model's ~0.9 ms was building CSR matrices and padded
        batches for a single row). An empty history goes through :meth:`recommend`.
        """
        self._fitted()
        if len(history.items) == 0:
            return super().recommend_one(history, k=k, exclude_seen=exclude_seen)
        window = slice(max(0, len(history.items) - self.max_len), len(history.items))
        items = torch.from_numpy(history.items[window])[None, :]
        types = torch.from_numpy(history.event_types[window].astype(np.int64))[None, :]
        times = history.timestamps[window][None, :]
        buckets = gap_buckets(times, np.ones(times.shape, dtype=bool), n_buckets=self.n_time_buckets)
        scores = self._scores_of(self._last_hidden(items, types, buckets))[0]
        if exclude_seen:
            scores[torch.from_numpy(history.items).to(scores.device)] = -torch.inf
        top = torch.topk(scores, min(k, scores.shape[0]))
        return Recommendations(
            users=np.zeros(1, dtype=np.int64),
            items=top.indices.cpu().numpy()[None, :],
            scores=top.values.float().cpu().numpy()[None, :],
        )

    def quantized(self, *, table_dtype: torch.dtype = torch.bfloat16) -> SequentialRecommender:
        """A copy for serving: linear layers in int8 (dynamic quantization, CPU) and the item table, against
        which every user state is scored, frozen in ``table_dtype``.

        Weights are quantized once, activations per call. Scoring one user against a large catalogue
        reads the whole item table, so its size sets the latency: in bfloat16 it is half of float32
        (on a CPU with AVX-512 BF16, 0.33 ms instead of 2.7 ms for 54,542 x 128 on one core). Pass
        ``table_dtype=torch.float32`` on CPUs without fast bfloat16. The measured NDCG@10 change and
        speed-up are in docs/benchmarks.md.

        The copy saves and loads like the float model. ``torch.ao``'s packed int8 weights have no
        safetensors form, so :meth:`save` stores the float network's weights (as the float model does)
        plus the frozen table as ``serving.scoring_table`` in ``table_dtype``; :func:`load_model` sees
        that tensor, rebuilds the float network and quantizes it again. Dynamic quantization of the same
        float weights is deterministic, so the loaded copy scores exactly as the saved one. Quantizing a
        copy again starts from its float weights.
        """
        self._fitted()
        if table_dtype not in SCORING_TABLE_DTYPES:
            raise ValueError(
                f"table_dtype must be one of {[str(d) for d in SCORING_TABLE_DTYPES]}, got {table_dtype}"
            )
        float_net = self._float_net()
        serving = copy.copy(self)
        with torch.no_grad():
            serving.scoring_table_ = float_net.item_table().detach().cpu().to(table_dtype).contiguous()
        serving.float_state_ = {k: v.detach().cpu().clone() for k, v in float_net.state_dict().items()}
        serving.net_ = _quantize_linear_layers(copy.deepcopy(float_net).cpu())
        serving.is_quantized_ = True
        return serving

    def _float_net(self) -> nn.Module:
        """The float network: ``net_``, or for a serving copy one rebuilt from its saved float weights."""
        if not getattr(self, "is_quantized_", False):
            return self.net_
        return self._build_loaded_net(self.float_state_)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        if getattr(self, "is_quantized_", False):
            # The float weights and the frozen table; load_model quantizes the linear layers again.
            return {**self.float_state_, SERVING_TABLE_KEY: self.scoring_table_}
        return {k: v.detach().cpu() for k, v in self.net_.state_dict().items()}

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        table = tensors.pop(SERVING_TABLE_KEY, None)
        unknown = sorted(k for k in tensors if k.startswith("serving."))
        if unknown:
            raise ValueError(
                f"unknown serving tensor(s) {unknown}; a serving copy stores only {SERVING_TABLE_KEY!r}"
            )
        net = self._build_loaded_net(tensors)
        for attribute in ("scoring_table_", "float_state_", "is_quantized_"):
            self.__dict__.pop(attribute, None)
        self.net_ = net
        if table is None:
            return
        expected = tuple(net.item_table().shape)
        if tuple(table.shape) != expected or table.dtype not in SCORING_TABLE_DTYPES:
            raise ValueError(
                f"{SERVING_TABLE_KEY!r} is {table.dtype} {list(table.shape)}; the model needs "
                f"{list(expected)} in one of {[str(d) for d in SCORING_TABLE_DTYPES]}"
            )
        if next(net.parameters()).is_meta:
            return  # load_model's dry run (shapes and dtypes only): nothing to quantize
        self.scoring_table_ = table.contiguous()
        self.float_state_ = {k: v.detach().clone() for k, v in tensors.items()}
        self.net_ = _quantize_linear_layers(net)
        self.is_quantized_ = True

    def _build_loaded_net(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """A network of this model's architecture holding the float weights ``tensors``, in eval mode."""
        train = self._fitted()
        net = self._build_net(
            n_items=train.n_items,
            n_event_types=len(train.event_type_vocab),
            item_features=feature_tensors_from_state(tensors, "item_side."),
        )
        net.load_state_dict(tensors)
        return net.eval()

    def training_summary(self) -> dict[str, Any]:
        """Epochs, best epoch, time per epoch and total, from the last fit (and its teacher, if distilled)."""
        summary = {
            **self.history_.summary(metric=getattr(self, "validation_metric_", "ndcg@10")),
            **self._gpu_memory_summary(),
        }
        if getattr(self, "loss_", None) is not None:
            summary["loss"] = self.loss_
            summary["group_by_length"] = self.group_by_length_
            summary["padding_share_random_batches"] = self.auto_settings_["padding_share"]
        if getattr(self, "distilled_from_", None) is not None:
            summary["distilled_from"] = self.distilled_from_
        return summary

    def _gpu_memory_summary(self) -> dict[str, float]:
        """Peak GPU memory allocated by torch in this process (MiB), when the model lives on a GPU."""
        device = next(self.net_.parameters()).device
        if device.type != "cuda":
            return {}
        return {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20}
