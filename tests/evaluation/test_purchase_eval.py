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
