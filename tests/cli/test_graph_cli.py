"""`behaviorlm graph train` (purchase GNN and LightGCN) and `graph paths` on tiny stores."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.models.hetero_gnn import PurchaseGNN
from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline
from behaviorlm.models.registry import load_model
from behaviorlm.testing.purchase import write_planted_purchase_store


def test_graph_train_purchase_and_paths(tmp_path) -> None:
    store = write_planted_purchase_store(tmp_path / "s.duckdb", n_users=120)
    out = tmp_path / "gnn"
    args = ["graph", "train", "--store", str(store), "--out", str(out), "--task", "purchase"]
    hours = ["--window-minutes", "120", "--step-minutes", "60", "--warmup-minutes", "120"]
    result = CliRunner().invoke(app, [*args, *hours, "--exclude-purchased", "--epochs", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "purchase.json").read_text())
    assert set(report["results"]) == {"hetero-gnn", "logistic-regression"}
    assert report["protocol"]["test"]["positives"] > 0
    assert 0.0 <= report["results"]["hetero-gnn"]["test"]["roc_auc"] <= 1.0
    # --model auto (the default) saves the model the validation rule keeps, and says why.
    saved = {"hetero-gnn": PurchaseGNN, "logistic-regression": PurchaseFeatureBaseline}
    assert isinstance(load_model(out), saved[report["saved"]]) and report["reason"].startswith("auto: ")
    assert f"saved {report['saved']}" in result.output and "valid roc_auc" in result.output
    for forced, cls in saved.items():
        forced_out = tmp_path / forced
        run = CliRunner().invoke(
            app, [*args[:4], "--out", str(forced_out), *args[6:], *hours, "--epochs", "2", "--model", forced]
        )
        assert run.exit_code == 0, run.output
        assert isinstance(load_model(forced_out), cls) and f"saved {forced}" in run.output
    assert PurchaseGNN.load(tmp_path / "hetero-gnn").best_epoch_ >= 1
    bad = CliRunner().invoke(app, [*args, *hours, "--model", "forest"])
    assert bad.exit_code == 2 and "--model for --task purchase" in bad.output

    too_short = CliRunner().invoke(app, [*args, "--window-minutes", "6000"])
    assert too_short.exit_code == 2 and "too short" in too_short.output

    paths = CliRunner().invoke(app, ["graph", "paths", "u0", "c0i0", "--store", str(store), "--json"])
    assert paths.exit_code == 0, paths.output
    facts = json.loads(paths.stdout)
    assert all(f["path"][0] == ["user", "u0"] and f["path"][-1] == ["item", "c0i0"] for f in facts)
    unknown = CliRunner().invoke(app, ["graph", "paths", "nobody", "c0i0", "--store", str(store)])
    assert unknown.exit_code == 2 and "nobody" in unknown.output


def test_graph_train_recommend(tmp_path) -> None:
    store = write_planted_purchase_store(tmp_path / "s.duckdb", n_users=120)
    out = tmp_path / "lightgcn"
    result = CliRunner().invoke(
        app,
        ["graph", "train", "--store", str(store), "--out", str(out), "--task", "recommend", "--epochs", "3"],
    )
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output and (out / "model.json").exists() and (out / "split.json").exists()
