"""Segments: planted user groups are found from the Transformer's representations, ids stay stable across
runs, and summaries are right by hand."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.data.features import ItemFeatures
from behaviorlm.data.sequences import Interactions
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.profiling.segments import (
    DAY,
    Segmentation,
    SegmentMapDrawing,
    UserSegments,
    align_to_previous,
    item_average_representations,
    save_segment_map,
    segment_hdbscan,
    segment_kmeans,
    segment_map,
    summarize_segments,
    user_representations,
)

SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1, "max_len": 16, "epochs": 30, "lr": 5e-3}


def genre_users(n_users: int = 300, n_genres: int = 4, seed: int = 0) -> tuple[Interactions, np.ndarray]:
    """Each user watches items of one genre (10 items per genre); returns the data and the planted genre."""
    rng = np.random.default_rng(seed)
    genre = np.arange(n_users) % n_genres
    users, items, times = [], [], []
    for u in range(n_users):
        for t in range(12):
            users.append(f"u{u:03d}")
            items.append(f"g{genre[u]}i{int(rng.integers(10))}")
            times.append(t)
    data = Interactions.from_events(
        user_ids=np.array(users), item_ids=np.array(items), timestamps=np.array(times)
    )
    return data, genre[np.argsort([f"u{u:03d}" for u in range(n_users)])]


def test_planted_groups_are_found_from_transformer_states(tmp_path) -> None:
    from sklearn.metrics import adjusted_rand_score

    data, genre = genre_users()
    model = BehaviorTransformer.from_params(SMALL).fit(data)
    x = user_representations(model, data)
    assert x.shape == (300, 32) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    kmeans = segment_kmeans(x, k_values=range(2, 8))
    assert kmeans.n_segments == 4, kmeans.silhouette_by_k
    assert adjusted_rand_score(genre, kmeans.labels) > 0.95
    density = segment_hdbscan(x, min_cluster_size=20)
    assigned = density.labels >= 0
    assert assigned.mean() > 0.8 and adjusted_rand_score(genre[assigned], density.labels[assigned]) > 0.9
    summaries = summarize_segments(kmeans, data)
    save_segment_map(
        kmeans, x, summaries=summaries, png_path=tmp_path / "map.png", html_path=tmp_path / "map.html"
    )
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "map.html").read_text()
    assert "segment map: 300 users in 4 segments" in page and page.count("<circle") >= 300
    assert "base64" not in page  # the map is inline SVG, not an embedded picture


def test_item_average_fallback_separates_the_groups_too() -> None:
    from sklearn.metrics import adjusted_rand_score

    data, genre = genre_users(seed=1)
    # One-hot item vectors by genre letter: a stand-in for text or attribute embeddings.
    item_genre = np.array([int(str(i)[1]) for i in data.item_ids])
    vectors = np.eye(4)[item_genre]
    x = item_average_representations(data, vectors)
    assert adjusted_rand_score(genre, segment_kmeans(x, k_values=range(2, 7)).labels) == pytest.approx(1.0)


def test_ids_stay_stable_across_runs() -> None:
    centroids = np.eye(3, dtype=np.float32)
    labels = np.array([0, 1, 2, 2, 1])
    # The same segments found again, numbered differently (2 -> 0, 0 -> 1, 1 -> 2), plus a new one.
    rerun = Segmentation(
        labels=np.array([1, 2, 0, 0, 2, 3]),
        centroids=np.array([[0, 0, 1], [1, 0, 0.1], [0, 1, 0], [0.6, 0.6, 0.5]], dtype=np.float32),
        method="test",
        silhouette=0.5,
    )
    aligned = align_to_previous(rerun, centroids)
    assert aligned.labels[:5].tolist() == labels.tolist()
    assert aligned.labels[5] == 3 and aligned.n_segments == 4


def test_summary_by_hand() -> None:
    # u0, u1 in segment 0; u2 in segment 1. u0 bought; u2 carted only. Values are order amounts.
    data = Interactions.from_events(
        user_ids=np.array(["u0", "u0", "u1", "u2", "u2"]),
        item_ids=np.array(["a", "b", "a", "c", "c"]),
        timestamps=np.array([0, 10, 2, 5, 10]) * DAY,
        event_types=np.array(["view", "purchase", "view", "cart", "cart"]),
        event_type_vocab=("view", "cart", "purchase"),
    )
    seg = Segmentation(labels=np.array([0, 0, 1]), centroids=np.eye(2), method="test", silhouette=0.0)
    features = ItemFeatures(
        attribute_ptr=np.array([0, 1, 2, 3]),
        attribute_ids=np.array([0, 0, 1]),
        attribute_vocab=("class=x", "class=y"),
    )
    s0, s1 = summarize_segments(seg, data, values=np.array([0, 30.0, 0, 0, 0]), item_features=features)
    assert (s0.segment, s0.users, s0.share) == (0, 2, pytest.approx(2 / 3))
    assert s0.median_recency_days == pytest.approx((0 + 8) / 2)  # last events on days 10 and 2; now = day 10
    assert s0.median_events == 1.5 and s0.median_monetary == 15.0 and s0.conversion_rate == 0.5
    assert s1.conversion_rate == 0.0 and s1.median_events == 2
    assert (
        s0.top_attributes == [] and s1.top_attributes == []
    )  # fewer than 5 events per attribute: no lift claims


def test_segments_command_writes_a_map_and_keeps_ids(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from behaviorlm.cli.main import app
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.ingest import ingest_records
    from behaviorlm.data.store import EventStore

    data, _ = genre_users(n_users=120, seed=2)
    records = [
        {"user_id": str(u), "item_id": str(data.item_ids[i]), "event_type": "view", "timestamp": int(t)}
        for u, i, t in zip(np.repeat(data.user_ids, data.lengths()), data.items, data.timestamps, strict=True)
    ]
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, records, source="t", config=IngestConfig(format="jsonl"))
        stored = store.interactions()
    BehaviorTransformer.from_params(SMALL).fit(stored).save(tmp_path / "model")
    args = [
        "segments",
        "--store",
        str(tmp_path / "s.duckdb"),
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(tmp_path / "seg"),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "…" not in first.stdout  # readable at the runner's 80 columns
    before = json.loads((tmp_path / "seg" / "segments.json").read_text())["users"]
    assert (tmp_path / "seg" / "segment_map.png").read_bytes()[
        :4
    ] == b"\x89PNG" and "silhouette" in first.output
    assert "<svg" in (tmp_path / "seg" / "segment_map.html").read_text()  # standalone: the map inline
    assert CliRunner().invoke(app, args).exit_code == 0
    after = json.loads((tmp_path / "seg" / "segments.json").read_text())["users"]
    assert after == before  # the same data and model: every user keeps their segment id


def clusters(n_per: int = 100, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian clusters (unit spread) whose centres are about 14 units apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 5
    labels = np.repeat(np.arange(3), n_per)
    return centres[labels] + rng.normal(size=(3 * n_per, d)), labels


def test_segment_map_is_the_principal_plane_by_hand() -> None:
    # Points on the line t * (1, 2, 2) / 3 plus a small wobble along (0, 1, -1) / sqrt(2): the first
    # principal component is the line (projection t - mean t), the second the wobble.
    t = np.array([-3.0, -1.0, 0.0, 2.0, 7.0])
    wobble = np.array([0.1, -0.1, -0.1, 0.1, 0.0])  # mean 0, uncorrelated with t
    x = np.outer(t, [1, 2, 2]) / 3 + np.outer(wobble, [0, 1, -1]) / np.sqrt(2)
    found = segment_map(x, np.array([0, 0, 1, 1, 1]))
    assert found.coordinates.shape == (5, 2) and found.coordinates.dtype == np.float32
    assert np.allclose(found.coordinates[:, 0], t - t.mean(), atol=1e-5)
    assert np.allclose(np.abs(found.coordinates[:, 1]), np.abs(wobble - wobble.mean()), atol=1e-5)
    variance = np.array([np.var(t), np.var(wobble)])
    assert np.allclose(found.explained_variance, variance / variance.sum(), atol=1e-6)
    assert found.labels.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="4 labels for 5 users"):
        segment_map(x, np.zeros(4))


def test_segment_map_equals_the_covariance_eigenvectors() -> None:
    # scikit-learn's PCA gives the numbers of the eigendecomposition of the covariance it replaced.
    x = np.random.default_rng(3).normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
    axes = vectors[:, ::-1][:, :2]
    axes = axes * np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
    found = segment_map(x, np.zeros(200))
    np.testing.assert_allclose(found.coordinates, centred @ axes, atol=1e-4)
    np.testing.assert_allclose(found.explained_variance, values[::-1][:2] / values.sum(), rtol=1e-9)
    # Identical users: no variance, all zeros.
    flat = segment_map(np.ones((4, 3)), np.zeros(4))
    assert not flat.coordinates.any() and flat.explained_variance == (0.0, 0.0)


def test_segment_map_is_deterministic_and_keeps_clusters_apart() -> None:
    x, labels = clusters()
    first, again = segment_map(x, labels), segment_map(x.copy(), labels)
    assert np.array_equal(first.coordinates, again.coordinates)
    # Every user is nearer the 2-D centre of their own cluster than any other: the clusters stay apart.
    xy = first.coordinates
    centres = np.array([xy[labels == s].mean(axis=0) for s in range(3)])
    nearest = np.linalg.norm(xy[:, None, :] - centres[None], axis=2).argmin(axis=1)
    assert np.array_equal(nearest, labels)
    spread = max(np.linalg.norm(xy[labels == s] - centres[s], axis=1).max() for s in range(3))
    gap = min(np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3))
    assert gap > 2 * spread
    assert sum(first.explained_variance) > 0.8  # the clusters' spread is most of the variance


def test_segment_map_drawing_is_svg_with_every_user_and_the_highlight() -> None:
    import xml.etree.ElementTree as ET

    x, labels = clusters(n_per=40)
    labels[0] = -1  # an unassigned user (HDBSCAN outlier)
    drawing = SegmentMapDrawing(segment_map(x, labels))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(drawing.svg())
    groups = root.findall("svg:g[@class='segment']", ns)
    assert [g.get("data-segment") for g in groups] == ["-1", "0", "1", "2"]
    assert [len(g.findall("svg:circle", ns)) for g in groups] == [1, 39, 40, 40]
    legend = [t.text for t in root.findall("svg:g[@class='legend']/svg:text", ns)]
    assert legend == ["unassigned (1)", "segment 0 (39)", "segment 1 (40)", "segment 2 (40)"]
    assert root.find("svg:g[@class='highlight']", ns) is None
    ringed = ET.fromstring(drawing.svg(highlight=50)).find("svg:g[@class='highlight']", ns)
    assert ringed is not None and ringed.get("data-segment") == "1"
    with pytest.raises(ValueError, match="not among"):
        drawing.svg(highlight=120)
    # Large maps draw a seeded sample, the same each time, and say so.
    sampled = SegmentMapDrawing(segment_map(x, labels), max_points=50).svg()
    assert sampled.count("<circle") == 50 + 4 and "(50 drawn)" in sampled
    assert sampled == SegmentMapDrawing(segment_map(x, labels), max_points=50).svg()


def test_user_segments_look_up_by_id() -> None:
    users = UserSegments(user_ids=np.array(["b", "a", "c"], dtype=object), labels=np.array([2, 0, -1]))
    assert (users.row("a"), users.segment("a"), users.segment("c")) == (1, 0, -1)
    assert users.row("nobody") is None and users.segment("nobody") is None
