"""Re-ranking wrappers: change the order a fitted recommender produces without refitting it.

:class:`PopularityPenalized` pushes popular items down — the simplest popularity-bias mitigation, a
linear penalty on (log) item popularity in the spirit of the re-ranking baselines of Abdollahpouri,
Burke & Mobasher, "Managing Popularity Bias in Recommender Systems with Personalized Re-ranking",
FLAIRS 2019, and of the popularity-stratified evaluation of Steck, "Item popularity and recommendation
accuracy", RecSys 2011. It reads interactions only, never user attributes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import Recommender, ScoringBatch


class PopularityPenalized(Recommender):
    """``model``'s scores with a popularity penalty: ``z_u(s_ui) - penalty * z(log(1 + n_i))``.

    ``s_ui`` is the wrapped model's score, standardized per user over the catalogue (``z_u``: minus the
    row mean, divided by the row standard deviation, over finite scores) so that one ``penalty`` means
    the same for models whose scores live on different scales (EASE weights, ItemKNN sums, transformer
    logits, popularity counts). ``n_i`` is item ``i``'s interaction count in the data the wrapper is
    fitted on, and ``z`` standardizes ``log(1 + n_i)`` over the catalogue. ``penalty=0`` keeps the
    wrapped model's ranking exactly (standardizing a row is monotone); larger values trade accuracy for
    less popular recommendations.

    ``fit(train)`` fits the wrapped model on ``train`` unless it is already fitted, in which case
    ``train`` must be its training data's index space (typically ``PopularityPenalized(m,
    penalty=0.5).fit(m.trained_on)``); only the item counts are learned.

    The wrapper is not saved on its own: save the wrapped model and wrap it again after loading.
    """

    name = "popularity-penalized"

    def __init__(self, model: Recommender, *, penalty: float = 0.5) -> None:
        self.model = model
        self.penalty = penalty

    def _fit(self, train: Interactions) -> None:
        if isinstance(self.penalty, bool) or not math.isfinite(self.penalty) or self.penalty < 0:
            raise ValueError(
                f"PopularityPenalized: penalty must be a finite number >= 0, got {self.penalty!r}"
            )
        if hasattr(self.model, "train_"):
            fitted = self.model.trained_on
            if fitted.n_items != train.n_items or not np.array_equal(fitted.item_ids, train.item_ids):
                raise ValueError(
                    f"PopularityPenalized: the wrapped {type(self.model).__name__} was fitted on "
                    f"{fitted.n_items} items but fit() got {train.n_items}; pass the wrapped model's own "
                    "training data (model.trained_on)"
                )
        else:
            self.model.fit(train, valid=self._valid)
        log_popularity = np.log1p(train.item_counts().astype(np.float64))
        spread = log_popularity.std()
        standardized = (log_popularity - log_popularity.mean()) / (spread if spread > 0 else 1.0)
        self.log_popularity_z_ = torch.from_numpy(standardized.astype(np.float32))

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        self._fitted()
        scores = self.model.score(batch).to(torch.float32)
        finite = torch.isfinite(scores)
        n_finite = finite.sum(dim=1, keepdim=True).clamp(min=1)
        mean = torch.where(finite, scores, 0.0).sum(dim=1, keepdim=True) / n_finite
        centred = torch.where(finite, scores - mean, 0.0)
        std = (centred.square().sum(dim=1, keepdim=True) / n_finite).sqrt()
        # A constant row (e.g. a user with nothing the model can score) keeps its ties instead of NaNs.
        std = torch.where(std > 0, std, torch.ones_like(std))
        penalty = self.penalty * self.log_popularity_z_.to(scores.device)
        return (scores - mean) / std - penalty[None, :]

    def save(self, path: str | Path) -> Path:
        raise TypeError(
            "PopularityPenalized is not saved on its own: save the wrapped model and wrap it again after "
            "loading (PopularityPenalized(load_model(path), penalty=...).fit(model.trained_on))"
        )
