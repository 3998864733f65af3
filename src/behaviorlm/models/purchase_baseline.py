"""The feature baseline for purchase prediction: logistic regression or gradient boosting on the pair's
counts and recency (:func:`behaviorlm.data.purchase.pair_features`), no graph.

Same interface as :class:`behaviorlm.models.hetero_gnn.PurchaseGNN`: ``fit(train, valid=valid)`` on
:class:`~behaviorlm.data.purchase.PurchaseSnapshot` lists, ``predict_proba(snapshot)``. With validation
snapshots, the one hyperparameter of each kind (inverse regularisation ``C`` of the logistic regression;
the number of boosting rounds) is chosen by validation ROC-AUC from a small grid; both weight the two
classes equally (``class_weight="balanced"``) because purchases are rare.

A fitted logistic regression saves and loads like every model (``save(path)``: ``model.json`` with its
scaler, coefficients and chosen ``C``; :func:`behaviorlm.models.registry.load_model` reads it), so
``behaviorlm graph train --task purchase`` can keep it when it is the model to use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, Self

import numpy as np
import sklearn.metrics as skm

from behaviorlm.data.purchase import PurchaseSnapshot
from behaviorlm.estimator import Estimator, json_params
from behaviorlm.models.base import MODEL_JSON, WEIGHTS_FILE

LOGISTIC_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
BOOSTING_ROUNDS_GRID: tuple[int, ...] = (50, 150, 300)


class PurchaseFeatureBaseline(Estimator):
    """``kind="logistic"`` (standardised features, L2 logistic regression) or ``kind="boosting"``
    (scikit-learn ``HistGradientBoostingClassifier``, depth-limited trees)."""

    saved_name = "purchase-baseline"
    """What ``model.json`` records (``params.kind`` says which baseline)."""

    def __init__(self, *, kind: Literal["logistic", "boosting"] = "logistic", seed: int = 0) -> None:
        if kind not in ("logistic", "boosting"):
            raise ValueError(f"kind must be 'logistic' or 'boosting', got {kind!r}")
        self.kind = kind
        self.seed = seed

    @property
    def name(self) -> str:
        return {"logistic": "logistic-regression", "boosting": "gradient-boosting"}[self.kind]

    def _make(self, value: float):
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return make_pipeline(
                StandardScaler(), LogisticRegression(C=value, class_weight="balanced", max_iter=2000)
            )
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=int(value),
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=100,
            l2_regularization=1.0,
            class_weight="balanced",
            early_stopping=False,
            random_state=self.seed,
        )

    def fit(self, train: list[PurchaseSnapshot], *, valid: list[PurchaseSnapshot] | None = None) -> Self:
        """Fit on the training snapshots' pairs; pick the grid value with the best validation ROC-AUC."""
        x = np.concatenate([s.features for s in train])
        y = np.concatenate([s.labels for s in train])
        if y.sum() == 0:
            raise ValueError("PurchaseFeatureBaseline.fit: the training snapshots have no purchased pair")
        self.feature_names_ = train[0].feature_names
        grid = LOGISTIC_C_GRID if self.kind == "logistic" else BOOSTING_ROUNDS_GRID
        valid = [s for s in valid or [] if 0 < s.n_positives < s.n_pairs]
        self.valid_roc_auc_: dict[str, float] = {}
        best = None
        for value in grid if valid else grid[1:2]:
            model = self._make(value).fit(x, y)
            if valid:
                scores = np.concatenate([model.predict_proba(s.features)[:, 1] for s in valid])
                auc = float(skm.roc_auc_score(np.concatenate([s.labels for s in valid]), scores))
                self.valid_roc_auc_[str(value)] = auc
                if best is None or auc > best[0]:
                    best = (auc, value, model)
            else:
                best = (float("nan"), value, model)
        _, self.chosen_, self.model_ = best
        return self

    def predict_proba(self, snapshot: PurchaseSnapshot) -> np.ndarray:
        """Purchase probability of each candidate pair of ``snapshot``."""
        if not hasattr(self, "model_"):
            raise RuntimeError("PurchaseFeatureBaseline is not fitted yet: call fit(train_snapshots) first")
        if snapshot.feature_names != self.feature_names_:
            raise ValueError("snapshot features differ from the ones the baseline was fitted on")
        return self.model_.predict_proba(snapshot.features)[:, 1].astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``model.json``: params, feature names, the scaler and the logistic regression's weights
        (plain JSON; a boosted ensemble has no such form and is refused)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("PurchaseFeatureBaseline is not fitted yet: call fit(train_snapshots) first")
        if self.kind != "logistic":
            raise ValueError(
                "only the logistic regression saves (its weights are a few numbers in model.json); "
                "gradient boosting is the benchmark's reference, not a saved model"
            )
        scaler, logistic = self.model_[0], self.model_[-1]
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.saved_name,
            "params": json_params(self),
            "feature_names": list(self.feature_names_),
            "chosen": self.chosen_,
            "valid_roc_auc": self.valid_roc_auc_,
            "scaler_mean": scaler.mean_.tolist(),
            "scaler_scale": scaler.scale_.tolist(),
            "coef": logistic.coef_[0].tolist(),
            "intercept": float(logistic.intercept_[0]),
        }
        (path / MODEL_JSON).write_text(json.dumps(meta))
        (path / WEIGHTS_FILE).unlink(missing_ok=True)  # a GNN saved here before: its weights are not ours
        return path

    @classmethod
    def load(cls, path: str | Path) -> PurchaseFeatureBaseline:
        """Read a logistic regression written by :meth:`save`; every array is checked against the feature
        names (length, finite values) before it is used."""
        meta_file = Path(path) / MODEL_JSON
        meta = json.loads(meta_file.read_text())
        if meta.get("model") != cls.saved_name:
            raise ValueError(f"{meta_file}: holds a {meta.get('model')!r} model, not {cls.saved_name!r}")
        model = cls(**meta["params"])
        if model.kind != "logistic":
            raise ValueError(f"{meta_file}: params.kind must be 'logistic', got {model.kind!r}")
        names = tuple(str(n) for n in meta["feature_names"])
        arrays = {k: np.asarray(meta[k], dtype=np.float64) for k in ("scaler_mean", "scaler_scale", "coef")}
        for key, values in arrays.items():
            if values.shape != (len(names),) or not np.isfinite(values).all():
                raise ValueError(
                    f"{meta_file}: {key} must be {len(names)} finite numbers (one per feature), "
                    f"got shape {values.shape}"
                )
        if not math.isfinite(float(meta["intercept"])) or (arrays["scaler_scale"] <= 0).any():
            raise ValueError(f"{meta_file}: intercept must be finite and scaler_scale positive")
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = arrays["scaler_mean"], arrays["scaler_scale"]
        scaler.var_, scaler.n_features_in_ = arrays["scaler_scale"] ** 2, len(names)
        logistic = LogisticRegression(C=float(meta["chosen"]), class_weight="balanced")
        logistic.coef_ = arrays["coef"][None, :]
        logistic.intercept_ = np.array([float(meta["intercept"])])
        logistic.classes_ = np.array([0, 1])
        logistic.n_features_in_ = len(names)
        model.model_ = make_pipeline(scaler, logistic)
        model.feature_names_, model.chosen_ = names, meta["chosen"]
        model.valid_roc_auc_ = {str(k): float(v) for k, v in meta["valid_roc_auc"].items()}
        return model
