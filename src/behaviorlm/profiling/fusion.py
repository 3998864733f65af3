"""Text + behaviour: a user's text interest mixed with a behaviour model's scores, the mix chosen on validation.

Two scorers of the next item:

* **behaviour** -- any fitted recommender's ``score``. For a sequence model that is ``h_u · e_j``, with
  ``h_u`` its state after the user's history (the representation
  :func:`behaviorlm.profiling.segments.user_representations` returns) and ``e_j`` the item's embedding.
* **text** -- :class:`TextInterestRecommender`: the cosine ``t_u · v_j`` between the user's text interest
  ``t_u`` and the item's text vector ``v_j``. ``v_j`` is the normalised sum of the unit embedding of the
  item's description (title, category, ...: :func:`behaviorlm.data.text.item_texts`) and the unit mean
  embedding of the reviews written about it in *training* events. ``t_u`` is the normalised sum of the
  recency-weighted mean of the text vectors of the items in the user's history
  (:func:`.interests.user_interest_vectors`) and the recency-weighted mean of the reviews the user wrote in
  training events (:func:`.interests.written_text_vectors`). No text of a validation or test event is read.

:class:`FusedRecommender` ranks by

    s(u, j) = w_text · z_u(t_u · v_j) + w_behaviour · z_u(h_u · e_j),    w_behaviour = 1 - w_text,

where ``z_u`` standardises user ``u``'s row over the catalogue (zero mean, unit variance): cosines and
logits live on unrelated scales, and per-row z-scores make one weight mean the same for every user. The
fused profile is thus the concatenation ``[w_text · t_u / σ_text(u), w_behaviour · h_u / σ_behaviour(u)]``
scored against ``[v_j, e_j]``. ``w_text`` is picked from a grid by NDCG@10 on the validation targets only
(a "weighted" hybrid in Burke's taxonomy: Burke, "Hybrid Recommender Systems: Survey and Experiments",
User Modeling and User-Adapted Interaction 12, 2002); the test targets are read once, after the choice.
``w_text = 0`` is the behaviour model alone and ``1`` the text scorer alone, so the grid contains both
and validation decides whether text earns any weight.

:func:`evaluate_by_history_length` reports the full-ranking metrics per bucket of users by the number of
events in their training history (1-2, 3-5, 6-20, more than 20), which is where text should matter most:
a short history says little about behaviour, while one review already says something about taste.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.ranking import RankingResult, RankingValidation, evaluate_ranking
from behaviorlm.models.base import Recommender, ScoringBatch, Validation
from behaviorlm.profiling.interests import user_interest_vectors, written_text_vectors

TEXT_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))
"""The grid ``w_text`` is chosen from: 0, 0.05, ..., 1."""

HISTORY_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 2), (3, 5), (6, 20), (21, None))
"""Buckets of users by number of training events: ``(lowest, highest)`` inclusive, ``None`` = no bound."""


def bucket_label(bucket: tuple[int, int | None]) -> str:
    """``"1-2"``, ``"3-5"``, ``"6-20"``, ``">20"``."""
    low, high = bucket
    return f">{low - 1}" if high is None else f"{low}-{high}"


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def prefix_event_index(full: Interactions, part: Interactions) -> np.ndarray:
    """Flat indices into ``full`` of the events of ``part``, where each user's events in ``part`` are the
    first events of that user in ``full`` -- true of a leave-one-out or temporal split's ``train`` and
    ``test_history``. Use it to carry per-event data (texts, their vectors) from the whole data to a split.

    Raises:
        ValueError: if the two do not share users, or a user's events in ``part`` are not a prefix of theirs
            in ``full``.
    """
    if not np.array_equal(full.user_ids, part.user_ids) or not np.array_equal(full.item_ids, part.item_ids):
        raise ValueError("full and part must share one index space (users and items)")
    lengths = part.lengths()
    if np.any(lengths > full.lengths()):
        raise ValueError("part has more events for some user than full")
    starts = np.repeat(full.user_ptr[:-1], lengths)
    index = starts + np.arange(part.n_events) - np.repeat(part.user_ptr[:-1], lengths)
    if not (
        np.array_equal(full.items[index], part.items)
        and np.array_equal(full.timestamps[index], part.timestamps)
    ):
        raise ValueError("part's events are not the first events of each user in full (not a prefix split)")
    return index


class TextInterestRecommender(Recommender):
    """Ranks items by the cosine between the user's text interest and the item's text vector.

    See the module docstring for both vectors. ``half_life_days`` is the recency half-life of both the
    history part and the written part of the interest; ``written_weight`` scales the unit vector of the
    user's own reviews against the unit vector of their items (1: equal say).

    Fit with ``fit(train, review_vectors=..., item_description_vectors=...)``: ``review_vectors[e]`` embeds
    the text written with training event ``e`` (a zero row where none), ``item_description_vectors[j]``
    item ``j``'s description; at least one of them is needed. Not saved: it is refitted from the texts in
    seconds.
    """

    name = "text-interest"

    def __init__(self, *, half_life_days: float = 30.0, written_weight: float = 1.0) -> None:
        self.half_life_days = half_life_days
        self.written_weight = written_weight

    def fit(
        self,
        train: Interactions,
        *,
        valid: Validation | None = None,
        review_vectors: np.ndarray | None = None,
        item_description_vectors: np.ndarray | None = None,
    ) -> Self:
        """Build item text vectors and users' written-text vectors from ``train`` (``valid`` is not read)."""
        if review_vectors is None and item_description_vectors is None:
            raise ValueError(
                "TextInterestRecommender.fit needs review_vectors, item_description_vectors or both"
            )
        if review_vectors is not None and len(review_vectors) != train.n_events:
            raise ValueError(
                f"review_vectors has {len(review_vectors)} rows for {train.n_events} training events"
            )
        if item_description_vectors is not None and len(item_description_vectors) != train.n_items:
            raise ValueError(
                f"item_description_vectors has {len(item_description_vectors)} rows for {train.n_items} items"
            )
        self._texts = (review_vectors, item_description_vectors)
        try:
            return super().fit(train, valid=valid)
        finally:
            del self._texts

    def _fit(self, train: Interactions) -> None:
        reviews, descriptions = self._texts
        dim = (reviews if reviews is not None else descriptions).shape[1]
        item_vectors = np.zeros((train.n_items, dim))
        self.written_ = np.zeros((train.n_users, dim), dtype=np.float32)
        if reviews is not None:
            review_sums = np.zeros((train.n_items, dim))
            np.add.at(review_sums, train.items, np.asarray(reviews, dtype=np.float64))
            item_vectors += _unit_rows(review_sums)
            self.written_ = written_text_vectors(train, reviews, half_life_days=self.half_life_days)
        if descriptions is not None:
            item_vectors += _unit_rows(np.asarray(descriptions, dtype=np.float64))
        self.item_vectors_ = _unit_rows(item_vectors)

    def interest_vectors(self, batch: ScoringBatch) -> np.ndarray:
        """``[len(batch.users), d]`` text interest of each user of the batch, from the batch's history."""
        self._fitted()
        history, users = batch.history, batch.users
        lengths = history.lengths()[users]
        starts = history.user_ptr[users]
        ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        events = np.repeat(starts, lengths) + np.arange(ptr[-1]) - np.repeat(ptr[:-1], lengths)
        # Only the batch's users, but weighted by age relative to the whole history's last event, as a
        # call over every user would.
        own = Interactions(
            user_ids=history.user_ids[users],
            item_ids=history.item_ids,
            user_ptr=ptr,
            items=history.items[events],
            timestamps=history.timestamps[events],
            event_types=history.event_types[events],
            event_type_vocab=history.event_type_vocab,
        )
        now = int(history.timestamps.max()) if history.n_events else 0
        items_part = user_interest_vectors(
            own, self.item_vectors_, half_life_days=self.half_life_days, now=now
        )
        return _unit_rows(items_part + self.written_weight * self.written_[users])

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        if batch.history.n_items != self.n_items:
            raise ValueError(f"history has {batch.history.n_items} items, the model {self.n_items}")
        return torch.from_numpy(self.interest_vectors(batch) @ self.item_vectors_.T)

    def save(self, path: str | Path) -> Path:
        raise ValueError(
            f"{type(self).__name__} is not saved: fit it again from the texts (it takes seconds)"
        )


def standardize_rows(scores: torch.Tensor) -> torch.Tensor:
    """Each row minus its mean, divided by its standard deviation (rows with no spread become zeros)."""
    scores = scores.float()
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, keepdim=True, unbiased=False)
    return torch.where(std > 0, (scores - mean) / std.clamp(min=1e-12), torch.zeros_like(scores))


def fused_scores(behaviour: torch.Tensor, text: torch.Tensor, *, text_weight: float) -> torch.Tensor:
    """``text_weight · z(text) + (1 - text_weight) · z(behaviour)``, z-scored per row (a new tensor)."""
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must be in [0, 1], got {text_weight}")
    if behaviour.shape != text.shape:
        raise ValueError(
            f"behaviour scores {tuple(behaviour.shape)} and text scores {tuple(text.shape)} differ"
        )
    text = text.to(behaviour.device)
    return text_weight * standardize_rows(text) + (1.0 - text_weight) * standardize_rows(behaviour)


@dataclass(frozen=True)
class WeightSelection:
    """The chosen text weight and the validation metric of every weight tried."""

    text_weight: float
    metric: str
    validation: dict[float, float]

    @property
    def behaviour_weight(self) -> float:
        return 1.0 - self.text_weight


class FusedRecommender(Recommender):
    """``w_text · z(text score) + (1 - w_text) · z(behaviour score)`` with ``w_text`` chosen on validation.

    ``behaviour`` and ``text`` are recommenders already fitted on the training split this model is fitted
    on; :meth:`fit` (``fit(train, valid=RankingValidation(train, valid_targets, metric=...))``) only chooses
    the weight: the ``text_weights`` value with the best validation metric (full ranking of the targets
    from ``train``, seen items masked), the smallest weight among equals, so text has to improve
    validation to get any say. The result is in ``selection_``. Not saved: save the behaviour model and
    fit the fusion again.

    ``cache_megabytes`` bounds the memory used to keep the components' validation scores between grid
    points (each component is scored once when they fit, every time otherwise).
    """

    name = "text-behaviour-fusion"

    def __init__(
        self,
        *,
        behaviour: Recommender,
        text: Recommender,
        text_weights: tuple[float, ...] = TEXT_WEIGHTS,
        cache_megabytes: float = 1024.0,
    ) -> None:
        self.behaviour = behaviour
        self.text = text
        self.text_weights = text_weights
        self.cache_megabytes = cache_megabytes

    def fit(self, train: Interactions, *, valid: Validation | None = None) -> Self:
        if not isinstance(valid, RankingValidation) or valid.targets.n_events == 0:
            raise ValueError(
                "FusedRecommender.fit needs validation targets: "
                "fit(train, valid=RankingValidation(train, valid_targets))"
            )
        return super().fit(train, valid=valid)

    def _fit(self, train: Interactions) -> None:
        valid: RankingValidation = self._valid
        for part, component in (("behaviour", self.behaviour), ("text", self.text)):
            fitted_on = component.trained_on
            if fitted_on.n_items != train.n_items or fitted_on.n_users != train.n_users:
                raise ValueError(f"the {part} model was fitted on another index space than train")
        n_valid_users = len(np.unique(valid.targets.event_users()))
        cache_bytes = 2 * 4 * n_valid_users * train.n_items
        self._cache: dict[bytes, tuple[torch.Tensor, torch.Tensor]] | None = (
            {} if cache_bytes <= self.cache_megabytes * 2**20 else None
        )
        results: dict[float, float] = {}
        try:
            for weight in self.text_weights:
                self.text_weight_ = float(weight)
                results[float(weight)] = valid(self)
        finally:
            del self._cache
        best = max(results.values())
        chosen = min(w for w, value in results.items() if value == best)
        self.text_weight_ = chosen
        self.selection_ = WeightSelection(text_weight=chosen, metric=valid.metric, validation=results)

    def _component_scores(self, batch: ScoringBatch) -> tuple[torch.Tensor, torch.Tensor]:
        cache = getattr(self, "_cache", None)
        key = batch.users.tobytes()
        if cache is not None and key in cache:
            return cache[key]
        with torch.no_grad():
            scores = (self.behaviour.score(batch).float(), self.text.score(batch).float())
        if cache is not None:
            cache[key] = scores
        return scores

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        if not hasattr(self, "text_weight_"):
            raise RuntimeError(
                "FusedRecommender is not fitted yet: call fit(train, valid=RankingValidation(train, targets))"
            )
        behaviour, text = self._component_scores(batch)
        return fused_scores(behaviour, text, text_weight=self.text_weight_)

    def save(self, path: str | Path) -> Path:
        raise ValueError(
            f"{type(self).__name__} is not saved: save the behaviour model and fit the fusion again"
        )


def fit_text_scorer(
    store: EventStore,
    data: Interactions,
    train: Interactions,
    *,
    embedder: Any = None,
    reviews: bool = True,
    descriptions: bool = True,
    cache: bool = True,
) -> TextInterestRecommender:
    """The text scorer of ``train`` (a prefix split of ``data = store.interactions()``): the reviews
    written in training events and the items' descriptions (:func:`behaviorlm.data.text.item_texts`),
    embedded with the packaged sentence model (cached in ``store`` when ``cache``). No text of a
    validation or test event is read. A ``ValueError`` when the store holds neither kind of text."""
    from behaviorlm.data.text import default_embedder, event_texts, item_texts, text_vectors

    embedder = embedder or default_embedder()
    cache_in = store if cache else None
    review_vectors = description_vectors = None
    if reviews:
        texts = event_texts(store, data)
        train_texts = [texts[i] for i in prefix_event_index(data, train)]
        if any(t.strip() for t in train_texts):
            review_vectors = text_vectors(train_texts, embedder=embedder, store=cache_in)
    if descriptions:
        texts = item_texts(store, [str(i) for i in data.item_ids])
        if any(t.strip() for t in texts):
            description_vectors = text_vectors(texts, embedder=embedder, store=cache_in)
    if review_vectors is None and description_vectors is None:
        raise ValueError(
            "the store holds no text to fuse: no review text in training events and no item title, "
            "category, brand or description"
        )
    return TextInterestRecommender().fit(
        train, review_vectors=review_vectors, item_description_vectors=description_vectors
    )


def history_length_buckets(
    lengths: np.ndarray, buckets: tuple[tuple[int, int | None], ...] = HISTORY_BUCKETS
) -> dict[str, np.ndarray]:
    """User indices per bucket of ``lengths`` (e.g. ``split.train.lengths()``), keyed by :func:`bucket_label`."""
    out = {}
    for low, high in buckets:
        inside = (lengths >= low) & (lengths <= (high if high is not None else np.iinfo(np.int64).max))
        out[bucket_label((low, high))] = np.flatnonzero(inside)
    return out


def evaluate_by_history_length(
    model: Recommender,
    *,
    history: Interactions,
    targets: Interactions,
    lengths: np.ndarray,
    buckets: tuple[tuple[int, int | None], ...] = HISTORY_BUCKETS,
    ks: tuple[int, ...] = (10,),
    split_name: str = "leave-one-out",
) -> dict[str, RankingResult | None]:
    """Full-ranking metrics of ``model`` over all users with targets (key ``"all"``) and per history-length
    bucket (``lengths[u]``: user ``u``'s number of training events); ``None`` for a bucket with no user
    that has a target."""
    out: dict[str, RankingResult | None] = {
        "all": evaluate_ranking(model, history=history, targets=targets, ks=ks, split_name=split_name)
    }
    with_targets = np.unique(targets.event_users())
    for label, users in history_length_buckets(lengths, buckets).items():
        users = np.intersect1d(users, with_targets)
        out[label] = (
            evaluate_ranking(
                model, history=history, targets=targets, ks=ks, users=users, split_name=split_name
            )
            if len(users)
            else None
        )
    return out
