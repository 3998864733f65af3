"""The common model interface: ``fit(train)``, ``score(batch)``, ``recommend(users, k)``.

Every model follows scikit-learn's conventions: the constructor only stores its (keyword) arguments,
learned state ends in ``_``, ``fit`` returns ``self``. Scoring is explicit about its input: a
:class:`ScoringBatch` names the users to score and the interaction history the model may read for them,
so an evaluator can hand a model "train + validation" as history when ranking test targets without the
model ever seeing the targets.

Persistence never uses pickle: :meth:`Recommender.save` writes ``model.json`` (class name, constructor
arguments, plain metadata) and ``weights.safetensors`` (tensors), and :func:`behaviorlm.models.registry.load_model` reads them back
through an explicit registry of model classes, checking the folder first (a tampered one is a
:class:`ModelLoadError` with the reason, never a traceback from deep inside).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

from behaviorlm.data.sequences import Interactions
from behaviorlm.estimator import Estimator, json_params

MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(eq=False)
class ScoringBatch:
    """The users to score and the history the model may read for them.

    ``history`` shares the index space of the model's training data; only the rows of ``users`` are
    read. ``history_csr`` is the binary user x item matrix of those rows, built once per batch.
    """

    users: np.ndarray
    history: Interactions
    _csr: sp.csr_matrix | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)

    @property
    def history_csr(self) -> sp.csr_matrix:
        if self._csr is None:
            self._csr = self.history.csr_rows(self.users)
        return self._csr


@dataclass(frozen=True)
class Recommendations:
    """Top-k recommendations: ``items`` and ``scores`` are ``[n_users, k]``, best first."""

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def to_arrow(self, space: Interactions | None = None) -> Any:
        """A long ``pyarrow.Table``: ``user``, ``rank`` (1 = best), ``item``, ``score``; with ``space`` (e.g.
        ``model.trained_on``) users and items are their external ids, else indices. Entries scored
        ``-inf`` (seen items masked, reached only when ``k`` passes the unseen ones) are left out;
        ``.to_pandas()`` or ``polars.from_arrow`` give a DataFrame."""
        import pyarrow as pa

        n_users, k = self.items.shape
        keep = np.isfinite(self.scores).ravel()
        users = np.repeat(np.asarray(self.users), k)[keep]
        items = self.items.ravel()[keep]
        if space is not None:
            users, items = space.user_ids[users].astype(str), space.item_ids[items].astype(str)
        return pa.table(
            {
                "user": users,
                "rank": np.tile(np.arange(1, k + 1), n_users)[keep],
                "item": items,
                "score": self.scores.ravel()[keep].astype(np.float64),
            }
        )

    def to_pandas(self, space: Interactions | None = None) -> Any:
        """:meth:`to_arrow` as a pandas DataFrame."""
        return self.to_arrow(space).to_pandas()


Validation = Callable[["Recommender"], float]
"""A model's score on held-out data, higher is better: what early stopping and model selection read.

The caller builds it (``behaviorlm.evaluation.ranking.RankingValidation`` for the full-ranking protocol),
so models never import the evaluation package. One with an ``empty`` attribute that is true has nothing to
score (no validation targets): models then train without early stopping (:func:`active_validation`)."""


def active_validation(valid: Validation | None) -> Validation | None:
    """``valid``, or None when there is none or it has nothing to score (``valid.empty``)."""
    return None if valid is None or getattr(valid, "empty", False) else valid


def check_validation(valid: object, *, where: str) -> None:
    """A clear error for ``fit(valid=...)`` given data instead of a :data:`Validation` callable."""
    if valid is not None and not callable(valid):
        raise TypeError(
            f"{where}: valid= takes a validation callable (model -> score, higher is better), got "
            f"{type(valid).__name__}; for validation targets pass "
            "behaviorlm.evaluation.ranking.RankingValidation(train, valid_targets)"
        )


class Recommender(Estimator, ABC):
    """Base class of every recommender. Subclasses implement ``_fit``, ``score`` and the state hooks."""

    name: ClassVar[str]
    """Registry name, e.g. ``"ease"``; used in checkpoints and on the command line."""

    scores_by_history_length: ClassVar[bool] = False
    """``score`` costs less when a batch's users have histories of similar length (a sequence model cuts
    its batch to the longest window); full-ranking evaluation then takes the users in that order."""

    train_: Interactions

    def fit(self, train: Interactions, *, valid: Validation | None = None) -> Self:
        """Learn from ``train`` and return ``self``.

        ``valid`` scores the model on held-out data (higher is better) for models that tune or stop early
        on it — usually ``behaviorlm.evaluation.ranking.RankingValidation(train, valid_targets)``, NDCG@10
        of the validation targets under full ranking; models without such a step ignore it.
        """
        if train.n_events == 0:
            raise ValueError(f"{type(self).__name__}.fit: the training data has no interactions")
        check_validation(valid, where=f"{type(self).__name__}.fit")
        self.train_ = train
        self._valid = valid
        try:
            self._fit(train)
        except BaseException:
            # A failed fit must not leave a model that looks fitted but has no learned state.
            del self.train_
            raise
        finally:
            del self._valid
        return self

    @abstractmethod
    def _fit(self, train: Interactions) -> None: ...

    @abstractmethod
    def score(self, batch: ScoringBatch) -> torch.Tensor:
        """Scores ``float32 [len(batch.users), n_items]``; higher means more likely next.

        The tensor lives on the model's device (a GPU model's scores stay on the GPU, where ranking
        and masking run too); call ``.cpu()`` before ``.numpy()``.
        """

    @property
    def n_items(self) -> int:
        return self._fitted().n_items

    def recommend(
        self,
        users: np.ndarray,
        *,
        k: int = 10,
        exclude_seen: bool = True,
        history: Interactions | None = None,
        batch_size: int = 1024,
    ) -> Recommendations:
        """Top-``k`` items for each user, reading ``history`` (default: the training data)."""
        train = self._fitted()
        history = train if history is None else history
        users = np.asarray(users, dtype=np.int64)
        k = min(k, train.n_items)
        out_items = np.empty((len(users), k), dtype=np.int64)
        out_scores = np.empty((len(users), k), dtype=np.float32)
        for start in range(0, len(users), batch_size):
            batch = ScoringBatch(users=users[start : start + batch_size], history=history)
            scores = self.score(batch)
            if exclude_seen:
                mask_seen_(scores, batch.history_csr)
            top = torch.topk(scores, k, dim=1)
            out_items[start : start + len(batch.users)] = top.indices.cpu().numpy()
            out_scores[start : start + len(batch.users)] = top.values.float().cpu().numpy()
        return Recommendations(users=users, items=out_items, scores=out_scores)

    def recommend_one(
        self, history: Interactions, *, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` items for the one user (index 0) of ``history``: a request's history, the real-time
        path of the service, the CLI and the language-model facts. The same as ``recommend([0], history=...)``;
        sequence models override it with a path that builds no batch."""
        return self.recommend(np.array([0]), k=k, exclude_seen=exclude_seen, history=history)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save; subclasses extend."""
        return {}

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`_state` returned; models without learned tensors keep this no-op."""

    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` + ``weights.safetensors`` (plus the training index space) into ``path``."""
        train = self._fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"state.{k}": v.contiguous() for k, v in self._state().items()}
        tensors["train.user_ptr"] = torch.from_numpy(train.user_ptr)
        tensors["train.items"] = torch.from_numpy(train.items)
        tensors["train.timestamps"] = torch.from_numpy(train.timestamps)
        tensors["train.event_types"] = torch.from_numpy(train.event_types.astype(np.int64))
        save_file(tensors, str(path / WEIGHTS_FILE))
        meta = {
            "model": self.name,
            "params": json_params(self),
            "user_ids": train.user_ids.tolist(),
            "item_ids": train.item_ids.tolist(),
            "event_type_vocab": list(train.event_type_vocab),
        }
        (path / MODEL_JSON).write_text(json.dumps(meta))
        return path

    @property
    def trained_on(self) -> Interactions:
        """The interactions the model was fitted on: its user/item index space and event-type vocabulary."""
        return self._fitted()

    def _fitted(self) -> Interactions:
        if not hasattr(self, "train_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(train) first")
        return self.train_


def align_to_model(interactions: Interactions, model: Recommender) -> Interactions:
    """``interactions`` re-indexed into ``model``'s item space and event-type vocabulary.

    Events on items or of types the model was not trained on are left out (e.g. items first seen after
    training); users keep their order. Use it to run a fitted model over a store that has grown since.
    """
    train = model.trained_on
    return align_to_space(interactions, item_ids=train.item_ids, event_type_vocab=train.event_type_vocab)


def align_to_space(
    interactions: Interactions, *, item_ids: np.ndarray, event_type_vocab: tuple[str, ...]
) -> Interactions:
    """``interactions`` re-indexed into the item space ``item_ids`` (compared as strings) and the
    vocabulary ``event_type_vocab``: :func:`align_to_model` for any model that keeps its spaces (a task
    head's ``item_ids_`` / ``event_type_vocab_``). Events outside them are left out; users keep their
    order."""
    index = {str(item): n for n, item in enumerate(np.asarray(item_ids).tolist())}
    item_map = np.array([index.get(str(item), -1) for item in interactions.item_ids.tolist()], dtype=np.int64)
    type_index = {name: n for n, name in enumerate(event_type_vocab)}
    type_map = np.array([type_index.get(name, -1) for name in interactions.event_type_vocab], dtype=np.int64)
    keep = (item_map[interactions.items] >= 0) & (type_map[interactions.event_types.astype(np.int64)] >= 0)
    kept = interactions.filter_events(keep)
    return Interactions(
        user_ids=kept.user_ids,
        item_ids=np.asarray(item_ids),
        user_ptr=kept.user_ptr,
        items=item_map[kept.items],
        timestamps=kept.timestamps,
        event_types=type_map[kept.event_types.astype(np.int64)].astype(np.int16),
        event_type_vocab=tuple(event_type_vocab),
    )


def mask_seen_(scores: torch.Tensor, history_csr: sp.csr_matrix) -> torch.Tensor:
    """Set the scores of items in each row's history to ``-inf`` (in place) and return ``scores``."""
    rows = torch.from_numpy(np.repeat(np.arange(history_csr.shape[0]), np.diff(history_csr.indptr)))
    cols = torch.from_numpy(history_csr.indices.astype(np.int64))
    scores[rows.to(scores.device), cols.to(scores.device)] = -torch.inf
    return scores


_REGISTRY: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator adding a model to the registry :mod:`behaviorlm.models.registry` loads from."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"model name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registered_models() -> dict[str, type[Recommender]]:
    """The model classes registered so far, by name (:func:`behaviorlm.models.registry.model_registry` imports
    the built-in model modules first)."""
    return dict(_REGISTRY)
