"""The one place that computes metrics, with the formula in each docstring: ranking metrics in numpy (ours:
they read the full-ranking protocol's rank layout), classification metrics through scikit-learn.

Ranking metrics take the **0-based rank** of each target item in a ranking (rank 0 = top of the list),
flattened over users in CSR layout: user ``u``'s target ranks are
``target_ranks[target_ptr[u]:target_ptr[u+1]]``. With ``target_ptr=None`` every rank is its own user
(one target each, the leave-one-out case). Relevance is binary and each target item counts once, so a
user's targets should be distinct items. They return one value per user (``float64 [n_users]``); the
reported metric is the mean over users. How ranks are produced (full ranking, seen-item masking, ties)
is the evaluator's business, see :mod:`behaviorlm.evaluation.ranking`.

Classification metrics (propensity / intent tasks) are scikit-learn's, behind checks that name the bad
argument or row: binary labels are ``0``/``1`` with ``1`` the positive class, and a ratio whose
denominator is zero (e.g. precision with no predicted positive) is ``0.0`` (``zero_division=0``).
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics as skm

# ---------------------------------------------------------------------------------------------- ranking


def _ranks_by_user(
    target_ranks: np.ndarray, target_ptr: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and return ``(ranks int64 [n_targets], user_of_target int64, n_targets_per_user)``."""
    ranks = np.asarray(target_ranks)
    if ranks.ndim != 1:
        raise ValueError(f"target_ranks must be 1-D, got shape {ranks.shape}")
    if (
        ranks.dtype.kind not in "iu"
        and ranks.size
        and not np.all(np.isfinite(ranks) & (ranks == np.round(ranks)))
    ):
        raise ValueError("target_ranks must be whole numbers (0-based ranks)")
    ranks = ranks.astype(np.int64)
    if ranks.size and ranks.min() < 0:
        raise ValueError(f"target_ranks must be >= 0 (0-based), got {int(ranks.min())}")
    if target_ptr is None:
        if ranks.size == 0:
            raise ValueError("target_ranks is empty: there is no user to evaluate")
        return ranks, np.arange(len(ranks), dtype=np.int64), np.ones(len(ranks), dtype=np.int64)
    ptr = np.asarray(target_ptr, dtype=np.int64)
    if ptr.ndim != 1 or len(ptr) < 2:
        raise ValueError("target_ptr must be 1-D with n_users + 1 >= 2 entries")
    if ptr[0] != 0 or ptr[-1] != len(ranks):
        raise ValueError(
            f"target_ptr must start at 0 and end at len(target_ranks)={len(ranks)}, "
            f"got {int(ptr[0])}..{int(ptr[-1])}"
        )
    n_targets = np.diff(ptr)
    if np.any(n_targets < 1):
        bad = int(np.flatnonzero(n_targets < 1)[0])
        raise ValueError(f"user {bad} (position in target_ptr) has no target: every user needs >= 1")
    return ranks, np.repeat(np.arange(len(n_targets), dtype=np.int64), n_targets), n_targets


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _hits_per_user(ranks: np.ndarray, user: np.ndarray, n_users: int, k: int) -> np.ndarray:
    return np.bincount(user, weights=(ranks < k).astype(np.float64), minlength=n_users)


def hit_rate_at_k(target_ranks: np.ndarray, *, k: int, target_ptr: np.ndarray | None = None) -> np.ndarray:
    """Hit rate @K per user: ``HR@K(u) = 1[min_t rank_t < K]`` (any target in the top K).

    Returns ``float64 [n_users]`` of 0/1 values.
    """
    k = _check_k(k)
    ranks, user, n_targets = _ranks_by_user(target_ranks, target_ptr)
    return (_hits_per_user(ranks, user, len(n_targets), k) > 0).astype(np.float64)


def recall_at_k(target_ranks: np.ndarray, *, k: int, target_ptr: np.ndarray | None = None) -> np.ndarray:
    """Recall @K per user: ``Recall@K(u) = |{t : rank_t < K}| / n_targets(u)``.

    The denominator is the number of targets, not ``min(K, n_targets)``, so a user with more targets
    than K cannot reach 1. Returns ``float64 [n_users]``.
    """
    k = _check_k(k)
    ranks, user, n_targets = _ranks_by_user(target_ranks, target_ptr)
    return _hits_per_user(ranks, user, len(n_targets), k) / n_targets


def ndcg_at_k(target_ranks: np.ndarray, *, k: int, target_ptr: np.ndarray | None = None) -> np.ndarray:
    """Normalized discounted cumulative gain @K per user, binary relevance (Järvelin & Kekäläinen, 2002).

    ``DCG@K(u) = sum_{t : rank_t < K} 1 / log2(rank_t + 2)`` (0-based ranks, so the top item has
    discount ``1/log2(2) = 1``), ``IDCG@K(u) = sum_{i=0}^{min(K, n_targets(u)) - 1} 1 / log2(i + 2)``
    (all targets at the top), ``NDCG@K(u) = DCG@K(u) / IDCG@K(u)``. Returns ``float64 [n_users]``.
    """
    k = _check_k(k)
    ranks, user, n_targets = _ranks_by_user(target_ranks, target_ptr)
    gains = np.where(ranks < k, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
    dcg = np.bincount(user, weights=gains, minlength=len(n_targets))
    ideal_prefix = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))))
    idcg = ideal_prefix[np.minimum(n_targets, k)]
    return dcg / idcg


def reciprocal_rank(target_ranks: np.ndarray, *, target_ptr: np.ndarray | None = None) -> np.ndarray:
    """Reciprocal rank per user: ``RR(u) = 1 / (min_t rank_t + 1)``, over the full (untruncated) ranking.

    The mean over users is MRR (Voorhees, TREC-8 QA track, 1999). Returns ``float64 [n_users]``.
    """
    ranks, user, n_targets = _ranks_by_user(target_ranks, target_ptr)
    best = np.full(len(n_targets), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, user, ranks)
    return 1.0 / (best + 1.0)


def catalogue_coverage(recommended_items: np.ndarray, *, n_items: int) -> float:
    """Catalogue coverage: ``|union of all users' recommended items| / n_items``.

    ``recommended_items`` holds item indices of any shape, typically the ``[n_users, K]`` top-K lists
    (coverage@K); negative entries are padding and ignored.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    items = np.asarray(recommended_items).ravel()
    if items.size and items.dtype.kind not in "iu":
        raise ValueError(f"recommended_items must be integer item indices, got dtype {items.dtype}")
    items = items[items >= 0]
    if items.size and items.max() >= n_items:
        raise ValueError(f"recommended item index {int(items.max())} is out of range for n_items={n_items}")
    return float(len(np.unique(items)) / n_items)


def gini_coefficient(values: np.ndarray) -> float:
    """Gini coefficient of non-negative amounts, e.g. how often each catalogue item is recommended.

    With the ``n`` amounts sorted ascending, ``x_(1) <= ... <= x_(n)``:
    ``G = sum_i (2i - n - 1) x_(i) / (n sum_i x_i)`` (the mean-difference form; Fleder & Hosanagar,
    "Blockbuster Culture's Next Rise or Fall", Management Science 2009, use it for sales concentration
    under recommenders). ``G = 0`` when every item gets the same exposure and ``(n - 1) / n`` when one
    item gets all of it. Items that are never recommended must be included as zeros.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("gini_coefficient needs at least one value")
    if not np.all(np.isfinite(x)) or x.min() < 0:
        raise ValueError("gini_coefficient needs finite, non-negative values")
    total = x.sum()
    if total == 0:
        raise ValueError("gini_coefficient is undefined when every value is 0")
    n = len(x)
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    return float(np.sum(weights * np.sort(x)) / (n * total))


# ---------------------------------------------------------------------------------------- classification


def _check_pair(y_true: np.ndarray, other: np.ndarray, *, other_name: str) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    other = np.asarray(other)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}")
    if len(y_true) != len(other):
        raise ValueError(f"length mismatch: y_true has {len(y_true)} entries, {other_name} has {len(other)}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    return y_true, other


def _check_binary(y: np.ndarray, *, name: str) -> np.ndarray:
    values = np.unique(y)
    if not np.all(np.isin(values, [0, 1])):
        raise ValueError(f"{name} must be binary 0/1 labels (1 = positive), got values {values[:5].tolist()}")
    return y.astype(np.int64)


def _check_scores(y_score: np.ndarray) -> np.ndarray:
    if y_score.ndim != 1:
        raise ValueError(f"y_score must be 1-D (score of the positive class), got shape {y_score.shape}")
    if y_score.dtype.kind not in "biuf":
        raise ValueError(f"y_score must be numeric, got dtype {y_score.dtype}")
    y_score = y_score.astype(np.float64)
    if not np.all(np.isfinite(y_score)):
        bad = int(np.flatnonzero(~np.isfinite(y_score))[0])
        raise ValueError(f"y_score must be finite; row {bad} is {y_score[bad]}")
    return y_score


def threshold_scores(y_score: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Binary predictions from scores: ``y_pred = 1[y_score >= threshold]`` (``int64``)."""
    y_score = _check_scores(np.asarray(y_score))
    return (y_score >= threshold).astype(np.int64)


def _binary_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _check_pair(y_true, y_pred, other_name="y_pred")
    return _check_binary(y_true, name="y_true"), _check_binary(y_pred, name="y_pred")


# The formulas are scikit-learn's (the checks above are ours: they name the argument and the bad row).
# tests/evaluation/test_metrics.py checks each against a hand computation.


def accuracy(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Accuracy: ``(1/n) sum_i 1[y_pred_i = y_true_i]``; labels may be any (binary or multiclass)."""
    y_true, y_pred = _check_pair(y_true, y_pred, other_name="y_pred")
    return float(skm.accuracy_score(y_true, y_pred))


def precision(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Binary precision: ``TP / (TP + FP)`` (0 when nothing is predicted positive)."""
    return float(skm.precision_score(*_binary_pair(y_true, y_pred), zero_division=0))


def recall(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Binary recall (sensitivity): ``TP / (TP + FN)`` (0 when there is no positive)."""
    return float(skm.recall_score(*_binary_pair(y_true, y_pred), zero_division=0))


def f1_score(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Binary F1: ``2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and recall; 0 if undefined)."""
    return float(skm.f1_score(*_binary_pair(y_true, y_pred), zero_division=0))


def macro_f1(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over classes: ``(1/|C|) sum_c 2 TP_c / (2 TP_c + FP_c + FN_c)``.

    ``C`` is the set of labels appearing in ``y_true`` or ``y_pred`` (scikit-learn's default), each
    class treated one-vs-rest; labels may be integers or strings.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, other_name="y_pred")
    return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def _scored_pair(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = _check_pair(y_true, y_score, other_name="y_score")
    return _check_binary(y_true, name="y_true"), _check_scores(y_score)


def roc_auc(y_true: np.ndarray, *, y_score: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative, a
    tie counting 1/2 (the Mann–Whitney U statistic over ``P N`` pairs; Hanley & McNeil, 1982).

    Raises ``ValueError`` unless both classes are present.
    """
    t, s = _scored_pair(y_true, y_score)
    n_pos = int(t.sum())
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC-AUC needs both classes in y_true; got {n_pos} positives and {n_neg} negatives")
    return float(skm.roc_auc_score(t, s))


def average_precision(y_true: np.ndarray, *, y_score: np.ndarray) -> float:
    """PR-AUC as average precision, scikit-learn's step-wise definition (no interpolation).

    Thresholds are the distinct scores, highest first; at threshold ``j`` everything scoring ``>= s_j``
    is predicted positive, giving precision ``P_j`` and recall ``R_j``. Then
    ``AP = sum_j (R_j - R_{j-1}) P_j`` with ``R_0 = 0``; tied scores enter together, as one step.
    Raises ``ValueError`` when ``y_true`` has no positive (recall is undefined).
    """
    t, s = _scored_pair(y_true, y_score)
    if int(t.sum()) == 0:
        raise ValueError("average precision needs at least one positive in y_true")
    return float(skm.average_precision_score(t, s))


def brier_score(y_true: np.ndarray, *, y_prob: np.ndarray) -> float:
    """Mean squared difference between predicted probabilities and 0/1 outcomes (Brier, 1950). Predicting
    the positive rate ``r`` for everyone scores ``r (1 - r)``: a model must score below that to say more."""
    t, p = _scored_pair(y_true, y_prob)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("brier_score: y_prob must be probabilities in [0, 1]")
    return float(np.mean((p - t) ** 2))


def calibration_error(y_true: np.ndarray, *, y_prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` bins of the predicted probability cut at its quantiles:
    the share-weighted mean of |mean predicted - observed rate| per bin (Naeini et al., AAAI 2015).
    Quantile cuts, as rare positives leave equal-width upper bins nearly empty; equal probabilities always
    share a bin, so a constant prediction is judged as one group."""
    t, p = _scored_pair(y_true, y_prob)
    if bins < 1:
        raise ValueError(f"calibration_error: bins must be >= 1, got {bins}")
    cuts = np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(cuts, p, side="right")
    total = 0.0
    for b in np.unique(which):
        part = which == b
        total += part.sum() * abs(p[part].mean() - t[part].mean())
    return float(total / len(t))
