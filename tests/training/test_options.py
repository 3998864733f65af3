"""TrainingOptions: the one typed object every neural model trains with (issue 23, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from behaviorlm.estimator import json_params
from behaviorlm.models.lightgcn import LIGHTGCN_TRAINING, LightGCN
from behaviorlm.models.pretraining import ENCODER_TRAINING
from behaviorlm.models.registry import encoder_model_registry, load_model, model_registry
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.testing.synthetic import planted_pattern_interactions
from behaviorlm.training.loop import TrainerConfig
from behaviorlm.training.options import FIELDS, TrainingOptions, constructor_params, fold_training_params


def neural_classes() -> list[type]:
    classes = [*model_registry().values(), *encoder_model_registry().values()]
    return [c for c in classes if "training" in c._param_names()]


def test_every_neural_model_takes_one_training_object_and_no_flat_option() -> None:
    classes = neural_classes()
    names = {c.__name__ for c in classes}
    assert {"BehaviorTransformer", "GRU4Rec", "LightGCN", "MaskedBehaviorPretrainer"} <= names
    assert {"SequenceClassifier", "NextEventTypeModel", "EventTagger", "PurchaseGNN"} <= names
    synonyms = {"learning_rate", "n_epochs", "max_seconds", "max_epochs", "early_stopping", "lr_decay"}
    for cls in classes:
        params = set(cls._param_names())
        assert not params & (set(FIELDS) | synonyms), (cls.__name__, params & set(FIELDS))
        assert isinstance(cls().training, TrainingOptions)
    # The pretrainer and every head share the encoder's defaults, so a pretrained encoder fits a head.
    from behaviorlm.models.heads import SequenceClassifier
    from behaviorlm.models.pretraining import MaskedBehaviorPretrainer

    assert MaskedBehaviorPretrainer().encoder_params() == SequenceClassifier().encoder_params()
    assert BehaviorTransformer().d_model == MaskedBehaviorPretrainer().d_model


def test_the_loop_reads_every_option_from_the_object() -> None:
    options = TrainingOptions(
        epochs=7, lr=3e-4, weight_decay=0.1, patience=2, eval_every=3, max_train_seconds=60.0, seed=4,
        checkpoint_dir="ckpt", show_progress=True, amp=True, compile=True,
    )  # fmt: skip
    config = TrainerConfig.from_options(options, anneal_epochs=2)
    assert (config.epochs, config.lr, config.weight_decay, config.patience, config.eval_every) == (
        7,
        3e-4,
        0.1,
        2,
        3,
    )
    assert (config.max_seconds, config.seed, config.checkpoint_dir) == (60.0, 4, "ckpt")
    assert config.show_progress and config.amp and config.compile and config.anneal_epochs == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"lr": 0}, "lr must be a number > 0"),
        ({"lr": float("nan")}, "lr must be a number > 0"),
        ({"weight_decay": -1.0}, "weight_decay must be a number >= 0"),
        ({"max_train_seconds": 0}, "max_train_seconds must be a number > 0 or None"),
        ({"patience": True}, "patience must be an integer"),
        ({"device": ""}, "device must be a torch device string"),
    ],
)
def test_bad_options_are_refused_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingOptions(**change)


def test_set_params_changes_a_copy_never_the_shared_default() -> None:
    model = BehaviorTransformer()
    assert model.set_params(training__lr=3e-4, d_model=32) is model
    assert model.training.lr == 3e-4 and model.get_params()["training__lr"] == 3e-4
    assert BehaviorTransformer().training.lr == 1e-3  # the default instance every model shares is unchanged
    with pytest.raises(ValueError, match=r"no option\(s\) \['learning_rate'\]"):
        model.set_params(training__learning_rate=1.0)
    copy = clone(model)
    assert copy.training == model.training and json_params(copy) == json_params(model)


def test_flat_params_apply_to_the_model_s_own_default() -> None:
    # -p epochs=3 on LightGCN keeps its larger BPR batches; the heads keep their 50-epoch default.
    gcn = LightGCN.from_params({"d_model": 16, "epochs": 3})
    assert gcn.d_model == 16 and gcn.training == LIGHTGCN_TRAINING.replace(epochs=3)
    from behaviorlm.models.heads import SequenceClassifier

    head = SequenceClassifier.from_params({"seed": 2})
    assert head.training == ENCODER_TRAINING.replace(seed=2)
    # A "training" mapping and flat keys combine; flat keys win.
    params = constructor_params(BehaviorTransformer, {"training": {"epochs": 4, "lr": 0.01}, "lr": 0.02})
    assert params["training"] == TrainingOptions(epochs=4, lr=0.02)
    with pytest.raises(ValueError, match=r"no option\(s\) \['epoch'\]"):
        BehaviorTransformer.from_params({"training": {"epoch": 4}})
    # A model without training options gets its parameters unchanged.
    assert fold_training_params(type("Plain", (), {"__init__": lambda self, *, k=1: None}), {"k": 2}) == {
        "k": 2
    }


def test_a_model_saved_with_flat_training_params_still_loads(tmp_path: Path) -> None:
    data = planted_pattern_interactions(n_users=40, n_items=12, n_clusters=3, events_per_user=8, seed=0)
    model = BehaviorTransformer(
        d_model=16, n_heads=1, n_layers=1, max_len=8, training=TrainingOptions(epochs=1, lr=5e-3, seed=3)
    ).fit(data)
    saved = model.save(tmp_path / "model")
    meta = json.loads((saved / "model.json").read_text())
    assert meta["params"]["training"]["lr"] == 5e-3
    # What model.json held before TrainingOptions: the options as flat keys.
    meta["params"] = {
        **{k: v for k, v in meta["params"].items() if k != "training"},
        **meta["params"]["training"],
    }
    (saved / "model.json").write_text(json.dumps(meta))
    loaded = load_model(saved)
    assert loaded.training == model.training and json_params(loaded) == json_params(model)
    users = np.arange(5)
    np.testing.assert_array_equal(loaded.recommend(users, k=3).items, model.recommend(users, k=3).items)
