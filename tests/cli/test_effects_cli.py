"""``behaviorlm effects`` on a small synthetic store: windows from the flags, estimates and refutations
printed, JSON facts written, and one clear line for a missing event type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.store import EventStore
from behaviorlm.synthetic.causal import causal_synthetic

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory):
    data = causal_synthetic(n_users=1_000, n_items=800, seed=3)
    log = data.interactions
    users = log.event_users()
    records = [
        {
            "user_id": f"u{log.user_ids[u]}",
            "item_id": f"i{log.item_ids[i]}",
            "event_type": log.event_type_vocab[t],
            "timestamp": int(ts),
        }
        for u, i, t, ts in zip(users, log.items, log.event_types, log.timestamps, strict=True)
    ]
    path = tmp_path_factory.mktemp("effects") / "store.duckdb"
    with EventStore(path) as store:
        summary = ingest_records(store, records, source="causal-synthetic")
    assert summary.stored == len(records)
    return path, data


def test_effects_prints_estimates_and_refutations(synthetic_store, tmp_path: Path) -> None:
    path, data = synthetic_store
    split = datetime.fromtimestamp(data.windows.outcome_start, tz=UTC).replace(tzinfo=None).isoformat()
    out = tmp_path / "effects.json"
    result = runner.invoke(
        app,
        [
            "effects",
            "--store",
            str(path),
            "--treatment",
            "cart",
            "--outcome",
            "purchase",
            "--split-time",
            split,
            "--window-hours",
            str(7 * 24),
            "--learner",
            "linear",
            "--json",
            str(out),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    # The flags reproduce the generator's windows, so population and treated count are the generator's.
    assert f"1,000 users, {data.table.n_treated:,} treated" in result.output
    for method in ("naive", "regression", "ipw", "aipw", "dml"):
        assert method in result.output
    assert "placebo" in result.output and "pass" in result.output
    facts = json.loads(out.read_text())
    assert [e["method"] for e in facts["estimates"]][:5] == ["naive", "regression", "ipw", "aipw", "dml"]
    aipw = next(e for e in facts["estimates"] if e["method"] == "aipw")
    assert aipw["ci_low"] <= data.true_ate <= aipw["ci_high"]
    assert [r["name"] for r in aipw["refutations"]] == [
        "placebo-treatment",
        "random-common-cause",
        "data-subset",
    ]
    assert facts["protocol"]["windows"]["outcome"].startswith(split)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--treatment", "wishlist"], "treatment event type 'wishlist' is not in this event log"),
        (["--treatment", "cart", "--split-time", "next tuesday"], "'next tuesday' is not an ISO-8601 time"),
    ],
)
def test_effects_user_errors_exit_2(synthetic_store, args: list[str], message: str) -> None:
    path, _ = synthetic_store
    result = runner.invoke(app, ["effects", "--store", str(path), *args], terminal_width=200)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
