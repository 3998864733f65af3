"""Ingest: every row is stored, quarantined with the right reason and line, or counted as a duplicate."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import IngestError, IngestSummary, ingest_file
from behaviorlm.data.store import EventStore

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
KEY_ENV = "BEHAVIORLM_PSEUDONYM_KEY"

FIELDS5 = ("user_id", "item_id", "event_type", "timestamp", "value")
HEADER5 = ",".join(FIELDS5)


def cfg(fields: tuple[str, ...] = FIELDS5, **kwargs) -> IngestConfig:
    return IngestConfig(columns={f: f for f in fields}, **kwargs)


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    data = [line if isinstance(line, bytes) else line.encode("utf-8") for line in lines]
    path.write_bytes(b"\n".join(data) + b"\n")
    return path


def quarantine_by_row(store: EventStore) -> dict[int, str]:
    return dict(store.rows("SELECT source_row, reason FROM quarantine ORDER BY source_row"))


def assert_reconciles(summary: IngestSummary, store: EventStore, *, events_before: int = 0) -> None:
    assert summary.rows_read == summary.stored + summary.quarantined + summary.duplicates
    assert summary.duplicates == summary.duplicates_in_file + summary.duplicates_in_store
    assert store.count("events") - events_before == summary.stored


@pytest.fixture
def store() -> EventStore:
    with EventStore(":memory:") as s:
        yield s


# ---------------------------------------------------------------------------------------------- malformed rows
MIXED_LINES: list[tuple[str | bytes, str | None]] = [
    # (line, expected quarantine reason or None when stored); line 1 is the header.
    (HEADER5, None),
    ("u1,i1,view,1600000000,1", None),  # 2 stored
    ("u1,i2,view", "wrong column count: expected 5, found 3"),  # 3
    ("u1,i2,view,1600000001,1,extra", "wrong column count: expected 5, found 6"),  # 4
    (b"u\xff1,i3,view,1600000002,1", "invalid UTF-8 encoding"),  # 5
    ("", None),  # 6 blank: not a row
    ("u2,i3,view,notatime,1", "timestamp 'notatime' is not unix time (s) or an ISO-8601 time"),  # 7
    ("u2,i3,view,5000000000,1", "timestamp 2128-06-11 08:53:20 is outside [1970-01-01, 2100-01-01)"),  # 8
    ("u2,i3,view,-5,1", "timestamp 1969-12-31 23:59:55 is outside [1970-01-01, 2100-01-01)"),  # 9
    (
        "u2,i3,view,99999999999999,1",
        "timestamp '99999999999999' (s) is outside [1970-01-01, 2100-01-01)",
    ),  # 10
    ("u2,i3,teleport,1600000003,1", "unknown event type 'teleport'"),  # 11
    (",i3,view,1600000003,1", "missing user_id"),  # 12
    ("   ,i3,view,1600000003,1", "missing user_id"),  # 13
    ("u2,\t,view,1600000003,1", "missing item_id"),  # 14
    ("u2,i3, ,1600000003,1", "missing event_type"),  # 15
    ("u2,i3,view,,1", "missing timestamp"),  # 16
    ("u2,i3,view,1600000004,-1.5", "negative value -1.5"),  # 17
    ("u2,i3,view,1600000004,abc", "value 'abc' is not a number"),  # 18
    ("u2,i3,view,1600000004,nan", "value nan is not finite"),  # 19
    ("u" + "x" * 300 + ",i3,view,1600000004,1", "user_id is 301 bytes, over the limit of 256"),  # 20
    ("u2,i" + "y" * 299 + ",view,1600000004,1", "item_id is 300 bytes, over the limit of 256"),  # 21
    ("", None),  # 22 blank
    ("", None),  # 23 blank
    ("u3,i4,pv,1600000005,", None),  # 24 stored as view
    ("u3,i5,BUY,2020-09-13T12:26:40+02:00,", None),  # 25 stored as purchase at 10:26:40 UTC
    ("u3,i6,Add_To_Cart,2020-09-13T12:26:40Z,0", None),  # 26 stored as cart
    ("u1,i1,view,1600000000,1", None),  # 27 duplicate of line 2
    ("u4,i7,view,1600000000,", None),  # 28 stored
]


def test_mixed_malformed_rows_are_quarantined_with_reason_and_line(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "mixed.csv", [line for line, _ in MIXED_LINES])
    summary = ingest_file(store, path, config=cfg())

    expected_quarantine = {n: r for n, (_, r) in enumerate(MIXED_LINES, start=1) if r is not None}
    assert quarantine_by_row(store) == expected_quarantine
    stored_rows = {2, 24, 25, 26, 28}
    assert {r for (r,) in store.rows("SELECT source_row FROM events")} == stored_rows
    assert summary.rows_read == len(MIXED_LINES) - 1 - 3  # header and three blank lines are not rows
    assert summary.stored == len(stored_rows)
    assert summary.quarantined == len(expected_quarantine)
    assert summary.duplicates == summary.duplicates_in_file == 1
    assert_reconciles(summary, store)
    assert store.count("quarantine") == summary.quarantined
    assert sum(summary.quarantine_reasons.values()) == summary.quarantined
    assert summary.warnings == []

    events = {
        row: (user, item, etype, ts, value)
        for row, user, item, etype, ts, value in store.rows(
            "SELECT source_row, user_id, item_id, event_type, timestamp, value FROM events"
        )
    }
    assert events[2] == ("u1", "i1", "view", datetime(2020, 9, 13, 12, 26, 40), 1.0)
    assert events[24] == ("u3", "i4", "view", datetime(2020, 9, 13, 12, 26, 45), None)
    assert events[25] == ("u3", "i5", "purchase", datetime(2020, 9, 13, 10, 26, 40), None)
    assert events[26] == ("u3", "i6", "cart", datetime(2020, 9, 13, 12, 26, 40), 0.0)
    # Quarantined rows keep their raw text (the structural rejects too) for diagnosis.
    raw = dict(store.rows("SELECT source_row, raw FROM quarantine"))
    assert raw[3] == "u1,i2,view"
    assert raw[18] == "u2,i3,view,1600000004,abc"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("u,i", "wrong column count: expected 5, found 2"),
        ("u,i,view,1,2,3,4", "wrong column count: expected 5, found 7"),
        ("u,i,view,yesterday,1", "timestamp 'yesterday' is not unix time (s) or an ISO-8601 time"),
        (
            "u,i,view,2020-13-45T00:00:00,1",
            "timestamp '2020-13-45T00:00:00' is not unix time (s) or an ISO-8601 time",
        ),
        ("u,i,view,4102444800,1", "timestamp 2100-01-01 00:00:00 is outside [1970-01-01, 2100-01-01)"),
        ("u,i,jump,1,1", "unknown event type 'jump'"),
        ("u,i,view,1,-0.01", "negative value -0.01"),
        ("u,i,view,1,1e400x", "value '1e400x' is not a number"),
        (" \t ,i,view,1,1", "missing user_id"),
    ],
)
def test_single_bad_row_reason_after_a_good_row(
    tmp_path: Path, store: EventStore, line: str, reason: str
) -> None:
    path = write_lines(tmp_path / "one.csv", [HEADER5, "ok,i,view,1,1", line])
    summary = ingest_file(store, path, config=cfg())
    assert quarantine_by_row(store) == {3: reason}
    assert (summary.stored, summary.quarantined) == (1, 1)


def test_invalid_utf8_in_text_field(tmp_path: Path, store: EventStore) -> None:
    header = "user_id,item_id,event_type,timestamp,text"
    path = write_lines(
        tmp_path / "t.csv", [header, "u,i,view,1,caf\u00e9", b"u,j,view,2,caf\xe9", "u,k,view,3,ok"]
    )
    summary = ingest_file(store, path, config=cfg(("user_id", "item_id", "event_type", "timestamp", "text")))
    assert quarantine_by_row(store) == {3: "invalid UTF-8 encoding"}
    assert sorted(store.rows("SELECT source_row, text FROM events")) == [(2, "caf\u00e9"), (4, "ok")]
    assert summary.stored == 2


def test_oversized_text_and_ids_use_configured_limits(tmp_path: Path, store: EventStore) -> None:
    header = "user_id,item_id,event_type,timestamp,text,event_id"
    lines = [
        header,
        "u,i,view,1," + "é" * 50 + ",e1",  # 100 bytes: at the limit, stored
        "u,i,view,2," + "é" * 51 + ",e2",  # 102 bytes
        "u,i,view,3,t,e" + "9" * 20,  # event id of 21 bytes
        "u" * 21 + ",i,view,4,t,e4",
        "u,i,view,5,t,e5",
    ]
    path = write_lines(tmp_path / "sizes.csv", lines)
    fields = ("user_id", "item_id", "event_type", "timestamp", "text", "event_id")
    summary = ingest_file(store, path, config=cfg(fields, max_text_bytes=100, max_id_bytes=20))
    assert quarantine_by_row(store) == {
        3: "text is 102 bytes, over the limit of 100",
        4: "event_id is 21 bytes, over the limit of 20",
        5: "user_id is 21 bytes, over the limit of 20",
    }
    assert sorted(store.rows("SELECT event_id FROM events")) == [("e1",), ("e5",)]
    assert_reconciles(summary, store)


def test_blank_lines_do_not_shift_line_numbers(tmp_path: Path, store: EventStore) -> None:
    lines = [
        HEADER5,
        "",
        "",
        "u,i1,view,1,1",  # 4
        "",
        "u,,view,2,1",  # 6
        "u,i3,view",  # 7
        "",
        "",
        "",
        "u,i4,view,4,1",  # 11
        "u,,view,5,1",  # 12
    ]
    path = write_lines(tmp_path / "blank.csv", lines)
    path.write_bytes(path.read_bytes() + b"\n\n")  # trailing blank lines too
    summary = ingest_file(store, path, config=cfg())
    assert quarantine_by_row(store) == {
        6: "missing item_id",
        7: "wrong column count: expected 5, found 3",
        12: "missing item_id",
    }
    assert sorted(store.rows("SELECT source_row, item_id FROM events")) == [(4, "i1"), (11, "i4")]
    assert summary.rows_read == 5
    assert summary.warnings == []


def test_crlf_line_endings_and_byte_order_mark(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + HEADER5.encode() + b"\r\nu,i1,view,1,1\r\n\r\nu,,view,2,1\r\nu,i3,view,3,1"
    )
    summary = ingest_file(store, path, config=cfg())
    assert quarantine_by_row(store) == {4: "missing item_id"}
    assert sorted(store.rows("SELECT source_row, item_id FROM events")) == [(2, "i1"), (5, "i3")]
    assert summary.rows_read == 3


def test_event_type_aliases_map_to_canonical_types(tmp_path: Path, store: EventStore) -> None:
    rows = ["pv", "PV", "buy", "order", "addtocart", "favorite", "like", "rating", "transaction", "Click"]
    lines = [HEADER5] + [f"u,i{k},{t},{k + 1}," for k, t in enumerate(rows)]
    summary = ingest_file(store, write_lines(tmp_path / "a.csv", lines), config=cfg())
    assert summary.stored == len(rows)
    got = [t for (t,) in store.rows("SELECT event_type FROM events ORDER BY source_row")]
    assert got == ["view", "view", "purchase", "purchase", "cart", "fav", "fav", "rate", "purchase", "click"]


def test_custom_aliases_replace_builtin_ones(tmp_path: Path, store: EventStore) -> None:
    lines = [HEADER5, "u,i1,pv,1,", "u,i2,look,2,"]
    config = cfg(event_types=("view",), event_type_aliases={"look": "view"})
    summary = ingest_file(store, write_lines(tmp_path / "a.csv", lines), config=config)
    assert quarantine_by_row(store) == {2: "unknown event type 'pv'"}
    assert summary.stored == 1


def test_iso_timestamps_with_offsets_are_converted_to_utc(tmp_path: Path, store: EventStore) -> None:
    stamps = [
        "2020-01-01T00:00:00-05:00",
        "2020-01-01 00:00:00Z",
        "2020-06-01T12:00:00+09:30",
        "2020-06-01T12:00:00.250+00:00",
        "2020-06-01T12:00:00",
        "2020-06-01",
    ]
    lines = [HEADER5] + [f"u,i{k},view,{s}," for k, s in enumerate(stamps)]
    ingest_file(store, write_lines(tmp_path / "iso.csv", lines), config=cfg())
    got = [ts for (ts,) in store.rows("SELECT timestamp FROM events ORDER BY source_row")]
    assert got == [
        datetime(2020, 1, 1, 5, 0),
        datetime(2020, 1, 1, 0, 0),
        datetime(2020, 6, 1, 2, 30),
        datetime(2020, 6, 1, 12, 0, 0, 250_000),
        datetime(2020, 6, 1, 12, 0),
        datetime(2020, 6, 1, 0, 0),
    ]


def test_iso_offsets_become_utc_whatever_the_machine_time_zone(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "tz.csv", [HEADER5, "u,i,view,2020-01-01T00:00:00-05:00,"])
    script = (
        "import sys; from behaviorlm.data.store import EventStore; from behaviorlm.data.ingest import ingest_file;"
        "from behaviorlm.config import IngestConfig; s = EventStore(':memory:');"
        "ingest_file(s, sys.argv[1], config=IngestConfig(columns={f: f for f in sys.argv[2].split(',')}));"
        "print(s.scalar('SELECT timestamp FROM events').isoformat())"
    )
    env = {**os.environ, "TZ": "Asia/Tokyo"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), HEADER5],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2020-01-01T05:00:00"


@pytest.mark.parametrize(
    ("unit", "raw", "expected"),
    [
        ("ms", "1600000000123", datetime(2020, 9, 13, 12, 26, 40, 123_000)),
        ("us", "1600000000000001", datetime(2020, 9, 13, 12, 26, 40, 1)),
        ("s", "1600000000.5", datetime(2020, 9, 13, 12, 26, 40, 500_000)),
    ],
)
def test_timestamp_units(tmp_path: Path, store: EventStore, unit: str, raw: str, expected: datetime) -> None:
    path = write_lines(tmp_path / "u.csv", [HEADER5, f"u,i,view,{raw},"])
    ingest_file(store, path, config=cfg(timestamp_unit=unit))
    assert store.scalar("SELECT timestamp FROM events") == expected


def test_seconds_read_as_milliseconds_fall_outside_the_time_range(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "u.csv", [HEADER5, "u,i,view,1600000000,"])
    ingest_file(store, path, config=cfg(timestamp_unit="ms", min_timestamp="2000-01-01"))
    assert quarantine_by_row(store) == {
        2: "timestamp 1970-01-19 12:26:40 is outside [2000-01-01, 2100-01-01)"
    }


# ---------------------------------------------------------------------------------------------- reconciliation, dedup
def test_duplicates_in_file_keep_first_copy_and_reingest_is_idempotent(tmp_path: Path) -> None:
    lines = [
        HEADER5,
        "u1,i1,view,10,1",  # 2
        "u1,i2,view,20,",  # 3
        "u1,i1,view,10,1",  # 4 duplicate of 2
        " u1 ,i1,VIEW,10,1.0",  # 5 same content after trimming and normalising: duplicate
        "u1,i1,pv,10,1",  # 6 alias of the same event: duplicate
        "u1,i1,view,11,1",  # 7 different time: new event
        "u2,,view,30,",  # 8 quarantined
        "u2,,view,30,",  # 9 quarantined (a bad row is never a "duplicate")
    ]
    path = write_lines(tmp_path / "dups.csv", lines)
    with EventStore(tmp_path / "s.duckdb") as store:
        first = ingest_file(store, path, config=cfg())
        assert (first.rows_read, first.stored, first.quarantined) == (8, 3, 2)
        assert (first.duplicates, first.duplicates_in_file, first.duplicates_in_store) == (3, 3, 0)
        assert sorted(store.rows("SELECT source_row FROM events")) == [(2,), (3,), (7,)]
        assert_reconciles(first, store)
        events_before = store.rows("SELECT * FROM events ORDER BY event_id")
        quarantine_before = store.rows(
            "SELECT source, source_row, reason, raw FROM quarantine ORDER BY source_row"
        )

    with EventStore(tmp_path / "s.duckdb") as store:  # reopened from disk
        second = ingest_file(store, path, config=cfg())
        # Every valid row is now a duplicate: the first run's stored events are in the store, and the
        # in-file copies are still in-file duplicates. Bad rows are quarantined again but not re-added.
        assert second.stored == 0
        assert second.quarantined == first.quarantined
        assert second.duplicates == first.stored + first.duplicates
        assert second.duplicates_in_file == first.duplicates_in_file
        assert second.duplicates_in_store == first.stored
        assert store.rows("SELECT * FROM events ORDER BY event_id") == events_before
        assert (
            store.rows("SELECT source, source_row, reason, raw FROM quarantine ORDER BY source_row")
            == quarantine_before
        )
        log = store.rows(
            "SELECT rows_read, stored, quarantined, duplicates FROM ingest_log ORDER BY finished_at"
        )
        assert log == [(8, 3, 2, 3), (8, 0, 2, 6)]


def test_same_events_from_another_source_are_store_duplicates(tmp_path: Path, store: EventStore) -> None:
    a = write_lines(tmp_path / "a.csv", [HEADER5, "u,i1,view,1,", "u,i2,view,2,"])
    b = write_lines(tmp_path / "b.csv", [HEADER5, "u,i2,view,2,", "u,i3,view,3,"])
    ingest_file(store, a, config=cfg())
    second = ingest_file(store, b, config=cfg())
    assert (second.stored, second.duplicates_in_store, second.duplicates_in_file) == (1, 1, 0)
    lineage = sorted(store.rows("SELECT item_id, source, source_row FROM events"))
    assert lineage == [("i1", str(a), 2), ("i2", str(a), 3), ("i3", str(b), 3)]


def test_source_event_ids_dedup_regardless_of_content(tmp_path: Path, store: EventStore) -> None:
    header = "event_id,user_id,item_id,event_type,timestamp"
    fields = ("event_id", "user_id", "item_id", "event_type", "timestamp")
    a = write_lines(tmp_path / "a.csv", [header, "e1,u,i1,view,1", "e2,u,i2,view,2", "e1,u,OTHER,cart,9"])
    first = ingest_file(store, a, config=cfg(fields))
    assert (first.stored, first.duplicates_in_file) == (2, 1)
    assert sorted(store.rows("SELECT event_id, item_id FROM events")) == [("e1", "i1"), ("e2", "i2")]
    b = write_lines(tmp_path / "b.csv", [header, "e2,v,x,view,5", "e3,u,i1,view,1"])
    second = ingest_file(store, b, config=cfg(fields))
    # e3 has the same content as e1 but its own id: a distinct event.
    assert (second.stored, second.duplicates_in_store) == (1, 1)
    assert store.count("events") == 3


def test_content_event_id_is_stable_md5(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "a.csv", [HEADER5, "u,i,view,1600000000,2.5"])
    ingest_file(store, path, config=cfg())
    content = "\x1f".join(["u", "i", "view", str(1600000000 * 1_000_000), "2.5", ""])
    assert store.scalar("SELECT event_id FROM events") == hashlib.md5(content.encode()).hexdigest()


def test_sessions_split_on_gap(tmp_path: Path, store: EventStore) -> None:
    lines = [HEADER5, "u,i1,view,1000,", "u,i2,view,1100,", "u,i3,view,5000,", "v,i1,view,1000,"]
    ingest_file(store, write_lines(tmp_path / "s.csv", lines), config=cfg(session_gap_seconds=1800))
    sessions = dict(store.rows("SELECT user_id || item_id, session_id FROM events"))
    assert sessions == {"ui1": "u@1000", "ui2": "u@1000", "ui3": "u@5000", "vi1": "v@1000"}


# ---------------------------------------------------------------------------------------------- clear errors
def _assert_clean_ingest_error(excinfo: pytest.ExceptionInfo, path: Path, fragment: str) -> None:
    message = str(excinfo.value)
    assert str(path) in message
    assert fragment in message
    assert excinfo.value.__cause__ is None  # no chained traceback from deep inside


def test_empty_file_is_a_clear_error(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg())
    _assert_clean_ingest_error(excinfo, path, "file is empty (0 bytes)")
    assert store.count("events") == store.count("quarantine") == store.count("ingest_log") == 0


@pytest.mark.parametrize(
    "content", [HEADER5.encode(), HEADER5.encode() + b"\n", HEADER5.encode() + b"\n\n\n"]
)
def test_header_only_file_is_a_clear_error(tmp_path: Path, store: EventStore, content: bytes) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(content)
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg())
    _assert_clean_ingest_error(excinfo, path, "file has a header but no data rows")
    assert store.count("ingest_log") == 0


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path, store: EventStore) -> None:
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, tmp_path / "nope.csv", config=cfg())
    _assert_clean_ingest_error(excinfo, tmp_path / "nope.csv", "file not found")
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, tmp_path, config=cfg())
    _assert_clean_ingest_error(excinfo, tmp_path, "is a directory")


def test_mapping_to_absent_column_is_a_clear_error(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "m.csv", ["user,item_id,event_type,timestamp", "u,i,view,1"])
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg(("user_id", "item_id", "event_type", "timestamp")))
    _assert_clean_ingest_error(excinfo, path, "column 'user_id' (mapped to 'user_id') is not in the file")
    assert "'user'" in str(excinfo.value)  # lists the columns that are there


def test_unmapped_required_field_is_a_clear_error(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "m.csv", ["user_id,item_id,timestamp", "u,i,1"])
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg(("user_id", "item_id", "timestamp")))
    _assert_clean_ingest_error(excinfo, path, "no source column mapped to ['event_type']")
    # A constant event type makes the same file ingestible.
    summary = ingest_file(store, path, config=cfg(("user_id", "item_id", "timestamp"), event_type="click"))
    assert summary.stored == 1
    assert store.scalar("SELECT event_type FROM events") == "click"


def test_non_utf8_header_is_a_clear_error(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("user_id,item_id,event_type,timestamp,caf\u00e9\nu,i,view,1,x\n".encode("latin-1"))
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg(("user_id", "item_id", "event_type", "timestamp")))
    _assert_clean_ingest_error(excinfo, path, "line 1 is not valid UTF-8")


def test_repeated_header_column_is_a_clear_error(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "rep.csv", ["user_id,item_id,event_type,timestamp,item_id", "u,i,view,1,j"])
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg(("user_id", "item_id", "event_type", "timestamp")))
    _assert_clean_ingest_error(excinfo, path, "header repeats column name(s) ['item_id']")


def test_not_a_parquet_file_is_a_clear_error(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "fake.parquet", [HEADER5, "u,i,view,1,"])
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, path, config=cfg(format="parquet"))
    _assert_clean_ingest_error(excinfo, path, "not a readable Parquet file")


def test_hundred_megabyte_field_is_quarantined_quickly(tmp_path: Path, store: EventStore) -> None:
    size = 100 * 1024 * 1024
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:
        fh.write(b"user_id,item_id,event_type,timestamp,text\nu1,i1,view,1,small\nu2,i2,view,2,")
        fh.write(b"x" * size)
        fh.write(b"\nu3,i3,view,3,small\n")
    started = time.perf_counter()
    summary = ingest_file(store, path, config=cfg(("user_id", "item_id", "event_type", "timestamp", "text")))
    elapsed = time.perf_counter() - started
    path.unlink()
    assert elapsed < 30
    assert quarantine_by_row(store) == {3: f"text is {size} bytes, over the limit of 65536"}
    assert len(store.scalar("SELECT raw FROM quarantine")) == 1000  # raw is truncated for diagnosis
    assert sorted(store.rows("SELECT source_row FROM events")) == [(2,), (4,)]
    assert (summary.rows_read, summary.stored, summary.quarantined) == (3, 2, 1)


def test_line_just_over_the_reader_default_is_quarantined_not_lost(tmp_path: Path, store: EventStore) -> None:
    # The reader's default line limit is 2 MiB; a longer line switches it to the file size, otherwise the
    # line would vanish without a quarantine record.
    lines = ["user_id,item_id,event_type,timestamp,text"] + [f"u{k},i{k},view,{k + 1},t" for k in range(2000)]
    lines[1000] = "u,i,view,1," + "y" * (3 << 20)
    path = write_lines(tmp_path / "long.csv", lines)
    summary = ingest_file(store, path, config=cfg(("user_id", "item_id", "event_type", "timestamp", "text")))
    assert quarantine_by_row(store) == {1001: f"text is {3 << 20} bytes, over the limit of 65536"}
    assert (summary.rows_read, summary.stored, summary.quarantined) == (2000, 1999, 1)
    assert store.scalar("SELECT source_row FROM events WHERE user_id = 'u1000'") == 1002


def test_quoted_text_spanning_lines_within_a_raised_text_limit_is_stored(tmp_path: Path) -> None:
    # The long-line probe sees physical lines only; a 3 MB quoted text made of short lines must still
    # fit the reader's line limit when the configured text limit allows it.
    text = ("y" * 999 + "\n") * 3000
    path = tmp_path / "multiline.csv"
    path.write_text(f'user_id,item_id,event_type,timestamp,text\nu1,i1,view,1,a\nu2,i2,view,2,"{text}"\n')
    fields = ("user_id", "item_id", "event_type", "timestamp", "text")
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = ingest_file(store, path, config=cfg(fields, max_text_bytes=4_000_000))
        assert (summary.stored, summary.quarantined) == (2, 0)
        assert store.scalar("SELECT length(text) FROM events WHERE user_id = 'u2'") == len(text.strip())


def test_long_line_probe_agrees_with_splitting_every_line(tmp_path: Path) -> None:
    from behaviorlm.data.ingest_delimited import _has_line_longer_than

    path = tmp_path / "probe.txt"
    rng = random.Random(0)
    for _ in range(500):
        body = b"\n".join(b"x" * rng.choice([0, 1, 4, 5, 6, 11, 40]) for _ in range(rng.randint(0, 9)))
        data = body + (b"\n" if rng.random() < 0.5 else b"")
        path.write_bytes(data)
        for limit in (1, 4, 5, 6, 10, 39):
            expected = any(len(line) > limit for line in data.split(b"\n"))
            assert _has_line_longer_than(path, limit) is expected, (data, limit)


# ---------------------------------------------------------------------------------------------- property test
CORRUPTIONS: dict[str, tuple[str, object]] = {
    # kind -> (how to corrupt the valid row "u{k},i{k},view,{ts},{v}", expected reason)
    "too_few": ("u{k},i{k},view", "wrong column count: expected 5, found 3"),
    "too_many": ("u{k},i{k},view,{ts},1,extra", "wrong column count: expected 5, found 6"),
    "bad_utf8": (b"u{k}\xff,i{k},view,{ts},1", "invalid UTF-8 encoding"),
    "bad_ts": ("u{k},i{k},view,t{k}x,1", "timestamp 't{k}x' is not unix time (s) or an ISO-8601 time"),
    "late_ts": (
        "u{k},i{k},view,5000000000,1",
        "timestamp 2128-06-11 08:53:20 is outside [1970-01-01, 2100-01-01)",
    ),
    "bad_type": ("u{k},i{k},jump,{ts},1", "unknown event type 'jump'"),
    "no_user": (" ,i{k},view,{ts},1", "missing user_id"),
    "no_item": ("u{k},,view,{ts},1", "missing item_id"),
    "no_type": ("u{k},i{k},,{ts},1", "missing event_type"),
    "no_ts": ("u{k},i{k},view,  ,1", "missing timestamp"),
    "negative": ("u{k},i{k},view,{ts},-{k}.5", "negative value -{k}.5"),
    "not_number": ("u{k},i{k},view,{ts},n{k}", "value 'n{k}' is not a number"),
    "long_id": ("u{k}" + "x" * 300 + ",i{k},view,{ts},1", None),
}

row_kind = st.one_of(
    st.just("valid"),
    st.just("valid"),
    st.just("duplicate"),
    st.just("blank"),
    st.sampled_from(sorted(CORRUPTIONS)),
)


def _render(template: str | bytes, k: int) -> bytes:
    subs = {"k": str(k), "ts": str(1_600_000_000 + k)}
    if isinstance(template, bytes):
        return template.decode("latin-1").format(**subs).encode("latin-1")
    return template.format(**subs).encode("utf-8")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(row_kind, min_size=1, max_size=40), dup_choices=st.randoms(use_true_random=False))
def test_random_mixtures_reconcile_exactly(tmp_path: Path, kinds: list[str], dup_choices) -> None:
    lines: list[bytes] = [HEADER5.encode()]
    expected_stored: dict[int, int] = {}  # line -> k of stored rows
    expected_quarantine: dict[int, str] = {}
    n_duplicates = 0
    valid_lines: list[bytes] = []
    for k, kind in enumerate(kinds):
        line_no = len(lines) + 1
        if kind == "blank":
            lines.append(b"")
        elif kind == "valid" or (kind == "duplicate" and not valid_lines):
            line = _render("u{k},i{k},view,{ts},{k}", k)
            lines.append(line)
            valid_lines.append(line)
            expected_stored[line_no] = k
        elif kind == "duplicate":
            original = dup_choices.choice(valid_lines)
            # Equivalent spellings of the same event are duplicates too.
            variant = dup_choices.choice([original, b" " + original, original.replace(b",view,", b",PV,")])
            lines.append(variant)
            n_duplicates += 1
        else:
            template, reason = CORRUPTIONS[kind]
            lines.append(_render(template, k))
            if reason is None:
                reason = f"user_id is {len(f'u{k}') + 300} bytes, over the limit of 256"
            expected_quarantine[line_no] = str(reason).format(k=k)
    n_rows = sum(1 for line in lines[1:] if line)
    if n_rows == 0:
        lines.append(_render("u{k},i{k},view,{ts},{k}", 999))
        expected_stored[len(lines)] = 999
        n_rows = 1
    path = tmp_path / "mix.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")

    with EventStore(":memory:") as store:
        summary = ingest_file(store, path, config=cfg())
        assert summary.rows_read == n_rows
        assert summary.stored == len(expected_stored)
        assert summary.quarantined == len(expected_quarantine)
        assert summary.duplicates == summary.duplicates_in_file == n_duplicates
        assert_reconciles(summary, store)
        assert quarantine_by_row(store) == expected_quarantine
        stored = dict(store.rows("SELECT source_row, item_id FROM events"))
        assert stored == {line: f"i{k}" for line, k in expected_stored.items()}
        assert summary.warnings == []


# ---------------------------------------------------------------------------------------------- missing-value policies
TEXT_FIELDS = ("user_id", "item_id", "event_type", "timestamp", "text")
TEXT_HEADER = ",".join(TEXT_FIELDS)


def test_fill_policy_substitutes_missing_item(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "p.csv", [TEXT_HEADER, "u1,,view,1,a", "u2,i2,view,2,b", "u3, ,view,3,c"])
    summary = ingest_file(store, path, config=cfg(TEXT_FIELDS, missing={"item_id": "fill:unknown"}))
    assert summary.quarantined == 0
    assert sorted(store.rows("SELECT source_row, item_id FROM events")) == [
        (2, "unknown"),
        (3, "i2"),
        (4, "unknown"),
    ]


def test_null_policy_keeps_missing_text_as_null(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(
        tmp_path / "p.csv", [TEXT_HEADER, "u1,i1,view,1,", "u2,i2,view,2,hello", "u3,i3,view,3,  "]
    )
    summary = ingest_file(store, path, config=cfg(TEXT_FIELDS, missing={"text": "null"}))
    assert summary.stored == 3
    assert sorted(store.rows("SELECT source_row, text FROM events")) == [(2, None), (3, "hello"), (4, None)]


def test_quarantine_policy_for_text_quarantines_rows_without_text(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(
        tmp_path / "p.csv", [TEXT_HEADER, "u1,i1,view,1,", "u2,i2,view,2,hello", "u3,i3,view,3,  "]
    )
    summary = ingest_file(store, path, config=cfg(TEXT_FIELDS, missing={"text": "quarantine"}))
    assert quarantine_by_row(store) == {2: "missing text", 4: "missing text"}
    assert store.rows("SELECT source_row, text FROM events") == [(3, "hello")]
    assert_reconciles(summary, store)


def test_fill_policy_for_value(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "p.csv", [HEADER5, "u1,i1,view,1,", "u2,i2,view,2,3"])
    ingest_file(store, path, config=cfg(missing={"value": "fill:1"}))
    assert sorted(store.rows("SELECT source_row, value FROM events")) == [(2, 1.0), (3, 3.0)]


# ---------------------------------------------------------------------------------------------- pseudonymization
RAW_USERS = ("alice.smith@example.com", "bob-0042", "carol_x")


def _pseudo_file(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "people.csv",
        [
            TEXT_HEADER,
            f"{RAW_USERS[0]},i1,view,1,hi",
            f"{RAW_USERS[1]},i2,view,2,",
            f"{RAW_USERS[0]},,view,3,bad",  # quarantined
            f"{RAW_USERS[2]},i1,teleport,4,bad",  # quarantined
            f"{RAW_USERS[2]},i1,view",  # structural reject
        ],
    )


def _all_store_text(store: EventStore) -> str:
    parts = []
    for table in ("events", "users", "quarantine", "items", "ingest_log"):
        for row in store.rows(f"SELECT * FROM {table}"):
            parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_pseudonymization_leaves_no_raw_user_id_and_is_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "secret-one")
    path = _pseudo_file(tmp_path)
    config = cfg(TEXT_FIELDS, pseudonymize_users=True)
    with EventStore(tmp_path / "a.duckdb") as store:
        summary = ingest_file(store, path, config=config)
        assert (summary.stored, summary.quarantined) == (2, 3)
        assert quarantine_by_row(store) == {
            4: "missing item_id",
            5: "unknown event type 'teleport'",
            6: "wrong column count: expected 5, found 3",
        }
        everything = _all_store_text(store)
        for raw in RAW_USERS:
            assert raw not in everything
        first = dict(store.rows("SELECT source_row, user_id FROM events"))
    assert set(first) == {2, 3}
    assert all(u.startswith("u_") and len(u) == 22 for u in first.values())
    assert first[2] != first[3]

    with EventStore(":memory:") as store:  # another run with the same key
        ingest_file(store, path, config=config)
        assert dict(store.rows("SELECT source_row, user_id FROM events")) == first

    monkeypatch.setenv(KEY_ENV, "secret-two")
    with EventStore(":memory:") as store:
        ingest_file(store, path, config=config)
        other = dict(store.rows("SELECT source_row, user_id FROM events"))
    assert set(other.values()).isdisjoint(first.values())


def test_pseudonymization_without_key_names_the_variable(
    tmp_path: Path, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(IngestError, match=KEY_ENV):
        ingest_file(store, _pseudo_file(tmp_path), config=cfg(TEXT_FIELDS, pseudonymize_users=True))
    assert store.count("events") == store.count("quarantine") == 0
    monkeypatch.setenv("MY_KEY", "k")
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(IngestError, match=KEY_ENV):
        ingest_file(store, _pseudo_file(tmp_path), config=cfg(TEXT_FIELDS, pseudonymize_users=True))
    summary = ingest_file(
        store,
        _pseudo_file(tmp_path),
        config=cfg(TEXT_FIELDS, pseudonymize_users=True, pseudonym_key_env="MY_KEY"),
    )
    assert summary.stored == 2


def test_pseudonymized_reingest_is_idempotent(tmp_path: Path, store: EventStore, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    config = cfg(TEXT_FIELDS, pseudonymize_users=True)
    path = _pseudo_file(tmp_path)
    ingest_file(store, path, config=config)
    again = ingest_file(store, path, config=config)
    assert (again.stored, again.duplicates_in_store) == (0, 2)
    assert (store.count("events"), store.count("quarantine")) == (2, 3)


def test_pseudonymization_covers_recbole_users_table(tmp_path: Path, store: EventStore, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    (tmp_path / "tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        f"{RAW_USERS[0]}\t10\t4\t100\n{RAW_USERS[1]}\t11\t5\t200\n"
    )
    (tmp_path / "tiny.user").write_text(
        f"user_id:token\tage:token\n{RAW_USERS[0]}\t30\n{RAW_USERS[1]}\t40\n{RAW_USERS[2]}\t50\n"
    )
    summary = ingest_file(
        store, tmp_path / "tiny.inter", config=IngestConfig(format="recbole", pseudonymize_users=True)
    )
    assert (summary.stored, summary.users_upserted) == (2, 3)
    everything = _all_store_text(store)
    for raw in RAW_USERS:
        assert raw not in everything
    # The users table and the events agree on the pseudonyms.
    joined = store.rows(
        "SELECT e.item_id, u.attributes->>'age' FROM events e JOIN users u USING (user_id) ORDER BY 1"
    )
    assert joined == [("10", "30"), ("11", "40")]


# ---------------------------------------------------------------------------------------------- JSONL and Parquet
def test_jsonl_reader_quarantines_bad_json_with_line_numbers(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"u": "a", "i": "x", "t": "view", "ts": 1, "extra": {"nested": 1}}\n'
        b"{not json\n"
        b"\n"
        b"[1, 2]\n"
        b'{"u": "b", "i": "y", "t": "pv", "ts": "2020-01-01T00:00:00+01:00", "v": 2}\n'
        b'{"u": "c", "t": "view", "ts": 1}\n'
        b'{"u": "d\xff", "i": "z", "t": "view", "ts": 1}\n'
        b'{"u": "e", "i": "w", "t": "view", "ts": 7, "v": "lots"}\n'
    )
    config = IngestConfig(
        format="jsonl",
        columns={"user_id": "u", "item_id": "i", "event_type": "t", "timestamp": "ts", "value": "v"},
    )
    summary = ingest_file(store, path, config=config)
    q = quarantine_by_row(store)
    assert q[2].startswith("invalid JSON: Expecting property name enclosed in double quotes")
    assert {k: v for k, v in q.items() if k != 2} == {
        4: "JSON value is a list, expected an object",
        6: "missing item_id",
        7: "invalid UTF-8 encoding",
        8: "value 'lots' is not a number",
    }
    assert sorted(store.rows("SELECT source_row, user_id, event_type, timestamp, value FROM events")) == [
        (1, "a", "view", datetime(1970, 1, 1, 0, 0, 1), None),
        (5, "b", "view", datetime(2019, 12, 31, 23, 0), 2.0),
    ]
    assert (summary.rows_read, summary.stored, summary.quarantined) == (7, 2, 5)
    assert_reconciles(summary, store)


def test_parquet_reader_validates_typed_columns(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "uid": ["a", "b", "c", "a", "d"],
            "iid": ["x", "y", None, "x", "z"],
            "ts": pa.array([1_600_000_000_000, 1_600_000_001_000, 3, 1_600_000_000_000, 5], type=pa.int64()),
            "rating": [4.5, None, 1.0, 4.5, -2.0],
        }
    )
    pq.write_table(table, path)
    config = IngestConfig(
        format="parquet",
        event_type="rate",
        timestamp_unit="ms",
        columns={"user_id": "uid", "item_id": "iid", "timestamp": "ts", "value": "rating"},
    )
    summary = ingest_file(store, path, config=config)
    assert quarantine_by_row(store) == {3: "missing item_id", 5: "negative value -2.0"}
    assert sorted(store.rows("SELECT source_row, user_id, event_type, timestamp, value FROM events")) == [
        (1, "a", "rate", datetime(2020, 9, 13, 12, 26, 40), 4.5),
        (2, "b", "rate", datetime(2020, 9, 13, 12, 26, 41), None),
    ]
    assert (summary.rows_read, summary.duplicates_in_file) == (5, 1)
    raw = json.loads(store.scalar("SELECT raw FROM quarantine WHERE source_row = 5"))
    assert raw == {"uid": "d", "iid": "z", "ts": 5, "rating": -2.0}


def test_parquet_timestamp_column(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "ts.parquet"
    pq.write_table(
        pa.table({"u": ["a"], "i": ["x"], "t": ["view"], "when": pa.array([datetime(2021, 5, 6, 7, 8, 9)])}),
        path,
    )
    config = IngestConfig(
        format="parquet", columns={"user_id": "u", "item_id": "i", "event_type": "t", "timestamp": "when"}
    )
    ingest_file(store, path, config=config)
    assert store.scalar("SELECT timestamp FROM events") == datetime(2021, 5, 6, 7, 8, 9)


# ---------------------------------------------------------------------------------------------- real data
def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data file {path} is not available")
    return path


def test_recbole_ml100k_fills_events_items_users_and_knowledge_graph(store: EventStore) -> None:
    path = _shared("ml-100k/ml-100k.inter")
    summary = ingest_file(store, path, config=IngestConfig(format="recbole"))
    assert (summary.rows_read, summary.stored, summary.quarantined, summary.duplicates) == (
        100_000,
        100_000,
        0,
        0,
    )
    counts = {t: store.count(t) for t in ("events", "items", "users", "kg_triples", "item_entities")}
    assert counts == {
        "events": 100_000,
        "items": 1682,
        "users": 943,
        "kg_triples": 91_631,
        "item_entities": 1598,
    }
    assert store.scalar("SELECT count(DISTINCT user_id) FROM events") == 943
    assert store.scalar("SELECT count(DISTINCT item_id) FROM events") == 1682
    assert store.rows("SELECT event_type, min(value), max(value) FROM events GROUP BY 1") == [
        ("rate", 1.0, 5.0)
    ]
    title, attributes = store.rows("SELECT title, attributes FROM items WHERE item_id = '1'")[0]
    assert title == "Toy Story"
    assert json.loads(attributes) == {"release_year": "1995", "class": ["Animation", "Children's", "Comedy"]}
    user = json.loads(store.scalar("SELECT attributes FROM users WHERE user_id = '1'"))
    assert user == {"age": "24", "gender": "M", "occupation": "technician", "zip_code": "85711"}
    # First data line of the .inter file: "196 242 3 881250949".
    assert store.rows(
        "SELECT user_id, item_id, value, epoch(timestamp) FROM events WHERE source_row = 2"
    ) == [("196", "242", 3.0, 881250949.0)]


def test_taobao_user_behavior(store: EventStore) -> None:
    path = _shared("taobao/UserBehavior-110k.csv")
    summary = ingest_file(store, path, config=IngestConfig(format="taobao"))
    assert (summary.rows_read, summary.stored, summary.quarantined) == (110_300, 110_300, 0)
    by_type = dict(store.rows("SELECT event_type, count(*) FROM events GROUP BY 1"))
    assert by_type == {"view": 98_361, "cart": 6063, "fav": 3383, "purchase": 2493}
    assert store.count("items") == store.scalar("SELECT count(DISTINCT item_id) FROM events")
    assert store.scalar("SELECT count(*) FROM items WHERE category IS NULL") == 0
    # Every stored event points back at the line it came from (no header: line 1 is the first event).
    lines = path.read_text().splitlines()
    mismatches = 0
    for row, user, item, ts in store.rows(
        "SELECT source_row, user_id, item_id, epoch(timestamp)::BIGINT FROM events"
    ):
        fields = lines[row - 1].split(",")
        mismatches += (fields[0], fields[1], int(fields[4])) != (user, item, ts)
    assert mismatches == 0
    first_item = lines[0].split(",")
    assert store.scalar("SELECT category FROM items WHERE item_id = ?", [first_item[1]]) == first_item[2]


def test_taobao_tianchi_variant_with_chinese_header(store: EventStore) -> None:
    path = _shared("taobao/UserBehavior-tianchi216549-40k.csv")
    summary = ingest_file(store, path, config=IngestConfig(format="taobao"))
    assert (summary.rows_read, summary.stored, summary.quarantined) == (40_000, 40_000, 0)
    assert (
        store.scalar("SELECT count(*) FROM items WHERE title IS NULL OR brand IS NULL OR category IS NULL")
        == 0
    )
    assert store.count("items") == store.scalar("SELECT count(DISTINCT item_id) FROM events")
    assert store.rows("SELECT title, brand, category FROM items WHERE item_id = '4073737'") == [
        ("VIVOX100 Pro 128GB 蓝色", "VIVO", "电子产品")
    ]
    # Line 2 (after the header): 768933,4073737,...,buy,1512189107,6329.2
    assert store.rows(
        "SELECT user_id, event_type, epoch(timestamp), value FROM events WHERE source_row = 2"
    ) == [("768933", "purchase", 1512189107.0, 6329.2)]


def test_sequence_lastfm_with_item_attributes(store: EventStore) -> None:
    path = _shared("s3rec/LastFM.txt")
    summary = ingest_file(store, path, config=IngestConfig(format="sequence"))
    assert (summary.rows_read, summary.stored, summary.quarantined) == (52_551, 52_551, 0)
    attrs = json.loads((path.parent / "LastFM_item2attributes.json").read_text())
    assert store.count("items") == len(attrs)
    assert store.scalar("SELECT count(*) FROM items WHERE attributes IS NULL") == 0
    some_item, some_attrs = next(iter(attrs.items()))
    stored = json.loads(store.scalar("SELECT attributes FROM items WHERE item_id = ?", [some_item]))
    assert stored == {"attribute_ids": some_attrs}
    # Order within a line is kept as ordinal time.
    first_line = path.read_text().splitlines()[0].split()
    user_items = [
        i
        for (i,) in store.rows(
            "SELECT item_id FROM events WHERE user_id = ? ORDER BY timestamp", [first_line[0]]
        )
    ]
    assert user_items[: len(first_line) - 1] == first_line[1:]


def test_sequence_reader_quarantines_lines_without_items(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "seq.txt", ["u1 a b c", "u2", "", "u3 d", b"u4 \xff", "u1 e"])
    summary = ingest_file(store, path, config=IngestConfig(format="sequence"))
    assert quarantine_by_row(store) == {
        2: "wrong column count: expected a user id and at least one item id, found 1",
        5: "invalid UTF-8 encoding",
    }
    rows = store.rows(
        "SELECT user_id, item_id, epoch(timestamp)::BIGINT, source_row FROM events ORDER BY user_id, timestamp"
    )
    assert rows == [
        ("u1", "a", 0, 1),
        ("u1", "b", 1, 1),
        ("u1", "c", 2, 1),
        ("u1", "e", 3, 6),
        ("u3", "d", 0, 4),
    ]
    assert summary.rows_read == summary.stored + summary.quarantined == 7


def test_amazon_reviews_never_store_reviewer_names(store: EventStore) -> None:
    path = _shared("reviews/AMAZON_FASHION_5.json")
    summary = ingest_file(store, path, config=IngestConfig(format="reviews"))
    assert summary.rows_read == 3176
    assert summary.quarantined == 0
    assert summary.stored + summary.duplicates == 3176
    assert store.count("events") == summary.stored
    decoder, content, pos, objects = json.JSONDecoder(), path.read_text(), 0, []
    while True:
        while pos < len(content) and content[pos].isspace():
            pos += 1
        if pos >= len(content):
            break
        obj, pos = decoder.raw_decode(content, pos)
        objects.append(obj)
    assert len(objects) == 3176
    names = {o["reviewerName"] for o in objects if o.get("reviewerName")}
    texts = "\n".join(o.get("summary", "") + "\n" + o.get("reviewText", "") for o in objects)
    # Only names that do not occur in any review text can prove they were not copied anywhere.
    distinctive = {n for n in names if len(n) > 3 and n not in texts}
    assert len(distinctive) > 100
    everything = _all_store_text(store)
    assert "reviewerName" not in everything
    assert not [n for n in distinctive if n in everything]
    first = objects[0]
    text = store.scalar(
        "SELECT text FROM events WHERE user_id = ? AND item_id = ? ORDER BY source_row LIMIT 1",
        [first["reviewerID"], first["asin"]],
    )
    assert text == f"{first['summary']}\n{first['reviewText']}"
    assert store.scalar("SELECT count(*) FROM events WHERE event_type <> 'review' OR text IS NULL") == 0


def test_reviews_reader_quarantines_broken_objects(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "reviews.json"
    path.write_text(
        '{"reviewerID": "r1", "asin": "a1", "unixReviewTime": 1441324800, "overall": 5.0,\n'
        ' "reviewerName": "Zelda Q.", "summary": "Good", "reviewText": "Fits well"}\n'
        '{"reviewerID": "r2", "asin": "a2", "unixReviewTime": oops}\n'
        '{"reviewerID": "r3", "unixReviewTime": 1441324800, "overall": 4.0}\n'
    )
    summary = ingest_file(store, path, config=IngestConfig(format="reviews"))
    q = quarantine_by_row(store)
    assert q[3].startswith("invalid JSON")
    assert q[4] == "missing item_id"
    assert store.rows("SELECT user_id, text, value FROM events") == [("r1", "Good\nFits well", 5.0)]
    assert "Zelda" not in _all_store_text(store)
    assert (summary.rows_read, summary.stored, summary.quarantined) == (3, 1, 2)


# ---------------------------------------------------------------------------------------------- review fixes
def test_broken_recbole_side_file_names_that_file(tmp_path: Path, store: EventStore) -> None:
    inter = tmp_path / "t.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\t10\t1000\n")
    item = tmp_path / "t.item"
    item.write_text("item_id:token\tmovie_title:token_seq\tyear:token\n10\tA Movie\t1999\n11\tB Movie\n")
    with pytest.raises(IngestError) as excinfo:
        ingest_file(store, inter, config=IngestConfig(format="recbole"))
    assert str(excinfo.value).startswith(f"{item}: cannot be read as a RecBole atomic file")
    assert excinfo.value.__cause__ is None
    assert store.count("events") == 0, "a failed ingest must roll back"


def test_recbole_link_file_without_kg_is_loaded(tmp_path: Path, store: EventStore) -> None:
    (tmp_path / "t.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\t10\t1000\n")
    (tmp_path / "t.link").write_text("item_id:token\tentity_id:token\n10\tm.abc\n")
    ingest_file(store, tmp_path / "t.inter", config=IngestConfig(format="recbole"))
    assert store.rows("SELECT * FROM item_entities") == [("10", "m.abc")]


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".kg", "head_id:token\ttail_id:token\nm.a\tm.b\n", "expected 3 columns head/relation/tail"),
        (".link", "item_id:token\n10\n", "expected 2 columns item_id/entity_id"),
    ],
)
def test_recbole_kg_or_link_with_wrong_columns_names_the_file(
    tmp_path: Path, store: EventStore, suffix: str, content: str, message: str
) -> None:
    (tmp_path / "t.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\t10\t1000\n")
    (tmp_path / f"t{suffix}").write_text(content)
    with pytest.raises(IngestError, match=message) as excinfo:
        ingest_file(store, tmp_path / "t.inter", config=IngestConfig(format="recbole"))
    assert str(excinfo.value).startswith(str(tmp_path / f"t{suffix}"))


def test_reviewer_names_are_not_kept_in_quarantined_raw_json(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "reviews.json"
    path.write_text(
        '{"reviewerID": "A1", "reviewerName": "Jane Roe", "asin": "B1", "overall": 5.0, "unixReviewTime": 1400000000}\n'
        '{"reviewerID": "A3", "reviewerName": "John \\"JS\\" Smith", "asin": "B2", "overall": 4.0 "unixReviewTime": 1}\n'
    )
    summary = ingest_file(store, path, config=IngestConfig(format="reviews"))
    assert (summary.stored, summary.quarantined) == (1, 1)
    dump = json.dumps(store.rows("SELECT * FROM quarantine"), default=str) + json.dumps(
        store.rows("SELECT * FROM events"), default=str
    )
    assert "Smith" not in dump and "Jane Roe" not in dump
    assert store.scalar("SELECT raw FROM quarantine").startswith('{"reviewerID": "A3", "reviewerName": null')


def test_summary_times_each_step(tmp_path: Path, store: EventStore) -> None:
    path = write_lines(tmp_path / "t.csv", [HEADER5, "u,i,view,1,1", "u,i,view,1,1", "u,i2,jump,2,1"])
    summary = ingest_file(store, path, config=cfg())
    assert list(summary.stage_seconds) == ["read", "validate", "dedup", "store"]
    assert all(seconds >= 0 for seconds in summary.stage_seconds.values())
    assert sum(summary.stage_seconds.values()) <= summary.seconds
    assert (summary.stored, summary.quarantined, summary.duplicates) == (1, 1, 1)
