"""Interests: topics found in item and user texts, and each user's interest vector over them.

* :func:`find_topics` clusters text embeddings (k-means, k by silhouette) and labels each topic with its
  most distinctive words by class-based TF-IDF (c-TF-IDF, Grootendorst 2022, "BERTopic", eq. 1): all
  texts of a topic form one document; a word's weight is its frequency in the topic times
  ``log(1 + A / f)``, with ``A`` the average number of words per topic and ``f`` the word's frequency
  over all topics — frequent in this topic, rare elsewhere.
* :func:`user_interest_vectors` averages the embeddings of the items a user touched, and
  :func:`written_text_vectors` those of the texts they wrote (reviews), each event weighted by
  ``0.5 ** (age / half_life)`` so recent behaviour counts more; an item's interest score for the user is
  the dot product with its embedding. :mod:`.fusion` combines the two and mixes the result with a
  behaviour model's scores.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from behaviorlm.data.sequences import Interactions

_WORD = re.compile(r"[a-z][a-z'\-]{2,}")


@dataclass(frozen=True)
class Topics:
    """Topic id per text, topic centroids (unit vectors) and each topic's keywords (word, c-TF-IDF weight)."""

    labels: np.ndarray
    centroids: np.ndarray
    keywords: list[list[tuple[str, float]]]
    silhouette: float

    def describe(self, topic: int, *, words: int = 5) -> str:
        return ", ".join(word for word, _ in self.keywords[topic][:words])


def class_tfidf_keywords(
    texts: list[str], labels: np.ndarray, *, top: int = 10
) -> list[list[tuple[str, float]]]:
    """The ``top`` c-TF-IDF words of each label ``0..max(labels)`` (English stop words removed)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    n_topics = int(labels.max()) + 1 if len(labels) else 0
    counts = [Counter() for _ in range(n_topics)]
    for text, label in zip(texts, labels, strict=True):
        if label >= 0:
            counts[label].update(w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS)
    overall = Counter()
    for c in counts:
        overall.update(c)
    average_words = sum(overall.values()) / max(n_topics, 1)
    keywords = []
    for c in counts:
        total = sum(c.values()) or 1
        weights = {w: (n / total) * np.log1p(average_words / overall[w]) for w, n in c.items()}
        keywords.append(sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:top])
    return keywords


def find_topics(
    texts: list[str], vectors: np.ndarray, *, k_values: range = range(2, 21), seed: int = 0
) -> Topics:
    """Cluster ``vectors`` (one per text) into topics and label them (see the module docstring)."""
    from behaviorlm.profiling.segments import segment_kmeans

    if len(texts) != len(vectors):
        raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    clusters = segment_kmeans(unit, k_values=k_values, seed=seed)
    centroids = clusters.centroids / np.maximum(
        np.linalg.norm(clusters.centroids, axis=1, keepdims=True), 1e-12
    )
    return Topics(
        labels=clusters.labels,
        centroids=centroids.astype(np.float32),
        keywords=class_tfidf_keywords(texts, clusters.labels),
        silhouette=clusters.silhouette,
    )


def user_interest_vectors(
    interactions: Interactions,
    item_vectors: np.ndarray,
    *,
    half_life_days: float = 30.0,
    now: int | None = None,
) -> np.ndarray:
    """``[n_users, d]`` recency-weighted mean of the vectors of each user's items, L2-normalised.

    ``item_vectors[i]`` embeds item index ``i`` (e.g. its title or description, or the mean of its
    reviews). Users without events get a zero vector.
    """
    if len(item_vectors) != interactions.n_items:
        raise ValueError(f"item_vectors has {len(item_vectors)} rows for {interactions.n_items} items")
    return _recency_weighted_means(
        interactions, item_vectors[interactions.items], half_life_days=half_life_days, now=now
    )


def written_text_vectors(
    interactions: Interactions,
    event_vectors: np.ndarray,
    *,
    half_life_days: float = 30.0,
    now: int | None = None,
) -> np.ndarray:
    """``[n_users, d]`` recency-weighted mean of the vectors of the texts each user wrote, L2-normalised.

    ``event_vectors[e]`` embeds the text written with event ``e`` of ``interactions`` (a review), a zero
    row for an event without text. Users who wrote nothing get a zero vector.
    """
    if len(event_vectors) != interactions.n_events:
        raise ValueError(f"event_vectors has {len(event_vectors)} rows for {interactions.n_events} events")
    return _recency_weighted_means(interactions, event_vectors, half_life_days=half_life_days, now=now)


def _recency_weighted_means(
    interactions: Interactions, per_event: np.ndarray, *, half_life_days: float, now: int | None
) -> np.ndarray:
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    now = int(interactions.timestamps.max()) if now is None and interactions.n_events else (now or 0)
    age_days = (now - interactions.timestamps) / 86_400.0
    weight = 0.5 ** (np.maximum(age_days, 0.0) / half_life_days)
    sums = np.zeros((interactions.n_users, per_event.shape[1]))
    np.add.at(sums, interactions.event_users(), per_event * weight[:, None])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def topic_shares(user_vectors: np.ndarray, topics: Topics, *, temperature: float = 0.05) -> np.ndarray:
    """``[n_users, n_topics]``: softmax over topics of the cosine between user vector and topic centroid."""
    logits = user_vectors @ topics.centroids.T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)
