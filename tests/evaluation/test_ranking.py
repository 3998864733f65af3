"""evaluate_ranking against a naive per-user reference, plus protocol and tie-handling checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.evaluation import RankingResult, evaluate_classification, evaluate_ranking
from behaviorlm.evaluation.ranking import (
    _draw_negatives,
    item_popularity_groups,
    metrics_by_target_popularity,
)
from behaviorlm.models.base import Recommender, ScoringBatch


class FixedScoresModel(Recommender):
    """Scores from a fixed ``[n_users, n_items]`` matrix given at construction (test-only)."""

    name = "test-random-eval"

    def __init__(self, *, scores: np.ndarray) -> None:
        self.scores = scores

    def _fit(self, train: Interactions) -> None:
        self.scores_ = torch.as_tensor(self.scores, dtype=torch.float32)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return self.scores_[torch.from_numpy(batch.users)]


class ConstantModel(Recommender):
    """Every item gets the same score, returned as a broadcast view (test-only)."""

    name = "test-constant-eval"

    def _fit(self, train: Interactions) -> None:
        self.n_items_ = train.n_items

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return torch.zeros(1, self.n_items_).expand(len(batch.users), self.n_items_)


def _interactions(pairs: list[tuple[int, int]], *, n_users: int, n_items: int, t0: int = 0) -> Interactions:
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    return Interactions.from_events(
        user_ids=users,
        item_ids=items,
        timestamps=np.arange(len(pairs)) + t0,
        user_universe=np.arange(n_users),
        item_universe=np.arange(n_items),
    )


def _random_split(
    rng: np.random.Generator, *, n_users: int, n_items: int
) -> tuple[Interactions, Interactions]:
    """Random histories (0-8 events) and targets (0-4 events, repeats and history overlaps included)."""
    history_pairs: list[tuple[int, int]] = []
    target_pairs: list[tuple[int, int]] = []
    for u in range(n_users):
        hist = rng.integers(0, n_items, size=rng.integers(0, 9)).tolist()
        history_pairs += [(u, i) for i in hist]
        n_targets = int(rng.integers(0, 5))
        targets = rng.integers(0, n_items, size=n_targets).tolist()
        if hist and targets and rng.random() < 0.5:
            targets[0] = hist[0]  # a repeat of a history item is a legitimate target
        if len(targets) >= 2 and rng.random() < 0.3:
            targets[1] = targets[0]  # a repeated target event counts once
        target_pairs += [(u, i) for i in targets]
    return (
        _interactions(history_pairs, n_users=n_users, n_items=n_items),
        _interactions(target_pairs, n_users=n_users, n_items=n_items, t0=10_000),
    )


def _reference(
    scores: np.ndarray,
    *,
    history: Interactions,
    targets: Interactions,
    ks: tuple[int, ...],
    mask_seen: bool,
    users: np.ndarray | None = None,
) -> tuple[dict[str, float], int]:
    """Naive per-user evaluation written straight from the definitions."""
    per_user: dict[str, list[float]] = {}
    covered: dict[int, set[int]] = {k: set() for k in ks}
    candidates = range(history.n_users) if users is None else sorted(set(users.tolist()))
    n_users = 0
    for u in candidates:
        target_items = sorted(set(targets.history(u).tolist()))
        if not target_items:
            continue
        n_users += 1
        s = scores[u].astype(np.float64).copy()
        if mask_seen:
            s[history.history(u)] = -np.inf
        listed = [i for i in np.argsort(-s, kind="stable") if s[i] > -np.inf]
        for k in ks:
            covered[k].update(int(i) for i in listed[:k])
        s[target_items] = scores[u, target_items]
        ranks = []
        for t in target_items:
            higher = sum(1 for i in range(len(s)) if s[i] > s[t])
            tied_others = sum(1 for i in range(len(s)) if i != t and s[i] == s[t])
            ranks.append(higher + tied_others)
        for k in ks:
            hits = [r for r in ranks if r < k]
            dcg = sum(1 / math.log2(r + 2) for r in hits)
            idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(ranks))))
            per_user.setdefault(f"hr@{k}", []).append(float(len(hits) > 0))
            per_user.setdefault(f"ndcg@{k}", []).append(dcg / idcg)
            per_user.setdefault(f"recall@{k}", []).append(len(hits) / len(ranks))
        per_user.setdefault("mrr", []).append(1 / (min(ranks) + 1))
    result = {name: float(np.mean(values)) for name, values in per_user.items()}
    for k in ks:
        result[f"coverage@{k}"] = len(covered[k]) / history.n_items
    return result, n_users


@pytest.mark.parametrize(
    ("score_kind", "mask_seen", "batch_size", "subset", "ks"),
    [
        ("continuous", True, 7, False, (1, 5, 10)),
        ("continuous", False, 1000, False, (1, 5, 10)),
        ("tied", True, 5, False, (1, 5, 10)),  # integer scores 0..3: ties everywhere
        ("tied", False, 16, True, (1, 5, 10)),
        ("continuous", True, 9, False, (3, 29)),  # top K_max + 1 is the whole catalogue
        ("tied", True, 9, False, (2, 30)),  # K = n_items: every target is a hit
    ],
)
def test_full_ranking_matches_naive_reference(
    score_kind: str, mask_seen: bool, batch_size: int, subset: bool, ks: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(7)
    n_users, n_items = 50, 30
    history, targets = _random_split(rng, n_users=n_users, n_items=n_items)
    if score_kind == "continuous":
        scores = rng.random((n_users, n_items)).astype(np.float32)
    else:
        scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    users = rng.choice(n_users, size=30, replace=False) if subset else None
    model = FixedScoresModel(scores=scores).fit(history)

    result = evaluate_ranking(
        model,
        history=history,
        targets=targets,
        ks=ks,
        mask_seen=mask_seen,
        batch_size=batch_size,
        users=users,
    )
    expected, expected_users = _reference(
        scores, history=history, targets=targets, ks=ks, mask_seen=mask_seen, users=users
    )

    assert result.n_users == expected_users
    assert expected_users > 10  # the random split really has users with and without targets
    if score_kind == "tied":  # with ties top-K membership is arbitrary, so coverage is not comparable
        expected = {name: v for name, v in expected.items() if not name.startswith("coverage")}
        assert all(f"coverage@{k}" in result.metrics for k in ks)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-9), name
    assert result.protocol == {
        "split": "leave-one-out",
        "ranking": "full",
        "mask_seen": mask_seen,
        "n_candidates": n_items,
        "tie_handling": "pessimistic",
        "ks": list(ks),
    }


def test_model_scores_are_not_modified() -> None:
    # The model returns a slice (a view) of its cached matrix; masking must not write into it.
    rng = np.random.default_rng(0)
    history, _ = _random_split(rng, n_users=20, n_items=15)
    targets = _interactions([(u, u % 15) for u in range(20)], n_users=20, n_items=15, t0=100)
    model = FixedScoresModel(scores=rng.random((20, 15))).fit(history)
    model.score = lambda batch: model.scores_[batch.users[0] : batch.users[-1] + 1]
    before = model.scores_.clone()
    for batch_size in (8, 20):  # a partial slice, and a slice covering the whole matrix
        evaluate_ranking(model, history=history, targets=targets, ks=(5,), batch_size=batch_size)
        assert torch.equal(model.scores_, before)


def test_constant_scorer_gets_no_credit() -> None:
    # 100 items, histories of at most 8 items: with all scores equal a target ties with >= 91 other
    # unmasked items, so its pessimistic rank is >= 91 and it is never in a top 10.
    rng = np.random.default_rng(1)
    history, targets = _random_split(rng, n_users=40, n_items=100)
    result = evaluate_ranking(ConstantModel().fit(history), history=history, targets=targets, ks=(10, 20))
    assert result.metrics["hr@10"] == 0.0
    assert result.metrics["ndcg@20"] == 0.0
    assert result.metrics["mrr"] < 1 / 90


def test_constant_scorer_exact_rank() -> None:
    # One user, no history, one target among 50 equal scores: 0 higher + 49 tied others -> rank 49.
    history = _interactions([(1, 3)], n_users=2, n_items=50)
    targets = _interactions([(0, 7)], n_users=2, n_items=50)
    result = evaluate_ranking(ConstantModel().fit(history), history=history, targets=targets, ks=(50,))
    assert result.metrics["mrr"] == pytest.approx(1 / 50)
    assert result.metrics["hr@50"] == 1.0
    # NDCG@50 = 1/log2(49 + 2)
    assert result.metrics["ndcg@50"] == pytest.approx(1 / math.log2(51))


def test_tie_with_one_other_item_costs_one_place() -> None:
    # Scores [1, 1, 0.5]; target item 0 ties with item 1 -> rank 1: HR@1 = 0, RR = 1/2.
    history = _interactions([(0, 2)], n_users=1, n_items=3)
    targets = _interactions([(0, 0)], n_users=1, n_items=3, t0=5)
    model = FixedScoresModel(scores=np.array([[1.0, 1.0, 0.5]])).fit(history)
    result = evaluate_ranking(model, history=history, targets=targets, ks=(1, 2))
    assert result.metrics["hr@1"] == 0.0
    assert result.metrics["hr@2"] == 1.0
    assert result.metrics["mrr"] == 0.5


def test_target_in_history_stays_rankable() -> None:
    # Item 2 is both seen and the target, and the model scores it highest: masking must not hide it.
    history = _interactions([(0, 2), (0, 4)], n_users=1, n_items=5)
    targets = _interactions([(0, 2)], n_users=1, n_items=5, t0=5)
    model = FixedScoresModel(scores=np.array([[0.1, 0.2, 0.9, 0.3, 0.8]])).fit(history)
    result = evaluate_ranking(model, history=history, targets=targets, ks=(1,), mask_seen=True)
    assert result.metrics["hr@1"] == 1.0
    assert result.metrics["mrr"] == 1.0
    # Coverage@1 comes from the masked list: items 2 and 4 are seen, so the top item shown is 3.
    assert result.metrics["coverage@1"] == pytest.approx(1 / 5)


def test_sampled_mode_is_labelled_and_never_draws_history() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 60
    history, targets = _random_split(rng, n_users=n_users, n_items=n_items)
    # History items outscore everything, the targets come next, all other items are below:
    # full ranking puts seen items first when not masked, sampled ranking never draws them, so every
    # target ranks first among its sampled candidates (its only ties are other targets, never drawn).
    scores = rng.random((n_users, n_items)) * 0.5
    for u in range(n_users):
        scores[u, targets.history(u)] = 1.0
        scores[u, history.history(u)] = 2.0
    model = FixedScoresModel(scores=scores).fit(history)
    result = evaluate_ranking(
        model, history=history, targets=targets, ks=(1, 5), sampled_negatives=10, batch_size=8, seed=4
    )
    assert set(result.metrics) == {
        "sampled_hr@1",
        "sampled_ndcg@1",
        "sampled_recall@1",
        "sampled_hr@5",
        "sampled_ndcg@5",
        "sampled_recall@5",
        "sampled_mrr",
    }
    assert result.metrics["sampled_hr@1"] == 1.0
    assert result.metrics["sampled_mrr"] == 1.0
    assert result.protocol["ranking"] == "sampled-10"
    assert result.protocol["n_candidates"] == 11
    assert result.protocol["seed"] == 4
    assert "SAMPLED" in result.describe()
    with pytest.raises(ValueError, match="exceeds the 11 candidates"):
        evaluate_ranking(model, history=history, targets=targets, ks=(20,), sampled_negatives=10)


def test_sampled_ranks_of_random_scorer_are_uniform_and_seeded() -> None:
    # A target among itself + 9 random negatives with continuous random scores has a uniform rank
    # in 0..9, so sampled HR@5 is about 5/10.
    rng = np.random.default_rng(5)
    n_users, n_items = 2000, 200
    history = _interactions([(u, u % n_items) for u in range(n_users)], n_users=n_users, n_items=n_items)
    targets = _interactions(
        [(u, (u + 1) % n_items) for u in range(n_users)], n_users=n_users, n_items=n_items, t0=n_users
    )
    model = FixedScoresModel(scores=rng.random((n_users, n_items))).fit(history)
    first = evaluate_ranking(model, history=history, targets=targets, ks=(5,), sampled_negatives=9, seed=1)
    again = evaluate_ranking(model, history=history, targets=targets, ks=(5,), sampled_negatives=9, seed=1)
    assert first.metrics == again.metrics
    assert first.metrics["sampled_hr@5"] == pytest.approx(0.5, abs=0.04)


def test_draw_negatives_distinct_and_outside_excluded() -> None:
    rng = np.random.default_rng(0)
    n_items = 12
    rows = np.array([0, 0, 1, 2])
    excluded_per_row = {0: {1, 2, 3}, 1: set(range(6)), 2: set()}
    excluded_pairs = sorted(r * n_items + i for r, items in excluded_per_row.items() for i in items)
    draws = _draw_negatives(rng, rows=rows, excluded=np.array(excluded_pairs), n_items=n_items, n_negatives=6)
    assert draws.shape == (4, 6)
    for row, drawn in zip(rows, draws, strict=True):
        assert len(set(drawn.tolist())) == 6
        assert not set(drawn.tolist()) & excluded_per_row[int(row)]
    # Batch row 1 (the third target) has exactly 6 allowed items, so it must get all of them.
    assert set(draws[2].tolist()) == set(range(6, 12))


def test_result_serializes_and_describes_protocol() -> None:
    rng = np.random.default_rng(2)
    history, targets = _random_split(rng, n_users=20, n_items=25)
    model = FixedScoresModel(scores=rng.random((20, 25))).fit(history)
    result = evaluate_ranking(model, history=history, targets=targets, split_name="temporal-test")
    assert isinstance(result, RankingResult)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["protocol"]["split"] == "temporal-test"
    assert payload["n_users"] == result.n_users
    line = result.describe()
    assert "\n" not in line
    assert "full ranking over 25 items" in line
    assert "seen items masked" in line
    assert "pessimistic" in line


def test_invalid_inputs_are_clear_errors() -> None:
    history = _interactions([(0, 1)], n_users=2, n_items=5)
    targets = _interactions([(1, 2)], n_users=2, n_items=5, t0=3)
    model = FixedScoresModel(scores=np.zeros((2, 5))).fit(history)
    other_items = _interactions([(1, 2)], n_users=2, n_items=6)
    with pytest.raises(ValueError, match="one index space"):
        evaluate_ranking(model, history=history, targets=other_items, ks=(1,))
    with pytest.raises(ValueError, match="no user to evaluate"):
        evaluate_ranking(model, history=history, targets=targets, ks=(1,), users=np.array([0]))
    with pytest.raises(ValueError, match="exceeds the 5 candidates"):
        evaluate_ranking(model, history=history, targets=targets, ks=(10,))
    with pytest.raises(ValueError, match="positive integers"):
        evaluate_ranking(model, history=history, targets=targets, ks=(0,))
    model.score = lambda batch: torch.zeros(len(batch.users), 4)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(1, 5\)"):
        evaluate_ranking(model, history=history, targets=targets, ks=(1,))


def test_evaluate_classification_binary_and_multiclass() -> None:
    # Same example as tests/evaluation/test_metrics.py (hand-computed there).
    y_true = np.array([1, 0, 1, 1, 0, 0])
    y_score = np.array([0.9, 0.8, 0.5, 0.3, 0.3, 0.1])
    out = evaluate_classification(y_true, y_score, threshold=0.5)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["roc_auc"] == pytest.approx(6.5 / 9)
    assert out["pr_auc"] == pytest.approx(34 / 45)
    assert out["positive_rate"] == 0.5
    # Threshold 0.85: only row 0 predicted positive -> TP 1, FP 0, FN 2: precision 1, recall 1/3.
    strict = evaluate_classification(y_true, y_score, threshold=0.85)
    assert strict["precision"] == 1.0
    assert strict["recall"] == pytest.approx(1 / 3)
    # Multiclass: arg-max predictions [0, 2, 2, 2, 1] vs [0, 1, 2, 2, 1] -> accuracy 4/5,
    # macro-F1 (1 + 2/3 + 4/5) / 3 as in test_macro_f1_by_hand.
    probs = np.eye(3)[[0, 2, 2, 2, 1]] * 0.6 + 0.1
    multi = evaluate_classification(np.array([0, 1, 2, 2, 1]), probs)
    assert multi["accuracy"] == pytest.approx(4 / 5)
    assert multi["macro_f1"] == pytest.approx((1 + 2 / 3 + 4 / 5) / 3)
    with pytest.raises(ValueError, match="both classes"):
        evaluate_classification(np.array([1, 1]), np.array([0.2, 0.7]))


def test_per_user_values_are_the_users_own_and_average_to_the_metrics() -> None:
    rng = np.random.default_rng(5)
    history, targets = _random_split(rng, n_users=30, n_items=20)
    scores = rng.random((30, 20))
    model = FixedScoresModel(scores=scores).fit(history)
    result = evaluate_ranking(model, history=history, targets=targets, ks=(5,), batch_size=7, per_user=True)
    assert result.users is not None and result.per_user is not None
    assert result.users.tolist() == sorted(set(targets.event_users().tolist()))
    for name, values in result.per_user.items():
        assert values.shape == (result.n_users,)
        assert values.mean() == pytest.approx(result.metrics[name])
    # Each user's value is the one a single-user evaluation gives.
    for position in (0, len(result.users) - 1):
        user = result.users[position]
        alone = evaluate_ranking(model, history=history, targets=targets, ks=(5,), users=np.array([user]))
        assert result.per_user["ndcg@5"][position] == pytest.approx(alone.metrics["ndcg@5"])
    assert "per_user" not in result.to_dict()
    assert evaluate_ranking(model, history=history, targets=targets).per_user is None


def test_item_popularity_groups_split_head_and_tail_without_breaking_ties() -> None:
    counts = np.array([50, 40, 9, 9, 9, 3, 2, 1, 0, 0])
    groups = item_popularity_groups(counts)  # head: the 2 most popular items
    assert groups["longtail"].tolist() == [False, False] + [True] * 8
    assert groups["cold"].tolist() == [False] * 6 + [True] * 4
    # A tie at the boundary stays on one side: the 3rd most popular (9) ties with two others.
    widened = item_popularity_groups(counts, tail_share=0.7)
    assert widened["longtail"].tolist() == [False] * 5 + [True] * 5
    with pytest.raises(ValueError, match="tail_share"):
        item_popularity_groups(counts, tail_share=1.0)


def test_metrics_by_target_popularity_average_the_users_of_each_group() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 12
    history, _ = _random_split(rng, n_users=n_users, n_items=n_items)
    # One target per user, so each user's group is that of their target.
    targets = _interactions(
        [(u, int(rng.integers(0, n_items))) for u in range(n_users)],
        n_users=n_users,
        n_items=n_items,
        t0=10_000,
    )
    scores = rng.normal(size=(n_users, n_items))
    model = FixedScoresModel(scores=scores).fit(history)
    result = evaluate_ranking(model, history=history, targets=targets, ks=(10,), per_user=True)
    counts = history.item_counts()
    out = metrics_by_target_popularity(result, targets=targets, item_counts=counts)
    groups = item_popularity_groups(counts)
    target_of = {int(u): int(i) for u, i in zip(targets.event_users(), targets.items, strict=True)}
    for group in ("longtail", "cold"):
        members = [k for k, u in enumerate(result.users) if groups[group][target_of[int(u)]]]
        assert out[f"{group}_users"] == len(members)
        expected = np.mean(result.per_user["ndcg@10"][members]) if members else float("nan")
        assert out[f"{group}_ndcg@10"] == pytest.approx(expected, nan_ok=True)
    # Without per-user values there is nothing to group.
    plain = evaluate_ranking(model, history=history, targets=targets, ks=(10,))
    with pytest.raises(ValueError, match="per_user=True"):
        metrics_by_target_popularity(plain, targets=targets, item_counts=counts)


class LengthOrderedModel(FixedScoresModel):
    """FixedScoresModel that asks for users in order of history length and records each batch."""

    name = "test-length-ordered-eval"
    scores_by_history_length = True

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        self.batches_.append(batch.users.copy())
        return super().score(batch)


def test_users_in_history_length_order_give_the_same_results() -> None:
    rng = np.random.default_rng(3)
    history, targets = _random_split(rng, n_users=60, n_items=25)
    scores = rng.random((60, 25))
    plain = evaluate_ranking(
        FixedScoresModel(scores=scores).fit(history),
        history=history,
        targets=targets,
        batch_size=7,
        per_user=True,
    )
    model = LengthOrderedModel(scores=scores).fit(history)
    model.batches_ = []
    ordered = evaluate_ranking(model, history=history, targets=targets, batch_size=7, per_user=True)
    seen = np.concatenate(model.batches_)
    lengths = history.lengths()[seen]
    assert (np.diff(lengths) >= 0).all() and not (np.diff(seen) >= 0).all()  # reordered, by length
    assert ordered.metrics == pytest.approx(plain.metrics, rel=1e-12)
    np.testing.assert_array_equal(ordered.users, plain.users)  # per-user values back in user order
    for name, values in plain.per_user.items():
        np.testing.assert_allclose(ordered.per_user[name], values, rtol=0, atol=0)


def test_results_as_dataframes() -> None:
    # Recommendations and per-user metrics come out as Arrow tables / pandas DataFrames with external ids.
    from behaviorlm.models.baselines import Popularity

    data = Interactions.from_events(
        user_ids=np.array(["a", "a", "b", "b", "c"]),
        item_ids=np.array(["x", "y", "x", "z", "y"]),
        timestamps=np.array([1, 2, 1, 2, 1]),
    )
    model = Popularity().fit(data)
    recs = model.recommend(np.arange(3), k=3)
    frame = recs.to_pandas(model.trained_on)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    # Each user has 3 - (seen items) unseen items; the masked seen ones are left out.
    assert frame.groupby("user")["item"].apply(list).to_dict() == {"a": ["z"], "b": ["y"], "c": ["x", "z"]}
    assert recs.to_arrow().column("user").to_pylist() == [0, 1, 2, 2]
    result = evaluate_ranking(model, history=data, targets=data, ks=(1,), mask_seen=False, per_user=True)
    table = result.to_pandas(data)
    assert table["user"].tolist() == ["a", "b", "c"]
    assert table["hr@1"].mean() == pytest.approx(result.metrics["hr@1"])
    with pytest.raises(ValueError, match="per_user=True"):
        evaluate_ranking(model, history=data, targets=data, ks=(1,)).to_pandas()
