"""Purchase propensity: will this user buy within the next ``hours``? A user-level intent model.

A *snapshot* at time ``cutoff`` takes every user with an event before it and describes them with what was
known then: the behaviour features of :func:`behaviorlm.data.user_features.user_features_at` (recency,
frequency, tenure, active days, 7- and 30-day activity, breadth, purchase and cart shares; the churn
model's features) plus each event type's count in the last 3 / 12 / 24 / 48 hours before the cutoff
(:data:`RECENT_HOURS`). The label is a purchase in ``[cutoff, cutoff + hours)``. :class:`PurchasePropensity` is a logistic regression on
``log(1 + feature)`` with its regularisation ``C`` chosen on validation snapshots' ROC-AUC and its
probabilities then recalibrated on them (Platt scaling, folded into the coefficients).

Why this model and not a sequence model: on the 9-day Taobao slice (daily cutoffs, a purchase in the next
24 hours; ``benchmarks/run_purchase_users.py``, docs/graph.md) it was the best of every model tried —
ROC-AUC 0.609 against gradient boosting's 0.568 on the same users, while the behaviour Transformer with a
classification head, from scratch or pretrained, scored 0.55-0.58 and added nothing when stacked on top.
The recent-hours counts carry the signal; a linear model reads them directly.

The fitted model is a few numbers (``model.json``: coefficients, intercept, feature names, the event types
its count columns stand for); :func:`behaviorlm.models.registry.load_model` reads it back exactly, and it
serves as an intent model (``--intent-model``, the service's ``/v1/users/{id}/intent``): classes
``"no purchase within 24h"`` / ``"purchase within 24h"``, computed as of the store's latest event time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import sklearn.metrics as skm

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.user_features import USER_FEATURES, user_features_at
from behaviorlm.estimator import Estimator, json_params
from behaviorlm.models.base import MODEL_JSON, WEIGHTS_FILE
from behaviorlm.models.sequential import EventHistory, raw_history

RECENT_HOURS: tuple[int, ...] = (3, 12, 24, 48)
"""The short windows (hours before the cutoff) whose per-event-type counts are features."""

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried; the first with the best validation ROC-AUC wins."""

FEATURE_LABELS = {
    "days_since_last_event": "days since the last event",
    "events": "events so far",
    "tenure_days": "days from the first to the last event",
    "active_days": "active days",
    "events_last_7_days": "events in the last 7 days",
    "events_last_30_days": "events in the last 30 days",
    "recent_share": "share of events in the last 30 days",
    "mean_gap_days": "mean days between events",
    "distinct_item_share": "share of distinct items among the events",
    "purchase_share": "share of purchases among the events",
    "cart_share": "share of cart events among the events",
}
"""Words for the user features, as reasons name them."""


def feature_label(name: str) -> str:
    """A feature name in words: ``cart_last_3h`` -> ``cart events in the last 3 h``."""
    if name in FEATURE_LABELS:
        return FEATURE_LABELS[name]
    kind, _, hours = name.rpartition("_last_")
    return f"{kind} events in the last {hours.removesuffix('h')} h" if kind else name


@dataclass(frozen=True)
class PropensityReason:
    """One feature's share of a user's purchase log-odds, against the average training user: the
    coefficient times how far the user's ``log(1 + value)`` is from the training mean. The reasons of a
    prediction add up, with the average user's log-odds, to its log-odds exactly."""

    feature: str
    label: str
    """The feature in words (:func:`feature_label`)."""
    value: float
    """The user's value of the feature."""
    log_odds: float
    """Positive: this feature makes a purchase more likely than for the average training user."""

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "label": self.label, "value": self.value, "log_odds": self.log_odds}


@dataclass(frozen=True)
class PropensitySnapshot:
    """Users active before ``cutoff``, their features then and (for training and evaluation) whether they
    purchased within ``hours`` after it."""

    cutoff: int
    users: np.ndarray
    """User indices into the source :class:`Interactions`."""
    features: np.ndarray
    """``float64 [len(users), len(feature_names(event_types))]``."""
    event_types: tuple[str, ...]
    """The event types whose recent counts are columns (see :func:`feature_names`)."""
    labels: np.ndarray | None = None
    """``int64 [len(users)]``: 1 = a purchase in ``[cutoff, cutoff + hours)``."""


def feature_names(event_types: Sequence[str]) -> tuple[str, ...]:
    """Column names of :func:`propensity_features` for a model counting ``event_types``."""
    recent = tuple(f"{t}_last_{h}h" for h in RECENT_HOURS for t in event_types)
    return (*USER_FEATURES, *recent)


def propensity_features(
    interactions: Interactions, *, cutoff: int, event_types: Sequence[str] | None = None
) -> PropensitySnapshot:
    """The unlabelled snapshot at ``cutoff`` (UTC seconds): every user with an event before it.

    ``event_types``: the types whose recent counts are columns, in this order (a fitted model passes its
    own; default: the vocabulary of ``interactions``). A type the data does not hold counts zero.
    """
    event_types = tuple(interactions.event_type_vocab if event_types is None else event_types)
    users, base = user_features_at(interactions, cutoff=int(cutoff))
    users_of = interactions.event_users()
    vocab = interactions.event_type_vocab
    columns = []
    for hours in RECENT_HOURS:
        recent = (interactions.timestamps < cutoff) & (interactions.timestamps >= cutoff - hours * 3600)
        for name in event_types:
            if name not in vocab:
                columns.append(np.zeros(len(users)))
                continue
            picked = users_of[recent & (interactions.event_types == vocab.index(name))]
            columns.append(np.bincount(picked, minlength=interactions.n_users)[users])
    return PropensitySnapshot(
        cutoff=int(cutoff),
        users=users,
        features=np.column_stack([base, *columns]).astype(np.float64),
        event_types=event_types,
    )


def propensity_snapshot(
    interactions: Interactions,
    *,
    cutoff: int,
    hours: int,
    purchase_type: str = "purchase",
    event_types: Sequence[str] | None = None,
) -> PropensitySnapshot:
    """:func:`propensity_features` at ``cutoff`` labelled with a ``purchase_type`` event in the ``hours``
    after it."""
    if hours < 1:
        raise ValueError(f"hours must be >= 1, got {hours}")
    if purchase_type not in interactions.event_type_vocab:
        raise ValueError(
            f"event type {purchase_type!r} is not in the data's types {list(interactions.event_type_vocab)}"
        )
    snapshot = propensity_features(interactions, cutoff=cutoff, event_types=event_types)
    bought = (
        (interactions.timestamps >= cutoff)
        & (interactions.timestamps < cutoff + hours * 3600)
        & (interactions.event_types == interactions.event_type_vocab.index(purchase_type))
    )
    buyers = np.bincount(interactions.event_users()[bought], minlength=interactions.n_users) > 0
    return PropensitySnapshot(
        cutoff=snapshot.cutoff,
        users=snapshot.users,
        features=snapshot.features,
        event_types=snapshot.event_types,
        labels=buyers[snapshot.users].astype(np.int64),
    )


def _transform(features: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(features, 0.0))


class PurchasePropensity(Estimator):
    """Logistic regression on ``log(1 + features)`` of :func:`propensity_snapshot`: the probability that a
    user purchases within ``hours``. ``max_len``: how many of a user's latest events a single-user request
    reads (the service and ``explain``; 30-day counts and tenure need more than a sequence model's window).
    """

    name = "purchase_propensity"
    saved_name = "purchase_propensity"

    def __init__(self, *, hours: int = 24, purchase_type: str = "purchase", max_len: int = 1000) -> None:
        self.hours = hours
        self.purchase_type = purchase_type
        self.max_len = max_len

    @property
    def classes_(self) -> list[str]:
        """Column names of :meth:`predict_proba`."""
        return [f"no purchase within {self.hours}h", f"purchase within {self.hours}h"]

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("PurchasePropensity is not fitted yet: call fit(train_snapshots) first")

    def fit(
        self, train: Sequence[PropensitySnapshot], *, valid: Sequence[PropensitySnapshot] | None = None
    ) -> Self:
        """Fit on the training snapshots; with ``valid`` (labelled snapshots with both classes), ``C`` is
        the value of :data:`C_GRID` with the best validation ROC-AUC (else 1) and the probabilities are
        recalibrated on them (:meth:`_calibrate`; ``calibration_`` records the slope and intercept)."""
        from sklearn.linear_model import LogisticRegression

        if not train or any(s.labels is None for s in train):
            raise ValueError("PurchasePropensity.fit: give labelled snapshots (propensity_snapshot)")
        event_types = train[0].event_types
        if any(s.event_types != event_types for s in [*train, *(valid or [])]):
            raise ValueError("PurchasePropensity.fit: every snapshot must have the same feature columns")
        x = _transform(np.concatenate([s.features for s in train]))
        y = np.concatenate([s.labels for s in train])
        if y.min() == y.max():
            raise ValueError(
                f"PurchasePropensity.fit: the training snapshots hold only {'buyers' if y[0] else 'non-buyers'}; "
                "both are needed"
            )
        valid = [s for s in valid or [] if s.labels is not None and 0 < s.labels.sum() < len(s.labels)]
        self.valid_roc_auc_: dict[str, float] = {}
        if valid:
            xv = _transform(np.concatenate([s.features for s in valid]))
            yv = np.concatenate([s.labels for s in valid])
        best: tuple[float, float, Any] | None = None
        for c in C_GRID if valid else (1.0,):
            model = LogisticRegression(C=c, max_iter=3000).fit(x, y)
            if valid:
                auc = float(skm.roc_auc_score(yv, model.predict_proba(xv)[:, 1]))
                self.valid_roc_auc_[str(c)] = auc
                if best is None or auc > best[0]:
                    best = (auc, c, model)
            else:
                best = (math.nan, c, model)
        assert best is not None
        _, self.chosen_c_, model = best
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        self.event_types_ = tuple(event_types)
        self.feature_means_ = x.mean(axis=0)
        self.calibration_: dict[str, float] | None = None
        if valid:
            self._calibrate(xv, yv)
        return self

    def _calibrate(self, x: np.ndarray, y: np.ndarray) -> None:
        """Platt scaling on the validation rows (``x``: transformed features, ``y``: labels; Platt, 1999): a
        one-feature logistic regression of the outcome on the model's log-odds, folded into the coefficients
        (``a`` times each, ``a b0 + b`` the intercept), so the probabilities match the validation days'
        purchase rate and the reasons still add up exactly. The ranking is unchanged; a slope that is not positive (a validation set too small to
        tell) leaves the model as fitted."""
        from sklearn.linear_model import LogisticRegression

        z = x @ self.coef_ + self.intercept_
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], y)
        slope, shift = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        if not slope > 0:
            return
        self.coef_ = slope * self.coef_
        self.intercept_ = slope * self.intercept_ + shift
        self.calibration_ = {"slope": slope, "intercept": shift}

    @property
    def feature_names_(self) -> tuple[str, ...]:
        """The names of :attr:`coef_`'s columns."""
        return feature_names(self.event_types_)

    def predict_snapshot(self, snapshot: PropensitySnapshot) -> np.ndarray:
        """Purchase probability of each user of ``snapshot``."""
        self._check_fitted()
        if snapshot.event_types != self.event_types_:
            raise ValueError(
                "the snapshot's feature columns differ from the model's: build it with "
                "propensity_features(..., event_types=model.event_types_)"
            )
        z = _transform(snapshot.features) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def snapshot(self, interactions: Interactions, *, cutoff: int) -> PropensitySnapshot:
        """The unlabelled snapshot of ``interactions`` at ``cutoff`` with this model's columns."""
        self._check_fitted()
        return propensity_features(interactions, cutoff=cutoff, event_types=self.event_types_)

    def _user_rows(
        self, history: Interactions, users: np.ndarray | None, as_of: int | None
    ) -> tuple[PropensitySnapshot, np.ndarray]:
        """The snapshot of ``history`` as of ``as_of`` and the row of each of ``users`` in it."""
        self._check_fitted()
        if history.n_events == 0:
            raise ValueError("PurchasePropensity: the history has no events")
        as_of = int(history.timestamps.max()) + 1 if as_of is None else int(as_of)
        snap = self.snapshot(history, cutoff=as_of)
        if users is None:
            return snap, np.arange(len(snap.users))
        users = np.asarray(users, dtype=np.int64)
        if (users < 0).any() or (users >= history.n_users).any():
            raise ValueError(f"users must be indices below {history.n_users}")
        position = np.full(history.n_users, -1)
        position[snap.users] = np.arange(len(snap.users))
        rows = position[users]
        if (rows < 0).any():
            missing = str(history.user_ids[users[rows < 0][0]])
            raise ValueError(f"user {missing!r} has no event before as_of={as_of}")
        return snap, rows

    def predict_proba(
        self, history: Interactions, *, users: np.ndarray | None = None, as_of: int | None = None
    ) -> np.ndarray:
        """``[len(users), 2]`` probabilities (columns :attr:`classes_`) as of time ``as_of`` (UTC seconds;
        events at or after it are not read). Default: one second after the latest event of ``history`` —
        the data's "now". ``users`` default: every user with an event before ``as_of``; a listed user
        without one is a ``ValueError`` naming them."""
        snap, rows = self._user_rows(history, users, as_of)
        p = self.predict_snapshot(snap)[rows]
        return np.column_stack([1.0 - p, p])

    def reasons(
        self, history: Interactions, *, user: int = 0, as_of: int | None = None, top: int = 3
    ) -> list[PropensityReason]:
        """The ``top`` features that move ``user``'s purchase log-odds most (either way) against the
        average training user, largest first; features at the average are left out. ``as_of`` as in
        :meth:`predict_proba`."""
        return self.predict_with_reasons(history, user=user, as_of=as_of, top=top)[1]

    def predict_with_reasons(
        self, history: Interactions, *, user: int = 0, as_of: int | None = None, top: int = 3
    ) -> tuple[np.ndarray, list[PropensityReason]]:
        """``user``'s row of :meth:`predict_proba` and its :meth:`reasons`, from one snapshot (a request
        wants both; each alone builds the snapshot of ``history``)."""
        snap, rows = self._user_rows(history, np.array([user]), as_of)
        p = float(self.predict_snapshot(snap)[rows[0]])
        return np.array([1.0 - p, p]), self.snapshot_reasons(snap, top=top, rows=rows)[0]

    def snapshot_reasons(
        self, snapshot: PropensitySnapshot, *, top: int = 3, rows: np.ndarray | None = None
    ) -> list[list[PropensityReason]]:
        """:meth:`reasons` for the users of ``snapshot`` (its ``rows``, default all) at once."""
        self._check_fitted()
        raw = snapshot.features if rows is None else snapshot.features[rows]
        shares = self.coef_ * (_transform(raw) - self.feature_means_)
        order = np.argsort(-np.abs(shares), axis=1, kind="stable")[:, :top]
        names = self.feature_names_
        return [
            [
                PropensityReason(
                    feature=names[j],
                    label=feature_label(names[j]),
                    value=float(raw[r, j]),
                    log_odds=float(shares[r, j]),
                )
                for j in order[r]
                if shares[r, j] != 0
            ]
            for r in range(len(raw))
        ]

    def history_from_events(
        self,
        item_ids: Sequence[str],
        *,
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[int] | None = None,
        unknown_event_types: str = "error",
    ) -> EventHistory:
        """A raw history (oldest first) as one user (index 0). The model reads counts, not item identities:
        every event is kept, items in the request's own item space; an event type the model has no count
        column for still counts among the user's events (``unknown_event_types`` is accepted for the
        common interface and has nothing to reject)."""
        self._check_fitted()
        ids = np.asarray([str(i) for i in item_ids], dtype=object)
        space = np.unique(ids) if len(ids) else np.array([], dtype=object)
        vocab = tuple(dict.fromkeys([*self.event_types_, *(event_types or [])]))
        return raw_history(
            ids.tolist(),
            event_types=event_types,
            timestamps=timestamps,
            item_space=space,
            event_type_vocab=vocab,
            unknown_event_types=unknown_event_types,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``model.json``: params, feature names, counted event types, coefficients, intercept, the
        chosen ``C`` and the validation ROC-AUC per ``C``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.saved_name,
            "params": json_params(self),
            "feature_names": list(self.feature_names_),
            "event_types": list(self.event_types_),
            "coef": self.coef_.tolist(),
            "feature_means": self.feature_means_.tolist(),
            "intercept": self.intercept_,
            "chosen_c": self.chosen_c_,
            "valid_roc_auc": self.valid_roc_auc_,
            "calibration": self.calibration_,
        }
        (path / MODEL_JSON).write_text(json.dumps(meta, indent=1))
        (path / WEIGHTS_FILE).unlink(missing_ok=True)  # another model saved here before: not ours
        return path

    @classmethod
    def load(cls, path: str | Path) -> PurchasePropensity:
        """Read a model written by :meth:`save`; the arrays are checked against the feature names."""
        meta_file = Path(path) / MODEL_JSON
        meta = json.loads(meta_file.read_text())
        if meta.get("model") != cls.saved_name:
            raise ValueError(f"{meta_file}: holds a {meta.get('model')!r} model, not {cls.saved_name!r}")
        model = cls(**meta["params"])
        event_types = tuple(str(t) for t in meta["event_types"])
        names = tuple(str(n) for n in meta["feature_names"])
        if names != feature_names(event_types):
            raise ValueError(f"{meta_file}: feature_names do not match event_types {list(event_types)}")
        arrays = {k: np.asarray(meta[k], dtype=np.float64) for k in ("coef", "feature_means")}
        for key, values in arrays.items():
            if values.shape != (len(names),) or not np.isfinite(values).all():
                raise ValueError(
                    f"{meta_file}: {key} must be {len(names)} finite numbers, got shape {values.shape}"
                )
        if not math.isfinite(float(meta["intercept"])):
            raise ValueError(f"{meta_file}: intercept must be finite")
        model.coef_, model.feature_means_ = arrays["coef"], arrays["feature_means"]
        model.intercept_ = float(meta["intercept"])
        model.event_types_ = event_types
        model.chosen_c_ = float(meta["chosen_c"])
        model.valid_roc_auc_ = {str(k): float(v) for k, v in meta["valid_roc_auc"].items()}
        calibration = meta.get("calibration")
        model.calibration_ = None if calibration is None else {k: float(v) for k, v in calibration.items()}
        return model
