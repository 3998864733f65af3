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
