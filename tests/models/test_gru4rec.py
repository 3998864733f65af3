"""GRU4Rec (GRU and LSTM cells) through the shared sequence-model machinery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.gru4rec import GRU4Rec
from behaviorlm.testing import check_recommender
from behaviorlm.testing.synthetic import hold_out_last_event, successor_sequences

SMALL = {"d_model": 32, "hidden_size": 32, "dropout": 0.1, "max_len": 16, "epochs": 40, "lr": 5e-3}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_conformance_beats_popularity(cell: str) -> None:
    hit_rates = check_recommender(lambda: GRU4Rec.from_params({"cell": cell, **SMALL}), must_beat="pop")
    assert hit_rates["hr@10"] > hit_rates["reference_hr@10"] + 0.2


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_learns_order_of_events(cell: str) -> None:
    data = successor_sequences(n_users=200, n_items=40, length=12, seed=0)
    held = hold_out_last_event(data)
    model = GRU4Rec.from_params({"cell": cell, **SMALL}).fit(held.train)
    recs = model.recommend(held.users, k=1, exclude_seen=False)
    assert float((recs.items[:, 0] == held.targets).mean()) > 0.9


def test_padding_does_not_change_the_state() -> None:
    """A user's scores are the same whether the batch pads their sequence by 0 or by many positions."""
    data = successor_sequences(n_users=30, n_items=20, length=16, seed=1)
    model = GRU4Rec.from_params({**SMALL, "epochs": 2}).fit(data)
    shorter = data.filter_events(np.concatenate([np.arange(n) >= 10 for n in data.lengths()]))
    alone = model.score(ScoringBatch(users=np.array([0]), history=shorter))
    padded_more = GRU4Rec.from_params({**SMALL, "epochs": 2, "max_len": 32}).fit(data)
    padded_more.net_.load_state_dict(model.net_.state_dict())
    torch.testing.assert_close(alone, padded_more.score(ScoringBatch(users=np.array([0]), history=shorter)))


def test_unknown_cell_is_a_clear_error() -> None:
    data = successor_sequences(n_users=5, n_items=5, length=3, seed=2)
    with pytest.raises(ValueError, match="cell must be 'gru' or 'lstm'"):
        GRU4Rec.from_params({"cell": "rnn", **SMALL}).fit(data)
