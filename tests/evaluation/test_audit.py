"""Bias audit: planted group gaps are found and fair groupings are not, popularity measures, the penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.splits import leave_one_out
from behaviorlm.evaluation import metrics
from behaviorlm.evaluation.audit import (
    audit_recommender,
    group_gap,
    group_labels,
    head_items,
    popularity_bias,
)
from behaviorlm.evaluation.ranking import evaluate_ranking
from behaviorlm.models.base import Recommender, ScoringBatch
from behaviorlm.models.baselines import ItemKNN, Popularity
from behaviorlm.models.reranking import PopularityPenalized

N_ITEMS = 60
LENGTH = 8


def _planted(seed: int = 0) -> tuple[Interactions, dict[str, dict[str, str]]]:
    """Users u0..u149 walk the item chain s, s+1, ... (predictable); u150..u299 pick items at random,
    skewed towards low item numbers (popular items, unpredictable). ``gender`` marks the two halves;
    ``fair`` splits each half in two by user number, which says nothing about behaviour."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    zipf = 1.0 / np.arange(1, N_ITEMS + 1)
    zipf /= zipf.sum()
    for u in range(300):
        if u < 150:
            start = rng.integers(N_ITEMS)
            seq = [(start + t) % N_ITEMS for t in range(LENGTH)]
        else:
            seq = rng.choice(N_ITEMS, size=LENGTH, replace=False, p=zipf).tolist()
        users += [f"u{u}"] * LENGTH
        items += [f"i{i:02d}" for i in seq]
        times += list(range(LENGTH))
    interactions = Interactions.from_events(
        user_ids=np.array(users), item_ids=np.array(items), timestamps=np.array(times)
    )
    attributes = {
        f"u{u}": {"gender": "walker" if u < 150 else "random", "fair": "even" if u % 2 == 0 else "odd"}
        for u in range(300)
    }
    return interactions, attributes


@pytest.fixture(scope="module")
def planted():
    torch.set_num_threads(1)
    interactions, attributes = _planted()
    split = leave_one_out(interactions)
    model = ItemKNN(k=20).fit(split.train)
    return split, model, attributes


def test_planted_gap_is_found_and_a_fair_grouping_is_not(planted) -> None:
    split, model, attributes = planted
    report = audit_recommender(
        model,
        history=split.test_history,
        targets=split.test,
        user_attributes=attributes,
        groups=("gender", "fair"),
        n_resamples=1000,
    )
    gender = report.groups["gender"]
    gap = gender.gap["ndcg@10"]
    assert gender.best["ndcg@10"] == "walker" and gender.worst["ndcg@10"] == "random"
    assert gap.estimate > 0.3 and gap.excludes_zero()
    assert gender.p_value["ndcg@10"] < 0.01
    by_name = {g.group: g for g in gender.groups}
    assert by_name["walker"].vs_rest["ndcg@10"].low > 0 > by_name["random"].vs_rest["ndcg@10"].high
    assert by_name["walker"].n_users == by_name["random"].n_users == 150

    fair = report.groups["fair"]
    assert fair.gap["ndcg@10"].low <= 0 <= fair.gap["ndcg@10"].high
    assert fair.gap["hr@10"].low <= 0 <= fair.gap["hr@10"].high
    assert fair.p_value["ndcg@10"] > 0.05
    # Each group's mean is the plain mean of its users' values, inside its own interval.
    for group in (*gender.groups, *fair.groups):
        m = group.metrics["ndcg@10"]
        assert m.low <= m.estimate <= m.high
    assert report.attributes_used == ["gender", "fair"]
    assert report.to_dict()["attribute_use"].startswith("grouping of evaluation results only")


def test_group_gap_bootstrap_matches_planted_values() -> None:
    rng = np.random.default_rng(1)
    values = {"ndcg@10": np.r_[rng.normal(0.5, 0.1, 400), rng.normal(0.3, 0.1, 400)]}
    labels = np.array(["a"] * 400 + ["b"] * 400, dtype=object)
    gap = group_gap(values, labels=labels, attribute="planted", n_resamples=1000, seed=3)
    interval = gap.gap["ndcg@10"]
    assert interval.estimate == pytest.approx(values["ndcg@10"][:400].mean() - values["ndcg@10"][400:].mean())
    # The standard error of a difference of two means of 400 draws with sd 0.1 is 0.1 * sqrt(2/400).
    half_width = (interval.high - interval.low) / 2
    assert half_width == pytest.approx(1.96 * 0.1 * np.sqrt(2 / 400), rel=0.15)
    again = group_gap(values, labels=labels, attribute="planted", n_resamples=1000, seed=3)
    assert again.gap["ndcg@10"] == interval  # seeded


def test_small_and_unknown_groups_are_reported_but_not_compared() -> None:
    values = {"hr@10": np.r_[np.ones(30), np.zeros(30), np.ones(3), np.zeros(5)]}
    labels = np.array(["x"] * 30 + ["y"] * 30 + ["tiny"] * 3 + ["unknown"] * 5, dtype=object)
    gap = group_gap(values, labels=labels, attribute="a", n_resamples=200, min_group_users=20)
    assert sorted(gap.small_groups) == ["tiny", "unknown"]
    assert {g.group for g in gap.groups} == {"x", "y", "tiny", "unknown"}
    assert gap.gap["hr@10"].estimate == pytest.approx(1.0)


def test_gini_of_exposure() -> None:
    assert metrics.gini_coefficient(np.full(50, 7.0)) == pytest.approx(0.0, abs=1e-12)
    single = np.zeros(1000)
    single[3] = 10
    assert metrics.gini_coefficient(single) == pytest.approx(999 / 1000)
    assert metrics.gini_coefficient(np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.gini_coefficient(np.array([1.0, -1.0]))


def test_head_items_make_80_percent_of_interactions() -> None:
    counts = np.array([5, 50, 10, 30, 5])
    assert head_items(counts, share=0.8).tolist() == [1, 3]
    assert head_items(counts, share=0.81).tolist() == [1, 2, 3]


def test_popularity_bias_by_hand() -> None:
    interactions = Interactions.from_events(
        user_ids=np.array(["a", "a", "b", "b", "b", "c"]),
        item_ids=np.array(["x", "y", "x", "x", "z", "w"]),
        timestamps=np.arange(6),
    )
    # Counts: w 1, x 3, y 1, z 1 (item order w, x, y, z). Users a and b are recommended.
    top = np.array([[1, 0], [2, -1]])
    bias = popularity_bias(top, users=np.array([0, 1]), history=interactions)
    assert bias.mean_recommended_popularity == pytest.approx(((3 + 1) / 2 + 1 / 1) / 2)
    assert bias.mean_history_popularity == pytest.approx(((3 + 1) / 2 + (3 + 3 + 1) / 3) / 2)
    assert bias.gini_exposure == pytest.approx(metrics.gini_coefficient(np.array([1, 1, 1, 0])))
    assert bias.coverage == pytest.approx(3 / 4)
    # Head: x (3 of 6) + w (1) + y (1) reach 5/6 >= 80%; the tail is z.
    assert bias.n_head_items == 3 and bias.longtail_share == pytest.approx(0.0)


def test_popularity_penalty_lowers_recommended_popularity(planted) -> None:
    split, model, attributes = planted
    exact = PopularityPenalized(model, penalty=0.0).fit(model.trained_on)
    base = evaluate_ranking(model, history=split.test_history, targets=split.test)
    same = evaluate_ranking(exact, history=split.test_history, targets=split.test)
    assert same.metrics == pytest.approx(base.metrics)  # penalty 0 keeps the ranking

    report = audit_recommender(
        model,
        history=split.test_history,
        targets=split.test,
        user_attributes=attributes,
        groups=("gender",),
        penalties=(0.0, 1.0, 3.0),
        n_resamples=200,
    )
    popularity = [p.popularity.mean_recommended_popularity for p in report.mitigation]
    assert popularity[0] == pytest.approx(report.popularity.mean_recommended_popularity)
    assert popularity[0] > popularity[1] > popularity[2]
    assert report.mitigation[2].popularity.longtail_share > report.mitigation[0].popularity.longtail_share
    assert set(report.mitigation[1].gaps) == {"gender:ndcg@10", "gender:hr@10"}

    pop = Popularity().fit(split.train)
    penalized = PopularityPenalized(pop, penalty=3.0).fit(split.train)
    pop_recs = pop.recommend(np.arange(10), k=5).items
    penalized_recs = penalized.recommend(np.arange(10), k=5).items
    counts = split.train.item_counts()
    assert counts[penalized_recs].mean() < counts[pop_recs].mean()


class _RecordingModel(Recommender):
    """ItemKNN behind a recorder of what ``score`` is given."""

    name = "recording"

    def __init__(self, *, inner: Recommender) -> None:
        self.inner = inner
        self.calls: list[ScoringBatch] = []

    def _fit(self, train: Interactions) -> None:
        self.inner.fit(train)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        self.calls.append(batch)
        return self.inner.score(batch)


def test_attributes_never_reach_the_model(planted) -> None:
    split, _, attributes = planted
    model = _RecordingModel(inner=ItemKNN(k=20)).fit(split.train)  # fitted on interactions only
    report = audit_recommender(
        model, history=split.test_history, targets=split.test, user_attributes=attributes, groups=("gender",)
    )
    assert model.calls and all(set(vars(b)) == {"users", "history", "_csr"} for b in model.calls)
    assert all(b.history is split.test_history for b in model.calls)

    # Shuffled attributes change the groups, never what the model produced.
    ids = list(attributes)
    shuffled = dict(zip(ids, (attributes[i] for i in np.random.default_rng(0).permutation(ids)), strict=True))
    other = audit_recommender(
        model, history=split.test_history, targets=split.test, user_attributes=shuffled, groups=("gender",)
    )
    assert other.metrics == report.metrics
    assert other.popularity == report.popularity
    assert other.groups["gender"].gap["ndcg@10"].estimate < report.groups["gender"].gap["ndcg@10"].estimate


def test_group_labels_age_bands_and_activity_tertiles() -> None:
    interactions = Interactions.from_events(
        user_ids=np.repeat(np.array(["a", "b", "c", "d", "e", "f"]), [1, 2, 3, 4, 5, 6]),
        item_ids=np.array([f"i{n}" for n in range(21)]),
        timestamps=np.arange(21),
    )
    attributes = {"a": {"age": "1"}, "b": {"age": "24"}, "c": {"age": "25"}, "d": {"age": "56"}, "e": {}}
    labels = group_labels(
        np.arange(6), history=interactions, user_attributes=attributes, groups=("age", "activity", "gender")
    )
    assert labels["age"].tolist() == ["under 18", "18-24", "25-34", "56+", "unknown", "unknown"]
    assert (
        labels["activity"].tolist()
        == ["1/3 (1-2 events)"] * 2 + ["2/3 (3-4 events)"] * 2 + ["3/3 (5-6 events)"] * 2
    )
    assert set(labels["gender"]) == {"unknown"}


def test_missing_attributes_are_a_clear_error(planted) -> None:
    split, model, attributes = planted
    with pytest.raises(ValueError, match="no user has attribute"):
        audit_recommender(
            model, history=split.test_history, targets=split.test, user_attributes=attributes, groups=("age",)
        )
    with pytest.raises(ValueError, match="need user attributes"):
        audit_recommender(model, history=split.test_history, targets=split.test, groups=("gender",))


def test_bootstrap_means_are_scipys_and_the_hand_written_draws() -> None:
    # SciPy's bootstrap distribution equals the loop it replaced (rows drawn with rng.integers, a block
    # of resamples at a time) from the same generator, for small and large groups alike.
    from behaviorlm.evaluation.audit import _bootstrap_means

    rng = np.random.default_rng(0)
    for n in (7, 337, 5000):
        values = rng.random((n, 2))
        expected = np.empty((300, 2))
        draw = np.random.default_rng(1)
        block = max(1, 1_000_000 // n)
        for start in range(0, 300, block):
            stop = min(start + block, 300)
            expected[start:stop] = values[draw.integers(0, n, size=(stop - start, n))].mean(axis=1)
        np.testing.assert_array_equal(_bootstrap_means(values, 300, np.random.default_rng(1)), expected)
