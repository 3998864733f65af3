"""Purchase evaluation: the validation F1 threshold by hand, metrics from the shared functions, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.evaluation.purchase import f1_threshold, paired_bootstrap_auc, purchase_metrics


def test_f1_threshold_by_hand() -> None:
    y = np.array([0, 1, 0, 1, 0, 0])
    scores = np.array([0.1, 0.9, 0.8, 0.4, 0.3, 0.2])
    # Threshold 0.9: TP 1, FP 0, FN 1 -> F1 2/3. Threshold 0.4: TP 2, FP 1, FN 0 -> F1 4/5.
    assert f1_threshold(y, y_score=scores) == pytest.approx(0.4)
    metrics = purchase_metrics(y, y_score=scores, threshold=0.4)
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == 1.0
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    # Positives 0.9 and 0.4 beat 4 and 3 of the 4 negatives.
    assert metrics["roc_auc"] == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="positive"):
        f1_threshold(np.zeros(3), y_score=np.arange(3.0))


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    good = y + rng.normal(0, 0.5, 400)
    noise = rng.normal(0, 1, 400)
    same = paired_bootstrap_auc(y, scores_a=good, scores_b=good, n_boot=50)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0}
    better = paired_bootstrap_auc(y, scores_a=good, scores_b=noise, n_boot=200)
    assert better["low"] > 0.2 and better["low"] <= better["difference"] <= better["high"]


# -------------------------------------------------------------------------------- keeping one model
def _snapshots(rng, n_snapshots: int, n_pairs: int = 300):
    """Stand-in snapshots: two features, the first one decides (noisily)."""
    from types import SimpleNamespace

    out = []
    for _ in range(n_snapshots):
        x = rng.normal(size=(n_pairs, 2))
        y = (x[:, 0] + rng.normal(0, 1.0, n_pairs) > 1.5).astype(np.int8)
        out.append(
            SimpleNamespace(
                features=x, labels=y, feature_names=("a", "b"), n_positives=int(y.sum()), n_pairs=n_pairs
            )
        )
    return out


def _result(name: str, valid_scores: np.ndarray, valid_y: np.ndarray):
    from behaviorlm.evaluation.purchase import PurchaseResult

    metrics = purchase_metrics(valid_y, y_score=valid_scores, threshold=0.5)
    return PurchaseResult(name, metrics, metrics, 0.5, 0.0, np.zeros(1), valid_scores=valid_scores)


def test_choose_purchase_model_keeps_the_simpler_model_unless_the_lead_is_outside_the_noise() -> None:
    from behaviorlm.evaluation.purchase import choose_purchase_model

    rng = np.random.default_rng(0)
    valid = _snapshots(rng, 2)
    y = np.concatenate([s.labels for s in valid])
    signal = np.concatenate([s.features[:, 0] for s in valid])
    good, noise = signal + rng.normal(0, 0.3, len(y)), rng.normal(size=len(y))
    slightly_better = signal + rng.normal(0, 0.28, len(y))
    # A large lead: the complex model is kept, and the reason states the interval.
    chosen = choose_purchase_model(
        [_result("simple", noise, y), _result("complex", good, y)], valid, n_boot=200
    )
    assert chosen.name == "complex" and "above simple by +0." in chosen.reason
    assert chosen.comparisons["simple"]["low"] > 0
    # A lead inside the noise: the simpler model (listed first) is kept.
    chosen = choose_purchase_model(
        [_result("simple", good, y), _result("complex", slightly_better, y)], valid, n_boot=200
    )
    assert chosen.name == "simple" and "within the noise, the simpler simple is kept" in chosen.reason
    # The simpler model is best outright: kept without a comparison.
    chosen = choose_purchase_model([_result("simple", good, y), _result("complex", noise, y)], valid)
    assert chosen.name == "simple" and chosen.comparisons == {}
    unscored = _result("unscored", good, y)
    unscored.valid_scores = None  # a result built by hand, not by evaluate_purchase_model
    with pytest.raises(ValueError, match=r"no validation scores for \['unscored'\]"):
        choose_purchase_model([unscored], valid)


def test_the_logistic_baseline_saves_and_loads_exactly(tmp_path) -> None:
    import json

    from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline
    from behaviorlm.models.registry import ModelLoadError, load_model

    rng = np.random.default_rng(1)
    train, valid = _snapshots(rng, 3), _snapshots(rng, 2)
    model = PurchaseFeatureBaseline(kind="logistic").fit(train, valid=valid)
    (tmp_path / "logistic").mkdir()
    (tmp_path / "logistic" / "weights.safetensors").write_bytes(b"a GNN saved here before")
    loaded = load_model(model.save(tmp_path / "logistic"))
    assert not (tmp_path / "logistic" / "weights.safetensors").exists()
    assert isinstance(loaded, PurchaseFeatureBaseline) and loaded.chosen_ == model.chosen_
    for snapshot in valid:
        np.testing.assert_allclose(loaded.predict_proba(snapshot), model.predict_proba(snapshot), rtol=1e-6)
    meta_file = tmp_path / "logistic" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "coef": meta["coef"][:1]}))
    with pytest.raises(ModelLoadError, match="coef must be 2 finite numbers"):
        load_model(tmp_path / "logistic")
    boosting = PurchaseFeatureBaseline(kind="boosting").fit(train)
    with pytest.raises(ValueError, match="only the logistic regression saves"):
        boosting.save(tmp_path / "boosting")
