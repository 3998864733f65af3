"""Masked behaviour pretraining: cloze masking, recovery of planted patterns, handing the encoder on."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from behaviorlm.models.gru4rec import GRU4Rec
from behaviorlm.models.heads import SequenceClassifier
from behaviorlm.models.pretraining import (
    ENCODER_TRAINING,
    MaskedBehaviorPretrainer,
    mask_events,
)
from behaviorlm.models.sequential import IGNORE
from behaviorlm.models.transformer import BehaviorTransformer, BehaviorTransformerNet, load_encoder_state
from behaviorlm.testing.synthetic import funnel_sequences, hold_out_last_event, successor_sequences
from behaviorlm.training.options import TrainingOptions

ENCODER = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "max_len": 12}
PRETRAIN = {**ENCODER, "mask_prob": 0.3, "lr": 1e-2, "epochs": 100, "batch_size": 50}


def test_mask_events_hides_real_events_only_and_at_least_one_per_sequence() -> None:
    n_items, n_types = 10, 3
    items = torch.tensor([[10, 10, 1, 2, 3, 4], [10, 10, 10, 10, 10, 7], [10] * 6, [5, 6, 7, 8, 9, 0]])
    types = torch.where(items == n_items, n_types, items % 3)
    out = mask_events(
        items,
        types,
        n_items=n_items,
        n_event_types=n_types,
        mask_prob=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    masked = out["item_targets"] != IGNORE
    real = items != n_items
    assert not (masked & ~real).any()
    # Every row with an event has a mask; the all-padding row has none.
    assert masked.any(dim=1).tolist() == [True, True, False, True]
    assert torch.equal(out["items"][masked], torch.full((int(masked.sum()),), n_items + 1))
    assert torch.equal(out["types"][masked], torch.full((int(masked.sum()),), n_types + 1))
    assert torch.equal(out["item_targets"][masked], items[masked])
    assert torch.equal(out["type_targets"][masked], types[masked])
    assert torch.equal(out["items"][~masked], items[~masked])
    assert (out["type_targets"][~masked] == IGNORE).all()


def test_mask_share_matches_mask_prob() -> None:
    items = torch.randint(0, 50, (400, 50), generator=torch.Generator().manual_seed(1))
    out = mask_events(
        items,
        items % 4,
        n_items=50,
        n_event_types=4,
        mask_prob=0.2,
        generator=torch.Generator().manual_seed(2),
    )
    share = float((out["item_targets"] != IGNORE).float().mean())
    assert share == pytest.approx(0.2, abs=0.01)


def test_recovers_masked_items_of_a_planted_successor_order() -> None:
    # item_{t+1} = item_t + 1: a masked item is given by either neighbour, so bidirectional attention
    # recovers it; chance (top-1 over 40 items) is 0.025.
    train = successor_sequences(n_users=200, n_items=40, length=12, seed=0)
    fresh_users = successor_sequences(n_users=100, n_items=40, length=12, seed=100)
    model = MaskedBehaviorPretrainer.from_params(PRETRAIN).fit(train)
    report = model.evaluate(fresh_users, seed=1)
    assert report["chance_item_accuracy"] == pytest.approx(0.025)
    assert report["n_masked"] > 300
    assert report["masked_item_accuracy"] > 0.6  # measured 0.85-0.86 over seeds 0-2


def test_recovers_masked_event_types_of_a_planted_funnel() -> None:
    # view -> cart -> purchase -> view: a masked type follows from its neighbours' types (chance 1/3).
    train = funnel_sequences(n_users=200, n_items=20, length=12, seed=0, cyclic=True)
    fresh_users = funnel_sequences(n_users=100, n_items=20, length=12, seed=100, cyclic=True)
    model = MaskedBehaviorPretrainer.from_params({**PRETRAIN, "epochs": 40}).fit(train)
    assert model.evaluate(fresh_users, seed=1)["masked_type_accuracy"] > 0.95


def test_encoder_state_fits_a_plain_encoder_and_survives_save_load(tmp_path) -> None:
    data = successor_sequences(n_users=40, n_items=20, length=10, seed=3, typed=True)
    model = MaskedBehaviorPretrainer.from_params({**PRETRAIN, "epochs": 2}).fit(data)
    state = model.encoder_state()
    assert state["item_emb.weight"].shape == (21, 32)  # 20 items + padding, no mask row
    assert state["type_emb.weight"].shape == (3, 32)  # view, cart + padding
    net = BehaviorTransformerNet(n_items=20, n_event_types=2, n_time_buckets=24, **ENCODER)
    load_encoder_state(net, state)
    torch.testing.assert_close(net.item_table(), state["item_emb.weight"][:20])

    loaded = MaskedBehaviorPretrainer.load(model.save(tmp_path / "pre"))
    assert loaded.get_params() == model.get_params()
    assert loaded.evaluate(data, seed=5) == model.evaluate(data, seed=5)
    on_disk = load_file(str(model.save_encoder(tmp_path / "encoder.safetensors")))
    assert on_disk.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(on_disk[key], value)


def test_init_encoder_starts_from_the_pretrained_encoder() -> None:
    data = successor_sequences(n_users=200, n_items=40, length=13, seed=4)
    held = hold_out_last_event(data)
    pretrainer = MaskedBehaviorPretrainer.from_params({**PRETRAIN, "epochs": 5}).fit(held.train)
    state = pretrainer.encoder_state()

    # One step at a negligible learning rate leaves the network where the pretrained encoder put it.
    frozen = BehaviorTransformer.from_params({**ENCODER, "epochs": 1, "lr": 1e-12, "batch_size": 1000})
    frozen.fit(held.train, init_encoder=state)
    for key, value in frozen.net_.state_dict().items():
        torch.testing.assert_close(value, state[key], atol=1e-6, rtol=0)
    assert not hasattr(frozen, "_init_encoder")  # nothing of the call stays on the model

    # Fine-tuning from the pretrained encoder then learns the next item.
    tuned = BehaviorTransformer.from_params({**ENCODER, "epochs": 20, "lr": 5e-3, "batch_size": 50}).fit(
        held.train, init_encoder=state
    )
    recs = tuned.recommend(held.users, k=1, exclude_seen=False)
    assert float((recs.items[:, 0] == held.targets).mean()) > 0.9


def test_a_mismatched_encoder_is_refused_with_the_reason() -> None:
    data = successor_sequences(n_users=30, n_items=20, length=8, seed=5)
    state = MaskedBehaviorPretrainer.from_params({**PRETRAIN, "epochs": 1}).fit(data).encoder_state()
    with pytest.raises(ValueError, match=r"pos_emb.weight has shape \(12, 32\), this model needs \(8, 32\)"):
        BehaviorTransformer.from_params({**ENCODER, "max_len": 8, "epochs": 1}).fit(data, init_encoder=state)
    other_catalogue = successor_sequences(n_users=30, n_items=25, length=8, seed=5)
    with pytest.raises(ValueError, match=r"item_emb\.weight"):
        BehaviorTransformer.from_params({**ENCODER, "epochs": 1}).fit(other_catalogue, init_encoder=state)
    # A model without a Transformer encoder says so before training.
    with pytest.raises(TypeError, match=r"GRU4Rec\.fit: init_encoder needs a Transformer encoder"):
        GRU4Rec(training=TrainingOptions(epochs=1)).fit(data, init_encoder=state)


def test_bad_arguments_are_named() -> None:
    data = successor_sequences(n_users=10, n_items=10, length=5, seed=6)
    with pytest.raises(ValueError, match="mask_prob"):
        MaskedBehaviorPretrainer(mask_prob=0.0).fit(data)
    with pytest.raises(RuntimeError, match="not fitted"):
        MaskedBehaviorPretrainer().encoder_state()


def test_default_pretrainer_fits_default_models() -> None:
    # The encoder architecture defaults are the Transformer's, so default models take default pretraining.
    data = successor_sequences(n_users=20, n_items=12, length=6, seed=7)
    state = MaskedBehaviorPretrainer(training=ENCODER_TRAINING.replace(epochs=1)).fit(data).encoder_state()
    # Every shape-setting default agrees (dropout, which sets no shape, is tuned per task: 0.1 and 0.3).
    shapes = {k: v for k, v in MaskedBehaviorPretrainer().encoder_params().items() if k != "dropout"}
    assert shapes == {k: getattr(BehaviorTransformer(), k) for k in shapes}
    assert shapes == {k: getattr(SequenceClassifier(), k) for k in shapes}
    BehaviorTransformer(training=TrainingOptions(epochs=1)).fit(data, init_encoder=state)
