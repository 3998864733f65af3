"""EventStore: Parquet round trip, chronological interactions, stats, item details, daily counts, upsert."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_file
from behaviorlm.data.store import TABLES, EventStore, StoreError

FIELDS = ("user_id", "item_id", "event_type", "timestamp", "value")
HEADER = ",".join(FIELDS)


def csv_config(**kwargs) -> IngestConfig:
    return IngestConfig(columns={f: f for f in FIELDS}, **kwargs)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def table_rows(store: EventStore, table: str) -> list[tuple]:
    return store.rows(f"SELECT * FROM {table} ORDER BY ALL")


def populated_store(tmp_path: Path, store: EventStore) -> None:
    """Events, quarantine, items, users, knowledge graph and ingest log, all non-empty."""
    (tmp_path / "mini.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t100\n1\t11\t5\t200\n2\t10\t3\t150\n2\t\t3\t160\n"
    )
    (tmp_path / "mini.item").write_text(
        "item_id:token\tmovie_title:token_seq\tgenre:token_seq\n10\tAlpha One\tDrama War\n11\tBeta\tComedy\n"
    )
    (tmp_path / "mini.user").write_text("user_id:token\tage:token\n1\t30\n2\t41\n")
    (tmp_path / "mini.kg").write_text(
        "head_id:token\trelation_id:token\ttail_id:token\nm.a\tdirected_by\tm.b\n"
    )
    (tmp_path / "mini.link").write_text("item_id:token\tentity_id:token\n10\tm.a\n")
    summary = ingest_file(store, tmp_path / "mini.inter", config=IngestConfig(format="recbole"))
    assert (summary.stored, summary.quarantined) == (3, 1)
    csv = write(tmp_path / "more.csv", [HEADER, "3,12,view,2021-03-04T05:06:07+01:00,", "3,12,bogus,1,"])
    ingest_file(store, csv, config=csv_config())


# ---------------------------------------------------------------------------------------------- parquet
def test_export_then_import_gives_identical_tables(tmp_path: Path) -> None:
    with EventStore(tmp_path / "a.duckdb") as original:
        populated_store(tmp_path, original)
        for table in TABLES:
            assert original.count(table) > 0, table
        written = original.export_parquet(tmp_path / "export")
        assert sorted(p.name for p in written) == sorted(f"{t}.parquet" for t in TABLES)
        manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
        assert manifest == {"tables": list(TABLES), "format": "behaviorlm-store-1"}
        expected = {t: table_rows(original, t) for t in TABLES}

        # Importing into the store it came from adds nothing.
        assert original.import_parquet(tmp_path / "export") == dict.fromkeys(TABLES, 0)

    with EventStore(tmp_path / "b.duckdb") as fresh:
        added = fresh.import_parquet(tmp_path / "export")
        assert added == {t: len(rows) for t, rows in expected.items()}
        assert {t: table_rows(fresh, t) for t in TABLES} == expected
        # Typed columns survive: timestamps stay UTC timestamps, attributes stay JSON.
        assert fresh.scalar("SELECT timestamp FROM events WHERE user_id = '3'") == datetime(
            2021, 3, 4, 4, 6, 7
        )
        genre = fresh.scalar("SELECT attributes->'genre' FROM items WHERE item_id = '10'")
        assert json.loads(genre) == ["Drama", "War"]

        again = fresh.import_parquet(tmp_path / "export")
        assert again == dict.fromkeys(TABLES, 0)
        assert {t: table_rows(fresh, t) for t in TABLES} == expected


def test_import_rejects_non_exports_and_incomplete_exports_atomically(tmp_path: Path) -> None:
    with EventStore(":memory:") as store:
        populated_store(tmp_path, store)
        store.export_parquet(tmp_path / "export")
    with EventStore(":memory:") as fresh:
        with pytest.raises(StoreError, match="not a behaviorlm Parquet export"):
            fresh.import_parquet(tmp_path)
        (tmp_path / "export" / "ingest_log.parquet").unlink()  # the last table imported
        with pytest.raises(StoreError, match=r"ingest_log\.parquet is missing"):
            fresh.import_parquet(tmp_path / "export")
        # Nothing from the earlier tables was kept: the import is one transaction.
        assert {t: fresh.count(t) for t in TABLES} == dict.fromkeys(TABLES, 0)


# ---------------------------------------------------------------------------------------------- interactions
def test_interactions_are_chronological_with_ties_in_source_order(tmp_path: Path) -> None:
    lines = [
        HEADER,
        "alice,c,view,300,",
        "bob,x,view,50,",
        "alice,a,view,100,",
        "alice,t2,view,200,",  # three events at the same second: keep source order t2, t1, t3
        "alice,t1,cart,200,",
        "bob,y,purchase,50,",  # tie with bob's x: after it
        "alice,t3,view,200,",
    ]
    with EventStore(":memory:") as store:
        ingest_file(store, write(tmp_path / "a.csv", lines), config=csv_config())
        # A later source's event at an existing time comes after the earlier source's events.
        ingest_file(
            store,
            write(tmp_path / "b.csv", [HEADER, "alice,t0,view,200,", "carol,z,view,1,"]),
            config=csv_config(),
        )
        inter = store.interactions()

        assert list(inter.user_ids) == ["alice", "bob", "carol"]
        histories = {u: [inter.item_ids[i] for i in inter.history(k)] for k, u in enumerate(inter.user_ids)}
        assert histories == {
            "alice": ["a", "t2", "t1", "t3", "t0", "c"],
            "bob": ["x", "y"],
            "carol": ["z"],
        }
        assert inter.timestamps[: inter.user_ptr[1]].tolist() == [100, 200, 200, 200, 200, 300]
        types = [inter.event_type_vocab[t] for t in inter.event_types[: inter.user_ptr[1]]]
        assert types == ["view", "view", "cart", "view", "view", "view"]
        assert inter.event_type_vocab == ("cart", "purchase", "view")

        only_views = store.interactions(event_types=["view"])
        assert only_views.n_events == 7
        assert [only_views.item_ids[i] for i in only_views.history(0)] == ["a", "t2", "t3", "t0", "c"]

        vocab = ("view", "click", "cart", "fav", "purchase")
        fixed = store.interactions(event_type_vocab=vocab)
        assert fixed.event_type_vocab == vocab
        assert np.array_equal(fixed.items, inter.items)

        with pytest.raises(StoreError, match="no events of types"):
            store.interactions(event_types=["review"])


def test_interactions_on_empty_store_is_a_clear_error() -> None:
    with EventStore(":memory:") as store, pytest.raises(StoreError, match="has no events"):
        store.interactions()


# ---------------------------------------------------------------------------------------------- stats
def test_stats_on_a_hand_example(tmp_path: Path) -> None:
    lines = [
        HEADER,
        "u1,i1,view,1000,",
        "u1,i2,view,1060,",
        "u1,i2,purchase,9000,20",  # > 30 min later: a second session for u1
        "u2,i1,view,5000,",
        "u2,i1,view,5000,",  # duplicate
        "u2,,view,5001,",  # quarantined
        "u3,i3,jump,1,",  # quarantined
        "u3,i3,hop,2,",  # quarantined (same reason kind)
    ]
    with EventStore(":memory:") as store:
        ingest_file(store, write(tmp_path / "s.csv", lines), config=csv_config())
        stats = store.stats()
    assert stats["tables"] == {
        "events": 4,
        "items": 0,
        "users": 0,
        "quarantine": 3,
        "kg_triples": 0,
        "item_entities": 0,
        "ingest_log": 1,
    }
    assert stats["event_types"] == {"view": 3, "purchase": 1}
    assert (stats["users"], stats["items"], stats["sessions"]) == (2, 2, 3)
    assert stats["first_event"] == "1970-01-01T00:16:40"
    assert stats["last_event"] == "1970-01-01T02:30:00"
    assert stats["density"] == pytest.approx(4 / (2 * 2))
    assert stats["quarantine_reasons"] == [
        {"reason": "unknown event type '…'", "rows": 2},
        {"reason": "missing item_id", "rows": 1},
    ]


def test_stats_on_empty_store() -> None:
    with EventStore(":memory:") as store:
        stats = store.stats()
    assert stats["tables"] == dict.fromkeys(TABLES, 0)
    assert (stats["users"], stats["items"], stats["density"]) == (0, 0, 0.0)
    assert stats["first_event"] is None and stats["last_event"] is None
    assert stats["quarantine_reasons"] == []


# ---------------------------------------------------------------------------------------------- item details, daily counts
def test_item_details_gives_the_catalogue_fields_that_are_set() -> None:
    with EventStore(":memory:") as store:
        store.execute(
            """INSERT INTO items (item_id, title, category, brand) VALUES
               ('i1', 'Trail shoe', 'shoes', 'Acme'), ('i2', 'Mug', NULL, '  '), ('i3', NULL, NULL, NULL),
               ('7', 'Seven', 'numbers', NULL)"""
        )
        details = store.item_details(["i1", "i2", "i3", "i9", "7", "i1"])
        assert details == {
            "i1": {"title": "Trail shoe", "category": "shoes", "brand": "Acme"},
            "i2": {"title": "Mug"},  # a blank brand is no brand
            "7": {"title": "Seven", "category": "numbers"},
        }  # i3 has no field set and i9 no row: both left out
        assert store.item_details([]) == {}


def test_user_daily_counts_are_per_utc_day_and_event_type(tmp_path: Path) -> None:
    day = 86_400
    lines = [
        HEADER,
        f"u1,i1,view,{day - 1},",  # 1970-01-01 23:59:59 UTC
        f"u1,i2,view,{day},",  # 1970-01-02 00:00:00 UTC
        f"u1,i2,purchase,{day + 60},",
        f"u1,i3,view,{3 * day + 5},",
        f"u2,i1,view,{day},",
    ]
    with EventStore(":memory:") as store:
        ingest_file(store, write(tmp_path / "days.csv", lines), config=csv_config())
        assert store.user_daily_counts("u1") == [
            (date(1970, 1, 1), "view", 1),
            (date(1970, 1, 2), "purchase", 1),
            (date(1970, 1, 2), "view", 1),
            (date(1970, 1, 4), "view", 1),
        ]
        assert store.user_daily_counts("nobody") == []


# ---------------------------------------------------------------------------------------------- upsert and basics
def test_upsert_merges_by_key() -> None:
    with EventStore(":memory:") as store:
        n = store.upsert(
            "items",
            key="item_id",
            select_sql="SELECT * FROM (VALUES ('a', 'Title A', 'cat1', NULL), ('b', NULL, 'cat2', 'B'), "
            "('b', NULL, 'cat2', 'B'), (NULL, 'x', 'x', 'x')) t(item_id, title, category, brand)"
            " CROSS JOIN (SELECT NULL::JSON AS attributes, NULL AS text)",
        )
        assert n == 2  # distinct non-null keys
        n = store.upsert(
            "items",
            key="item_id",
            select_sql="SELECT * FROM (VALUES ('a', NULL, 'cat9', 'BrandA'), ('c', 'C', NULL, NULL)) "
            "t(item_id, title, category, brand)"
            " CROSS JOIN (SELECT NULL::JSON AS attributes, NULL AS text)",
        )
        assert n == 2
        rows = store.rows("SELECT item_id, title, category, brand FROM items ORDER BY item_id")
        assert rows == [("a", "Title A", "cat9", "BrandA"), ("b", None, "cat2", "B"), ("c", "C", None, None)]
        with pytest.raises(ValueError, match="upsert supports items and users"):
            store.upsert("events", key="event_id", select_sql="SELECT 1")
        with pytest.raises(ValueError, match="unknown table 'nope'"):
            store.count("nope")


def test_file_store_persists_and_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "s.duckdb"
    with EventStore(path) as store:
        ingest_file(store, write(tmp_path / "a.csv", [HEADER, "u,i,view,1,"]), config=csv_config())
        assert store.scalar("SELECT current_setting('TimeZone')") == "UTC"
    with EventStore(path, read_only=True) as store:
        assert store.count("events") == 1
        assert store.next_ingest_seq() == 2  # _ord 1 of the first run
        with pytest.raises(Exception, match="read-only"):
            store.execute("DELETE FROM events")


def test_failed_transaction_rolls_back() -> None:
    with EventStore(":memory:") as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.execute("INSERT INTO users VALUES ('u', NULL)")
            raise RuntimeError("boom")
        assert store.count("users") == 0


def test_unordered_writes_restores_the_insertion_order_setting(tmp_path: Path) -> None:
    with EventStore(tmp_path / "s.duckdb") as store:
        setting = "SELECT current_setting('preserve_insertion_order')"
        assert store.scalar(setting) is True
        with store.unordered_writes():
            assert store.scalar(setting) is False
        assert store.scalar(setting) is True
        with pytest.raises(RuntimeError, match="inside"), store.unordered_writes():
            raise RuntimeError("failed inside the block")
        assert store.scalar(setting) is True
