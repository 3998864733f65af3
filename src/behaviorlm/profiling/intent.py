"""Every user's intent at once: a saved intent model applied to the whole store as of a moment.

:func:`score_users` is what ``behaviorlm score`` writes: for a
:class:`~behaviorlm.models.propensity.PurchasePropensity`, each user's probability of a purchase within
its horizon with the features that move it most (who is likely to buy tomorrow, and why: a campaign's
list); for a sequence head (``SequenceClassifier``, ``NextEventTypeModel``) each user's class
probabilities from their latest events. Only events before ``as_of`` are read, so the same call on an
old cutoff reproduces what the model would have said then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import align_to_space
from behaviorlm.models.heads import intent_classes
from behaviorlm.models.propensity import PropensityReason, PurchasePropensity


@dataclass(frozen=True)
class UserScores:
    """Users (external ids) with an event before ``as_of`` and what the model says about each."""

    as_of: int
    user_ids: np.ndarray
    classes: list[str]
    probabilities: np.ndarray
    """``[len(user_ids), len(classes)]``."""
    reasons: list[list[PropensityReason]] | None
    """Per user, the strongest features first (a ``PurchasePropensity`` asked for them), else ``None``."""

    @property
    def ranked_by(self) -> str | None:
        """The class users are ranked by: the positive one of a two-class model (``purchase within
        24h``, ``1``), else ``None`` (the rows stay in store order)."""
        return self.classes[1] if len(self.classes) == 2 else None

    def order(self) -> np.ndarray:
        """Row order, most likely first by :attr:`ranked_by` (store order when there is none)."""
        if self.ranked_by is None:
            return np.arange(len(self.user_ids))
        return np.argsort(-self.probabilities[:, 1], kind="stable")


def score_users(
    model: Any, interactions: Interactions, *, as_of: int | None = None, reasons: int = 0
) -> UserScores:
    """What ``model`` says about every user with an event before ``as_of`` (UTC seconds; default one
    second after the latest event: the data's "now"). ``reasons``: how many features to give per user
    (``PurchasePropensity`` only; 0: none)."""
    if interactions.n_events == 0:
        raise ValueError("the store holds no events")
    as_of = int(interactions.timestamps.max()) + 1 if as_of is None else int(as_of)
    if reasons < 0:
        raise ValueError(f"reasons must be >= 0, got {reasons}")
    if isinstance(model, PurchasePropensity):
        snapshot = model.snapshot(interactions, cutoff=as_of)  # a ValueError when nobody is active yet
        p = model.predict_snapshot(snapshot)
        return UserScores(
            as_of=as_of,
            user_ids=np.asarray(interactions.user_ids)[snapshot.users],
            classes=intent_classes(model),
            probabilities=np.column_stack([1.0 - p, p]),
            reasons=model.snapshot_reasons(snapshot, top=reasons) if reasons else None,
        )
    if reasons:
        raise ValueError(f"reasons are given by a purchase_propensity model, not by {model.name}")
    # The head's own item and event-type spaces; events on items or types it has never seen are left out,
    # as model_history does for one user.
    history = align_to_space(
        interactions.filter_events(interactions.timestamps < as_of),
        item_ids=model.item_ids_,
        event_type_vocab=tuple(model.event_type_vocab_),
    )
    users = np.flatnonzero(history.lengths() > 0)
    if len(users) == 0:
        raise ValueError(f"no user has an event before as_of={as_of}")
    return UserScores(
        as_of=as_of,
        user_ids=np.asarray(history.user_ids)[users],
        classes=intent_classes(model),
        probabilities=np.asarray(model.predict_proba(history, users=users), dtype=np.float64),
        reasons=None,
    )
