"""Distillation of a sequence model into a smaller student, and the savable int8 / bfloat16 serving copy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.baselines import Popularity
from behaviorlm.models.gru4rec import GRU4Rec
from behaviorlm.models.registry import ModelLoadError, load_model
from behaviorlm.models.sequential import SERVING_TABLE_KEY, distillation_loss
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.testing.conformance import hit_rate_at_k
from behaviorlm.testing.synthetic import (
    hold_out_last_event,
    planted_pattern_interactions,
    successor_sequences,
)

TEACHER = {
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "dropout": 0.1,
    "max_len": 16,
    "epochs": 30,
    "lr": 5e-3,
}
STUDENT = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 1,
    "dropout": 0.1,
    "max_len": 12,
    "epochs": 30,
    "lr": 5e-3,
}
GRU_STUDENT = {"d_model": 16, "hidden_size": 16, "dropout": 0.1, "max_len": 12, "epochs": 30, "lr": 5e-3}


def _scores(model, data) -> torch.Tensor:
    return model.score(ScoringBatch(users=np.arange(data.n_users), history=data))


@pytest.fixture(scope="module")
def planted():
    held = hold_out_last_event(planted_pattern_interactions(seed=3))
    teacher = BehaviorTransformer.from_params(TEACHER).fit(held.train)
    return held, teacher


def test_distillation_loss_by_hand() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    targets = torch.tensor([0, 1])
    t = 2.0
    p_teacher = torch.softmax(teacher / t, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, dim=1))).sum(1).mean()
    ce = F.cross_entropy(student, targets)
    got = distillation_loss(student, teacher, targets, alpha=0.25, temperature=t)
    torch.testing.assert_close(got, 0.75 * ce + 0.25 * t**2 * kl)
    # A student that already agrees with its teacher pays only the hard loss.
    same = distillation_loss(student, student.clone(), targets, alpha=1.0, temperature=3.0)
    torch.testing.assert_close(same, torch.tensor(0.0), atol=1e-6, rtol=0)
    assert distillation_loss(student, teacher, targets, alpha=0.0, temperature=t) == ce


@pytest.mark.parametrize(
    "make_student",
    [lambda: BehaviorTransformer.from_params(STUDENT), lambda: GRU4Rec.from_params(GRU_STUDENT)],
    ids=["transformer", "gru4rec"],
)
def test_distilled_student_beats_popularity(planted, make_student) -> None:
    held, teacher = planted
    student = make_student().fit(held.train, teacher=teacher, distill_alpha=0.5, distill_temperature=2.0)
    popularity = Popularity().fit(held.train)
    student_hr, pop_hr = hit_rate_at_k(student, held), hit_rate_at_k(popularity, held)
    assert student_hr > pop_hr + 0.1, (student_hr, pop_hr)
    assert student.training_summary()["distilled_from"]["teacher"] == "transformer"


def test_teacher_alone_teaches_the_order_of_events() -> None:
    """With alpha=1 the student never sees a label, only the teacher's distribution; it still learns
    that item i is followed by i+1, which it can only have from the teacher."""
    data = successor_sequences(n_users=200, n_items=40, length=12, seed=0)
    held = hold_out_last_event(data)
    teacher = BehaviorTransformer.from_params(TEACHER).fit(held.train)
    student = BehaviorTransformer.from_params(STUDENT).fit(held.train, teacher=teacher, distill_alpha=1.0)
    top1 = student.recommend(held.users, k=1, exclude_seen=False).items[:, 0]
    assert (top1 == held.targets).mean() > 0.8
    untrained = BehaviorTransformer.from_params({**STUDENT, "epochs": 1, "lr": 1e-6}).fit(held.train)
    assert (untrained.recommend(held.users, k=1, exclude_seen=False).items[:, 0] == held.targets).mean() < 0.2


def test_alpha_zero_is_plain_training(planted) -> None:
    held, teacher = planted
    params = {**STUDENT, "epochs": 3}
    plain = BehaviorTransformer.from_params(params).fit(held.train)
    distilled = BehaviorTransformer.from_params(params).fit(held.train, teacher=teacher, distill_alpha=0.0)
    assert plain.history_.losses == distilled.history_.losses
    for name, value in plain.net_.state_dict().items():
        torch.testing.assert_close(distilled.net_.state_dict()[name], value, rtol=0, atol=0)


def test_teacher_changes_the_student(planted) -> None:
    held, teacher = planted
    params = {**STUDENT, "epochs": 3}
    plain = BehaviorTransformer.from_params(params).fit(held.train)
    distilled = BehaviorTransformer.from_params(params).fit(held.train, teacher=teacher)
    assert not torch.equal(plain.net_.item_emb.weight, distilled.net_.item_emb.weight)
    before = {k: v.clone() for k, v in teacher.net_.state_dict().items()}
    BehaviorTransformer.from_params(params).fit(held.train, teacher=teacher)
    for name, value in teacher.net_.state_dict().items():
        assert torch.equal(value, before[name]), f"the teacher's {name} changed"


def test_student_saves_and_loads_as_an_ordinary_model(planted, tmp_path) -> None:
    held, teacher = planted
    student = GRU4Rec.from_params({**GRU_STUDENT, "epochs": 3}).fit(held.train, teacher=teacher)
    loaded = load_model(student.save(tmp_path / "student"))
    assert type(loaded) is GRU4Rec
    assert json.loads((tmp_path / "student" / "model.json").read_text())["model"] == "gru4rec"
    torch.testing.assert_close(_scores(loaded, held.train), _scores(student, held.train))
    history = [str(held.train.item_ids[i]) for i in held.train.items[: held.train.user_ptr[1]]]
    assert loaded.predict_next(history, k=5).item_ids == student.predict_next(history, k=5).item_ids


@pytest.mark.parametrize("table_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("model_class", [BehaviorTransformer, GRU4Rec])
def test_quantized_copy_saves_and_loads(planted, tmp_path, model_class, table_dtype) -> None:
    held, _ = planted
    params = STUDENT if model_class is BehaviorTransformer else GRU_STUDENT
    model = model_class.from_params({**params, "epochs": 3}).fit(held.train)
    serving = model.quantized(table_dtype=table_dtype)
    path = serving.save(tmp_path / "q")
    loaded = load_model(path)
    assert loaded.is_quantized_ and "DynamicQuantizedLinear" in repr(loaded.net_)
    assert loaded.scoring_table_.dtype == table_dtype
    torch.testing.assert_close(_scores(loaded, held.train), _scores(serving, held.train), rtol=0, atol=0)
    # What is stored: the float network's weights, as the float model stores them, plus the frozen table.
    float_path = model.save(tmp_path / "float")
    from safetensors.torch import load_file

    stored, float_stored = (
        load_file(str(path / "weights.safetensors")),
        load_file(str(float_path / "weights.safetensors")),
    )
    assert set(stored) - set(float_stored) == {f"state.{SERVING_TABLE_KEY}"}
    for name, value in float_stored.items():
        assert torch.equal(stored[name], value), name
    # A loaded copy saves again, and quantizing it again starts from the float weights.
    again = load_model(loaded.save(tmp_path / "again"))
    torch.testing.assert_close(_scores(again, held.train), _scores(serving, held.train), rtol=0, atol=0)
    requantized = loaded.quantized(table_dtype=table_dtype)
    torch.testing.assert_close(_scores(requantized, held.train), _scores(serving, held.train), rtol=0, atol=0)
    # The float model is unchanged by all this and still loads as a float model.
    float_loaded = load_model(float_path)
    assert not getattr(float_loaded, "is_quantized_", False)
    torch.testing.assert_close(_scores(float_loaded, held.train), _scores(model, held.train))


def test_tampered_serving_table_is_a_clear_load_error(planted, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    held, _ = planted
    serving = BehaviorTransformer.from_params({**STUDENT, "epochs": 1}).fit(held.train).quantized()
    path = serving.save(tmp_path / "q")
    tensors = load_file(str(path / "weights.safetensors"))
    tensors[f"state.{SERVING_TABLE_KEY}"] = tensors[f"state.{SERVING_TABLE_KEY}"][:, :3].contiguous()
    save_file(tensors, str(path / "weights.safetensors"))
    with pytest.raises(ModelLoadError, match=r"serving\.scoring_table"):
        load_model(path)
    tensors[f"state.{SERVING_TABLE_KEY}"] = torch.zeros(
        held.train.n_items, STUDENT["d_model"], dtype=torch.int64
    )
    save_file(tensors, str(path / "weights.safetensors"))
    with pytest.raises(ModelLoadError, match=r"serving\.scoring_table"):
        load_model(path)


def test_bad_distillation_arguments_are_clear(planted) -> None:
    held, teacher = planted
    student = BehaviorTransformer.from_params({**STUDENT, "epochs": 1})
    with pytest.raises(ValueError, match=r"distill_alpha=0\.3 needs a teacher"):
        student.fit(held.train, distill_alpha=0.3)
    with pytest.raises(ValueError, match=r"distill_temperature=2\.0 needs a teacher"):
        student.fit(held.train, distill_temperature=2.0)
    with pytest.raises(ValueError, match=r"distill_alpha must be in \[0, 1\], got 1\.5"):
        student.fit(held.train, teacher=teacher, distill_alpha=1.5)
    with pytest.raises(ValueError, match="distill_temperature must be > 0, got 0"):
        student.fit(held.train, teacher=teacher, distill_temperature=0)
    with pytest.raises(TypeError, match=r"teacher must be a fitted sequence model .* got Popularity"):
        student.fit(held.train, teacher=Popularity().fit(held.train))
    with pytest.raises(ValueError, match="teacher BehaviorTransformer is not fitted"):
        student.fit(held.train, teacher=BehaviorTransformer())
    with pytest.raises(ValueError, match="not the student itself"):
        teacher.fit(held.train, teacher=teacher)
    with pytest.raises(
        ValueError, match="teacher reads max_len=16 events, fewer than the student's max_len=20"
    ):
        BehaviorTransformer.from_params({**STUDENT, "max_len": 20}).fit(held.train, teacher=teacher)
    other = planted_pattern_interactions(n_items=50, seed=3)
    with pytest.raises(ValueError, match="teacher was trained on 60 items, the training data has 50"):
        student.fit(other, teacher=teacher)
    assert not hasattr(student, "train_")
    with pytest.raises(ValueError, match="table_dtype must be one of"):
        teacher.quantized(table_dtype=torch.int8)
