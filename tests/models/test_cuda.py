"""The sequence models on a CUDA GPU: training (fp32, bf16 autocast, torch.compile), scoring, saving to CPU.

Skipped where no GPU is visible (CI has none); run on a GPU machine with
``python -m pytest tests/models/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.gru4rec import GRU4Rec
from behaviorlm.models.heads import NextEventTypeModel, SequenceLabels
from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
from behaviorlm.models.registry import load_model
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.testing.synthetic import funnel_sequences, hold_out_last_event, successor_sequences

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1, "max_len": 16, "epochs": 40, "lr": 5e-3}


def _hit_rate_at_1(model, data) -> float:
    held = hold_out_last_event(data)
    model.fit(held.train)
    recs = model.recommend(held.users, k=1, exclude_seen=False)
    return float((recs.items[:, 0] == held.targets).mean())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"amp": True},
        {"loss": "sampled", "n_negatives": 16},
        {"compile": True},
    ],
    ids=["fp32", "bf16-autocast", "sampled-softmax", "compiled"],
)
def test_transformer_learns_order_on_gpu(options) -> None:
    data = successor_sequences(n_users=200, n_items=40, length=12, seed=0)
    model = BehaviorTransformer.from_params({**SMALL, **options, "device": "cuda"})
    assert _hit_rate_at_1(model, data) > 0.9
    assert next(model.net_.parameters()).is_cuda


def test_gru4rec_learns_order_on_gpu() -> None:
    data = successor_sequences(n_users=200, n_items=40, length=12, seed=1)
    model = GRU4Rec.from_params({**{k: v for k, v in SMALL.items() if k != "n_heads"}, "device": "cuda"})
    assert _hit_rate_at_1(model, data) > 0.9


def test_gpu_model_saves_loads_on_cpu_and_predicts_next(tmp_path) -> None:
    data = successor_sequences(n_users=200, n_items=40, length=12, seed=6, typed=True)
    last = np.zeros(data.n_events, dtype=bool)
    last[data.user_ptr[1:] - 1] = True
    train, valid = data.filter_events(~last), data.filter_events(last)
    model = BehaviorTransformer.from_params({**SMALL, "device": "cuda"}).fit(
        train, valid=RankingValidation(train, valid)
    )
    assert model.training_summary()["peak_gpu_mb"] > 0
    users = np.arange(data.n_users)
    gpu_scores = model.score(ScoringBatch(users=users, history=data))
    assert gpu_scores.device.type == "cuda"  # ranking and masking run where the scores are
    gpu_scores = gpu_scores.cpu()
    loaded = load_model(model.save(tmp_path / "m"))
    assert next(loaded.net_.parameters()).device.type == "cpu"
    torch.testing.assert_close(loaded.score(ScoringBatch(users=users, history=data)), gpu_scores)
    # Full-ranking evaluation runs on the GPU and agrees with the same model evaluated on the CPU.
    on_gpu = evaluate_ranking(model, history=train, targets=valid).metrics
    on_cpu = evaluate_ranking(loaded, history=train, targets=valid).metrics
    assert on_gpu["ndcg@10"] > 0.5
    assert on_gpu == pytest.approx(on_cpu, abs=0.01)
    after_cart = model.predict_next(
        ["i007", "i008", "i009", "i010"], event_types=["view"] * 3 + ["cart"], k=1
    )
    assert after_cart.item_ids == ["i013"]
    # The CPU int8 serving copy can be made from a GPU-trained model.
    serving = model.quantized()
    assert (serving.recommend(users, k=1).items == model.recommend(users, k=1).items).mean() > 0.95


def test_pretraining_and_a_head_on_gpu() -> None:
    data = funnel_sequences(n_users=200, n_items=30, length=12, seed=0, cyclic=True)
    encoder = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "max_len": 12}
    pretrainer = MaskedBehaviorPretrainer.from_params(
        {**encoder, "mask_prob": 0.3, "lr": 1e-2, "epochs": 5, "batch_size": 50, "device": "cuda"}
    )
    pretrainer.fit(data)
    held = hold_out_last_event(data)
    next_types = data.event_types[data.user_ptr[held.users + 1] - 1].astype(np.int64)
    model = NextEventTypeModel.from_params(
        {**encoder, "lr": 1e-2, "batch_size": 50, "epochs": 20, "device": "cuda"}
    )
    model.fit(held.train, init_encoder=pretrainer.encoder_state())
    report = model.evaluate(SequenceLabels(history=held.train, users=held.users, labels=next_types))
    assert report["accuracy"] > 0.97
