"""The one place that computes metrics: pure numpy functions with the formula in each docstring.

Ranking metrics take the **0-based rank** of each target item in a ranking (rank 0 = top of the list),
flattened over users in CSR layout: user ``u``'s target ranks are
``target_ranks[target_ptr[u]:target_ptr[u+1]]``. With ``target_ptr=None`` every rank is its own user
(one target each, the leave-one-out case). Relevance is binary and each target item counts once, so a
user's targets should be distinct items. They return one value per user (``float64 [n_users]``); the
reported metric is the mean over users. How ranks are produced (full ranking, seen-item masking, ties)
is the evaluator's business, see :mod:`behaviorlm.evaluation.ranking`.

Classification metrics (propensity / intent tasks) follow scikit-learn's definitions without depending
on it: binary labels are ``0``/``1`` with ``1`` the positive class, and a ratio whose denominator is zero
(e.g. precision with no predicted positive) is ``0.0``, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import numpy as np

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


def _binary_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` of binary labels."""
    y_true, y_pred = _check_pair(y_true, y_pred, other_name="y_pred")
    t = _check_binary(y_true, name="y_true")
    p = _check_binary(y_pred, name="y_pred")
    tp = int(np.sum((t == 1) & (p == 1)))
    fp = int(np.sum((t == 0) & (p == 1)))
    fn = int(np.sum((t == 1) & (p == 0)))
    return tp, fp, fn, len(t) - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def accuracy(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Accuracy: ``(1/n) sum_i 1[y_pred_i = y_true_i]``; labels may be any (binary or multiclass)."""
    y_true, y_pred = _check_pair(y_true, y_pred, other_name="y_pred")
    return float(np.mean(y_true == y_pred))


def precision(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Binary precision: ``TP / (TP + FP)`` (0 when nothing is predicted positive)."""
    tp, fp, _, _ = _binary_counts(y_true, y_pred)
    return _ratio(tp, tp + fp)


def recall(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Binary recall (sensitivity): ``TP / (TP + FN)`` (0 when there is no positive)."""
    tp, _, fn, _ = _binary_counts(y_true, y_pred)
    return _ratio(tp, tp + fn)


def f1_score(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Binary F1: ``2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and recall; 0 if undefined)."""
    tp, fp, fn, _ = _binary_counts(y_true, y_pred)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def macro_f1(y_true: np.ndarray, *, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over classes: ``(1/|C|) sum_c 2 TP_c / (2 TP_c + FP_c + FN_c)``.

    ``C`` is the set of labels appearing in ``y_true`` or ``y_pred`` (scikit-learn's default), each
    class treated one-vs-rest; labels may be integers or strings.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, other_name="y_pred")
    classes = np.union1d(np.unique(y_true), np.unique(y_pred))
    scores = [
        f1_score((y_true == c).astype(np.int64), y_pred=(y_pred == c).astype(np.int64)) for c in classes
    ]
    return float(np.mean(scores))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (ascending), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    # A tie group occupying sorted positions [a, b) holds 1-based ranks a+1..b, whose mean is (a+1+b)/2.
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def roc_auc(y_true: np.ndarray, *, y_score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic (Hanley & McNeil, 1982).

    With ``R_i`` the 1-based rank of ``y_score_i`` among all scores (ties get their average rank),
    ``P`` positives and ``N`` negatives: ``AUC = (sum_{i positive} R_i - P (P + 1) / 2) / (P N)``,
    i.e. the probability that a random positive outscores a random negative, a tie counting 1/2.
    Raises ``ValueError`` unless both classes are present.
    """
    y_true, y_score = _check_pair(y_true, y_score, other_name="y_score")
    t = _check_binary(y_true, name="y_true")
    s = _check_scores(y_score)
    n_pos = int(t.sum())
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC-AUC needs both classes in y_true; got {n_pos} positives and {n_neg} negatives")
    rank_sum_pos = float(_average_ranks(s)[t == 1].sum())
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(y_true: np.ndarray, *, y_score: np.ndarray) -> float:
    """PR-AUC as average precision, scikit-learn's step-wise definition (no interpolation).

    Thresholds are the distinct scores, highest first; at threshold ``j`` everything scoring ``>= s_j``
    is predicted positive, giving precision ``P_j`` and recall ``R_j``. Then
    ``AP = sum_j (R_j - R_{j-1}) P_j`` with ``R_0 = 0``; tied scores enter together, as one step.
    Raises ``ValueError`` when ``y_true`` has no positive (recall is undefined).
    """
    y_true, y_score = _check_pair(y_true, y_score, other_name="y_score")
    t = _check_binary(y_true, name="y_true")
    s = _check_scores(y_score)
    n_pos = int(t.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive in y_true")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    t_sorted = t[order]
    # Last position of each group of equal scores: the cut points of the distinct thresholds.
    cut = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s) - 1]
    tp = np.cumsum(t_sorted)[cut].astype(np.float64)
    predicted_pos = cut + 1.0
    precision_at = tp / predicted_pos
    recall_at = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall_at]) * precision_at))
