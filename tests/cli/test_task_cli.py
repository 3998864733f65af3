"""Every task on the command line: `pretrain`, `train` of the task heads (with --label and --init-encoder),
the Transformer from a pretrained encoder, `churn`, and one loader for every saved model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.models.heads import EventTagger, NextEventTypeModel, SequenceClassifier
from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
from behaviorlm.models.registry import ModelLoadError, load_model, load_recommender
from behaviorlm.testing.purchase import write_planted_purchase_store

runner = CliRunner()
TINY = ["-p", "epochs=2", "-p", "d_model=16", "-p", "max_len=12", "-p", "batch_size=32"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """120 users who view and buy items over 16 hours (views of their home category lead to purchases)."""
    return write_planted_purchase_store(tmp_path_factory.mktemp("tasks") / "s.duckdb", n_users=120)


@pytest.fixture(scope="module")
def pretrained(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrained") / "encoder"
    result = runner.invoke(app, ["pretrain", "--store", str(store), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "pretrained the encoder" in result.output and "'d_model': 16" in result.output
    return out


def test_pretrain_writes_a_model_any_loader_reads(pretrained) -> None:
    model = load_model(pretrained)
    assert isinstance(model, MaskedBehaviorPretrainer) and model.d_model == 16
    assert json.loads((pretrained / "split.json").read_text())["epochs_run"] == 2
    # A pretrainer does not rank items: where a recommender is needed, the error says what the folder holds.
    with pytest.raises(ModelLoadError, match="holds a masked_behavior_pretrainer model, which does not rank"):
        load_recommender(pretrained)


@pytest.mark.parametrize(
    ("model", "label", "cls"),
    [
        ("sequence_classifier", "purchase-within:3", SequenceClassifier),
        ("next_event_type", "", NextEventTypeModel),
        ("event_tagger", "session-purchase:90", EventTagger),
    ],
)
def test_task_heads_train_from_the_pretrained_encoder(store, pretrained, tmp_path, model, label, cls) -> None:
    out = tmp_path / model
    args = [
        "train",
        "--store",
        str(store),
        "--model",
        model,
        "--out",
        str(out),
        "--init-encoder",
        str(pretrained),
    ]
    result = runner.invoke(app, [*args, *(["--label", label] if label else []), "-p", "epochs=1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "test_report.json").read_text())
    assert report["pretrained"] is True and report["n"] > 0 and 0 <= report["accuracy"] <= 1
    flat = " ".join(result.output.split())
    assert "held-out users" in flat and "predicting " in flat
    loaded = load_model(out)
    assert isinstance(loaded, cls) and loaded.d_model == 16  # the encoder's architecture by default
    # A head is not a recommender: evaluate says so in one line.
    bad = runner.invoke(app, ["evaluate", str(out), "--store", str(store)])
    assert bad.exit_code == 2 and "which does not rank items" in bad.output


def test_a_head_without_pretraining_and_user_attribute_labels(store, tmp_path) -> None:
    from behaviorlm.data.store import EventStore

    with EventStore(store) as es:
        users = [u for (u,) in es.rows("SELECT DISTINCT user_id FROM events ORDER BY user_id")]
        for i, user in enumerate(users):
            es.execute("DELETE FROM users WHERE user_id = ?", [user])
            es.execute(
                "INSERT INTO users (user_id, attributes) VALUES (?, ?)",
                [user, json.dumps({"tier": "gold" if i % 3 == 0 else "basic"})],
            )
    out = tmp_path / "tier"
    args = ["train", "--store", str(store), "--model", "sequence_classifier", "--label", "user:tier"]
    result = runner.invoke(app, [*args, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert set(load_model(out).classes_) == {"basic", "gold"}
    assert json.loads((out / "test_report.json").read_text())["pretrained"] is False


def test_the_transformer_fine_tunes_from_the_pretrained_encoder(store, pretrained, tmp_path) -> None:
    out = tmp_path / "transformer"
    args = ["train", "--store", str(store), "--model", "transformer", "--out", str(out)]
    result = runner.invoke(app, [*args, "--init-encoder", str(pretrained), "-p", "epochs=1"])
    assert result.exit_code == 0, result.output
    assert load_recommender(out).d_model == 16
    assert runner.invoke(app, ["evaluate", str(out), "--store", str(store)]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "ease", "--label", "purchase-within:3"], "--label is for the task heads"),
        (["--model", "sequence_classifier", "--label", "clicks"], "purchase-within:N or user:ATTRIBUTE"),
        (["--model", "sequence_classifier", "--label", "user:planet"], "has the attribute 'planet'"),
        (["--model", "next_event_type", "--label", "purchase-within:3"], "takes no --label"),
        (["--model", "event_tagger", "--label", "purchase-within:3"], "session-purchase"),
        (
            ["--model", "sequence_classifier", "--label", "purchase-within:3", "--test-fraction", "0"],
            "shares",
        ),
        (["--model", "ease", "--init-encoder", "PRETRAINED"], "--init-encoder starts a task head"),
        (["--model", "next_event_type", "--init-encoder", "RECOMMENDER"], "not `behaviorlm pretrain` output"),
    ],
)
def test_task_flags_are_checked(store, pretrained, tmp_path, args, message) -> None:
    recommender = tmp_path / "ease"
    if "RECOMMENDER" in args:
        made = runner.invoke(
            app, ["train", "--store", str(store), "--model", "ease", "--out", str(recommender)]
        )
        assert made.exit_code == 0, made.output
    args = [{"PRETRAINED": str(pretrained), "RECOMMENDER": str(recommender)}.get(a, a) for a in args]
    result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_churn_ranks_users_against_the_baseline(store, tmp_path) -> None:
    out = tmp_path / "churn.csv"
    result = runner.invoke(
        app, ["churn", "--store", str(store), "--horizon-days", "0.125", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (
        "churn-gbm" in result.output and "recency-frequency" in result.output and "churned" in result.output
    )
    rows = list(csv.DictReader(out.open()))
    assert rows and set(rows[0]) == {"user_id", "churn_probability", "churned"}
    probabilities = [float(r["churn_probability"]) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)  # riskiest first
    bad = runner.invoke(app, ["churn", "--store", str(store), "--horizon-days", "0"])
    assert bad.exit_code == 2 and "--horizon-days must be > 0" in bad.output
    early = runner.invoke(app, ["churn", "--store", str(store), "--cutoff", "2001-01-01"])
    assert early.exit_code == 2 and "choose a later cutoff" in " ".join(early.output.split())


def test_fuse_chooses_the_text_weight_on_validation(store, tmp_path) -> None:
    pytest.importorskip("sentence_transformers")
    model = tmp_path / "pop"
    made = runner.invoke(app, ["train", "--store", str(store), "--model", "pop", "--out", str(model)])
    assert made.exit_code == 0, made.output
    report = tmp_path / "fuse.json"
    result = runner.invoke(app, ["fuse", str(model), "--store", str(store), "--json", str(report)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "chosen on validation ndcg@10" in flat and "test NDCG@10 by history length" in flat
    written = json.loads(report.read_text())
    assert written["text_weight"] in {float(w) for w in written["validation"]}
    # Validation picks the weight: the chosen one scores best there (the smallest among equals).
    best = max(written["validation"].values())
    assert written["validation"][str(written["text_weight"])] == best
    assert set(written["test"]) == {"behaviour", "text", "fused"} and "all" in written["test"]["fused"]
    head = runner.invoke(app, ["fuse", str(tmp_path / "missing"), "--store", str(store)])
    assert head.exit_code == 2 and "not written by `behaviorlm train`" in " ".join(head.output.split())


def test_distill_trains_a_student_on_the_teachers_split(store, tmp_path) -> None:
    teacher = tmp_path / "teacher"
    args = ["train", "--store", str(store), "--model", "transformer", "--out", str(teacher), *TINY]
    assert runner.invoke(app, args).exit_code == 0
    student = tmp_path / "student"
    small = ["-p", "d_model=8", "-p", "n_layers=1", "-p", "epochs=1", "--alpha", "0.7", "--temperature", "3"]
    result = runner.invoke(
        app, ["distill", str(teacher), "--store", str(store), "--out", str(student), *small]
    )
    assert result.exit_code == 0, result.output
    assert "teacher transformer" in result.output and "student transformer" in result.output
    loaded = load_recommender(student)
    assert loaded.d_model == 8 and loaded.max_len == 12  # the teacher's window by default
    assert runner.invoke(app, ["evaluate", str(student), "--store", str(store)]).exit_code == 0
    gru_args = ["--out", str(tmp_path / "gru"), "--model", "gru4rec", "-p", "epochs=1", "-p", "d_model=8"]
    gru = runner.invoke(app, ["distill", str(teacher), "--store", str(store), *gru_args])
    assert gru.exit_code == 0, gru.output
    ease = tmp_path / "ease"
    assert (
        runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(ease)]).exit_code
        == 0
    )
    bad = runner.invoke(app, ["distill", str(ease), "--store", str(store), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "a teacher is a sequence model" in " ".join(bad.output.split())
    bad = runner.invoke(
        app, ["distill", str(teacher), "--store", str(store), "--out", str(tmp_path / "y"), "--alpha", "2"]
    )
    assert bad.exit_code == 2 and "alpha" in bad.output


PROPENSITY_ARGS = ["train", "--model", "purchase_propensity", "--label", "purchase-within:24h"]


@pytest.fixture(scope="module")
def propensity_run(tmp_path_factory) -> tuple[Path, Path, Any]:
    """A store of eight planted days (testing.purchase.planted_propensity_events) and `train --model
    purchase_propensity --label purchase-within:24h` run on it: (store, model folder, CLI result)."""
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.ingest import ingest_records
    from behaviorlm.data.store import EventStore
    from behaviorlm.testing.purchase import planted_propensity_events

    root = tmp_path_factory.mktemp("propensity")
    store = root / "days.duckdb"
    with EventStore(store) as es:
        ingest_records(es, planted_propensity_events(), source="planted", config=IngestConfig(format="jsonl"))
    out = root / "propensity"
    result = runner.invoke(app, [*PROPENSITY_ARGS, "--store", str(store), "--out", str(out)])
    return store, out, result


def test_purchase_propensity_trains_reports_and_serves_as_the_intent_model(propensity_run, tmp_path) -> None:
    """`train --model purchase_propensity --label purchase-within:24h`: daily cutoffs, the test report
    against boosting, and a model.json that explain's --intent-model and the service read."""
    from behaviorlm.models.propensity import PurchasePropensity
    from behaviorlm.models.registry import load_intent_model

    store, out, result = propensity_run
    args = [*PROPENSITY_ARGS, "--store", str(store)]
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "gradient boosting (baseline)" in flat and "ROC-AUC minus boosting" in flat
    report = json.loads((out / "test_report.json").read_text())
    assert report["roc_auc"] > 0.97 and report["roc_auc_vs_boosting"]["low"] > 0
    assert len(report["protocol"]["test"]["cutoffs"]) == 2 and report["label"] == "purchase-within:24h"
    calibration = report["calibration"]
    assert (
        calibration["brier"] < calibration["brier_base_rate"] and 0 <= calibration["calibration_error"] < 0.2
    )
    assert "calibration error" in flat
    model = load_intent_model(out)
    assert isinstance(model, PurchasePropensity) and model.hours == 24
    # A task-head flag it does not take is named.
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "-p", "epochs=2"])
    assert bad.exit_code == 2 and "takes max_len and purchase_type" in bad.output


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("purchase-within:3", "purchase-within:Nh"),
        ("purchase-within:24h", "too short"),  # 16 hours of data: no room for daily cutoffs
    ],
)
def test_purchase_propensity_flags_are_checked(store, tmp_path, label, message) -> None:
    args = ["train", "--store", str(store), "--model", "purchase_propensity", "--label", label]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "m")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_score_lists_tomorrows_buyers_with_reasons_and_as_of_an_earlier_time(
    propensity_run, tmp_path
) -> None:
    """`score`: every user's purchase probability from a saved purchase_propensity model, most likely
    first, with reasons; --as-of a test cutoff reproduces the model's own test predictions."""
    from behaviorlm.data.store import EventStore
    from behaviorlm.testing.purchase import START

    store, model_dir, trained = propensity_run
    assert trained.exit_code == 0, trained.output
    model = load_model(model_dir)
    cutoff = START + 7 * 86_400  # the last test cutoff: carts an hour before it, purchases after
    when = "2023-11-21T22:13:20"  # = cutoff in UTC
    out = tmp_path / "scores.csv"
    result = runner.invoke(
        app,
        ["score", str(model_dir), "--store", str(store), "--out", str(out), "--as-of", when, "--top", "3"],
    )
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "P(purchase within 24h)" in flat and "strongest reason" in flat and "200 users" in flat
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 200 and list(rows[0])[:3] == [
        "user_id",
        "no purchase within 24h",
        "purchase within 24h",
    ]
    p = [float(r["purchase within 24h"]) for r in rows]
    assert p == sorted(p, reverse=True) and "cart events in the last" in rows[0]["reason_1"]
    # The same numbers as the model's predictions on that cutoff's snapshot.
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
    snap = model.snapshot(data, cutoff=cutoff)
    expected = dict(
        zip(data.user_ids[snap.users].tolist(), model.predict_snapshot(snap).tolist(), strict=True)
    )
    assert all(abs(float(r["purchase within 24h"]) - expected[r["user_id"]]) < 1e-6 for r in rows)
    # Before any event there is nobody to score.
    bad = runner.invoke(
        app, ["score", str(model_dir), "--store", str(store), "--as-of", "1990-01-01T00:00:00"]
    )
    assert bad.exit_code == 2 and "no user has an event before" in bad.output


def test_score_reads_a_sequence_head_in_its_own_index_space(store, tmp_path) -> None:
    out = tmp_path / "intent"
    args = ["train", "--store", str(store), "--model", "sequence_classifier", "--label", "purchase-within:3"]
    assert runner.invoke(app, [*args, "--out", str(out), *TINY]).exit_code == 0
    scores = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", str(out), "--store", str(store), "--out", str(scores)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 120 and list(rows[0]) == ["user_id", "0", "1"]
    assert all(abs(float(r["0"]) + float(r["1"]) - 1) < 1e-5 for r in rows)
    bad = runner.invoke(app, ["score", str(out), "--store", str(store), "--reasons", "2"])
    assert bad.exit_code == 2 and "reasons are given by a purchase_propensity model" in bad.output
