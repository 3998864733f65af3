"""Export a behaviorlm dataset as a RecBole atomic ``.inter`` file, with behaviorlm's leave-one-out targets.

Runs with the project's venv, because it imports behaviorlm; ``recbole_sasrec.py`` (RecBole venv, which
cannot import behaviorlm) calls it in a subprocess::

    .venv/bin/python benchmarks/peers/behaviorlm_export.py s3rec-beauty OUT_DIR [--inter]

Writes, under ``OUT_DIR``:

* ``behaviorlm_split.json``: the counts of ``load_interactions(name)`` (users, items, events), the
  ``protocol`` of ``leave_one_out`` on it, and its targets as ``{user_id: [valid_item_id, test_item_id]}``
  (external ids, as strings), so the RecBole side can check that its own split picks the same targets;
* with ``--inter``: ``OUT_DIR/<name>/<name>.inter``, every event of ``load_interactions(name)``
  (header ``user_id:token  item_id:token  timestamp:float``, tab-separated), user by user, each user's
  events in behaviorlm's order (timestamp, then source order). RecBole's leave-one-out with
  ``order: TO`` sorts by timestamp with a stable sort, so the written timestamps must be strictly
  increasing within each user for RecBole to keep that order; see :func:`_recbole_timestamps`.

The events are the ones behaviorlm benchmarks read (``load_interactions``, through its cached store), not
a re-parse of the source file, so the two sides cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from behaviorlm.data.datasets import load_interactions
from behaviorlm.data.sequences import Interactions
from behaviorlm.data.splits import leave_one_out

FLOAT32_EXACT = 2**24
"""RecBole stores ``float`` fields as float32; integers below this are exact, so they cannot tie."""


def _recbole_timestamps(interactions: Interactions) -> tuple[np.ndarray, str]:
    """Timestamps for the ``.inter`` file: strictly increasing within each user, in behaviorlm's order.

    The source timestamps are kept when they already are strictly increasing within every user and exact
    in float32 (RecBole sorts the float32 values); the S3-Rec files qualify, since behaviorlm stores their
    k-th event at k seconds. Otherwise (ties within a user, which behaviorlm breaks by source order, or
    values float32 would round together) every event's timestamp is its position in its user's sequence
    (0, 1, 2, ...): the order behaviorlm uses is then the only order RecBole can see. SASRec does not read
    timestamps, so nothing else changes.
    """
    ts = interactions.timestamps
    starts = interactions.user_ptr[:-1]
    position = np.arange(interactions.n_events, dtype=np.int64) - np.repeat(starts, interactions.lengths())
    same_user_as_previous = position[1:] > 0
    increasing = bool(np.all(np.diff(ts)[same_user_as_previous] > 0))
    exact = interactions.n_events == 0 or bool(np.abs(ts).max() < FLOAT32_EXACT)
    if increasing and exact:
        return ts, "source timestamps (strictly increasing within each user, exact in float32)"
    return position, "position in the user's sequence (source timestamps tie or are not float32-exact)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="a behaviorlm dataset name, e.g. s3rec-beauty")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--inter", action="store_true", help="also write OUT_DIR/<name>/<name>.inter")
    args = parser.parse_args()

    started = time.perf_counter()
    interactions = load_interactions(args.dataset)
    split = leave_one_out(interactions)
    user_ids = np.asarray(interactions.user_ids).astype(str)
    item_ids = np.asarray(interactions.item_ids).astype(str)
    for kind, ids in (("user", user_ids), ("item", item_ids)):
        bad = [i for i in ids.tolist() if not i or any(c in i for c in "\t\r\n")]
        if bad:
            raise SystemExit(f"{args.dataset}: {kind} ids {bad[:3]} cannot be RecBole tokens")

    targets: dict[str, list[str]] = {}
    for part, column in ((split.valid, 0), (split.test, 1)):
        users = np.flatnonzero(part.lengths() == 1)
        if np.any(part.lengths() > 1):
            raise SystemExit(f"{args.dataset}: more than one {('valid', 'test')[column]} target for a user")
        for user, item in zip(user_ids[users], item_ids[part.items[part.user_ptr[users]]], strict=True):
            targets.setdefault(user, [None, None])[column] = item  # type: ignore[list-item]

    summary = {
        "dataset": args.dataset,
        "n_users": interactions.n_users,
        "n_items": interactions.n_items,
        "n_events": interactions.n_events,
        "protocol": split.protocol,
        "targets": targets,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.inter:
        timestamps, source = _recbole_timestamps(interactions)
        users = np.repeat(user_ids, interactions.lengths())
        items = item_ids[interactions.items]
        inter_dir = args.out_dir / args.dataset
        inter_dir.mkdir(exist_ok=True)
        with (inter_dir / f"{args.dataset}.inter").open("w", encoding="utf-8", newline="\n") as fh:
            fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
            fh.writelines(
                f"{u}\t{i}\t{t}\n"
                for u, i, t in zip(users.tolist(), items.tolist(), timestamps.tolist(), strict=True)
            )
        summary["inter_timestamps"] = source
    summary["export_seconds"] = time.perf_counter() - started
    (args.out_dir / "behaviorlm_split.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
