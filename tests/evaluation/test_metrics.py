"""Metric functions against hand-computed values (arithmetic written out next to each expectation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorlm.evaluation import metrics

# ------------------------------------------------------------------------------------------- ranking


def test_hit_rate_one_target_per_user() -> None:
    # Ranks are 0-based: rank 9 is the 10th item (inside the top 10), rank 10 the 11th (outside).
    hr = metrics.hit_rate_at_k(np.array([0, 9, 10, 50]), k=10)
    np.testing.assert_array_equal(hr, [1.0, 1.0, 0.0, 0.0])


def test_ndcg_one_target_per_user() -> None:
    # rank 0 -> 1/log2(2) = 1; rank 2 -> 1/log2(4) = 0.5; rank 10 with K=10 -> outside -> 0.
    # With a single target IDCG = 1/log2(2) = 1.
    ndcg = metrics.ndcg_at_k(np.array([0, 2, 10]), k=10)
    np.testing.assert_allclose(ndcg, [1.0, 0.5, 0.0])


def test_multi_target_metrics_by_hand() -> None:
    # user 0: targets at ranks [0, 2, 7]; user 1: ranks [1, 0, 9]; user 2: rank [3].
    ranks = np.array([0, 2, 7, 1, 0, 9, 3])
    ptr = np.array([0, 3, 6, 7])
    # K = 5
    # user 0: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5 (rank 7 is outside);
    #         IDCG over min(5, 3) = 3 slots = 1 + 1/log2(3) + 1/log2(4) = 2.1309297535714575
    # user 1: DCG = 1/log2(3) + 1/log2(2) = 1.6309297535714575; IDCG the same 2.1309297535714575
    # user 2: DCG = 1/log2(5) = 0.43067655807339306; IDCG = 1
    idcg3 = 1 + 1 / math.log2(3) + 0.5
    np.testing.assert_allclose(
        metrics.ndcg_at_k(ranks, k=5, target_ptr=ptr),
        [1.5 / idcg3, (1 / math.log2(3) + 1) / idcg3, 1 / math.log2(5)],
    )
    # K = 2: IDCG over min(2, 3) = 2 slots = 1 + 1/log2(3) for users 0 and 1.
    # user 0: DCG = 1 (rank 0 only) -> 1 / (1 + 1/log2(3)) = 0.6131471927654584
    # user 1: ranks 0 and 1 fill both slots -> DCG = IDCG -> 1;  user 2: rank 3 is outside -> 0.
    np.testing.assert_allclose(
        metrics.ndcg_at_k(ranks, k=2, target_ptr=ptr), [1 / (1 + 1 / math.log2(3)), 1.0, 0.0]
    )
    # Recall@5 = hits / n_targets: user 0 -> 2/3, user 1 -> 2/3, user 2 -> 1/1.
    np.testing.assert_allclose(metrics.recall_at_k(ranks, k=5, target_ptr=ptr), [2 / 3, 2 / 3, 1.0])
    # Recall@2: user 0 -> 1/3 (only rank 0), user 1 -> 2/3, user 2 -> 0.
    np.testing.assert_allclose(metrics.recall_at_k(ranks, k=2, target_ptr=ptr), [1 / 3, 2 / 3, 0.0])
    # HR@2: any target in the top 2 -> users 0 and 1.
    np.testing.assert_array_equal(metrics.hit_rate_at_k(ranks, k=2, target_ptr=ptr), [1.0, 1.0, 0.0])
    # RR uses the best target over the full ranking: 1/(0+1), 1/(0+1), 1/(3+1).
    np.testing.assert_allclose(metrics.reciprocal_rank(ranks, target_ptr=ptr), [1.0, 1.0, 0.25])


def test_reciprocal_rank_is_not_truncated() -> None:
    # rank 999 -> 1/1000 even though it is far outside any top-K.
    np.testing.assert_allclose(metrics.reciprocal_rank(np.array([3, 999])), [0.25, 0.001])


def test_catalogue_coverage() -> None:
    # distinct items {0, 1, 2} out of 10 -> 0.3; -1 is padding and ignored.
    top = np.array([[0, 1], [1, 2], [2, -1]])
    assert metrics.catalogue_coverage(top, n_items=10) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="out of range"):
        metrics.catalogue_coverage(np.array([10]), n_items=10)


def test_ranking_metric_errors() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.hit_rate_at_k(np.array([0]), k=0)
    with pytest.raises(ValueError, match=">= 0"):
        metrics.ndcg_at_k(np.array([-1]), k=5)
    with pytest.raises(ValueError, match="has no target"):
        metrics.recall_at_k(np.array([0, 1]), k=5, target_ptr=np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="end at len"):
        metrics.reciprocal_rank(np.array([0, 1]), target_ptr=np.array([0, 1]))
    with pytest.raises(ValueError, match="whole numbers"):
        metrics.reciprocal_rank(np.array([0.5]))


@st.composite
def _ragged_ranks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    per_user = draw(
        st.lists(st.lists(st.integers(0, 200), min_size=1, max_size=6, unique=True), min_size=1, max_size=20)
    )
    ptr = np.r_[0, np.cumsum([len(r) for r in per_user])]
    return np.concatenate([np.array(r) for r in per_user]), ptr


@settings(max_examples=60, deadline=None)
@given(data=_ragged_ranks(), k_small=st.integers(1, 30), k_extra=st.integers(0, 100))
def test_ranking_metric_properties(data: tuple[np.ndarray, np.ndarray], k_small: int, k_extra: int) -> None:
    ranks, ptr = data
    k_large = k_small + k_extra
    for k in (k_small, k_large):
        for values in (
            metrics.hit_rate_at_k(ranks, k=k, target_ptr=ptr),
            metrics.ndcg_at_k(ranks, k=k, target_ptr=ptr),
            metrics.recall_at_k(ranks, k=k, target_ptr=ptr),
        ):
            assert np.all((values >= 0) & (values <= 1 + 1e-12))
        # A user hit by recall is a hit; NDCG is positive exactly when HR is.
        hr = metrics.hit_rate_at_k(ranks, k=k, target_ptr=ptr)
        assert np.all(metrics.recall_at_k(ranks, k=k, target_ptr=ptr) <= hr)
        assert np.array_equal(metrics.ndcg_at_k(ranks, k=k, target_ptr=ptr) > 0, hr > 0)
    assert np.all(
        metrics.hit_rate_at_k(ranks, k=k_small, target_ptr=ptr)
        <= metrics.hit_rate_at_k(ranks, k=k_large, target_ptr=ptr)
    )
    assert np.all(
        metrics.recall_at_k(ranks, k=k_small, target_ptr=ptr)
        <= metrics.recall_at_k(ranks, k=k_large, target_ptr=ptr)
    )
    rr = metrics.reciprocal_rank(ranks, target_ptr=ptr)
    assert np.all((rr > 0) & (rr <= 1))


# ------------------------------------------------------------------------------------ classification

Y_TRUE = np.array([1, 0, 1, 1, 0, 0])
Y_SCORE = np.array([0.9, 0.8, 0.5, 0.3, 0.3, 0.1])  # a positive and a negative tie at 0.3


def test_threshold_metrics_by_hand() -> None:
    # threshold 0.5 (>=): y_pred = [1, 1, 1, 0, 0, 0]
    # TP = rows 0, 2 -> 2; FP = row 1 -> 1; FN = row 3 -> 1; TN = rows 4, 5 -> 2
    y_pred = metrics.threshold_scores(Y_SCORE, threshold=0.5)
    np.testing.assert_array_equal(y_pred, [1, 1, 1, 0, 0, 0])
    assert metrics.accuracy(Y_TRUE, y_pred=y_pred) == pytest.approx(4 / 6)  # (TP + TN) / n
    assert metrics.precision(Y_TRUE, y_pred=y_pred) == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert metrics.recall(Y_TRUE, y_pred=y_pred) == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert metrics.f1_score(Y_TRUE, y_pred=y_pred) == pytest.approx(2 / 3)  # 2*2 / (2*2 + 1 + 1)


def test_zero_division_is_zero() -> None:
    # Nothing predicted positive: precision = 0/0 -> 0, F1 = 0 / (0 + 0 + 2) = 0.
    assert metrics.precision(np.array([1, 1, 0]), y_pred=np.array([0, 0, 0])) == 0.0
    assert metrics.f1_score(np.array([1, 1, 0]), y_pred=np.array([0, 0, 0])) == 0.0


def test_macro_f1_by_hand() -> None:
    y_true = np.array([0, 1, 2, 2, 1])
    y_pred = np.array([0, 2, 2, 2, 1])
    # class 0: TP 1, FP 0, FN 0 -> 2/2 = 1
    # class 1: TP 1 (row 4), FP 0, FN 1 (row 1) -> 2 / (2 + 0 + 1) = 2/3
    # class 2: TP 2 (rows 2, 3), FP 1 (row 1), FN 0 -> 4 / (4 + 1 + 0) = 4/5
    assert metrics.macro_f1(y_true, y_pred=y_pred) == pytest.approx((1 + 2 / 3 + 4 / 5) / 3)
    # Labels may be strings; a class only in y_pred still counts (F1 = 0 for "c").
    # "a": TP 1 -> 1; "b": TP 0, FN 1 -> 0; "c": FP 1 -> 0  => 1/3
    assert metrics.macro_f1(np.array(["a", "b"]), y_pred=np.array(["a", "c"])) == pytest.approx(1 / 3)


def test_roc_auc_with_ties_by_hand() -> None:
    # Ascending scores with average ranks: 0.1 -> 1; 0.3, 0.3 -> (2+3)/2 = 2.5 each; 0.5 -> 4; 0.8 -> 5;
    # 0.9 -> 6. Positives (0.9, 0.5, 0.3) have rank sum 6 + 4 + 2.5 = 12.5; P = N = 3.
    # AUC = (12.5 - 3*4/2) / (3*3) = 6.5 / 9.
    # Pairwise check: 0.9 beats 3 negatives (3); 0.5 beats 0.3, 0.1 (2); 0.3 ties 0.3 (0.5) and beats 0.1 (1).
    assert metrics.roc_auc(Y_TRUE, y_score=Y_SCORE) == pytest.approx(6.5 / 9)
    # All scores tied: every pair is a tie -> 0.5.
    assert metrics.roc_auc(Y_TRUE, y_score=np.zeros(6)) == pytest.approx(0.5)
    # Perfect separation -> 1; reversed -> 0.
    assert metrics.roc_auc(np.array([0, 0, 1]), y_score=np.array([0.1, 0.2, 0.3])) == 1.0
    assert metrics.roc_auc(np.array([1, 0, 0]), y_score=np.array([0.1, 0.2, 0.3])) == 0.0


def test_average_precision_with_ties_by_hand() -> None:
    # Distinct thresholds, high to low (TP / predicted positive = precision; TP / 3 = recall):
    #   >= 0.9: 1/1 = 1,    R = 1/3
    #   >= 0.8: 1/2,        R = 1/3   (recall step 0)
    #   >= 0.5: 2/3,        R = 2/3
    #   >= 0.3: 3/5 (the tied positive and negative enter together), R = 1
    #   >= 0.1: 3/6,        R = 1     (recall step 0)
    # AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 15/45 + 10/45 + 9/45 = 34/45
    assert metrics.average_precision(Y_TRUE, y_score=Y_SCORE) == pytest.approx(34 / 45)
    # All tied: one threshold, precision = positive rate 3/6, recall 1 -> AP = 0.5.
    assert metrics.average_precision(Y_TRUE, y_score=np.ones(6)) == pytest.approx(0.5)


def test_classification_errors() -> None:
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc(np.array([1, 1]), y_score=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="at least one positive"):
        metrics.average_precision(np.array([0, 0]), y_score=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.roc_auc(np.array([0, 1, 1]), y_score=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="binary 0/1"):
        metrics.precision(np.array([0, 2]), y_pred=np.array([0, 1]))
    with pytest.raises(ValueError, match="finite; row 1"):
        metrics.roc_auc(np.array([0, 1]), y_score=np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy(np.array([]), y_pred=np.array([]))


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4)), min_size=2, max_size=40).filter(
        lambda p: len({y for y, _ in p}) == 2
    )
)
def test_roc_auc_properties(pairs: list[tuple[int, int]]) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=float)  # few distinct values: many ties
    auc = metrics.roc_auc(y, y_score=s)
    # Pairwise definition: P(s_pos > s_neg) + 0.5 P(s_pos = s_neg).
    diff = s[y == 1][:, None] - s[y == 0][None, :]
    assert auc == pytest.approx(np.mean((diff > 0) + 0.5 * (diff == 0)))
    # Negating the scores swaps wins and losses; ties stay at 1/2.
    assert auc + metrics.roc_auc(y, y_score=-s) == pytest.approx(1.0)
    # Average precision straight from its definition, one threshold (distinct score) at a time.
    expected_ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(s.tolist()), reverse=True):
        predicted = s >= threshold
        true_pos = np.sum(predicted & (y == 1))
        recall_here = true_pos / np.sum(y == 1)
        expected_ap += (recall_here - previous_recall) * true_pos / np.sum(predicted)
        previous_recall = recall_here
    assert metrics.average_precision(y, y_score=s) == pytest.approx(expected_ap)


# ------------------------------------------------------------------------------------------- calibration


def test_brier_score_and_calibration_error_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.8])
    # Brier: (0.01 + 0.09 + 0.16 + 0.04) / 4 = 0.075.
    assert metrics.brier_score(y, y_prob=p) == pytest.approx(0.075)
    # Two equal-count bins: {0.1, 0.3} predicts 0.2 and sees 0 -> 0.2; {0.6, 0.8} predicts 0.7, sees 1 -> 0.3.
    # Weighted by half each: 0.25.
    assert metrics.calibration_error(y, y_prob=p, bins=2) == pytest.approx(0.25)
    # One bin: mean predicted 0.45 against a rate of 0.5 -> 0.05.
    assert metrics.calibration_error(y, y_prob=p, bins=1) == pytest.approx(0.05)
    # The positive rate for everyone: Brier r (1 - r), calibration error 0.
    flat = np.full(4, 0.5)
    assert metrics.brier_score(y, y_prob=flat) == pytest.approx(0.25)
    assert metrics.calibration_error(y, y_prob=flat) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="probabilities"):
        metrics.brier_score(y, y_prob=np.array([0.1, 0.2, 1.5, 0.3]))
