"""Task heads on the behaviour Transformer: next event type, sequence labels, per-event tags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from behaviorlm.data.sequences import Interactions
from behaviorlm.evaluation import metrics
from behaviorlm.models.heads import (
    EventTagger,
    EventTags,
    NextEventTypeModel,
    SequenceClassifier,
    SequenceLabels,
    purchase_within_next,
)
from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
from behaviorlm.testing.synthetic import (
    FUNNEL_EVENT_TYPES,
    buyer_sequences,
    checkout_tags,
    funnel_sequences,
    hold_out_last_event,
    intent_sequences,
)

ENCODER = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "max_len": 12}
TRAIN = {"lr": 1e-2, "batch_size": 50}


def _events(types: list[list[str]]) -> Interactions:
    users = np.repeat(np.arange(len(types)), [len(t) for t in types])
    flat = [t for row in types for t in row]
    return Interactions.from_events(
        user_ids=users,
        item_ids=np.arange(len(flat)) % 3,
        timestamps=np.arange(len(flat)),
        event_types=np.array(flat),
        event_type_vocab=FUNNEL_EVENT_TYPES,
    )


# ---------------------------------------------------------------------------------------- labelling helpers
def test_purchase_within_next_by_hand() -> None:
    data = _events(
        [
            ["view", "cart", "view", "purchase"],  # purchase among the last 2 -> 1
            ["purchase", "view", "view", "view"],  # purchase only in the history -> 0
            ["view", "purchase"],  # only 2 events: no history left -> left out
            ["cart", "view", "purchase", "view"],  # purchase among the last 2 -> 1
        ]
    )
    labelled = purchase_within_next(data, n_events=2)
    assert labelled.users.tolist() == [0, 1, 3]
    assert labelled.labels.tolist() == [1, 0, 1]
    assert labelled.history.lengths().tolist() == [2, 2, 0, 2]
    names = [FUNNEL_EVENT_TYPES[t] for t in labelled.history.event_types]
    assert names == ["view", "cart", "purchase", "view", "cart", "view"]
    with pytest.raises(ValueError, match="'buy' is not in"):
        purchase_within_next(data, n_events=2, purchase_type="buy")


def test_checkout_tags_by_hand() -> None:
    data = _events([["cart", "purchase", "purchase", "cart"], ["purchase", "cart", "view", "purchase"]])
    # A user's first purchase never counts as following the previous user's cart.
    assert checkout_tags(data).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]


# ---------------------------------------------------------------------------------------- next event type
def test_next_event_type_learns_the_funnel_and_round_trips(tmp_path) -> None:
    data = funnel_sequences(n_users=200, n_items=30, length=12, seed=0, cyclic=True)
    held = hold_out_last_event(data)
    next_types = data.event_types[data.user_ptr[held.users + 1] - 1].astype(np.int64)
    model = NextEventTypeModel.from_params({**ENCODER, **TRAIN, "epochs": 20}).fit(held.train)
    report = model.evaluate(SequenceLabels(history=held.train, users=held.users, labels=next_types))
    # Every type is equally common (chance 1/3); the current type decides the next one.
    assert report["accuracy"] > 0.97
    assert report["macro_f1"] > 0.97

    loaded = NextEventTypeModel.load(model.save(tmp_path / "next_type"))
    np.testing.assert_array_equal(
        loaded.predict_proba(held.train, users=held.users), model.predict_proba(held.train, users=held.users)
    )
    with pytest.raises(ValueError, match="holds a 'next_event_type' model"):
        SequenceClassifier.load(tmp_path / "next_type")


# ---------------------------------------------------------------------------------------- sequence labels
def test_sequence_classifier_predicts_purchase_within_next_events() -> None:
    # Buyers cart something somewhere in their history; every history ends with a view, so the last
    # event alone says nothing (the classifier must read the whole sequence).
    data = buyer_sequences(n_users=400, n_items=30, length=12, n_future=3, seed=0)
    labelled = purchase_within_next(data, n_events=3)
    assert len(labelled.users) == 400
    last_history_types = labelled.history.event_types[labelled.history.user_ptr[1:] - 1]
    assert set(last_history_types.tolist()) == {FUNNEL_EVENT_TYPES.index("view")}
    train, test = labelled.subset(np.arange(300)), labelled.subset(np.arange(300, 400))
    model = SequenceClassifier.from_params({**ENCODER, **TRAIN, "epochs": 30}).fit(train)
    report = model.evaluate(test)
    majority = max(test.labels.mean(), 1 - test.labels.mean())
    assert majority < 0.65
    assert report["accuracy"] > 0.95  # measured 0.99-1.0 over seeds 0-2
    assert report["roc_auc"] > 0.97
    assert report["average_precision"] > 0.95
    assert set(model.predict(test.history, users=test.users)) <= {0, 1}


def test_pretrained_encoder_helps_a_classifier_with_few_labels() -> None:
    # Intents are item blocks; 20 labelled users cannot show every item, but masked pretraining on all
    # 600 (unlabelled) sequences learns which items go together.
    planted = intent_sequences(n_users=600, n_items=80, n_intents=4, length=12, noise_share=0.2, seed=0)
    data = planted.interactions
    pretrainer = MaskedBehaviorPretrainer.from_params(
        {**ENCODER, "mask_prob": 0.3, "lr": 1e-2, "epochs": 40, "batch_size": 100}
    ).fit(data)
    labelled = SequenceLabels(history=data, users=np.arange(600), labels=planted.intents)
    train, test = labelled.subset(np.arange(20)), labelled.subset(np.arange(100, 600))
    accuracy = {}
    for start, init_encoder in (("scratch", None), ("pretrained", pretrainer.encoder_state())):
        model = SequenceClassifier.from_params(
            {**pretrainer.encoder_params(), "lr": 5e-3, "epochs": 30, "batch_size": 20}
        )
        accuracy[start] = model.fit(train, init_encoder=init_encoder).evaluate(test)["accuracy"]
    # Measured over seeds 0-2: pretrained 0.986-0.996, scratch 0.72-0.90 (chance 0.25).
    assert accuracy["pretrained"] > 0.95
    assert accuracy["pretrained"] >= accuracy["scratch"]


def test_sequence_classifier_with_string_labels_round_trips(tmp_path) -> None:
    planted = intent_sequences(n_users=60, n_items=20, n_intents=2, length=6, noise_share=0.0, seed=1)
    names = np.array(["gifts", "groceries"])[planted.intents]
    labelled = SequenceLabels(history=planted.interactions, users=np.arange(60), labels=names)
    model = SequenceClassifier.from_params({**ENCODER, **TRAIN, "epochs": 3, "bidirectional": False}).fit(
        labelled
    )
    assert model.classes_.tolist() == ["gifts", "groceries"]
    loaded = SequenceClassifier.load(model.save(tmp_path / "clf"))
    assert loaded.classes_.tolist() == ["gifts", "groceries"]
    assert loaded.bidirectional is False
    users = np.arange(60)
    np.testing.assert_array_equal(
        loaded.predict_proba(planted.interactions, users=users),
        model.predict_proba(planted.interactions, users=users),
    )
    with pytest.raises(ValueError, match="have no events"):
        SequenceLabels(
            history=planted.interactions.filter_events(np.zeros(360, bool)), users=[0], labels=["gifts"]
        )


def test_classifier_reads_the_time_from_the_last_event_to_the_prediction(tmp_path) -> None:
    # Every user has the same events; who buys is decided by how recently they were last active before
    # the prediction (under an hour: 1, days: 0) -- visible only through as_of.
    rng = np.random.default_rng(0)
    n = 300
    data = _events([["view", "cart", "view"]] * n)
    recent = rng.random(n) < 0.5
    last = data.timestamps[data.user_ptr[1:] - 1]
    as_of = last + np.where(recent, rng.integers(60, 3_600, n), rng.integers(2 * 86_400, 9 * 86_400, n))
    labelled = SequenceLabels(history=data, users=np.arange(n), labels=recent.astype(int), as_of=as_of)
    train, test = labelled.subset(np.arange(200)), labelled.subset(np.arange(200, n))
    assert test.as_of is not None and len(test.as_of) == 100
    auc = {}
    for knows_time in (True, False):
        model = SequenceClassifier.from_params(
            {**ENCODER, **TRAIN, "epochs": 20, "time_to_prediction": knows_time}
        ).fit(train)
        auc[knows_time] = model.evaluate(test)["roc_auc"]
    assert auc[True] > 0.99  # the gap bucket separates the two groups exactly
    assert auc[False] < 0.65  # the events are identical: chance
    # Saved and loaded with its time-to-prediction vectors; an earlier model without them still loads.
    loaded = SequenceClassifier.load(model.save(tmp_path / "without"))
    assert loaded.time_to_prediction is False
    knows = SequenceClassifier.from_params({**ENCODER, **TRAIN, "epochs": 2}).fit(train)
    again = SequenceClassifier.load(knows.save(tmp_path / "with"))
    np.testing.assert_array_equal(
        again.predict_proba(data, users=test.users, as_of=test.as_of),
        knows.predict_proba(data, users=test.users, as_of=test.as_of),
    )
    # A classifier saved before the option existed (no such parameter, no such weights) loads without it.
    meta = tmp_path / "without" / "model.json"
    saved = json.loads(meta.read_text())
    del saved["params"]["time_to_prediction"]
    meta.write_text(json.dumps(saved))
    assert SequenceClassifier.load(tmp_path / "without").time_to_prediction is False
    # A prediction time before the user's last event is refused, naming the row.
    with pytest.raises(ValueError, match=r"row 0: as_of 1 < last event 2"):
        knows.predict_proba(data, users=np.array([0]), as_of=np.array([1]))
    with pytest.raises(ValueError, match="one integer time"):
        SequenceLabels(history=data, users=[0, 1], labels=[0, 1], as_of=[1.5, 2.5])


def test_classifier_reads_side_features_and_needs_them_to_predict(tmp_path) -> None:
    # Identical events; the label is whether a side feature (say, carts in the last 3 hours) is above 1.
    rng = np.random.default_rng(1)
    n = 300
    data = _events([["view", "cart", "view"]] * n)
    counts = rng.poisson(1.0, size=(n, 2)).astype(float)  # the second column is noise
    labelled = SequenceLabels(
        history=data, users=np.arange(n), labels=(counts[:, 0] > 1).astype(int), features=counts
    )
    train, test = labelled.subset(np.arange(200)), labelled.subset(np.arange(200, n))
    model = SequenceClassifier.from_params({**ENCODER, **TRAIN, "epochs": 20}).fit(train, valid=test)
    assert model.evaluate(test)["roc_auc"] > 0.95
    loaded = SequenceClassifier.load(model.save(tmp_path / "side"))
    np.testing.assert_allclose(
        loaded.predict_proba(data, users=test.users, features=test.features),
        model.predict_proba(data, users=test.users, features=test.features),
    )
    with pytest.raises(ValueError, match="fitted with 2 side feature columns; pass features="):
        loaded.predict_proba(data, users=test.users)
    with pytest.raises(ValueError, match="fitted with 2 feature columns, got 1"):
        loaded.predict_proba(data, users=test.users, features=test.features[:, :1])
    with pytest.raises(ValueError, match="row 0, column 1 is not a finite number"):
        SequenceLabels(history=data, users=[0], labels=[1], features=[[1.0, np.nan]])
    with pytest.raises(ValueError, match="features for both the labelled and the valid rows"):
        SequenceClassifier.from_params({**ENCODER, **TRAIN, "epochs": 1}).fit(
            train, valid=SequenceLabels(history=data, users=test.users, labels=test.labels)
        )
    # Fitted without features, it predicts without them (and older files without the fields load).
    plain = SequenceClassifier.from_params({**ENCODER, **TRAIN, "epochs": 1}).fit(
        SequenceLabels(history=data, users=train.users, labels=train.labels)
    )
    assert plain.predict_proba(data, users=test.users).shape == (100, 2)


# ---------------------------------------------------------------------------------------- event tags
def test_event_tagger_reads_the_event_and_its_predecessor() -> None:
    # Tag = purchase right after a cart. Sequences of 20 events are tagged in windows of 8.
    data = funnel_sequences(n_users=300, n_items=5, length=20, seed=0, cyclic=False)
    tags = checkout_tags(data)
    train = EventTags(interactions=data, tags=tags, users=np.arange(200))
    test = EventTags(interactions=data, tags=tags, users=np.arange(200, 300))
    model = EventTagger.from_params({**ENCODER, "max_len": 8, "dropout": 0.1, **TRAIN, "epochs": 40}).fit(
        train
    )
    report = model.evaluate(test)
    assert report["n"] == 100 * 20  # every event is tagged, across window boundaries
    # Reading only the current event ("every purchase") cannot do better than F1 ~0.5.
    purchase = FUNNEL_EVENT_TYPES.index("purchase")
    current_only = metrics.f1_score(
        tags[test.event_index()], y_pred=(data.event_types[test.event_index()] == purchase).astype(np.int64)
    )
    assert current_only < 0.6
    assert report["f1"] > 0.85  # measured 0.94-0.96 over seeds 0-2
    assert report["macro_f1"] > 0.9


def test_event_tagger_rows_follow_the_requested_users_and_round_trip(tmp_path) -> None:
    data = funnel_sequences(n_users=30, n_items=5, length=11, seed=2, cyclic=False)
    tags = np.where(checkout_tags(data) == 1, "checkout", "other")
    model = EventTagger.from_params({**ENCODER, "max_len": 4, **TRAIN, "epochs": 2}).fit(
        EventTags(interactions=data, tags=tags)
    )
    everything = model.predict_proba(data)
    assert everything.shape == (data.n_events, 2)
    np.testing.assert_allclose(everything.sum(axis=1), 1.0, rtol=1e-5)
    some = model.predict_proba(data, users=np.array([7, 3]))
    np.testing.assert_array_equal(some, everything[np.r_[77:88, 33:44]])
    loaded = EventTagger.load(model.save(tmp_path / "tagger"))
    assert loaded.classes_.tolist() == ["checkout", "other"]
    np.testing.assert_array_equal(loaded.predict(data), model.predict(data))


def test_label_builders_by_hand() -> None:
    from behaviorlm.data.sequences import Interactions
    from behaviorlm.models.heads import last_event_type_labels, session_purchase_tags, split_users

    data = Interactions.from_events(
        user_ids=np.array(["a"] * 5 + ["b"] * 3),
        item_ids=np.array(list("xyzxyxyz")),
        timestamps=np.array([0, 60, 120, 10_000, 10_060, 0, 60, 120]),
        event_types=np.array(["view", "view", "purchase", "view", "purchase", "view", "view", "view"]),
        event_type_vocab=("view", "purchase"),
    )
    # a: views at 0 and 60 lead to the purchase at 120 (same session); the view at 10,000 starts a new
    # session that ends in a purchase; b never buys.
    assert session_purchase_tags(data).tags.tolist() == [1, 1, 0, 1, 0, 0, 0, 0]
    assert session_purchase_tags(data, gap_seconds=20_000).tags.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="gap_seconds must be > 0"):
        session_purchase_tags(data, gap_seconds=0)
    labelled = last_event_type_labels(data, np.array([0, 1]))
    assert labelled.labels.tolist() == [1, 0] and labelled.history.lengths().tolist() == [4, 2]
    train, valid, test = split_users(np.arange(10), valid_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(train), len(valid), len(test)) == (7, 1, 2)
    assert sorted(np.concatenate([train, valid, test]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="shares"):
        split_users(np.arange(10), valid_fraction=0.5, test_fraction=0.5, seed=0)
