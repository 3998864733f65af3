"""Item-side features for sequence models: attribute tokens and text vectors, aligned to an item index.

Attributes come from the catalogue (``items.category``, ``items.brand`` and every key of
``items.attributes``: ML-100k genres and release year, S3Rec ``attribute_ids``, Taobao categories) as
``key=value`` tokens; text vectors are sentence embeddings of the item's text
(:func:`behaviorlm.data.text.item_texts`). A model adds them to each item's ID embedding, so an item
with no interactions still gets a vector from what it shares with other items (cold start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from behaviorlm.data.store import EventStore


@dataclass(frozen=True, eq=False)
class ItemFeatures:
    """Per-item attribute tokens (CSR: ``attribute_ptr`` over ``attribute_ids``) and optional text vectors.

    Row ``i`` describes item index ``i`` of the :class:`~behaviorlm.data.sequences.Interactions` the
    features were built for; ``attribute_vocab[j]`` names token ``j`` (``"class=Comedy"``).
    """

    attribute_ptr: np.ndarray
    attribute_ids: np.ndarray
    attribute_vocab: tuple[str, ...]
    text_vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_items = len(self.attribute_ptr) - 1
        if self.attribute_ptr[-1] != len(self.attribute_ids):
            raise ValueError("attribute_ptr must end at len(attribute_ids)")
        if self.text_vectors is not None and len(self.text_vectors) != n_items:
            raise ValueError(f"text_vectors has {len(self.text_vectors)} rows for {n_items} items")

    @property
    def n_items(self) -> int:
        return len(self.attribute_ptr) - 1

    def tensors(self) -> dict[str, torch.Tensor]:
        """The form models keep as buffers: EmbeddingBag ``index``/``offsets`` and ``text``."""
        out = {
            "attribute_index": torch.from_numpy(self.attribute_ids.astype(np.int64)),
            "attribute_offsets": torch.from_numpy(self.attribute_ptr[:-1].astype(np.int64)),
            "n_attributes": torch.tensor(len(self.attribute_vocab)),
        }
        if self.text_vectors is not None:
            out["text"] = torch.from_numpy(self.text_vectors.astype(np.float32))
        return out


def item_features_from_store(
    store: EventStore,
    item_ids: np.ndarray,
    *,
    min_items_per_token: int = 2,
    with_text: bool = False,
    with_attributes: bool = True,
) -> ItemFeatures:
    """Build :class:`ItemFeatures` for ``item_ids`` (in that order) from the store's catalogue.

    Tokens shared by fewer than ``min_items_per_token`` items carry no transferable signal and are
    dropped. ``with_text`` embeds item texts with the packaged sentence model (cached in the store);
    ``with_attributes=False`` leaves the attribute tokens out (text vectors only).
    """
    if not (with_text or with_attributes):
        raise ValueError("item features need attributes, text or both")
    # Without attributes the catalogue is not read: every item gets no tokens.
    catalogue = (
        {
            row[0]: row[1:]
            for row in store.rows(
                "SELECT item_id, category, brand, attributes::VARCHAR FROM items WHERE item_id IN (SELECT unnest(?))",
                [[str(i) for i in item_ids]],
            )
        }
        if with_attributes
        else {}
    )
    tokens_per_item: list[list[str]] = []
    for item in item_ids:
        category, brand, attributes = catalogue.get(str(item), (None, None, None))
        tokens = []
        if category:
            tokens.append(f"category={category}")
        if brand:
            tokens.append(f"brand={brand}")
        if attributes:
            for key, value in json.loads(attributes).items():
                values = value if isinstance(value, list) else [value]
                tokens.extend(f"{key}={v}" for v in values if v not in (None, ""))
        tokens_per_item.append(sorted(set(tokens)))
    counts: dict[str, int] = {}
    for tokens in tokens_per_item:
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    vocab = tuple(sorted(t for t, c in counts.items() if c >= min_items_per_token))
    index = {t: i for i, t in enumerate(vocab)}
    ptr = [0]
    ids: list[int] = []
    for tokens in tokens_per_item:
        ids.extend(index[t] for t in tokens if t in index)
        ptr.append(len(ids))
    text_vectors = None
    if with_text:
        from behaviorlm.data.text import embed_texts, item_texts

        text_vectors = embed_texts(item_texts(store, [str(i) for i in item_ids]), store=store)
    return ItemFeatures(
        attribute_ptr=np.asarray(ptr, dtype=np.int64),
        attribute_ids=np.asarray(ids, dtype=np.int64),
        attribute_vocab=vocab,
        text_vectors=text_vectors,
    )


# ---------------------------------------------------------------------------------------- the automatic choice
KNOWLEDGE_CHOICES = ("auto", "none", "attributes", "text", "text+attributes")
"""What ``behaviorlm train --item-knowledge`` accepts; ``auto`` is :func:`choose_item_knowledge`."""

MIN_KNOWLEDGE_COVERAGE = 0.5
"""The share of items that must carry a kind of knowledge for ``auto`` to use it."""

MAX_MEDIAN_ITEM_EVENTS = 15
"""``auto`` adds knowledge only when the median item has at most this many training events: measured, it
lifted NDCG@10 by 21% on s3rec/Beauty and s3rec/Sports (median 7) and did not help on ML-100k (median 26,
−3.6%), where every item's ID embedding already sees enough events."""


@dataclass(frozen=True)
class KnowledgeChoice:
    """What ``auto`` picked for a catalogue and why (``reason`` is one line for the user)."""

    choice: str
    text_share: float
    attribute_share: float
    reason: str


def text_model_installed() -> bool:
    """Whether the packaged sentence model and the library that runs it are installed (``behaviorlm[text]``)."""
    from importlib.util import find_spec

    from behaviorlm.data.text import TextModelUnavailable, model_directory

    if find_spec("sentence_transformers") is None:
        return False
    try:
        model_directory()
    except TextModelUnavailable:
        return False
    return True


def choose_item_knowledge(
    store: EventStore,
    item_ids: np.ndarray,
    *,
    item_events: np.ndarray,
    text_installed: bool | None = None,
    min_coverage: float = MIN_KNOWLEDGE_COVERAGE,
    max_median_item_events: float = MAX_MEDIAN_ITEM_EVENTS,
) -> KnowledgeChoice:
    """Pick the item knowledge a sequence model should read from the data: how sparse the items are and
    what the catalogue holds. ``item_events[i]`` is item ``item_ids[i]``'s number of training events.

    * ``none`` when the median item has more than ``max_median_item_events`` training events (its ID
      embedding learns enough; measured, knowledge did not help there);
    * otherwise ``text`` when at least ``min_coverage`` of ``item_ids`` have words of their own, a title or a
      free text (a category or brand alone is a code such as Taobao's ``2520377``, not language), and the
      sentence model is installed (``text_installed``; checked when ``None``);
    * ``attributes`` when at least ``min_coverage`` of the items carry a catalogue token (category,
      brand, attribute) shared with another item;
    * both, one, or ``none``.

    Rule and measurements: docs/transformer.md#item-knowledge.
    """
    n = len(item_ids)
    if n == 0:
        return KnowledgeChoice("none", 0.0, 0.0, "no items")
    if len(item_events) != n:
        raise ValueError(f"item_events has {len(item_events)} entries for {n} items")
    median = float(np.median(item_events))
    if median > max_median_item_events:
        return KnowledgeChoice(
            "none",
            0.0,
            0.0,
            f"the median item has {median:g} training events (> {max_median_item_events:g}): "
            "ID embeddings learn enough",
        )
    (with_words,) = store.rows(
        """SELECT count(*) FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))
           AND (NULLIF(trim(title), '') IS NOT NULL OR NULLIF(trim(text), '') IS NOT NULL)""",
        [[str(i) for i in item_ids]],
    )[0]
    text_share = with_words / n
    features = item_features_from_store(store, item_ids, with_text=False, with_attributes=True)
    attribute_share = float((np.diff(features.attribute_ptr) > 0).mean())
    parts, why = [], []
    if text_share >= min_coverage:
        if text_installed if text_installed is not None else text_model_installed():
            parts.append("text")
            why.append(f"{text_share:.0%} of items have a title or text")
        else:
            why.append(
                f"{text_share:.0%} of items have a title or text, but the sentence model is not installed "
                "(pip install 'behaviorlm[text]')"
            )
    else:
        why.append(f"{text_share:.0%} of items have a title or text (below {min_coverage:.0%})")
    if attribute_share >= min_coverage:
        parts.append("attributes")
        why.append(f"{attribute_share:.0%} carry a shared catalogue attribute")
    else:
        why.append(f"{attribute_share:.0%} carry a shared catalogue attribute (below {min_coverage:.0%})")
    why.append(f"the median item has {median:g} training events")
    return KnowledgeChoice("+".join(parts) or "none", text_share, attribute_share, "; ".join(why))
