"""Interactions: the one place that builds per-user sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.data.sequences import Interactions


def _example() -> Interactions:
    # user b: (i2, t=5), (i1, t=2)      -> chronological: i1, i2
    # user a: (i1, t=3), (i3, t=1), (i2, t=3) -> chronological: i3, then the two t=3 events in input order: i1, i2
    return Interactions.from_events(
        user_ids=np.array(["b", "a", "a", "b", "a"]),
        item_ids=np.array(["i2", "i1", "i3", "i1", "i2"]),
        timestamps=np.array([5, 3, 1, 2, 3]),
        event_types=np.array(["view", "cart", "view", "view", "purchase"]),
        event_type_vocab=("view", "cart", "purchase"),
    )


def test_from_events_sorts_per_user_and_breaks_ties_by_input_order() -> None:
    x = _example()
    assert x.user_ids.tolist() == ["a", "b"]
    assert x.item_ids.tolist() == ["i1", "i2", "i3"]
    assert x.user_ptr.tolist() == [0, 3, 5]
    assert x.item_ids[x.history(0)].tolist() == ["i3", "i1", "i2"]
    assert x.item_ids[x.history(1)].tolist() == ["i1", "i2"]
    assert x.timestamps.tolist() == [1, 3, 3, 2, 5]
    assert [x.event_type_vocab[t] for t in x.event_types] == ["view", "cart", "purchase", "view", "view"]


def test_explicit_order_breaks_ties() -> None:
    x = Interactions.from_events(
        user_ids=np.array(["u", "u"]),
        item_ids=np.array(["first", "second"]),
        timestamps=np.array([7, 7]),
        order=np.array([2, 1]),
    )
    assert x.item_ids[x.history(0)].tolist() == ["second", "first"]


def test_unknown_event_type_and_universe_errors() -> None:
    with pytest.raises(ValueError, match=r"event types \['zap'\]"):
        Interactions.from_events(
            user_ids=np.array(["u"]),
            item_ids=np.array(["i"]),
            timestamps=np.array([1]),
            event_types=np.array(["zap"]),
            event_type_vocab=("view",),
        )
    with pytest.raises(ValueError, match="item ids"):
        Interactions.from_events(
            user_ids=np.array(["u"]),
            item_ids=np.array(["x"]),
            timestamps=np.array([1]),
            item_universe=np.array(["a", "b"]),
        )


def test_universe_fixes_index_space() -> None:
    x = Interactions.from_events(
        user_ids=np.array(["u"]),
        item_ids=np.array(["b"]),
        timestamps=np.array([1]),
        item_universe=np.array(["c", "b", "a"]),
    )
    assert x.item_ids.tolist() == ["c", "b", "a"] and x.items.tolist() == [1]


def test_csr_views() -> None:
    x = _example()
    assert x.to_csr().toarray().tolist() == [[1, 1, 1], [1, 1, 0]]
    assert x.csr_rows(np.array([1, 0, 1])).toarray().tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0]]
    repeated = Interactions.from_events(
        user_ids=np.array(["u", "u", "u"]), item_ids=np.array(["a", "a", "b"]), timestamps=np.array([1, 2, 3])
    )
    assert repeated.to_csr(binary=False).toarray().tolist() == [[2, 1]]
    assert repeated.item_counts().tolist() == [2, 1]


def test_filter_events_keeps_index_space() -> None:
    x = _example()
    kept = x.filter_events(np.array([True, False, True, False, True]))
    assert kept.user_ptr.tolist() == [0, 2, 3]
    assert kept.item_ids is x.item_ids and kept.user_ids is x.user_ids
    assert kept.item_ids[kept.items].tolist() == ["i3", "i2", "i2"]
    with pytest.raises(ValueError, match="one entry per event"):
        x.filter_events(np.array([True]))


def test_padded_sequences_left_pad_and_truncate() -> None:
    x = _example()
    items, types = x.padded_sequences(np.array([0, 1]), max_len=2)
    # user a has 3 events: the last two (i1, i2) are kept; user b has exactly 2.
    assert items.tolist() == [[0, 1], [0, 1]]
    assert types.tolist() == [[1, 2], [0, 0]]
    items, _ = x.padded_sequences(np.array([1]), max_len=4, pad_value=-1)
    assert items.tolist() == [[-1, -1, 0, 1]]
    assert items.dtype == torch.int64


def test_constructor_validates_layout() -> None:
    with pytest.raises(ValueError, match="user_ptr"):
        Interactions(
            user_ids=np.array(["u"]),
            item_ids=np.array(["i"]),
            user_ptr=np.array([0, 2]),
            items=np.array([0]),
            timestamps=np.array([1]),
            event_types=np.array([0], dtype=np.int16),
            event_type_vocab=("x",),
        )
    with pytest.raises(ValueError, match="item index out of range"):
        Interactions(
            user_ids=np.array(["u"]),
            item_ids=np.array(["i"]),
            user_ptr=np.array([0, 1]),
            items=np.array([3]),
            timestamps=np.array([1]),
            event_types=np.array([0], dtype=np.int16),
            event_type_vocab=("x",),
        )


def _assert_same(a: Interactions, b: Interactions) -> None:
    for field in ("user_ids", "item_ids", "user_ptr", "items", "timestamps", "event_types"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.event_type_vocab == b.event_type_vocab


def test_arrow_and_pandas_round_trips() -> None:
    import pandas as pd
    import pyarrow as pa

    data = Interactions.from_events(
        user_ids=np.array(["u2", "u1", "u2", "u1", "u1"]),
        item_ids=np.array(["b", "a", "c", "a", "b"]),
        timestamps=np.array([5, 3, 1, 3, 9]),
        event_types=np.array(["view", "cart", "view", "view", "cart"]),
        event_type_vocab=("cart", "view"),
    )
    table = data.to_arrow()
    assert table.column_names == ["user_id", "item_id", "timestamp", "event_type"]
    assert table.schema.field("timestamp").type == pa.timestamp("s", tz="UTC")
    assert table.column("user_id").to_pylist() == ["u1", "u1", "u1", "u2", "u2"]
    _assert_same(Interactions.from_arrow(table), data)
    frame = data.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == data.n_events
    _assert_same(Interactions.from_pandas(frame), data)
    # Other column names, integer ids and integer seconds; pandas datetimes without a zone count as UTC.
    raw = pd.DataFrame(
        {
            "visitor": [7, 7, 8],
            "sku": [100, 101, 100],
            "when": pd.to_datetime(["2024-01-01 00:00:05", "2024-01-01 00:00:01", "2024-01-01 00:00:00"]),
        }
    )
    read = Interactions.from_pandas(raw, user="visitor", item="sku", timestamp="when", event_type=None)
    assert read.user_ids.tolist() == ["7", "8"] and read.item_ids.tolist() == ["100", "101"]
    assert read.event_type_vocab == ("interaction",)
    assert read.items.tolist() == [1, 0, 0]  # user 7's events in time order
    assert read.timestamps[0] == 1_704_067_201
    # A record batch (or anything exporting Arrow) is read the same way.
    _assert_same(Interactions.from_arrow(table.to_batches()[0]), data)


def test_arrow_input_errors_name_the_column_and_row() -> None:
    import pyarrow as pa

    good = {"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [1, 2]}
    with pytest.raises(ValueError, match=r"columns \['timestamp'\] not found; the table has"):
        Interactions.from_arrow(pa.table({k: v for k, v in good.items() if k != "timestamp"}))
    with pytest.raises(ValueError, match=r"column 'item_id' has 1 null value.*at row 1"):
        Interactions.from_arrow(pa.table({**good, "item_id": ["a", None]}))
    with pytest.raises(ValueError, match="column 'timestamp' must hold integer UTC seconds or timestamps"):
        Interactions.from_arrow(pa.table({**good, "timestamp": [1.5, 2.5]}))
    with pytest.raises(TypeError, match="expected a pyarrow Table or a DataFrame"):
        Interactions.from_arrow([("u1", "a", 1)])
