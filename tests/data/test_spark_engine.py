"""The Spark engine gives the same Parquet outputs as the DuckDB path (rows, quarantine reasons, sequences)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.prepare import ingest_with_spark, prepare
from behaviorlm.data.schema import EVENT_COLUMNS
from behaviorlm.data.store import EventStore

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover - Java is on the CI machine
    pytest.skip("the Spark engine needs Java", allow_module_level=True)

SAMPLE = (
    "\n".join(
        [
            "user,item,type,ts,value,text",
            "u1,i1,view,1600000000,,",
            "u1,i2,cart,1600000100,2.5,",
            "u1,i2,purchase,1600000200,19.99,",
            "u1,i2,purchase,1600000200,19.99,",  # duplicate in the file
            "u1,i3,view,1600099999,,",  # new session (gap > 30 min)
            "u2,i1,pv,2020-09-13T12:26:40Z,,",  # alias + ISO time
            "u2,i3,fav,2020-09-13 12:30:00+02:00,,",
            "u2,i4,view,2020/09/14,,",
            "  u3 , i1 ,VIEW, 1600000000 ,3,",  # padded fields, upper-case type
            "u3,i2,view,1600000000,1e3,",
            'u3,i5,review,1600000300,5,"great, really ""great"""',  # quoted field with delimiter and quotes
            ",i1,view,1600000000,,",  # missing user
            "u4,i1,teleport,1600000000,,",  # unknown event type
            "u4,i1,view,yesterday,,",  # bad timestamp
            "u4,i1,view,99999999999999999999,,",  # out of range (numeric)
            "u4,i1,view,1850-01-01,,",  # out of range (date)
            "u4,i1,view,2020-05,,",  # month only: not a time
            "u4,i1,view,1600000000,-3,",  # negative value
            "u4,i1,view,1600000000,abc,",  # not a number
            "u4,i1,view,1600000000,inf,",  # not finite
            "u4,i1,view,1600000000,1d,",  # Java-only number form
            "u4,i1,view,1600000000",  # too few columns
            "u4,i1,view,1600000000,,,extra",  # too many columns
            "",  # blank line: not a row
            "x" * 300 + ",i1,view,1600000000,,",  # oversized user id
            "u5,i1,view,1600000000,,",
            "u5,i6,click,1_600_000_050,,",  # digits grouped by _
            "u5,i7,view,1600000060.7,0.1,",
            "u5,i7,view,1600000060.7,0.1,",  # duplicate again
            "u6,i8,purchase,1600000000,123456789.125,",
        ]
    )
    + "\n"
)


STORED_EVENT_COLUMNS = [*EVENT_COLUMNS, "source", "source_row", "ingest_seq"]
"""Every column of the store's events table."""


def _table(path: Path) -> pa.Table:
    return ds.dataset(str(path), format="parquet").to_table()


def _rows(path: Path, columns: list[str], sort: list[str]) -> list[dict]:
    table = _table(path).select(columns).sort_by([(c, "ascending") for c in sort])
    return table.to_pylist()


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    tmp = tmp_path_factory.mktemp("spark")
    src = tmp / "events.csv"
    src.write_text(SAMPLE, encoding="utf-8")
    config = IngestConfig(
        columns={
            "user_id": "user",
            "item_id": "item",
            "event_type": "type",
            "timestamp": "ts",
            "value": "value",
            "text": "text",
        },
        source_name="sample",
        max_id_bytes=256,
    )
    duck = prepare(src, tmp / "duckdb", config=config, engine="duckdb")
    spark = prepare(src, tmp / "spark", config=config, engine="spark")
    return tmp / "duckdb", tmp / "spark", duck.to_dict(), spark.to_dict()


def test_summaries_reconcile_identically(both) -> None:
    _, _, duck, spark = both
    for key in (
        "rows_read",
        "stored",
        "quarantined",
        "duplicates",
        "duplicates_in_file",
        "quarantine_reasons",
    ):
        assert spark[key] == duck[key], key
    assert duck["rows_read"] == 29 and duck["duplicates"] == 2


def test_events_are_identical(both) -> None:
    duck, spark, _, _ = both
    cols = STORED_EVENT_COLUMNS
    assert _rows(spark / "events.parquet", cols, ["event_id"]) == _rows(
        duck / "events.parquet", cols, ["event_id"]
    )


def test_quarantine_is_identical(both) -> None:
    duck, spark, _, _ = both
    cols = ["source", "source_row", "reason", "raw"]
    got = _rows(spark / "quarantine.parquet", cols, ["source_row"])
    assert got == _rows(duck / "quarantine.parquet", cols, ["source_row"])
    assert len(got) == 13
    reasons = {r["source_row"]: r["reason"] for r in got}
    assert reasons[23] == "wrong column count: expected 6, found 4"
    assert reasons[14] == "unknown event type 'teleport'"


def test_sequences_are_identical(both) -> None:
    duck, spark, _, _ = both
    cols = ["user_id", "item_ids", "event_types", "timestamps"]
    got = _rows(spark / "sequences.parquet", cols, ["user_id"])
    assert got == _rows(duck / "sequences.parquet", cols, ["user_id"])
    u1 = next(r for r in got if r["user_id"] == "u1")
    assert u1["item_ids"] == ["i1", "i2", "i2", "i3"]


def test_spark_output_imports_into_a_store(both, tmp_path) -> None:
    _, spark, _, summary = both
    assert json.loads((spark / "manifest.json").read_text())["format"] == "behaviorlm-store-1"
    with EventStore(tmp_path / "s.duckdb") as store:
        added = store.import_parquet(spark)
        assert added["events"] == summary["stored"]
        assert added["quarantine"] == summary["quarantined"]


TAOBAO = (
    "\n".join(
        [
            "1,100,7,pv,1511544070",
            "1,101,7,pv,1511561733",
            "1,101,7,cart,1511561736",
            "1,101,7,buy,1511561790",
            "2,100,7,fav,1511572885",
            "2,100,7,fav,1511572885",
            "2,102,9,pv,not-a-time",
            "3,103,9,pv,1511572885,extra",
            "3,103,9,pv,1511600000",
        ]
    )
    + "\n"
)


def test_taobao_with_pseudonyms_matches_duckdb(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BEHAVIORLM_PSEUDONYM_KEY", "a-test-key-that-is-long-enough-0123456789")
    src = tmp_path / "UserBehavior.csv"
    src.write_text(TAOBAO)
    config = IngestConfig(
        format="taobao", pseudonymize_users=True, source_name="tb", session_gap_seconds=None
    )
    duck = prepare(src, tmp_path / "duckdb", config=config, engine="duckdb")
    spark = prepare(src, tmp_path / "spark", config=config, engine="spark")
    assert (spark.stored, spark.quarantined, spark.duplicates) == (
        duck.stored,
        duck.quarantined,
        duck.duplicates,
    )
    cols = STORED_EVENT_COLUMNS
    got = _rows(tmp_path / "spark" / "events.parquet", cols, ["event_id"])
    assert got == _rows(tmp_path / "duckdb" / "events.parquet", cols, ["event_id"])
    assert all(r["user_id"].startswith("u_") and r["session_id"] is None for r in got)
    q = ["source_row", "reason", "raw"]
    assert _rows(tmp_path / "spark" / "quarantine.parquet", q, ["source_row"]) == _rows(
        tmp_path / "duckdb" / "quarantine.parquet", q, ["source_row"]
    )
    items = ["item_id", "category"]
    assert _rows(tmp_path / "spark" / "items.parquet", items, ["item_id"]) == _rows(
        tmp_path / "duckdb" / "items.parquet", items, ["item_id"]
    )
    s = ["user_id", "item_ids", "event_types", "timestamps"]
    assert _rows(tmp_path / "spark" / "sequences.parquet", s, ["user_id"]) == _rows(
        tmp_path / "duckdb" / "sequences.parquet", s, ["user_id"]
    )


def test_ingest_with_spark_counts_events_already_stored(tmp_path) -> None:
    src = tmp_path / "UserBehavior.csv"
    src.write_text(TAOBAO)
    config = IngestConfig(format="taobao", source_name="tb")
    with EventStore(tmp_path / "s.duckdb") as store:
        first = ingest_with_spark(store, src, config=config)
        assert (first.stored, first.quarantined, first.duplicates) == (6, 2, 1)
        again = ingest_with_spark(store, src, config=config)
        assert (again.stored, again.duplicates_in_store, again.duplicates) == (0, 6, 7)
        assert store.count("events") == 6 and store.count("quarantine") == 2
        assert store.scalar("SELECT count(DISTINCT ingest_seq) FROM events") == 6


def test_cli_prepare_and_ingest_with_spark(tmp_path) -> None:
    from typer.testing import CliRunner

    from behaviorlm.cli.main import app

    src = tmp_path / "UserBehavior.csv"
    src.write_text(TAOBAO)
    runner = CliRunner()
    out = runner.invoke(app, ["prepare", str(src), "-f", "taobao", "--out", str(tmp_path / "p"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["stored"] == 6
    assert (tmp_path / "p" / "sequences.parquet").exists()
    store = tmp_path / "s.duckdb"
    args = ["ingest", str(src), "-f", "taobao", "--store", str(store), "--engine", "spark", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["quarantined"] == 2
    bad = runner.invoke(
        app, ["prepare", str(src), "-f", "reviews", "--out", str(tmp_path / "q"), "--engine", "spark"]
    )
    assert bad.exit_code != 0 and "--engine spark reads" in bad.output
