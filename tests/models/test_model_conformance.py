"""The conformance checks of models that do not rank items: task heads, the pretrainer, the purchase GNN
(recommenders run check_recommender in their own test files)."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.purchase import purchase_cutoffs, purchase_snapshot, store_time_range
from behaviorlm.data.store import EventStore
from behaviorlm.models import registry
from behaviorlm.models.heads import (
    EventTagger,
    EventTags,
    NextEventTypeModel,
    SequenceClassifier,
    purchase_within_next,
)
from behaviorlm.models.hetero_gnn import PurchaseGNN
from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
from behaviorlm.testing.conformance import check_model
from behaviorlm.testing.purchase import write_planted_purchase_store
from behaviorlm.testing.synthetic import buyer_sequences, checkout_tags, funnel_sequences

SMALL = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "dropout": 0.0,
    "max_len": 8,
    "epochs": 2,
    "batch_size": 32,
}


def test_next_event_type_model_conforms() -> None:
    data = funnel_sequences(n_users=60, n_items=15, length=8, seed=0, cyclic=True)
    users = np.arange(data.n_users)
    check_model(
        lambda: NextEventTypeModel.from_params(SMALL),
        fit=lambda m: m.fit(data),
        predict=lambda m: m.predict_proba(data, users=users),
    )


def test_sequence_classifier_conforms() -> None:
    labelled = purchase_within_next(
        buyer_sequences(n_users=60, n_items=15, length=8, n_future=3, seed=1), n_events=3
    )
    check_model(
        lambda: SequenceClassifier.from_params(SMALL),
        fit=lambda m: m.fit(labelled),
        predict=lambda m: m.predict_proba(labelled.history, users=labelled.users),
    )


def test_event_tagger_conforms() -> None:
    data = funnel_sequences(n_users=60, n_items=15, length=8, seed=2, cyclic=False)
    tagged = EventTags(interactions=data, tags=checkout_tags(data))
    check_model(
        lambda: EventTagger.from_params(SMALL),
        fit=lambda m: m.fit(tagged),
        predict=lambda m: m.predict_proba(data),
    )


def test_pretrainer_conforms() -> None:
    data = funnel_sequences(n_users=60, n_items=15, length=8, seed=3, cyclic=True)
    check_model(
        lambda: MaskedBehaviorPretrainer.from_params(SMALL),
        fit=lambda m: m.fit(data),
        predict=lambda m: np.concatenate([v.numpy().ravel() for _, v in sorted(m.encoder_state().items())]),
    )


def test_purchase_gnn_conforms(tmp_path) -> None:
    path = write_planted_purchase_store(tmp_path / "s.duckdb", n_users=80)
    with EventStore(path, read_only=True) as store:
        first, last = store_time_range(store)
        cutoffs = purchase_cutoffs(first, last, window_seconds=7200, step_seconds=3600, warmup_seconds=7200)
        train = [purchase_snapshot(store, cutoff=c, window_seconds=7200) for c in cutoffs["train"]]
    check_model(
        lambda: PurchaseGNN.from_params({"hidden": 8, "epochs": 2, "patience": 2, "seed": 0}),
        fit=lambda m: m.fit(train),
        predict=lambda m: m.predict_proba(train[0]),
    )


def test_check_model_fails_a_model_that_forgets_what_it_learned_on_load(monkeypatch) -> None:
    # The check must be able to fail: a pretrainer whose loaded copy predicts from fresh weights.
    data = funnel_sequences(n_users=40, n_items=10, length=6, seed=4, cyclic=True)

    class Forgetful(MaskedBehaviorPretrainer):
        @classmethod
        def load(cls, path):
            model = super().load(path)
            for weights in model.net_.parameters():
                weights.data.zero_()
            return model

    original = registry.encoder_model_registry
    monkeypatch.setattr(registry, "encoder_model_registry", lambda: {**original(), Forgetful.name: Forgetful})
    with pytest.raises(AssertionError, match="the reloaded Forgetful predicts differently"):
        check_model(
            lambda: Forgetful.from_params(SMALL),
            fit=lambda m: m.fit(data),
            predict=lambda m: m.encoder_state()["item_emb.weight"].numpy(),
        )
