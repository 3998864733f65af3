"""Bundled and benchmark datasets: where they live, how to ingest them, and a cached store per dataset.

ML-100k ships inside the package (``behaviorlm/datasets/ml-100k``) so the demo and tests need nothing
else. The benchmark sets (Amazon Beauty, S3Rec Sports/LastFM, Taobao slices, Amazon reviews) are read
from a data folder: ``$BEHAVIORLM_DATA_DIR`` if set, else the first ``shared/data`` found beside or above
the current directory or the package. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import IngestSummary, ingest_file
from behaviorlm.data.sequences import Interactions
from behaviorlm.data.store import EventStore

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "datasets"


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: its file (relative to the bundled or shared data folder) and ingest config."""

    name: str
    relative_path: str
    config: IngestConfig
    bundled: bool = False
    description: str = ""
    item_text: str | None = None
    """A TSV (relative to the same folder) of item titles, categories and brands, loaded into ``items``."""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ml-100k",
            relative_path="ml-100k/ml-100k.inter",
            config=IngestConfig(format="recbole", source_name="ml-100k"),
            bundled=True,
            description="MovieLens 100K ratings with timestamps, movie genres, user demographics, KG triples",
        ),
        DatasetSpec(
            name="beauty",
            relative_path="beauty-bert4rec/beauty.txt",
            config=IngestConfig(format="sequence", source_name="beauty"),
            description="Amazon Beauty as preprocessed by BERT4Rec (chronological sequences, no timestamps)",
        ),
        DatasetSpec(
            name="s3rec-beauty",
            relative_path="s3rec/Beauty.txt",
            config=IngestConfig(format="sequence", source_name="s3rec-beauty"),
            description="Amazon Beauty as preprocessed by S3-Rec, with item titles, categories and brands",
            item_text="s3rec/Beauty_item_text.tsv",
        ),
        DatasetSpec(
            name="sports",
            relative_path="s3rec/Sports_and_Outdoors.txt",
            config=IngestConfig(format="sequence", source_name="sports"),
            description="Amazon Sports and Outdoors as preprocessed by S3-Rec, with item attributes",
        ),
        DatasetSpec(
            name="s3rec-sports",
            relative_path="s3rec/Sports_and_Outdoors.txt",
            config=IngestConfig(format="sequence", source_name="s3rec-sports"),
            description="Amazon Sports and Outdoors as preprocessed by S3-Rec, with item attributes and "
            "short item texts",
            item_text="s3rec/Sports_and_Outdoors_item_text.tsv",
        ),
        DatasetSpec(
            name="lastfm",
            relative_path="s3rec/LastFM.txt",
            config=IngestConfig(format="sequence", source_name="lastfm"),
            description="LastFM as preprocessed by S3-Rec, with item attributes",
        ),
        DatasetSpec(
            name="taobao-110k",
            relative_path="taobao/UserBehavior-110k.csv",
            config=IngestConfig(format="taobao", source_name="taobao-110k"),
            description="Taobao UserBehavior slice: 2 hours of pv/cart/fav/buy events",
        ),
        DatasetSpec(
            name="taobao-9days",
            relative_path="taobao/UserBehavior-9days-84k.csv",
            config=IngestConfig(format="taobao", source_name="taobao-9days"),
            description="Taobao UserBehavior: whole 9-day histories of 815 users (1,750 purchases)",
        ),
        DatasetSpec(
            name="taobao-hotitems",
            relative_path="taobao/UserBehavior-hotitems.csv",
            config=IngestConfig(format="taobao", source_name="taobao-hotitems"),
            description="Taobao UserBehavior slice: 114 users over 9.3 days",
        ),
        DatasetSpec(
            name="amazon-fashion",
            relative_path="reviews/AMAZON_FASHION_5.json",
            config=IngestConfig(format="reviews", source_name="amazon-fashion"),
            description="Amazon Fashion 5-core reviews with text",
        ),
    )
}


def shared_data_dir() -> Path | None:
    """The benchmark data folder, or ``None`` when there is none on this machine."""
    env = os.environ.get("BEHAVIORLM_DATA_DIR")
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def dataset_path(name: str) -> Path:
    """Path of a known dataset's main file; a clear error if it is unknown or not on this machine."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    if spec.bundled:
        return PACKAGE_DATA / spec.relative_path
    root = shared_data_dir()
    if root is None or not (root / spec.relative_path).exists():
        raise FileNotFoundError(
            f"dataset {name!r} needs {spec.relative_path} under the benchmark data folder; set "
            "BEHAVIORLM_DATA_DIR to the folder that holds it (e.g. ../shared/data)"
        )
    return root / spec.relative_path


def open_dataset_store(
    name: str, *, cache_dir: str | Path | None = None, read_only: bool = False
) -> EventStore:
    """An event store holding dataset ``name``, ingested once and cached as a DuckDB file.

    The cache lives in ``cache_dir`` (default ``$BEHAVIORLM_CACHE_DIR`` or ``~/.cache/behaviorlm``); a
    store whose ingest log does not show a completed ingest of the dataset is rebuilt. With
    ``read_only``, a complete cached store is opened read-only, so several processes can read it at
    once (DuckDB lets only one process hold a file open for writing).
    """
    root = Path(cache_dir or os.environ.get("BEHAVIORLM_CACHE_DIR") or Path.home() / ".cache" / "behaviorlm")
    path = root / "stores" / f"{name}.duckdb"
    if path.exists():
        store = EventStore(path, read_only=read_only)
        if store.scalar("SELECT count(*) FROM ingest_log WHERE source = ?", [name]):
            return store
        store.close()
        path.unlink()
    store = EventStore(path)
    ingest_dataset(store, name)
    return store


def ingest_dataset(store: EventStore, name: str) -> IngestSummary:
    """Ingest a known dataset into ``store`` with its preset config (and its item text, if it has one)."""
    summary = ingest_file(store, dataset_path(name), config=DATASETS[name].config)
    spec = DATASETS[name]
    if spec.item_text is not None:
        load_item_text(store, dataset_path(name).parent.parent / spec.item_text)
    return summary


def load_item_text(store: EventStore, path: Path) -> int:
    """Titles, categories and brands of a ``*_item_text.tsv`` (S3-Rec item ids; see SOURCES.md) into
    ``items``; returns the number of items that have any. A category list ``'Beauty', 'Makeup'`` is
    stored as ``Beauty > Makeup``; the short ``idgenrec_text`` stands in for a missing title."""
    import csv
    import html

    import pyarrow as pa

    rows: dict[str, list[str | None]] = {"item_id": [], "title": [], "category": [], "brand": []}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            # The metadata carries HTML entities ("Dr. Scholl&#39;s").
            row = {k: html.unescape(v or "") for k, v in row.items()}
            title = row.get("title", "").strip() or row.get("idgenrec_text", "").strip()
            categories = [c.strip().strip("'\"") for c in row.get("categories", "").split(",")]
            rows["item_id"].append(row["s3rec_item_id"].strip())
            rows["title"].append(title or None)
            rows["category"].append(" > ".join(c for c in categories if c) or None)
            rows["brand"].append(row.get("brand", "").strip() or None)
    store.register("_item_text", pa.table(rows))
    try:
        return store.upsert(
            "items",
            key="item_id",
            select_sql="SELECT item_id, title, category, brand, NULL::JSON AS attributes, NULL::VARCHAR AS text "
            "FROM _item_text",
        )
    finally:
        store.unregister("_item_text")


def load_interactions(name: str, *, cache_dir: str | Path | None = None) -> Interactions:
    """All events of dataset ``name`` as :class:`Interactions` (via the cached store, read-only once built)."""
    with open_dataset_store(name, cache_dir=cache_dir, read_only=True) as store:
        return store.interactions()
