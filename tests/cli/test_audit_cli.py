"""`behaviorlm audit`: the library's numbers, the attributes it used, a JSON report and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import ingest_ml_100k
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.data.splits import leave_one_out
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.ranking import evaluate_ranking
from behaviorlm.models.baselines import Popularity

runner = CliRunner()


def test_audit_reports_groups_popularity_and_the_attributes_used(tmp_path: Path) -> None:
    store = ingest_ml_100k(tmp_path / "ml.duckdb")
    model_dir = tmp_path / "pop"
    result = runner.invoke(app, ["train", "--store", str(store), "--model", "pop", "--out", str(model_dir)])
    assert result.exit_code == 0, result.output

    report_file, plot_file = tmp_path / "audit.json", tmp_path / "audit.png"
    result = runner.invoke(
        app,
        [
            "audit", str(model_dir), "--store", str(store), "--groups", "gender,activity",
            "--penalties", "1", "--resamples", "200", "--json", str(report_file), "--plot", str(plot_file),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "quality by gender" in result.output and "grouping only: gender" in result.output
    # Tables fit an 80-column terminal (the runner's width): no cell cut short with "…".
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    report = json.loads(report_file.read_text())
    assert report["attributes_used"] == ["gender"]
    assert {g["group"] for g in report["groups"]["gender"]["groups"]} == {"F", "M"}
    assert sum(g["n_users"] for g in report["groups"]["activity"]["groups"]) == 943
    assert [p["penalty"] for p in report["mitigation"]] == [1.0]
    assert plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with EventStore(store, read_only=True) as st:
        split = leave_one_out(st.interactions())
    expected = evaluate_ranking(Popularity().fit(split.train), history=split.test_history, targets=split.test)
    assert report["metrics"]["ndcg@10"] == pytest.approx(expected.metrics["ndcg@10"])

    result = runner.invoke(app, ["audit", str(model_dir), "--store", str(store), "--groups", "religion"])
    assert result.exit_code == 2
    assert "no user has attribute(s) ['religion']" in result.output
