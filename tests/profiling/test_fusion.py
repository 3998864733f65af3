"""Text + behaviour fusion: text scores by hand, prefix alignment, and validation picks the signal that
was planted to be predictive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.splits import leave_one_out
from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.baselines import EASE, Popularity
from behaviorlm.profiling.fusion import (
    FusedRecommender,
    TextInterestRecommender,
    evaluate_by_history_length,
    fused_scores,
    history_length_buckets,
    prefix_event_index,
)
from behaviorlm.testing.synthetic import planted_pattern_interactions

N_ITEMS, N_CLUSTERS = 60, 6


def cluster_of_item() -> np.ndarray:
    # planted_pattern_interactions puts items in contiguous blocks, one per cluster.
    return np.arange(N_ITEMS) * N_CLUSTERS // N_ITEMS


def test_text_scores_by_hand() -> None:
    day = 86_400
    train = Interactions.from_events(
        user_ids=np.array(["a", "a", "b"]),
        item_ids=np.array(["x", "y", "x"]),
        timestamps=np.array([0, 30 * day, 30 * day]),
        item_universe=np.array(["x", "y", "z"]),
    )
    descriptions = np.eye(3, dtype=np.float32)
    # a reviewed x with text along axis z; b wrote nothing (zero row).
    reviews = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    model = TextInterestRecommender(half_life_days=30).fit(
        train, review_vectors=reviews, item_description_vectors=descriptions
    )
    # Item x: unit(description x) + unit(reviews of x) = (1, 0, 1) / sqrt 2; y and z: their descriptions.
    np.testing.assert_allclose(model.item_vectors_[0], np.array([1, 0, 1]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(model.item_vectors_[1:], np.eye(3)[1:], atol=1e-7)
    scores = model.score(ScoringBatch(users=np.array([0, 1]), history=train)).numpy()
    # User a: items part = unit(0.5 * v_x + 1 * v_y), written part = (0, 0, 1) (only x's review).
    items_part = 0.5 * model.item_vectors_[0] + model.item_vectors_[1]
    interest_a = items_part / np.linalg.norm(items_part) + np.array([0, 0, 1])
    interest_a /= np.linalg.norm(interest_a)
    np.testing.assert_allclose(scores[0], interest_a @ model.item_vectors_.T, rtol=1e-5)
    # User b: only x, no text written: the interest is x's vector, so x scores 1.
    np.testing.assert_allclose(scores[1], model.item_vectors_[0] @ model.item_vectors_.T, rtol=1e-5)
    with pytest.raises(ValueError, match="needs review_vectors"):
        TextInterestRecommender().fit(train)
    with pytest.raises(ValueError, match="2 rows for 3 training events"):
        TextInterestRecommender().fit(train, review_vectors=reviews[:2])


def test_fused_scores_standardise_each_row() -> None:
    behaviour = torch.tensor([[10.0, 20.0, 30.0], [1.0, 1.0, 1.0]])
    text = torch.tensor([[0.3, 0.2, 0.1], [0.1, 0.0, 0.2]])
    z = np.sqrt(1.5)  # (-1, 0, 1) has population standard deviation sqrt(2/3)
    np.testing.assert_allclose(fused_scores(behaviour, text, text_weight=0.0)[0], [-z, 0, z], rtol=1e-6)
    np.testing.assert_allclose(fused_scores(behaviour, text, text_weight=1.0)[0], [z, 0, -z], rtol=1e-6)
    np.testing.assert_allclose(fused_scores(behaviour, text, text_weight=0.5)[0], [0, 0, 0], atol=1e-6)
    # A constant behaviour row has no information: it contributes zeros, not NaN.
    np.testing.assert_allclose(fused_scores(behaviour, text, text_weight=0.0)[1], [0, 0, 0])
    with pytest.raises(ValueError, match="text_weight"):
        fused_scores(behaviour, text, text_weight=1.5)


def test_prefix_index_carries_event_data_into_a_split() -> None:
    data = planted_pattern_interactions(n_users=20, n_items=N_ITEMS, n_clusters=N_CLUSTERS, seed=1)
    split = leave_one_out(data)
    index = prefix_event_index(data, split.train)
    np.testing.assert_array_equal(data.items[index], split.train.items)
    np.testing.assert_array_equal(data.event_users()[index], split.train.event_users())
    with pytest.raises(ValueError, match="not a prefix"):
        prefix_event_index(data, split.test)


def fit_fusion(*, text_predictive: bool) -> tuple[FusedRecommender, dict[str, float]]:
    data = planted_pattern_interactions(
        n_users=300, n_items=N_ITEMS, n_clusters=N_CLUSTERS, events_per_user=12, noise_share=0.25, seed=0
    )
    split = leave_one_out(data)
    rng = np.random.default_rng(0)
    if text_predictive:
        # An item's description says which cluster it belongs to; the behaviour model is not personal.
        descriptions = np.eye(8)[cluster_of_item()] + rng.normal(0, 0.2, (N_ITEMS, 8))
        behaviour = Popularity().fit(split.train)
    else:
        # Descriptions are noise; the behaviour model (EASE) learns the clusters from co-occurrence.
        descriptions = rng.normal(0, 1, (N_ITEMS, 64))
        behaviour = EASE(l2=50.0).fit(split.train)
    text = TextInterestRecommender().fit(split.train, item_description_vectors=descriptions)
    fused = FusedRecommender(behaviour=behaviour, text=text).fit(
        split.train, valid=RankingValidation(split.train, split.valid)
    )
    test = {
        name: evaluate_ranking(model, history=split.test_history, targets=split.test, ks=(10,)).metrics[
            "ndcg@10"
        ]
        for name, model in (("behaviour", behaviour), ("text", text), ("fused", fused))
    }
    return fused, test


def test_validation_gives_text_the_weight_when_text_is_predictive() -> None:
    fused, test = fit_fusion(text_predictive=True)
    assert fused.selection_.text_weight >= 0.5
    assert set(fused.selection_.validation) == {round(0.05 * i, 2) for i in range(21)}
    assert test["text"] > test["behaviour"] + 0.1
    assert test["fused"] >= test["text"] - 0.02


def test_validation_gives_behaviour_the_weight_when_text_is_noise() -> None:
    fused, test = fit_fusion(text_predictive=False)
    # Not exactly 0: noise added to a good ranking spreads the targets' ranks, and NDCG is convex in the
    # rank, so a little noise raises it a little on average (0.598 -> 0.622 on validation here).
    assert fused.selection_.text_weight <= 0.3
    assert test["behaviour"] > test["text"] + 0.1
    assert test["fused"] >= test["behaviour"] - 0.02


def test_reviews_the_users_wrote_carry_the_signal() -> None:
    data = planted_pattern_interactions(n_users=300, n_items=N_ITEMS, n_clusters=N_CLUSTERS, seed=2)
    split = leave_one_out(data)
    # Every training review is about the cluster of the item reviewed, plus noise; no descriptions.
    rng = np.random.default_rng(2)
    reviews = np.eye(8)[cluster_of_item()[split.train.items]] + rng.normal(0, 0.3, (split.train.n_events, 8))
    text = TextInterestRecommender().fit(split.train, review_vectors=reviews)
    pop = Popularity().fit(split.train)
    fused = FusedRecommender(behaviour=pop, text=text).fit(
        split.train, valid=RankingValidation(split.train, split.valid)
    )
    assert fused.selection_.text_weight >= 0.5
    by_length = evaluate_by_history_length(
        fused, history=split.test_history, targets=split.test, lengths=split.train.lengths()
    )
    # Every user has 10 training events: all of them fall in the 6-20 bucket.
    assert by_length["1-2"] is None and by_length[">20"] is None
    assert by_length["6-20"].n_users == by_length["all"].n_users == 300
    assert by_length["6-20"].metrics["ndcg@10"] == pytest.approx(by_length["all"].metrics["ndcg@10"])
    pop_ndcg = evaluate_ranking(pop, history=split.test_history, targets=split.test, ks=(10,)).metrics[
        "ndcg@10"
    ]
    assert by_length["all"].metrics["ndcg@10"] > pop_ndcg + 0.1


def test_history_length_buckets() -> None:
    buckets = history_length_buckets(np.array([0, 1, 2, 3, 5, 6, 20, 21, 400]))
    assert {k: v.tolist() for k, v in buckets.items()} == {
        "1-2": [1, 2],
        "3-5": [3, 4],
        "6-20": [5, 6],
        ">20": [7, 8],
    }
