"""Task heads on the behaviour Transformer encoder: next event type, sequence labels, per-event tags.

Each model is :class:`~behaviorlm.models.transformer.BehaviorTransformerNet` (the encoder) plus one
linear layer, trained end to end with softmax cross-entropy by :func:`behaviorlm.training.loop.train`,
and can start from a masked-behaviour-pretrained encoder (``fit(..., init_encoder=state)`` with
``state`` from :meth:`~behaviorlm.models.pretraining.MaskedBehaviorPretrainer.encoder_state`; the
architecture arguments must match, see :meth:`~behaviorlm.models.pretraining.EncoderModel.encoder_params`):

* :class:`NextEventTypeModel` -- ``p(e_{t+1} | events <= t) = softmax(W h_t + b)`` with a *causal*
  encoder, the loss taken at every position (as for next-item training in
  :mod:`behaviorlm.models.sequential`).
* :class:`SequenceClassifier` -- one label per sequence from the hidden state of the *last real event*
  (``h_T``; sequences are left-padded, so it is the last column): ``p(y | x) = softmax(W h_T + b)``.
  By default the encoder is bidirectional (``bidirectional=True``, as in pretraining), where ``h_T``
  attends to the whole sequence like BERT's ``[CLS]``; with ``bidirectional=False`` it is the causal
  summary of the sequence, as a next-event model would read it.
* :class:`EventTagger` -- one label per event, ``p(y_t | x) = softmax(W h_t + b)`` at every position
  (bidirectional by default, so a tag may depend on events before and after it). Sequences longer than
  ``max_len`` are cut into consecutive windows of at most ``max_len`` events, for training and for
  prediction, so every event is tagged; attention does not cross a window boundary.

:func:`purchase_within_next` derives sequence labels from the data ("does the user purchase within the
next N events?"); any other label (e.g. annotated intents) goes in a :class:`SequenceLabels` directly.
Evaluation reports use scikit-learn's metrics (models do not import :mod:`behaviorlm.evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import sklearn.metrics as skm
import torch
import torch.nn.functional as F
from torch import nn

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.pretraining import ENCODER_TRAINING, EncoderModel
from behaviorlm.models.sequential import IGNORE, SequenceTensors, gap_buckets
from behaviorlm.models.transformer import BehaviorTransformerNet, load_encoder_state
from behaviorlm.training.loop import Batch, seed_everything
from behaviorlm.training.options import TrainingOptions


# ---------------------------------------------------------------------------------------- labelled data
@dataclass(frozen=True, eq=False)
class SequenceLabels:
    """One label per sequence: user ``users[i]``'s events in ``history`` carry ``labels[i]``.

    ``labels`` may be integers, booleans or strings; the classes are the distinct labels seen in ``fit``.
    """

    history: Interactions
    users: np.ndarray
    labels: np.ndarray
    as_of: np.ndarray | None = None
    """When each label's prediction is made (epoch seconds, one per row; ``None``: not known). A
    :class:`SequenceClassifier` reads the time from the user's last event to it ("last seen 3 days before
    the prediction"), which the events alone do not carry."""
    features: np.ndarray | None = None
    """Optional numeric side features per row (``[len(users), f]``, e.g. counts of each behaviour in the
    last hours before ``as_of``); a :class:`SequenceClassifier` fitted with them needs them to predict."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.asarray(self.users, dtype=np.int64))
        object.__setattr__(self, "labels", np.asarray(self.labels))
        if self.labels.shape != self.users.shape or self.users.ndim != 1:
            raise ValueError(
                f"users and labels must be 1-D of the same length, got {self.users.shape} and {self.labels.shape}"
            )
        _check_users(self.history, self.users, what="SequenceLabels")
        empty = self.users[self.history.lengths()[self.users] == 0]
        if len(empty):
            raise ValueError(f"SequenceLabels: users {empty[:5].tolist()} have no events in history")
        if self.as_of is not None:
            object.__setattr__(
                self, "as_of", _check_as_of(self.history, self.users, self.as_of, what="SequenceLabels")
            )
        if self.features is not None:
            object.__setattr__(
                self, "features", _check_features(self.features, len(self.users), what="SequenceLabels")
            )

    def subset(self, rows: np.ndarray) -> SequenceLabels:
        """The labelled sequences at positions ``rows`` (e.g. a train/test split of the users)."""
        return SequenceLabels(
            history=self.history,
            users=self.users[rows],
            labels=self.labels[rows],
            as_of=None if self.as_of is None else self.as_of[rows],
            features=None if self.features is None else self.features[rows],
        )


@dataclass(frozen=True, eq=False)
class EventTags:
    """One tag per event: ``tags[k]`` labels event ``k`` of ``interactions`` (flat, CSR order).

    Only the events of ``users`` are used (default: every user), so one set of tags can be split by user.
    """

    interactions: Interactions
    tags: np.ndarray
    users: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", np.asarray(self.tags))
        if self.tags.shape != (self.interactions.n_events,):
            raise ValueError(
                f"EventTags: need one tag per event ({self.interactions.n_events}), got shape {self.tags.shape}"
            )
        users = np.arange(self.interactions.n_users) if self.users is None else self.users
        object.__setattr__(self, "users", np.asarray(users, dtype=np.int64))
        _check_users(self.interactions, self.selected_users, what="EventTags")

    @property
    def selected_users(self) -> np.ndarray:
        assert self.users is not None  # set in __post_init__
        return self.users

    def event_index(self) -> np.ndarray:
        """Flat indices of the selected users' events, in the order of ``users`` then time."""
        return _user_events(self.interactions, self.selected_users)


def purchase_within_next(
    interactions: Interactions, *, n_events: int, purchase_type: str = "purchase"
) -> SequenceLabels:
    """Label "the user purchases within the next ``n_events`` events", from each user's own data.

    Each user's last ``n_events`` events are the future: the label is 1 when one of them has event type
    ``purchase_type``, else 0, and the history is every event before them. Users with at most
    ``n_events`` events have no history and are left out. The history keeps the index space.
    """
    if n_events < 1:
        raise ValueError(f"purchase_within_next: n_events must be >= 1, got {n_events}")
    if purchase_type not in interactions.event_type_vocab:
        raise ValueError(
            f"purchase_within_next: event type {purchase_type!r} is not in {list(interactions.event_type_vocab)}"
        )
    purchase = interactions.event_type_vocab.index(purchase_type)
    lengths = interactions.lengths()
    position = np.arange(interactions.n_events) - np.repeat(interactions.user_ptr[:-1], lengths)
    in_future = position >= np.repeat(lengths - n_events, lengths)
    future_purchases = np.bincount(
        interactions.event_users()[in_future & (interactions.event_types == purchase)],
        minlength=interactions.n_users,
    )
    users = np.flatnonzero(lengths > n_events)
    return SequenceLabels(
        history=interactions.filter_events(~in_future),
        users=users,
        labels=(future_purchases[users] > 0).astype(np.int64),
    )


def last_event_type_labels(interactions: Interactions, users: np.ndarray) -> SequenceLabels:
    """Label each of ``users`` with the type of their last event (an index into ``event_type_vocab``);
    the history is every event before it. How :class:`NextEventTypeModel` is checked on held-out users.
    Users with fewer than two events are left out."""
    users = np.asarray(users, dtype=np.int64)
    users = users[interactions.lengths()[users] >= 2]
    is_last = np.zeros(interactions.n_events, dtype=bool)
    is_last[interactions.user_ptr[1:][interactions.lengths() > 0] - 1] = True
    last = interactions.user_ptr[users + 1] - 1
    return SequenceLabels(
        history=interactions.filter_events(~is_last),
        users=users,
        labels=interactions.event_types[last].astype(np.int64),
    )


def session_purchase_tags(
    interactions: Interactions, *, gap_seconds: int = 1800, purchase_type: str = "purchase"
) -> EventTags:
    """Tag each event 1 when a ``purchase_type`` event follows it in the same session (a session ends at
    a gap longer than ``gap_seconds``), else 0: "this browsing leads to a purchase", decided per event."""
    if gap_seconds <= 0:
        raise ValueError(f"session_purchase_tags: gap_seconds must be > 0, got {gap_seconds}")
    if purchase_type not in interactions.event_type_vocab:
        raise ValueError(
            f"session_purchase_tags: event type {purchase_type!r} is not in {list(interactions.event_type_vocab)}"
        )
    purchase = interactions.event_type_vocab.index(purchase_type)
    n = interactions.n_events
    starts = np.zeros(n, dtype=bool)
    starts[interactions.user_ptr[:-1][interactions.lengths() > 0]] = True
    gaps = np.diff(interactions.timestamps.astype(np.int64), prepend=np.int64(0))
    starts |= gaps > gap_seconds
    session = np.cumsum(starts) - 1
    is_purchase = (interactions.event_types == purchase).astype(np.int64)
    # Purchases strictly after each event in its session: the session's purchases minus those up to it.
    seen = np.cumsum(is_purchase)  # purchases up to and including each event
    before_session = (seen - is_purchase)[np.flatnonzero(starts)][session]
    total = np.bincount(session, weights=is_purchase, minlength=int(session.max(initial=-1)) + 1)
    up_to = seen - before_session
    return EventTags(interactions=interactions, tags=(total[session] - up_to > 0).astype(np.int64))


def split_users(
    users: np.ndarray, *, valid_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, ...]:
    """Positions of ``users`` shuffled (seeded) into train / validation / test parts of the given shares."""
    if not (0 <= valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(
            f"valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must be shares that leave "
            "users to train on"
        )
    order = np.random.default_rng(seed).permutation(len(users))
    n_test, n_valid = max(1, round(test_fraction * len(users))), round(valid_fraction * len(users))
    return order[n_test + n_valid :], order[n_test : n_test + n_valid], order[:n_test]


# ---------------------------------------------------------------------------------------- helpers
NOW_BUCKETS = 24
"""Log2 buckets of the time from a user's last event to the prediction (up to 2^23 s, ~97 days)."""


def _check_as_of(history: Interactions, users: np.ndarray, as_of: Any, *, what: str) -> np.ndarray:
    as_of = np.asarray(as_of)
    if as_of.shape != users.shape or not np.issubdtype(as_of.dtype, np.integer):
        raise ValueError(
            f"{what}: as_of must hold one integer time (epoch seconds) per user, got {as_of.dtype} {as_of.shape} "
            f"for {len(users)} users"
        )
    last = _last_times(history, users)
    early = np.flatnonzero(as_of < last)
    if len(early):
        i = early[0]
        raise ValueError(
            f"{what}: as_of must not be before the user's last event (row {i}: as_of {int(as_of[i])} < "
            f"last event {int(last[i])}); the history must end before the prediction"
        )
    return as_of.astype(np.int64)


def _check_features(features: Any, n_rows: int, *, what: str, n_columns: int | None = None) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) != n_rows:
        raise ValueError(
            f"{what}: features must be [rows, columns] with {n_rows} rows, got shape {features.shape}"
        )
    if n_columns is not None and features.shape[1] != n_columns:
        raise ValueError(
            f"{what}: the model was fitted with {n_columns} feature columns, got {features.shape[1]}"
        )
    bad = np.argwhere(~np.isfinite(features))
    if len(bad):
        raise ValueError(f"{what}: features row {bad[0][0]}, column {bad[0][1]} is not a finite number")
    return features


def time_to_prediction_buckets(
    history: Interactions, users: np.ndarray, as_of: np.ndarray | None
) -> torch.Tensor:
    """``[len(users)]`` buckets of the time from each user's last event to ``as_of``:
    ``1 + floor(log2(1 + seconds))`` clipped to :data:`NOW_BUCKETS`; 0 everywhere when ``as_of`` is None."""
    if as_of is None:
        return torch.zeros(len(users), dtype=torch.long)
    # The same log2 buckets as the gaps between events: the prediction is one more "event" after the last.
    times = np.column_stack([_last_times(history, users), as_of])
    return gap_buckets(times, np.ones(times.shape, dtype=bool), n_buckets=NOW_BUCKETS + 1)[:, 1]


def _last_times(history: Interactions, users: np.ndarray) -> np.ndarray:
    """Each user's last event time (users with at least one event)."""
    return history.timestamps[history.user_ptr[users + 1] - 1]


def _check_users(interactions: Interactions, users: np.ndarray, *, what: str) -> None:
    if users.ndim != 1:
        raise ValueError(f"{what}: users must be 1-D, got shape {users.shape}")
    bad = users[(users < 0) | (users >= interactions.n_users)]
    if len(bad):
        raise ValueError(
            f"{what}: user indices {bad[:5].tolist()} are out of range (n_users={interactions.n_users})"
        )


def _user_events(interactions: Interactions, users: np.ndarray) -> np.ndarray:
    """Flat event indices of ``users``' events, user by user, oldest first."""
    starts = interactions.user_ptr[users]
    lengths = interactions.user_ptr[users + 1] - starts
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def _windows(
    interactions: Interactions, users: np.ndarray, *, length: int
) -> tuple[Interactions, np.ndarray]:
    """Cut each user's events into consecutive windows of at most ``length`` events, newest aligned.

    Returns the windows as an :class:`Interactions` whose "users" are windows (events in the same flat
    order as ``_user_events(interactions, users)``), and that flat index of the source events.
    """
    events = _user_events(interactions, users)
    lengths = interactions.lengths()[users]
    per_user = np.arange(len(events)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    from_end = np.repeat(lengths, lengths) - 1 - per_user
    # Window k of a user (counted from the newest) holds its events length*k .. length*(k+1)-1 from the end.
    window_key = np.repeat(np.arange(len(users)), lengths) * (interactions.n_events + 1) - from_end // length
    _, window_of_event = np.unique(window_key, return_inverse=True)
    counts = np.bincount(window_of_event)
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    windows = Interactions(
        user_ids=np.arange(len(counts)),
        item_ids=interactions.item_ids,
        user_ptr=ptr,
        items=interactions.items[events],
        timestamps=interactions.timestamps[events],
        event_types=interactions.event_types[events],
        event_type_vocab=interactions.event_type_vocab,
    )
    return windows, events


def _class_index(classes: np.ndarray, labels: np.ndarray, *, where: str) -> np.ndarray:
    index = np.searchsorted(classes, labels)
    index = np.clip(index, 0, len(classes) - 1)
    unknown = labels[classes[index] != labels]
    if len(unknown):
        raise ValueError(
            f"{where}: labels {np.unique(unknown)[:5].tolist()} were not seen in fit {classes.tolist()}"
        )
    return index.astype(np.int64)


def classification_report(y_true: np.ndarray, *, proba: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    """Accuracy and macro-F1 of the most probable class; for two classes also F1, ROC-AUC and AP.

    With two classes the positive class is ``classes[1]`` (e.g. ``1`` / ``True``) and ROC-AUC / average
    precision use its probability; they are left out when ``y_true`` holds a single class.
    """
    y_pred = classes[proba.argmax(axis=1)]
    report: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if len(classes) == 2:
        positive = (y_true == classes[1]).astype(np.int64)
        report["f1"] = float(skm.f1_score(positive, (y_pred == classes[1]).astype(np.int64), zero_division=0))
        if 0 < positive.sum() < len(positive):
            report["roc_auc"] = float(skm.roc_auc_score(positive, proba[:, 1]))
            report["average_precision"] = float(skm.average_precision_score(positive, proba[:, 1]))
    return report


class _EncoderWithHead(nn.Module):
    def __init__(
        self, encoder: BehaviorTransformerNet, *, n_outputs: int, now_buckets: int = 0, n_features: int = 0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        d = encoder.item_emb.embedding_dim
        self.head = nn.Linear(d, n_outputs)
        # SequenceClassifier's time-to-prediction vectors and side-feature projection; zero at the start,
        # as if absent.
        self.now_emb = nn.Embedding(now_buckets + 1, d) if now_buckets else None
        if self.now_emb is not None:
            nn.init.zeros_(self.now_emb.weight)
        self.side = nn.Linear(n_features, d) if n_features else None
        if self.side is not None:
            nn.init.zeros_(self.side.weight)
            nn.init.zeros_(self.side.bias)

    def forward(
        self, items: torch.Tensor, types: torch.Tensor, buckets: torch.Tensor, *, causal: bool
    ) -> torch.Tensor:
        """Logits ``[B, L, n_outputs]`` at every position."""
        return self.head(self.encoder(items, types, buckets, causal=causal))


class _HeadModel(EncoderModel):
    """Shared plumbing of the heads: building encoder + head, optional pretrained start, inference."""

    net_: _EncoderWithHead

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _build_fitted_net(self) -> _EncoderWithHead:
        encoder = self._build_encoder(n_items=self.n_items_, n_event_types=len(self.event_type_vocab_))
        return _EncoderWithHead(encoder, n_outputs=self._n_outputs())

    def _start(self, interactions: Interactions, init_encoder: Mapping[str, torch.Tensor] | None) -> None:
        self._check_params()
        seed_everything(self.training.seed)
        self._remember_space(interactions)
        self.net_ = self._build_fitted_net()
        if init_encoder is not None:
            load_encoder_state(self.net_.encoder, init_encoder)
        self.net_.to(torch.device(self.training.device))

    def _in_batches(
        self, n_rows: int, logits_of: Callable[[slice, torch.device], torch.Tensor], *, empty: torch.Tensor
    ) -> torch.Tensor:
        """``logits_of(rows, device)`` over ``n_rows`` in batches, concatenated on the CPU (eval mode, no
        gradient); ``empty`` when there are no rows."""
        self.net_.eval()
        device = self._device()
        step = 4 * self.training.batch_size
        with torch.no_grad():
            out = [logits_of(slice(start, start + step), device).cpu() for start in range(0, n_rows, step)]
        return torch.cat(out) if out else empty

    def _logits(self, data: SequenceTensors, *, causal: bool) -> torch.Tensor:
        """Logits ``[rows, L, n_outputs]`` (CPU, eval mode, no gradient), in batches."""
        return self._in_batches(
            len(data.items),
            lambda rows, device: self.net_(
                data.items[rows].to(device),
                data.types[rows].to(device),
                data.buckets[rows].to(device),
                causal=causal,
            ),
            empty=torch.zeros(0, self.max_len, self._n_outputs()),
        )


# ---------------------------------------------------------------------------------------- next event type
class NextEventTypeModel(_HeadModel):
    """Predicts the event type of a user's next event (view, cart, purchase, ...) with a causal encoder.

    Training reads each user's last ``max_len + 1`` events and takes the cross-entropy of the next
    event's type at every position; prediction reads the last ``max_len`` events. Classes are the event
    types of the data, as indices into ``event_type_vocab_``.
    """

    name = "next_event_type"

    def _n_outputs(self) -> int:
        return len(self.event_type_vocab_)

    def fit(
        self,
        interactions: Interactions,
        *,
        valid: SequenceLabels | None = None,
        init_encoder: Mapping[str, torch.Tensor] | None = None,
    ) -> Self:
        """Train on every user with two or more events.

        ``valid`` (optional) holds histories labelled with the *index* of their next event's type; the
        model early-stops on its accuracy. ``init_encoder`` starts from pretrained encoder weights.
        """
        users = np.flatnonzero(interactions.lengths() >= 2)
        if len(users) == 0:
            raise ValueError(f"{type(self).__name__}.fit: no user has 2 or more events")
        self._start(interactions, init_encoder)
        data = SequenceTensors(
            interactions, users, length=self.max_len + 1, n_buckets=self.n_time_buckets, with_targets=False
        )
        n_items = interactions.n_items
        real = data.items != n_items
        has_next = real[:, :-1] & real[:, 1:]
        targets = torch.where(has_next, data.types[:, 1:], torch.full_like(data.types[:, 1:], IGNORE))
        items, types, buckets = data.items[:, :-1], data.types[:, :-1], data.buckets[:, :-1]

        def make_batch(rows: torch.Tensor, generator: torch.Generator) -> Batch:
            return {
                "items": items[rows],
                "types": types[rows],
                "buckets": buckets[rows],
                "targets": targets[rows],
            }

        def loss_fn(batch: Batch) -> torch.Tensor:
            logits = self.net_(batch["items"], batch["types"], batch["buckets"], causal=True)
            keep = batch["targets"] != IGNORE
            return F.cross_entropy(logits[keep], batch["targets"][keep])

        validate = None
        if valid is not None:
            self._check_space(valid.history, where="fit(valid=...)")

            def validate() -> float:
                predicted = self.predict(valid.history, users=valid.users)
                return float(skm.accuracy_score(valid.labels, predicted))

        self._train(n_rows=len(users), make_batch=make_batch, loss_fn=loss_fn, validate=validate)
        return self

    def predict_proba(self, history: Interactions, *, users: np.ndarray | None = None) -> np.ndarray:
        """``[len(users), n_event_types]`` probabilities of the next event's type after each history."""
        self._fitted()
        self._check_space(history, where="predict_proba")
        users = np.arange(history.n_users) if users is None else np.asarray(users, dtype=np.int64)
        _check_users(history, users, what=f"{type(self).__name__}.predict_proba")
        empty = users[history.lengths()[users] == 0]
        if len(empty):
            raise ValueError(
                f"{type(self).__name__}.predict_proba: users {empty[:5].tolist()} have no events"
            )
        data = SequenceTensors(
            history, users, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=False
        )
        return torch.softmax(self._logits(data, causal=True)[:, -1].float(), dim=-1).numpy()

    def predict(self, history: Interactions, *, users: np.ndarray | None = None) -> np.ndarray:
        """The most probable next event type of each history, as an index into ``event_type_vocab_``."""
        return self.predict_proba(history, users=users).argmax(axis=1)

    def evaluate(self, labelled: SequenceLabels) -> dict[str, Any]:
        """Classification report of next-type predictions against ``labelled.labels`` (type indices)."""
        proba = self.predict_proba(labelled.history, users=labelled.users)
        report = classification_report(
            labelled.labels, proba=proba, classes=np.arange(len(self.event_type_vocab_))
        )
        return {
            "protocol": f"next event type after each history (last {self.max_len} events), top-1",
            **report,
        }


# ---------------------------------------------------------------------------------------- label heads
class _LabelHead(_HeadModel):
    """What the sequence classifier and the event tagger share: the ``bidirectional`` switch and a
    learned list of classes (``classes_``) saved with the model."""

    def __init__(
        self,
        *,
        bidirectional: bool = True,
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
        self.bidirectional = bidirectional

    classes_: np.ndarray

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _extra_meta(self) -> dict[str, Any]:
        return {"classes": self.classes_.tolist()}

    def _restore_extra(self, meta: dict[str, Any]) -> None:
        self.classes_ = np.asarray(meta["classes"])


# ---------------------------------------------------------------------------------------- sequence labels
class SequenceClassifier(_LabelHead):
    """One label per sequence from the last real event's hidden state (see the module docstring).

    Reads the last ``max_len`` events of each history. ``bidirectional`` picks the encoder's attention
    (default ``True``: every event attends to the whole sequence). Early-stops on validation ROC-AUC for
    two classes (both present in the validation labels), else on validation accuracy.

    With ``time_to_prediction`` (default) the head also reads how long before the prediction the user's
    last event was, when the labels carry ``as_of`` (and ``predict_proba(..., as_of=...)``): a learned
    vector per log2 bucket of that time is added to ``h_T`` (zero at the start, and bucket 0, "not
    known", when no time is given). The events carry the gaps *between* them, not the gap to now, which
    is the strongest single signal of "will buy tomorrow" (docs/graph.md, the 9-day Taobao slice).
    """

    name = "sequence_classifier"

    def __init__(
        self,
        *,
        bidirectional: bool = True,
        time_to_prediction: bool = True,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.1,
        max_len: int = 50,
        n_time_buckets: int = 24,
        training: TrainingOptions = ENCODER_TRAINING,
    ) -> None:
        super().__init__(
            bidirectional=bidirectional,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            dropout=dropout,
            max_len=max_len,
            n_time_buckets=n_time_buckets,
            training=training,
        )
        self.time_to_prediction = time_to_prediction

    def _build_fitted_net(self) -> _EncoderWithHead:
        encoder = self._build_encoder(n_items=self.n_items_, n_event_types=len(self.event_type_vocab_))
        return _EncoderWithHead(
            encoder,
            n_outputs=self._n_outputs(),
            now_buckets=NOW_BUCKETS if self.time_to_prediction else 0,
            n_features=len(self.feature_mean_),
        )

    feature_mean_: np.ndarray
    feature_scale_: np.ndarray

    def _extra_meta(self) -> dict[str, Any]:
        return {
            **super()._extra_meta(),
            "feature_mean": self.feature_mean_.tolist(),
            "feature_scale": self.feature_scale_.tolist(),
        }

    def _restore_extra(self, meta: dict[str, Any]) -> None:
        super()._restore_extra(meta)
        if "time_to_prediction" not in meta["params"]:
            self.time_to_prediction = False  # saved before the option existed: no such weights
        self.feature_mean_ = np.asarray(meta.get("feature_mean", []), dtype=np.float64)
        self.feature_scale_ = np.asarray(meta.get("feature_scale", []), dtype=np.float64)

    def _side(self, features: np.ndarray | None, n_rows: int, *, what: str) -> torch.Tensor:
        """Standardised side features ``[n_rows, f]`` (``f`` = 0 for a model fitted without them)."""
        n_columns = len(self.feature_mean_)
        if n_columns == 0:
            return torch.zeros(n_rows, 0)
        if features is None:
            raise ValueError(
                f"{what}: this classifier was fitted with {n_columns} side feature columns; pass features="
            )
        features = _check_features(features, n_rows, what=what, n_columns=n_columns)
        return torch.from_numpy(((features - self.feature_mean_) / self.feature_scale_).astype(np.float32))

    def _class_logits(
        self,
        items: torch.Tensor,
        types: torch.Tensor,
        buckets: torch.Tensor,
        now: torch.Tensor,
        side: torch.Tensor,
    ) -> torch.Tensor:
        """Logits ``[B, n_classes]`` from the last position's hidden state (plus the time-to-prediction
        vector and the projected side features)."""
        hidden = self.net_.encoder(items, types, buckets, causal=not self.bidirectional)[:, -1]
        if self.net_.now_emb is not None:
            hidden = hidden + self.net_.now_emb(now)
        if self.net_.side is not None:
            hidden = hidden + self.net_.side(side)
        return self.net_.head(hidden)

    def fit(
        self,
        labelled: SequenceLabels,
        *,
        valid: SequenceLabels | None = None,
        init_encoder: Mapping[str, torch.Tensor] | None = None,
    ) -> Self:
        """Train on ``labelled``; with ``valid``, early-stop on its accuracy and keep the best epoch."""
        if len(labelled.users) == 0:
            raise ValueError(f"{type(self).__name__}.fit: no labelled sequence")
        self.classes_ = np.unique(labelled.labels)
        if labelled.features is None:
            self.feature_mean_ = self.feature_scale_ = np.zeros(0)
        else:
            self.feature_mean_ = labelled.features.mean(axis=0)
            self.feature_scale_ = np.maximum(labelled.features.std(axis=0), 1e-6)
        if valid is not None and (valid.features is None) != (labelled.features is None):
            raise ValueError(
                f"{type(self).__name__}.fit: give features for both the labelled and the valid rows, or neither"
            )
        self._start(labelled.history, init_encoder)
        data = SequenceTensors(
            labelled.history,
            labelled.users,
            length=self.max_len,
            n_buckets=self.n_time_buckets,
            with_targets=False,
        )
        targets = torch.from_numpy(
            _class_index(self.classes_, labelled.labels, where=f"{type(self).__name__}.fit")
        )
        now = time_to_prediction_buckets(labelled.history, labelled.users, labelled.as_of)
        side = self._side(labelled.features, len(labelled.users), what=f"{type(self).__name__}.fit")

        def make_batch(rows: torch.Tensor, generator: torch.Generator) -> Batch:
            return {**data.batch(rows), "targets": targets[rows], "now": now[rows], "side": side[rows]}

        def loss_fn(batch: Batch) -> torch.Tensor:
            logits = self._class_logits(
                batch["items"], batch["types"], batch["buckets"], batch["now"], batch["side"]
            )
            return F.cross_entropy(logits, batch["targets"])

        validate = None
        if valid is not None:
            self._check_space(valid.history, where="fit(valid=...)")

            positive = (valid.labels == self.classes_[-1]).astype(np.int64)
            if len(self.classes_) == 2 and 0 < positive.sum() < len(positive):
                # Two classes: ranking quality. With rare positives (purchase intent) accuracy stays at the
                # majority class's share while the model improves, so it could not pick an epoch.
                def validate() -> float:
                    proba = self.predict_proba(
                        valid.history, users=valid.users, as_of=valid.as_of, features=valid.features
                    )
                    return float(skm.roc_auc_score(positive, proba[:, 1]))

            else:

                def validate() -> float:
                    predicted = self.predict(
                        valid.history, users=valid.users, as_of=valid.as_of, features=valid.features
                    )
                    return float(skm.accuracy_score(valid.labels, predicted))

        self._train(n_rows=len(labelled.users), make_batch=make_batch, loss_fn=loss_fn, validate=validate)
        return self

    def predict_proba(
        self,
        history: Interactions,
        *,
        users: np.ndarray,
        as_of: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[len(users), n_classes]`` class probabilities, columns in the order of ``classes_``.

        ``as_of``: when each prediction is made (epoch seconds, one per user, not before the user's last
        event), e.g. the request time; ``None`` reads as "not known". ``features``: the side features,
        required when the model was fitted with them."""
        self._fitted()
        self._check_space(history, where="predict_proba")
        users = np.asarray(users, dtype=np.int64)
        what = f"{type(self).__name__}.predict_proba"
        _check_users(history, users, what=what)
        empty = users[history.lengths()[users] == 0]
        if len(empty):
            raise ValueError(f"{what}: users {empty[:5].tolist()} have no events")
        if as_of is not None:
            as_of = _check_as_of(history, users, as_of, what=what)
        data = SequenceTensors(
            history, users, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=False
        )
        now = time_to_prediction_buckets(history, users, as_of)
        side = self._side(features, len(users), what=what)
        logits = self._in_batches(
            len(users),
            lambda rows, device: self._class_logits(
                data.items[rows].to(device),
                data.types[rows].to(device),
                data.buckets[rows].to(device),
                now[rows].to(device),
                side[rows].to(device),
            ),
            empty=torch.zeros(0, len(self.classes_)),
        )
        return torch.softmax(logits.float(), dim=-1).numpy()

    def predict(
        self,
        history: Interactions,
        *,
        users: np.ndarray,
        as_of: np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """The most probable label of each user's sequence (values from ``classes_``)."""
        proba = self.predict_proba(history, users=users, as_of=as_of, features=features)
        return self.classes_[proba.argmax(axis=1)]

    def evaluate(self, labelled: SequenceLabels) -> dict[str, Any]:
        """Classification report (:func:`classification_report`) on ``labelled``."""
        proba = self.predict_proba(
            labelled.history, users=labelled.users, as_of=labelled.as_of, features=labelled.features
        )
        report = classification_report(labelled.labels, proba=proba, classes=self.classes_)
        return {"protocol": f"one label per sequence from its last {self.max_len} events", **report}


# ---------------------------------------------------------------------------------------- event tags
class EventTagger(_LabelHead):
    """One label per event from that event's hidden state (see the module docstring for windows).

    ``bidirectional`` (default ``True``) lets a tag read later events too; set it to ``False`` for
    tags that must be decided online, from past events only. Early-stops on validation macro-F1 (tags
    are often rare, so accuracy would reward predicting the common tag).
    """

    name = "event_tagger"

    def _windowed(
        self, interactions: Interactions, users: np.ndarray
    ) -> tuple[SequenceTensors, torch.Tensor]:
        """Window tensors and the source event index at each of their positions (``-1``: padding)."""
        windows, events = _windows(interactions, users, length=self.max_len)
        rows = np.arange(windows.n_users)
        data = SequenceTensors(
            windows, rows, length=self.max_len, n_buckets=self.n_time_buckets, with_targets=False
        )
        positions = torch.from_numpy(windows.padded_event_index(rows, max_len=self.max_len))
        source = torch.from_numpy(events)[positions.clamp(min=0)]
        return data, torch.where(positions >= 0, source, torch.full_like(positions, -1))

    def fit(
        self,
        tagged: EventTags,
        *,
        valid: EventTags | None = None,
        init_encoder: Mapping[str, torch.Tensor] | None = None,
    ) -> Self:
        """Train on the tagged events; with ``valid``, early-stop on its macro-F1 and keep the best epoch."""
        events = tagged.event_index()
        if len(events) == 0:
            raise ValueError(f"{type(self).__name__}.fit: no tagged event")
        self.classes_ = np.unique(tagged.tags[events])
        self._start(tagged.interactions, init_encoder)
        data, source = self._windowed(tagged.interactions, tagged.selected_users)
        class_of_event = np.full(tagged.interactions.n_events, IGNORE, dtype=np.int64)
        class_of_event[events] = _class_index(
            self.classes_, tagged.tags[events], where=f"{type(self).__name__}.fit"
        )
        targets = torch.where(
            source >= 0,
            torch.from_numpy(class_of_event)[source.clamp(min=0)],
            torch.full_like(source, IGNORE),
        )

        def make_batch(rows: torch.Tensor, generator: torch.Generator) -> Batch:
            return {**data.batch(rows), "targets": targets[rows]}

        def loss_fn(batch: Batch) -> torch.Tensor:
            logits = self.net_(
                batch["items"], batch["types"], batch["buckets"], causal=not self.bidirectional
            )
            keep = batch["targets"] != IGNORE
            return F.cross_entropy(logits[keep], batch["targets"][keep])

        validate = None
        if valid is not None:
            self._check_space(valid.interactions, where="fit(valid=...)")
            valid_events = valid.event_index()

            def validate() -> float:
                predicted = self.predict(valid.interactions, users=valid.selected_users)
                return float(
                    skm.f1_score(valid.tags[valid_events], predicted, average="macro", zero_division=0)
                )

        self._train(n_rows=len(data.items), make_batch=make_batch, loss_fn=loss_fn, validate=validate)
        return self

    def predict_proba(self, interactions: Interactions, *, users: np.ndarray | None = None) -> np.ndarray:
        """``[n_selected_events, n_classes]`` tag probabilities, columns in the order of ``classes_``.

        Rows follow the selected users' events in the order of ``users`` (default: every user), oldest
        first -- with ``users=None`` that is the flat event order of ``interactions``.
        """
        self._fitted()
        self._check_space(interactions, where="predict_proba")
        users = np.arange(interactions.n_users) if users is None else np.asarray(users, dtype=np.int64)
        _check_users(interactions, users, what=f"{type(self).__name__}.predict_proba")
        events = _user_events(interactions, users)
        data, source = self._windowed(interactions, users)
        logits = self._logits(data, causal=not self.bidirectional)
        proba = torch.softmax(logits.float(), dim=-1)
        # Place each real position's row at its event's rank among the selected events.
        rank = np.empty(interactions.n_events, dtype=np.int64)
        rank[events] = np.arange(len(events))
        out = np.zeros((len(events), len(self.classes_)), dtype=np.float32)
        real = source >= 0
        out[rank[source[real].numpy()]] = proba[real].numpy()
        return out

    def predict(self, interactions: Interactions, *, users: np.ndarray | None = None) -> np.ndarray:
        """The most probable tag of each selected event (values from ``classes_``), rows as in :meth:`predict_proba`."""
        return self.classes_[self.predict_proba(interactions, users=users).argmax(axis=1)]

    def evaluate(self, tagged: EventTags) -> dict[str, Any]:
        """Classification report (:func:`classification_report`) over the tagged events."""
        proba = self.predict_proba(tagged.interactions, users=tagged.selected_users)
        report = classification_report(tagged.tags[tagged.event_index()], proba=proba, classes=self.classes_)
        return {"protocol": f"one tag per event, windows of {self.max_len} events", **report}


def intent_classes(model: Any) -> list[str]:
    """Column names of an intent model's ``predict_proba``: event types (``NextEventTypeModel``), or the
    classifier's labels (``SequenceClassifier``, ``PurchasePropensity``)."""
    if hasattr(model, "classes_"):
        return [str(c) for c in model.classes_]
    return list(model.event_type_vocab_)


@dataclass(frozen=True)
class IntentReading:
    """What an intent model says about one user: class probabilities (columns :func:`intent_classes`) and,
    for a model that can tell (``PurchasePropensity``), the features that move it most."""

    classes: list[str]
    """Column names of ``probabilities`` (:func:`intent_classes`)."""
    probabilities: np.ndarray
    reasons: list[Any]
    """``PropensityReason`` objects, strongest first; empty for the sequence heads."""

    def ranked(self) -> list[tuple[str, float]]:
        """``(class, probability)`` pairs, most likely first (ties keep the column order)."""
        return sorted(zip(self.classes, self.probabilities.tolist(), strict=True), key=lambda kv: -kv[1])


def read_intent(model: Any, history: Interactions, *, now: Callable[[], int] | None = None) -> IntentReading:
    """One user's (index 0 of ``history``) intent: every interface (the service, ``explain``, the LLM
    facts) reads it here.

    A :class:`~behaviorlm.models.propensity.PurchasePropensity` reads how long ago the user's events were:
    it answers as of ``now()`` (UTC seconds; the callers pass :func:`behaviorlm.data.purchase.store_now`,
    one second after the store's latest event), never before the user's own latest event, and without
    ``now`` as of that event. The sequence heads read the events alone and never call ``now``.
    """
    from behaviorlm.models.propensity import PurchasePropensity

    if isinstance(model, PurchasePropensity):
        as_of = None
        if now is not None and history.n_events:
            as_of = max(int(now()), int(history.timestamps.max()) + 1)
        probabilities, reasons = model.predict_with_reasons(history, user=0, as_of=as_of)
        return IntentReading(classes=intent_classes(model), probabilities=probabilities, reasons=reasons)
    # SequenceClassifier requires the users; the others accept them.
    return IntentReading(
        classes=intent_classes(model),
        probabilities=model.predict_proba(history, users=np.array([0]))[0],
        reasons=[],
    )
