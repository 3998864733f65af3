"""Baselines: the shared conformance suite plus hand-checked references for each model's math."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.models import base as model_base
from behaviorlm.models.base import Recommender, ScoringBatch
from behaviorlm.models.baselines import (
    EASE,
    EASE_DENSE_BUDGET_BYTES,
    EASE_FIT_BYTES_PER_ENTRY,
    ItemKNN,
    Popularity,
    RandomRecommender,
    item_knn_similarity,
)
from behaviorlm.models.registry import load_model
from behaviorlm.testing import (
    check_beats_reference,
    check_deterministic,
    check_params,
    check_recommend_contract,
    check_recommender,
    check_save_load_round_trip,
    check_score_contract,
    check_unfitted_raises,
    hold_out_last_event,
    planted_pattern_interactions,
)

# name -> (factory, reference model it must beat on the planted pattern)
BASELINES: dict[str, tuple[Callable[[], Recommender], str | None]] = {
    "random": (lambda: RandomRecommender(seed=7), None),
    "pop": (Popularity, "random"),
    "itemknn-cosine": (lambda: ItemKNN(k=20), "pop"),
    "itemknn-jaccard-shrink": (lambda: ItemKNN(k=20, shrink=5.0, similarity="jaccard"), "pop"),
    "ease": (lambda: EASE(l2=50.0), "pop"),
    "ease-max-items": (lambda: EASE(l2=50.0, max_items=35), "pop"),
}
PERSONALISED = [name for name, (_, reference) in BASELINES.items() if reference == "pop"]


@pytest.fixture(scope="module")
def planted() -> Interactions:
    return planted_pattern_interactions(seed=0)


def _from_rows(rows: list[list[int]], *, n_items: int) -> Interactions:
    """Interactions where user ``u`` has the items ``rows[u]`` in that order."""
    users = np.concatenate([np.full(len(r), u) for u, r in enumerate(rows)])
    items = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
    return Interactions.from_events(
        user_ids=users,
        item_ids=items,
        timestamps=np.arange(len(items)),
        user_universe=np.arange(len(rows)),
        item_universe=np.arange(n_items),
    )


def _score_all(model: Recommender, data: Interactions) -> torch.Tensor:
    return model.score(ScoringBatch(users=np.arange(data.n_users), history=data))


# ------------------------------------------------------------------------------ conformance
CHECKS = {
    "unfitted": check_unfitted_raises,
    "params": check_params,
    "score": check_score_contract,
    "deterministic": check_deterministic,
    "save_load": check_save_load_round_trip,
    "recommend": check_recommend_contract,
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("baseline", list(BASELINES))
def test_conformance(baseline: str, check: str, planted: Interactions) -> None:
    make_model, _ = BASELINES[baseline]
    CHECKS[check](make_model, data=planted)


@pytest.mark.parametrize("baseline", [name for name, (_, ref) in BASELINES.items() if ref is not None])
def test_beats_its_reference_on_planted_pattern(baseline: str, planted: Interactions) -> None:
    make_model, reference = BASELINES[baseline]
    assert reference is not None
    model_hr, reference_hr = check_beats_reference(make_model, data=planted, reference=reference)
    assert model_hr > reference_hr


@pytest.mark.parametrize("baseline", [name for name, (_, ref) in BASELINES.items() if ref is not None])
@pytest.mark.parametrize("seed", [1, 2])
def test_each_baseline_beats_random_on_tiny_planted_pattern(baseline: str, seed: int) -> None:
    tiny = planted_pattern_interactions(n_users=120, n_items=40, n_clusters=4, events_per_user=8, seed=seed)
    make_model, _ = BASELINES[baseline]
    model_hr, random_hr = check_beats_reference(make_model, data=tiny, reference="random")
    assert model_hr > random_hr


@pytest.mark.parametrize("baseline", PERSONALISED)
def test_personalised_baselines_find_the_planted_clusters(baseline: str, planted: Interactions) -> None:
    """Most held-out events are inside the user's cluster, so a co-occurrence model hits most of them."""
    make_model, _ = BASELINES[baseline]
    model_hr, pop_hr = check_beats_reference(make_model, data=planted, reference="pop")
    assert model_hr - pop_hr > 0.1


def test_check_recommender_reports_hit_rates(planted: Interactions) -> None:
    result = check_recommender(lambda: ItemKNN(k=20), must_beat="pop", data=planted)
    assert result["hr@10"] > result["reference_hr@10"]
    assert check_recommender(lambda: RandomRecommender(seed=1), must_beat=None, data=planted) == {}


# --------------------------------------------------------- the suite rejects broken models
class _Float64Popularity(Popularity):
    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return super().score(batch).double()


class _UnseededRandom(RandomRecommender):
    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return torch.rand(len(batch.users), self.n_items)


class _ForgetsStateOnLoad(Popularity):
    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.item_counts_ = torch.zeros_like(tensors["item_counts"])


class _AntiItemKNN(ItemKNN):
    """Ranks each user's cluster last: far worse than random on the planted pattern."""

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return -super().score(batch)


def test_conformance_rejects_wrong_dtype(planted: Interactions) -> None:
    with pytest.raises(AssertionError, match=r"score check failed: .*dtype torch.float64"):
        check_score_contract(_Float64Popularity, data=planted)


def test_conformance_rejects_nondeterminism(planted: Interactions) -> None:
    with pytest.raises(AssertionError, match=r"determinism check failed: .* scores differ"):
        check_deterministic(_UnseededRandom, data=planted)


def test_conformance_rejects_lossy_save_load(planted: Interactions, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_model builds the registered class, so register the broken subclass under "pop" for this test.
    monkeypatch.setitem(model_base._REGISTRY, "pop", _ForgetsStateOnLoad)
    with pytest.raises(AssertionError, match=r"save/load check failed: .* scores differently after loading"):
        check_save_load_round_trip(_ForgetsStateOnLoad, data=planted)


def test_conformance_reports_the_hit_rate_gap(planted: Interactions) -> None:
    with pytest.raises(AssertionError, match=r"beats-reference check failed: .*HR@10=.*difference -0\.\d+"):
        check_beats_reference(lambda: _AntiItemKNN(k=20), data=planted, reference="random")


# ------------------------------------------------------------------------------ random
def test_random_scores_depend_only_on_seed_and_user(planted: Interactions) -> None:
    model = RandomRecommender(seed=3).fit(planted)
    full = _score_all(model, planted)
    alone = model.score(ScoringBatch(users=np.array([5]), history=planted))
    assert torch.equal(alone[0], full[5])
    assert not torch.equal(full[0], full[1])
    other_seed = _score_all(RandomRecommender(seed=4).fit(planted), planted)
    assert not torch.equal(full, other_seed)
    assert float(full.min()) >= 0.0 and float(full.max()) < 1.0


# ------------------------------------------------------------------------------ popularity
def test_popularity_ranks_by_interaction_count() -> None:
    # counts: item0 x1, item1 x4 (one user twice), item2 x2, item3 x0, item4 x3
    data = _from_rows([[1, 4, 1], [1, 2, 4], [1, 2, 0, 4]], n_items=5)
    model = Popularity().fit(data)
    expected_counts = torch.tensor([1.0, 4.0, 2.0, 0.0, 3.0])
    scores = _score_all(model, data)
    assert torch.equal(scores, expected_counts.expand(3, -1))
    recs = model.recommend(np.arange(3), k=5, exclude_seen=False)
    assert recs.items.tolist() == [[1, 4, 2, 0, 3]] * 3
    assert model.recommend(np.array([0]), k=3).items.tolist() == [[2, 0, 3]]


# ------------------------------------------------------------------------------ ItemKNN
def _dense_cosine(x: np.ndarray, *, shrink: float = 0.0) -> np.ndarray:
    co = x.T @ x
    support = np.diag(co).copy()
    denom = np.sqrt(np.outer(support, support)) + shrink
    sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def test_itemknn_similarity_equals_dense_cosine() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((30, 12)) < 0.3).astype(np.float64)
    x[:, 11] = 0.0  # an item nobody interacted with
    data = _from_rows([np.flatnonzero(row).tolist() for row in x], n_items=12)
    for shrink in (0.0, 3.0):
        model = ItemKNN(k=1000, shrink=shrink).fit(data)
        np.testing.assert_allclose(model.similarity_.toarray(), _dense_cosine(x, shrink=shrink), rtol=1e-6)
        scores = _score_all(model, data).numpy()
        np.testing.assert_allclose(scores, x @ _dense_cosine(x, shrink=shrink), rtol=1e-5, atol=1e-6)


def test_itemknn_jaccard_matches_definition() -> None:
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=np.float64)
    sim = item_knn_similarity(sp.csr_matrix(x), k=10, similarity="jaccard").toarray()
    # items 0,1: both by users 0,1 of the union {0,1,2,3} -> 2/4; items 1,2: 2/3; items 0,2: 1/4
    expected = np.array([[0, 2 / 4, 1 / 4], [2 / 4, 0, 2 / 3], [1 / 4, 2 / 3, 0]])
    np.testing.assert_allclose(sim, expected, rtol=1e-6)


def test_itemknn_keeps_top_k_neighbours_per_item_in_blocks() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random((80, 25)) < 0.25).astype(np.float64)
    dense = _dense_cosine(x)
    pruned = item_knn_similarity(sp.csr_matrix(x), k=3, block_items=7).toarray()
    for item in range(25):
        kept = np.flatnonzero(pruned[item])
        assert len(kept) == min(3, np.count_nonzero(dense[item]))
        np.testing.assert_allclose(pruned[item, kept], dense[item, kept], rtol=1e-6)
        if len(kept):
            dropped = np.setdiff1d(np.arange(25), kept)
            assert dense[item, dropped].max() <= pruned[item, kept].min() + 1e-6
    assert np.array_equal(pruned, item_knn_similarity(sp.csr_matrix(x), k=3, block_items=4096).toarray())


def test_itemknn_scores_from_the_batch_history_not_training() -> None:
    train = _from_rows([[0, 1], [1, 2], [2, 3]], n_items=4)
    model = ItemKNN(k=10).fit(train)
    other_history = _from_rows([[3], [0], [1]], n_items=4)
    scores = _score_all(model, other_history).numpy()
    np.testing.assert_allclose(scores, model.similarity_.toarray()[[3, 0, 1]], rtol=1e-6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"shrink": -1.0}, "shrink must be"),
        ({"similarity": "pearson"}, "similarity must"),
    ],
)
def test_itemknn_rejects_bad_parameters(params: dict, message: str, planted: Interactions) -> None:
    with pytest.raises(ValueError, match=message):
        ItemKNN(**params).fit(planted)


# ------------------------------------------------------------------------------ EASE
def _naive_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck 2019, eq. 8, written exactly as in the paper with a plain inverse."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))
    return b


def test_ease_equals_naive_closed_form() -> None:
    rng = np.random.default_rng(2)
    x = (rng.random((40, 15)) < 0.3).astype(np.float64)
    data = _from_rows([np.flatnonzero(row).tolist() for row in x], n_items=15)
    model = EASE(l2=3.0).fit(data)
    expected = _naive_ease(x, 3.0)
    assert np.allclose(np.diag(expected), 0.0, atol=1e-12)
    np.testing.assert_allclose(model.weights_.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert model.weights_.is_contiguous(), "row-major B, else every scoring batch copies it"
    np.testing.assert_allclose(_score_all(model, data).numpy(), x @ expected, rtol=1e-4, atol=1e-5)


def test_ease_max_items_models_the_most_popular_and_ranks_the_rest_below() -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((60, 10)) < 0.35).astype(np.float64)
    x[:, 9] = 0.0
    x[:20, 7] = 1.0  # make popularity order unambiguous for the items left out
    data = _from_rows([np.flatnonzero(row).tolist() for row in x], n_items=10)
    counts = data.item_counts()
    by_popularity = np.argsort(-counts, kind="stable")
    model = EASE(l2=2.0, max_items=6).fit(data)
    modelled = np.sort(by_popularity[:6])
    assert model.modelled_items_.tolist() == modelled.tolist()
    assert model.fallback_items_.tolist() == by_popularity[6:].tolist()
    # The modelled part is EASE on the sub-matrix of the modelled items.
    scores = _score_all(model, data).numpy()
    sub = x[:, modelled]
    np.testing.assert_allclose(scores[:, modelled], sub @ _naive_ease(sub, 2.0), rtol=1e-4, atol=1e-5)
    # Every unmodelled item scores below every modelled one, in popularity order: a total ranking.
    fallback_scores = scores[:, by_popularity[6:]]
    assert (fallback_scores.max(axis=1) < scores[:, modelled].min(axis=1)).all()
    assert (np.diff(fallback_scores, axis=1) < 0).all()
    # max_items >= n_items is plain EASE.
    full = EASE(l2=2.0, max_items=50).fit(data)
    np.testing.assert_allclose(_score_all(full, data).numpy(), x @ _naive_ease(x, 2.0), rtol=1e-4, atol=1e-5)
    assert len(full.fallback_items_) == 0


def test_ease_max_items_round_trips(tmp_path) -> None:
    data = planted_pattern_interactions(n_users=80, n_items=30, n_clusters=3, events_per_user=6)
    model = EASE(max_items=12).fit(data)
    loaded = load_model(model.save(tmp_path / "ease"))
    assert isinstance(loaded, EASE) and loaded.max_items == 12
    assert torch.equal(_score_all(model, data), _score_all(loaded, data))


def test_ease_refuses_a_catalogue_over_the_memory_budget_without_max_items() -> None:
    n_items = int(np.sqrt(EASE_DENSE_BUDGET_BYTES / EASE_FIT_BYTES_PER_ENTRY)) + 10
    data = _from_rows([[0, 1], [n_items - 1]], n_items=n_items)
    with pytest.raises(ValueError, match=rf"all {n_items} items .* set max_items"):
        EASE().fit(data)
    fitted = EASE(max_items=5).fit(data)  # the flag is the way out
    assert fitted.weights_.shape == (5, 5)


@pytest.mark.parametrize(
    ("params", "message"), [({"l2": 0.0}, "l2 must be > 0"), ({"max_items": 0}, "max_items must be")]
)
def test_ease_rejects_bad_parameters(params: dict, message: str, planted: Interactions) -> None:
    with pytest.raises(ValueError, match=message):
        EASE(**params).fit(planted)


# ------------------------------------------------------------------------------ all baselines
@pytest.mark.parametrize("baseline", list(BASELINES))
def test_unfitted_model_says_to_fit_first(baseline: str, planted: Interactions) -> None:
    make_model, _ = BASELINES[baseline]
    with pytest.raises(RuntimeError, match=r"not fitted yet: call fit\(train\) first"):
        make_model().score(ScoringBatch(users=np.arange(3), history=planted))
    with pytest.raises(RuntimeError, match="not fitted yet"):
        make_model().recommend(np.arange(3))
    with pytest.raises(RuntimeError, match="not fitted yet"):
        make_model().save("never-written")


@pytest.mark.parametrize("baseline", list(BASELINES))
def test_history_from_another_index_space_is_rejected(baseline: str, planted: Interactions) -> None:
    make_model, _ = BASELINES[baseline]
    model = make_model().fit(planted)
    other = planted_pattern_interactions(n_users=20, n_items=planted.n_items + 1, n_clusters=3)
    with pytest.raises(ValueError, match="share the training index space"):
        model.score(ScoringBatch(users=np.arange(3), history=other))


def test_held_out_targets_are_never_scored_as_seen(planted: Interactions) -> None:
    held = hold_out_last_event(planted)
    model = ItemKNN(k=20).fit(held.train)
    recs = model.recommend(held.users, k=planted.n_items)
    # With k = n_items every unseen item is listed, so each target must appear exactly once.
    assert ((recs.items == held.targets[:, None]).sum(axis=1) == 1).all()
