"""The hetero GNN learns a planted purchase rule that only the graph shows; save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from behaviorlm.data.purchase import purchase_cutoffs, purchase_snapshot, store_time_range
from behaviorlm.data.store import EventStore
from behaviorlm.estimator import json_params
from behaviorlm.evaluation.metrics import roc_auc
from behaviorlm.models.hetero_gnn import GNN_TRAINING, PurchaseGNN
from behaviorlm.models.registry import ModelLoadError, load_intent_model, load_model, load_recommender
from behaviorlm.testing.purchase import write_planted_purchase_store


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    path = write_planted_purchase_store(tmp_path_factory.mktemp("planted") / "s.duckdb", n_users=300)
    with EventStore(path, read_only=True) as store:
        first, last = store_time_range(store)
        cutoffs = purchase_cutoffs(first, last, window_seconds=7200, step_seconds=3600, warmup_seconds=7200)
        return {
            group: [
                purchase_snapshot(store, cutoff=c, window_seconds=7200, exclude_purchased=True) for c in cs
            ]
            for group, cs in cutoffs.items()
        }


def test_graph_only_gnn_learns_the_planted_rule(snapshots, tmp_path) -> None:
    # Without the pair's own features the rule (buy a viewed item when an earlier purchase shares its
    # category) is visible only along user -> purchase -> item -> category <- item.
    torch.set_num_threads(1)
    training = GNN_TRAINING.replace(epochs=60, patience=60, lr=1e-2, seed=0)
    model = PurchaseGNN(hidden=16, pair_features=False, training=training)
    model.fit(snapshots["train"], valid=snapshots["valid"])
    test = snapshots["test"]
    y = np.concatenate([s.labels for s in test])
    scores = np.concatenate([model.predict_proba(s) for s in test])
    assert 0.02 < y.mean() < 0.3 and y.sum() >= 50
    assert roc_auc(y, y_score=scores) > 0.8
    saved = model.save(tmp_path / "gnn")
    loaded = PurchaseGNN.load(saved)
    np.testing.assert_allclose(loaded.predict_proba(test[0]), model.predict_proba(test[0]), rtol=1e-5)
    # The one loader reads it too, and says what it is where a recommender or an intent model is needed.
    assert isinstance(load_model(saved), PurchaseGNN)
    with pytest.raises(ModelLoadError, match="holds a hetero-gnn model, which does not rank items"):
        load_recommender(saved)
    with pytest.raises(ModelLoadError, match="an intent model is one of"):
        load_intent_model(saved)
    # A folder saved before the shared layout (gnn.json, one "config" object holding the training
    # options too) still loads, with the same parameters.
    meta = json.loads((saved / "model.json").read_text())
    params = meta.pop("params")
    meta["config"] = {**{k: v for k, v in params.items() if k != "training"}, **params["training"]}
    (saved / "gnn.json").write_text(json.dumps(meta))
    (saved / "model.json").unlink()
    legacy = PurchaseGNN.load(saved)
    assert json_params(legacy) == json_params(model) and legacy.training.lr == 1e-2
    np.testing.assert_allclose(legacy.predict_proba(test[0]), loaded.predict_proba(test[0]))


def test_unfitted_and_mismatched_features_raise(snapshots) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        PurchaseGNN().predict_proba(snapshots["test"][0])
    with pytest.raises(ValueError, match="dropout"):
        PurchaseGNN(dropout=1.0).fit(snapshots["train"])


def test_time_range_can_skip_stray_early_events(tmp_path) -> None:
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.ingest import ingest_records

    events = [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1_000}]  # a stray event
    events += [
        {"user_id": f"u{k}", "item_id": "i", "event_type": "view", "timestamp": 1_000_000 + 60 * k}
        for k in range(999)
    ]
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, events, source="t", config=IngestConfig(format="jsonl"))
        assert store_time_range(store) == (1_000, 1_000_000 + 60 * 998)
        first, last = store_time_range(store, start_quantile=0.01)
        assert 1_000_000 <= first <= 1_000_000 + 60 * 10 and last == 1_000_000 + 60 * 998
        with pytest.raises(ValueError, match="start_quantile"):
            store_time_range(store, start_quantile=1.0)
