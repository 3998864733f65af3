"""LightGCN: conformance (beats popularity on planted clusters), propagation by hand, history-aware scoring."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.lightgcn import LightGCN, LightGCNNet, _normalised_adjacency
from behaviorlm.models.registry import load_model
from behaviorlm.testing import check_recommender

FAST = {"d_model": 16, "epochs": 15, "batch_size": 512, "lr": 2e-2, "eval_every": 5}


def test_conformance_beats_popularity() -> None:
    hit_rates = check_recommender(lambda: LightGCN.from_params(FAST), must_beat="pop")
    assert hit_rates["hr@10"] > hit_rates["reference_hr@10"] + 0.2


def test_propagation_by_hand() -> None:
    # Two users, three items: u0 - i0, u0 - i1, u1 - i1.
    csr = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
    item_degree = np.array([1, 2, 0])
    adjacency = _normalised_adjacency(csr, item_degree).to_dense()
    expected = np.array([[1 / np.sqrt(2 * 1), 1 / np.sqrt(2 * 2), 0], [0, 1 / np.sqrt(1 * 2), 0]])
    np.testing.assert_allclose(adjacency.numpy(), expected, rtol=1e-6)
    net = LightGCNNet(n_users=2, n_items=3, d_model=4)
    users, items = net.layers(adjacency.to_sparse(), 2)
    torch.testing.assert_close(users[1], adjacency @ net.item.weight)
    torch.testing.assert_close(items[1], adjacency.T @ net.user.weight)
    torch.testing.assert_close(items[2], adjacency.T @ users[1])


def test_scores_read_the_given_history_and_survive_save_load(tmp_path) -> None:
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(120):
        block = u % 3
        for i in rng.choice(10, size=5, replace=False):
            users.append(f"u{u}")
            items.append(f"b{block}i{i}")
    data = Interactions.from_events(
        user_ids=np.array(users), item_ids=np.array(items), timestamps=np.arange(len(users))
    )
    model = LightGCN.from_params(FAST).fit(data)
    batch = ScoringBatch(users=np.arange(data.n_users), history=data)
    loaded = load_model(model.save(tmp_path / "m"))
    torch.testing.assert_close(loaded.score(batch), model.score(batch))
    # Giving user 0 a history in another block moves its scores towards that block.
    other = data.filter_events(np.repeat(np.arange(data.n_users), data.lengths()) != 0)
    block_of_item = np.array([int(str(i)[1]) for i in data.item_ids])
    own, foreign = (
        block_of_item[data.items[data.user_ptr[0]]],
        (block_of_item[data.items[data.user_ptr[0]]] + 1) % 3,
    )
    history = Interactions.from_events(
        user_ids=np.concatenate([np.repeat(other.user_ids, other.lengths()), ["u0"] * 5]),
        item_ids=np.concatenate([other.item_ids[other.items], data.item_ids[block_of_item == foreign][:5]]),
        timestamps=np.arange(other.n_events + 5),
        user_universe=data.user_ids,
        item_universe=data.item_ids,
    )
    shifted = model.score(ScoringBatch(users=np.array([0]), history=history))[0]
    original = model.score(ScoringBatch(users=np.array([0]), history=data))[0]
    gain = shifted - original
    assert (
        gain[torch.from_numpy(block_of_item == foreign)].mean()
        > gain[torch.from_numpy(block_of_item == own)].mean()
    )
    with pytest.raises(ValueError, match="items"):
        model.score(
            ScoringBatch(
                users=np.array([0]),
                history=Interactions.from_events(
                    user_ids=np.array(["x"]), item_ids=np.array(["y"]), timestamps=np.array([0])
                ),
            )
        )
