"""Segments: clusters of users' behaviour representations, with stable ids, summaries and a 2-D map.

A user's representation is the sequence model's state after their history (what the Transformer
"thinks" of the user: the vector it scores the catalogue with), L2-normalised
(:func:`user_representations`). Without a trained model, :func:`item_average_representations` averages
item vectors over the user's history instead.

* :func:`segment_kmeans` picks the number of segments by the silhouette score (Rousseeuw 1987) over a
  range of k; :func:`segment_hdbscan` finds density clusters and leaves outliers unassigned (-1)
  (Campello, Moulavi & Sander 2013).
* :func:`align_to_previous` keeps segment ids stable across re-runs: new clusters are matched to the
  previous run's centroids by maximum total cosine similarity (Hungarian algorithm).
* :func:`summarize_segments` describes each segment with figures a marketer reads: size, recency /
  frequency / monetary medians, conversion rate, and the item attributes over-represented in it (lift).
* :func:`segment_map` places the users on the plane of the first two principal components of their
  representations; :class:`SegmentMapDrawing` draws it as a standalone SVG (the service's dashboard
  shows it inline) and :func:`save_segment_map` as a PNG and an HTML page with the SVG and the summary table.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from behaviorlm.data.features import ItemFeatures
from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.sequential import SequentialRecommender

DAY = 86_400


def user_representations(
    model: SequentialRecommender, interactions: Interactions, *, batch_size: int = 1024
) -> np.ndarray:
    """``float32 [n_users, d]``: the model's state after each user's history, L2-normalised."""
    users = np.arange(interactions.n_users)
    parts = []
    for start in range(0, len(users), batch_size):
        batch = ScoringBatch(users=users[start : start + batch_size], history=interactions)
        with torch.no_grad():
            parts.append(model.encode(batch).float().cpu().numpy())
    return _normalise(np.concatenate(parts))


def item_average_representations(interactions: Interactions, item_vectors: np.ndarray) -> np.ndarray:
    """``[n_users, d]``: the mean of the vectors of each user's items, L2-normalised (the no-model fallback)."""
    if len(item_vectors) != interactions.n_items:
        raise ValueError(f"item_vectors has {len(item_vectors)} rows for {interactions.n_items} items")
    user_of_event = np.repeat(np.arange(interactions.n_users), interactions.lengths())
    sums = np.zeros((interactions.n_users, item_vectors.shape[1]))
    np.add.at(sums, user_of_event, item_vectors[interactions.items])
    return _normalise(sums / np.maximum(interactions.lengths(), 1)[:, None])


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Segmentation:
    """Segment id per user (``-1``: not assigned, HDBSCAN outliers) and the segments' centroids."""

    labels: np.ndarray
    centroids: np.ndarray
    """``[n_segments, d]``; row ``s`` is segment ``s``."""
    method: str
    silhouette: float
    silhouette_by_k: dict[int, float] = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        return len(self.centroids)


def segment_kmeans(
    x: np.ndarray, *, k_values: range = range(2, 11), seed: int = 0, silhouette_sample: int = 5000
) -> Segmentation:
    """k-means for each k in ``k_values``; keeps the k with the best silhouette (on a seeded sample)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    k_values = [k for k in k_values if 2 <= k < len(x)]
    if not k_values:
        raise ValueError(f"need at least 3 users to choose k, got {len(x)}")
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(x), size=min(silhouette_sample, len(x)), replace=False)
    best, scores = None, {}
    for k in k_values:
        fitted = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
        labels = fitted.labels_
        if len(np.unique(labels[sample])) < 2:
            continue
        scores[k] = float(silhouette_score(x[sample], labels[sample], metric="cosine"))
        if best is None or scores[k] > scores[best[0]]:
            best = (k, fitted)
    if best is None:
        raise ValueError("every k gave a single cluster on the silhouette sample: the users look alike")
    k, fitted = best
    return Segmentation(
        labels=fitted.labels_.astype(np.int64),
        centroids=fitted.cluster_centers_.astype(np.float32),
        method=f"kmeans(k={k}, chosen by silhouette)",
        silhouette=scores[k],
        silhouette_by_k=scores,
    )


def segment_hdbscan(x: np.ndarray, *, min_cluster_size: int | None = None) -> Segmentation:
    """HDBSCAN density clusters; users in no dense region get ``-1``."""
    from sklearn.cluster import HDBSCAN
    from sklearn.metrics import silhouette_score

    size = min_cluster_size or max(5, len(x) // 100)
    labels = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(x).astype(np.int64)
    segments = [s for s in np.unique(labels) if s >= 0]
    centroids = np.array([x[labels == s].mean(axis=0) for s in segments], dtype=np.float32).reshape(
        len(segments), x.shape[1]
    )
    assigned = labels >= 0
    silhouette = (
        float(silhouette_score(x[assigned], labels[assigned], metric="cosine"))
        if len(segments) >= 2
        else float("nan")
    )
    return Segmentation(
        labels=labels,
        centroids=centroids,
        method=f"hdbscan(min_cluster_size={size})",
        silhouette=silhouette,
    )


@dataclass(frozen=True)
class UserSegments:
    """The segment of each user, looked up by user id (e.g. to put a user's segment in their profile)."""

    user_ids: np.ndarray
    """External id of each row, as in the segmented :class:`Interactions`."""
    labels: np.ndarray
    """Segment id of each row (``-1``: not assigned)."""
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.user_ids) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels for {len(self.user_ids)} users")
        # Built once: a lookup per request must not scan every user.
        object.__setattr__(self, "_rows", {str(u): n for n, u in enumerate(self.user_ids.tolist())})

    def row(self, user_id: str) -> int | None:
        """The user's row (also their row on the segment map); None for a user who was not segmented."""
        return self._rows.get(user_id)

    def segment(self, user_id: str) -> int | None:
        """The user's segment id; None for a user who was not segmented."""
        row = self.row(user_id)
        return None if row is None else int(self.labels[row])


def align_to_previous(segmentation: Segmentation, previous_centroids: np.ndarray) -> Segmentation:
    """Renumber segments so that each keeps the id of the previous segment it matches best.

    Matching maximises the total cosine similarity between new and previous centroids. New segments
    without a counterpart (more segments than before) get ids after the previous ones.
    """
    from scipy.optimize import linear_sum_assignment

    new, old = _normalise(segmentation.centroids), _normalise(previous_centroids)
    rows, cols = linear_sum_assignment(-(new @ old.T))
    mapping = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    next_id = len(old)
    for s in range(len(new)):
        if s not in mapping:
            mapping[s] = next_id
            next_id += 1
    order = sorted(range(len(new)), key=lambda s: mapping[s])
    renumber = np.full(len(new), -1)
    for s in range(len(new)):
        renumber[s] = mapping[s]
    labels = np.where(segmentation.labels >= 0, renumber[np.maximum(segmentation.labels, 0)], -1)
    # Ids may skip previous segments that vanished; centroids are stored by id (missing ids: NaN rows).
    centroids = np.full((next_id, segmentation.centroids.shape[1]), np.nan, dtype=np.float32)
    for s in order:
        centroids[mapping[s]] = segmentation.centroids[s]
    return Segmentation(
        labels=labels.astype(np.int64),
        centroids=centroids,
        method=segmentation.method,
        silhouette=segmentation.silhouette,
        silhouette_by_k=segmentation.silhouette_by_k,
    )


@dataclass(frozen=True)
class SegmentSummary:
    segment: int
    users: int
    share: float
    median_recency_days: float
    """Days from the user's last event to the data's last event."""
    median_events: float
    median_monetary: float
    """Median per-user sum of event values (e.g. order amounts; ratings for ML-100k)."""
    conversion_rate: float | None
    """Share of users with a purchase; None when the data has no purchase events."""
    top_attributes: list[tuple[str, float]]
    """Item attributes most over-represented in the segment's events: (attribute, lift)."""


def summarize_segments(
    segmentation: Segmentation,
    interactions: Interactions,
    *,
    values: np.ndarray | None = None,
    item_features: ItemFeatures | None = None,
    top: int = 5,
) -> list[SegmentSummary]:
    """One :class:`SegmentSummary` per segment (largest first). ``values``: per-event amounts, if any."""
    labels = segmentation.labels
    if len(labels) != interactions.n_users:
        raise ValueError(f"{len(labels)} labels for {interactions.n_users} users")
    lengths = interactions.lengths()
    user_of_event = np.repeat(np.arange(interactions.n_users), lengths)
    now = int(interactions.timestamps.max()) if interactions.n_events else 0
    last = np.full(interactions.n_users, -1)
    np.maximum.at(last, user_of_event, interactions.timestamps)
    recency = (now - last) / DAY
    monetary = (
        np.bincount(user_of_event, weights=values, minlength=interactions.n_users)
        if values is not None
        else None
    )
    vocab = interactions.event_type_vocab
    bought = None
    if "purchase" in vocab:
        purchases = interactions.event_types == vocab.index("purchase")
        bought = np.bincount(user_of_event[purchases], minlength=interactions.n_users) > 0
    attr_counts_all = attr_counts = None
    if item_features is not None:
        item_of_token = np.repeat(np.arange(item_features.n_items), np.diff(item_features.attribute_ptr))
        n_attr = len(item_features.attribute_vocab)
        item_attr = np.zeros((item_features.n_items, n_attr))
        np.add.at(item_attr, (item_of_token, item_features.attribute_ids), 1.0)
        attr_counts_all = item_attr[interactions.items].sum(axis=0)
    out = []
    for s in sorted({int(x) for x in labels if x >= 0}, key=lambda s: -(labels == s).sum()):
        members = labels == s
        top_attrs: list[tuple[str, float]] = []
        if item_features is not None:
            events = members[user_of_event]
            attr_counts = item_attr[interactions.items[events]].sum(axis=0)
            share_seg = attr_counts / max(attr_counts.sum(), 1.0)
            share_all = attr_counts_all / max(attr_counts_all.sum(), 1.0)
            lift = np.where(share_all > 0, share_seg / np.where(share_all > 0, share_all, 1.0), 0.0)
            enough = attr_counts >= 5  # a lift from a handful of events is noise
            for j in np.argsort(-np.where(enough, lift, 0.0))[:top]:
                if enough[j] and lift[j] > 1.0:
                    top_attrs.append((item_features.attribute_vocab[j], float(lift[j])))
        out.append(
            SegmentSummary(
                segment=s,
                users=int(members.sum()),
                share=float(members.mean()),
                median_recency_days=float(np.median(recency[members])),
                median_events=float(np.median(lengths[members])),
                median_monetary=float(np.median(monetary[members])) if monetary is not None else float("nan"),
                conversion_rate=None if bought is None else float(bought[members].mean()),
                top_attributes=top_attrs,
            )
        )
    return out


SEGMENT_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
"""Segment ``s`` is drawn in ``SEGMENT_COLOURS[s % 10]`` (matplotlib's tab10) on every map, so a segment
has the same colour in the PNG, the HTML page and the dashboard."""

UNASSIGNED_COLOUR = "#cfcfcf"


def segment_colour(segment: int) -> str:
    """The colour of segment id ``segment`` on the maps (``-1``, unassigned: light grey)."""
    return UNASSIGNED_COLOUR if segment < 0 else SEGMENT_COLOURS[segment % len(SEGMENT_COLOURS)]


@dataclass(frozen=True)
class SegmentMap:
    """Users on the plane of the first two principal components of their representations."""

    coordinates: np.ndarray
    """``float32 [n_users, 2]``: each user's projections on principal components 1 and 2."""
    labels: np.ndarray
    """Segment id of each user (``-1``: not assigned)."""
    explained_variance: tuple[float, float]
    """Share of the representations' total variance along each axis."""


def segment_map(representations: np.ndarray, labels: np.ndarray) -> SegmentMap:
    """Principal component analysis (Pearson 1901; Jolliffe 2002, eq. 1.1; scikit-learn's ``PCA``) of
    ``[n_users, d]`` ``representations``: centre them, take the two directions of largest variance, and give
    each user their projections on them; ``labels`` (one segment id per user) are kept beside the
    coordinates for drawing.

    Deterministic: an eigenvector's sign is arbitrary, so each axis is oriented to make its
    largest-magnitude loading positive. An axis without variance (one-dimensional input, identical
    users) is all zeros.
    """
    x = np.asarray(representations, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2:
        raise ValueError(f"representations must be [n_users, d], got shape {x.shape}")
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} users")
    coordinates = np.zeros((len(x), 2), dtype=np.float32)
    if len(x) == 0 or x.shape[1] == 0:
        return SegmentMap(coordinates=coordinates, labels=labels, explained_variance=(0.0, 0.0))
    from sklearn.decomposition import PCA

    centred = x - x.mean(axis=0)
    n_axes = min(2, x.shape[1], len(x))
    if not np.any(centred):  # no variance at all: every axis is zeros
        return SegmentMap(coordinates=coordinates, labels=labels, explained_variance=(0.0, 0.0))
    pca = PCA(n_components=n_axes, svd_solver="full").fit(centred)
    axes = pca.components_.T  # [d, n_axes]
    pivots = np.abs(axes).argmax(axis=0)
    axes = axes * np.where(axes[pivots, np.arange(n_axes)] < 0, -1.0, 1.0)
    coordinates[:, :n_axes] = centred @ axes
    shares = [float(v) for v in pca.explained_variance_ratio_] + [0.0, 0.0]
    return SegmentMap(coordinates=coordinates, labels=labels, explained_variance=(shares[0], shares[1]))


class SegmentMapDrawing:
    """A :class:`SegmentMap` drawn as a standalone SVG document: one dot per user, coloured by segment, a
    legend with each segment's size, and axes labelled with their share of variance.

    The dots are laid out once, here; :meth:`svg` only adds the ring around one user, so drawing the map
    for each request costs the same however many users it holds. With more than ``max_points`` users a
    seeded random sample of them is drawn; the axes are scaled to all users, so the sample does not move
    the picture. Only numbers and fixed words are written, never a user or item id.
    """

    def __init__(
        self,
        segment_map: SegmentMap,
        *,
        max_points: int = 2000,
        width: int = 640,
        height: int = 400,
        seed: int = 0,
    ) -> None:
        xy = segment_map.coordinates.astype(np.float64)
        labels = segment_map.labels
        self.n_users = len(labels)
        self._labels = labels
        self._coordinates = xy
        self._box = (44.0, 12.0, width - 150.0, height - 36.0)  # plot area: left, top, right, bottom
        left, top, right, bottom = self._box
        self._lo = xy.min(axis=0) if self.n_users else np.zeros(2)
        self._span = np.maximum((xy.max(axis=0) if self.n_users else np.ones(2)) - self._lo, 1e-9)
        shown = np.arange(self.n_users)
        if self.n_users > max_points:
            shown = np.sort(np.random.default_rng(seed).choice(self.n_users, size=max_points, replace=False))
        px, py = self._pixels(shown)
        segments, sizes = np.unique(labels, return_counts=True)
        sampled = f" ({len(shown):,} drawn)" if len(shown) < self.n_users else ""
        described = f"segment map: {self.n_users:,} users{sampled} in {int((segments >= 0).sum())} segments"
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{described}" font-family="system-ui, sans-serif" '
            f'font-size="11"><title>{described}</title>',
            f'<rect class="frame" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
            'fill="#fbfcfd" stroke="#d9dee6"/>',
        ]
        shown_labels = labels[shown]
        for segment in segments.tolist():
            members = np.flatnonzero(shown_labels == segment)
            dots = "".join(f'<circle cx="{px[m]:.1f}" cy="{py[m]:.1f}" r="2.4"/>' for m in members)
            parts.append(
                f'<g class="segment" data-segment="{segment}" fill="{segment_colour(segment)}" '
                f'fill-opacity="0.75">{dots}</g>'
            )
        middle = (top + bottom) / 2
        parts.append(
            f'<text x="{(left + right) / 2:.0f}" y="{height - 10}" text-anchor="middle" fill="#4a5568">'
            f"principal component 1 ({100 * segment_map.explained_variance[0]:.0f}% of variance)</text>"
            f'<text x="14" y="{middle:.0f}" text-anchor="middle" fill="#4a5568" '
            f'transform="rotate(-90 14 {middle:.0f})">principal component 2 '
            f"({100 * segment_map.explained_variance[1]:.0f}%)</text>"
        )
        rows = max(int((bottom - top) // 16), 1)
        for n, (segment, size) in enumerate(zip(segments.tolist(), sizes.tolist(), strict=True)):
            y = top + 8 + 16 * n
            if n == rows - 1 and len(segments) > rows:
                parts.append(
                    f'<text x="{right + 12}" y="{y + 4}" fill="#4a5568">+{len(segments) - n} more</text>'
                )
                break
            name = "unassigned" if segment < 0 else f"segment {segment}"
            parts.append(
                f'<g class="legend" data-segment="{segment}"><circle cx="{right + 16}" cy="{y}" r="5" '
                f'fill="{segment_colour(segment)}"/><text x="{right + 26}" y="{y + 4}" fill="#1d2430">'
                f"{name} ({size:,})</text></g>"
            )
        self._body = "".join(parts)

    def _pixels(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        left, top, right, bottom = self._box
        xy = self._coordinates[rows]
        px = left + 6 + (xy[:, 0] - self._lo[0]) / self._span[0] * (right - left - 12)
        py = bottom - 6 - (xy[:, 1] - self._lo[1]) / self._span[1] * (bottom - top - 12)
        return px, py

    def svg(self, *, highlight: int | None = None) -> str:
        """The SVG document; with ``highlight``, that user row is ringed and labelled "this user"."""
        if highlight is None:
            return self._body + "</svg>"
        if not 0 <= highlight < self.n_users:
            raise ValueError(f"highlight row {highlight} is not among the map's {self.n_users} users")
        px, py = self._pixels(np.array([highlight]))
        x, y, segment = float(px[0]), float(py[0]), int(self._labels[highlight])
        ring = (
            f'<g class="highlight" data-segment="{segment}"><circle cx="{x:.1f}" cy="{y:.1f}" r="8" '
            f'fill="none" stroke="#1d2430" stroke-width="2"/><circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
            f'fill="{segment_colour(segment)}" stroke="#1d2430"/><text x="{x + 11:.1f}" y="{y + 4:.1f}" '
            'fill="#1d2430" font-weight="bold">this user</text></g>'
        )
        return self._body + ring + "</svg>"


def save_segment_map(
    segmentation: Segmentation,
    x: np.ndarray,
    *,
    summaries: list[SegmentSummary],
    png_path: str | Path,
    html_path: str | Path | None = None,
    title: str = "User segments",
    max_points: int = 5000,
) -> None:
    """The :func:`segment_map` of representations ``x`` as a PNG (every user) and, with ``html_path``, a
    standalone HTML page with the map as inline SVG (up to ``max_points`` users) and the summary table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = segment_map(x, segmentation.labels)
    xy, labels = found.coordinates, found.labels
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    if (labels < 0).any():
        ax.scatter(*xy[labels < 0].T, s=4, c=UNASSIGNED_COLOUR, label="unassigned")
    for summary in summaries:
        members = labels == summary.segment
        ax.scatter(
            *xy[members].T,
            s=6,
            color=segment_colour(summary.segment),
            label=f"segment {summary.segment} ({summary.users})",
        )
    ax.set_title(f"{title} — {segmentation.method}")
    ax.set_xlabel(f"principal component 1 ({100 * found.explained_variance[0]:.0f}% of variance)")
    ax.set_ylabel(f"principal component 2 ({100 * found.explained_variance[1]:.0f}%)")
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    if html_path is not None:
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    s.segment,
                    s.users,
                    f"{100 * s.share:.1f}%",
                    f"{s.median_recency_days:.1f}",
                    f"{s.median_events:.0f}",
                    "–" if np.isnan(s.median_monetary) else f"{s.median_monetary:.1f}",
                    "–" if s.conversion_rate is None else f"{100 * s.conversion_rate:.1f}%",
                    ", ".join(f"{a} ×{lift:.1f}" for a, lift in s.top_attributes),
                )
            )
            + "</tr>"
            for s in summaries
        )
        Path(html_path).write_text(
            f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(segmentation.method)}; silhouette "
            f"{segmentation.silhouette:.3f}</p>{SegmentMapDrawing(found, max_points=max_points).svg()}"
            "<table border=1 cellpadding=4><tr><th>segment</th><th>users</th><th>share</th><th>median recency (days)"
            "</th><th>median events</th><th>median monetary</th><th>conversion</th><th>over-represented attributes"
            f"</th></tr>{rows}</table>",
            encoding="utf-8",
        )
