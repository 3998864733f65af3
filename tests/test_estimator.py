"""scikit-learn's estimator conventions on every model: clone, get_params(deep) and set_params."""

from __future__ import annotations

import pytest
from sklearn.base import clone

from behaviorlm.estimator import Estimator, json_params
from behaviorlm.models.baselines import Popularity
from behaviorlm.models.hetero_gnn import PurchaseGNN
from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline
from behaviorlm.models.registry import encoder_model_registry, model_registry
from behaviorlm.models.reranking import PopularityPenalized
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.profiling.anomalies import AnomalyDetector, ForestSurprisalDetector
from behaviorlm.profiling.churn import ChurnModel, RecencyFrequencyBaseline
from behaviorlm.profiling.fusion import FusedRecommender, TextInterestRecommender


def every_estimator() -> list[Estimator]:
    models: list[Estimator] = [cls() for cls in model_registry().values()]
    models += [cls() for name, cls in encoder_model_registry().items() if cls is not PurchaseGNN]
    models += [
        PurchaseGNN(hidden=8),
        PurchaseFeatureBaseline(kind="boosting"),
        AnomalyDetector(n_estimators=50),
        ForestSurprisalDetector(model=BehaviorTransformer(d_model=32)),
        ChurnModel(max_iter=10),
        RecencyFrequencyBaseline(),
        PopularityPenalized(Popularity(), penalty=0.5),
        FusedRecommender(behaviour=Popularity(), text=TextInterestRecommender()),
        TextInterestRecommender(half_life_days=7.0),
    ]
    return models


@pytest.mark.parametrize("model", every_estimator(), ids=lambda m: type(m).__name__)
def test_clone_gives_an_unfitted_copy_with_equal_params(model) -> None:
    copy = clone(model)
    assert type(copy) is type(model) and copy is not model
    mine, theirs = model.get_params(deep=False), copy.get_params(deep=False)
    assert mine.keys() == theirs.keys()
    for name, value in mine.items():
        if isinstance(value, Estimator):  # nested models are cloned too
            assert theirs[name] is not value and theirs[name].get_params() == value.get_params()
        else:
            assert theirs[name] == value, name


def test_set_params_plain_nested_and_unknown() -> None:
    model = BehaviorTransformer()
    assert model.set_params(d_model=32, dropout=0.3) is model
    assert model.get_params()["d_model"] == 32 and model.d_model == 32
    with pytest.raises(ValueError, match=r"unknown parameter 'width'; parameters: \[.*'d_model'"):
        model.set_params(width=3)
    wrapped = PopularityPenalized(BehaviorTransformer(), penalty=0.1)
    assert wrapped.get_params()["model__max_len"] == BehaviorTransformer().max_len
    wrapped.set_params(model__max_len=20, penalty=0.2)
    assert wrapped.model.max_len == 20 and wrapped.penalty == 0.2
    with pytest.raises(ValueError, match="'penalty' has no parameters of its own"):
        wrapped.set_params(penalty__x=1)
    # The JSON view names a nested model instead of holding it.
    assert json_params(wrapped)["model"]["name"] == "transformer"
    assert json_params(wrapped)["model"]["params"]["max_len"] == 20
