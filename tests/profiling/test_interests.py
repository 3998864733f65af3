"""Interest topics (c-TF-IDF keywords by hand, planted topics found) and recency-weighted interest vectors."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.sequences import Interactions
from behaviorlm.profiling.interests import (
    class_tfidf_keywords,
    find_topics,
    topic_shares,
    user_interest_vectors,
)


def test_class_tfidf_by_hand() -> None:
    texts = ["red running shoes", "running shoes sale", "espresso coffee beans", "coffee grinder sale"]
    keywords = class_tfidf_keywords(texts, np.array([0, 0, 1, 1]))
    # Topic 0: running 2/6, shoes 2/6, red 1/6, sale 1/6; 12 words over 2 topics, so A = 6.
    weight = dict(keywords[0])
    assert weight["running"] == pytest.approx(2 / 6 * np.log1p(6 / 2))
    assert weight["sale"] == pytest.approx(1 / 6 * np.log1p(6 / 2))  # "sale" is in both topics
    assert weight["red"] == pytest.approx(1 / 6 * np.log1p(6 / 1))
    assert [w for w, _ in keywords[0][:2]] == ["running", "shoes"]
    assert dict(keywords[1])["coffee"] > dict(keywords[1])["sale"]


def test_planted_topics_are_found_and_labelled() -> None:
    rng = np.random.default_rng(0)
    words = {
        0: ["shoes", "running", "trail"],
        1: ["coffee", "espresso", "beans"],
        2: ["tent", "camping", "sleeping"],
    }
    texts, vectors = [], []
    for topic in range(3):
        center = np.eye(16)[topic] * 3
        for _ in range(40):
            texts.append(" ".join(rng.choice(words[topic], size=4)) + " great product")
            vectors.append(center + rng.normal(0, 0.3, 16))
    topics = find_topics(texts, np.array(vectors), k_values=range(2, 7))
    assert len(topics.keywords) == 3
    for topic in range(3):
        members = topics.labels[topic * 40 : (topic + 1) * 40]
        assert len(set(members.tolist())) == 1
        top_words = {w for w, _ in topics.keywords[members[0]][:3]}
        assert top_words == set(words[topic])  # "great" and "product" are everywhere: never a keyword
    user = np.array([np.eye(16)[1]], dtype=np.float32)
    shares = topic_shares(user, topics)
    assert (
        shares.shape == (1, 3)
        and shares[0].argmax() == topics.labels[40]
        and shares.sum() == pytest.approx(1.0)
    )


def test_interest_vectors_weight_recent_items_more() -> None:
    day = 86_400
    data = Interactions.from_events(
        user_ids=np.array(["a", "a", "b"]),
        item_ids=np.array(["x", "y", "x"]),
        timestamps=np.array([0, 30 * day, 30 * day]),
        item_universe=np.array(["x", "y", "z"]),
    )
    vectors = np.eye(3, dtype=np.float32)
    interest = user_interest_vectors(data, vectors, half_life_days=30)
    # User a: x is one half-life old (weight 0.5), y is new (weight 1): direction (0.5, 1, 0).
    np.testing.assert_allclose(interest[0], np.array([0.5, 1.0, 0.0]) / np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(interest[1], [1.0, 0.0, 0.0])
    assert (interest @ vectors.T).argmax(axis=1).tolist() == [1, 0]  # interest score = dot product
    with pytest.raises(ValueError, match="2 rows for 3 items"):
        user_interest_vectors(data, vectors[:2])
