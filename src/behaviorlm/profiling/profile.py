"""One user's profile: the facts a person (or the LLM layer) reads about them, all computed from the store.

:func:`build_profile` gathers activity (events by type, first and last event, active days, latest items),
interests (topics of the item texts they engaged with, recency-weighted; :mod:`.interests`), how
anomalous their behaviour is (:mod:`.anomalies`, as a percentile among all users, with reasons), their
behaviour segment (:mod:`.segments`) and, given a sequence model, their likely next items. Every field is
a fact from the data or a model output with its provenance; nothing is invented.

The user's own events are read at call time, so a new event shows at once. What does not depend on the
user — the anomaly detector fitted on all users, the catalogue's interest topics (:func:`interest_topics`),
the users' segments — can be computed once and passed in to be shared by many profiles (the service keeps
them cached and refreshes them); without them, the detector and the topics are computed here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from behaviorlm.data.sequences import Interactions
from behaviorlm.data.store import EventStore
from behaviorlm.models.window import model_history
from behaviorlm.profiling.anomalies import AnomalyDetector, AnomalyReason
from behaviorlm.profiling.interests import Topics, find_topics, topic_shares, user_interest_vectors

if TYPE_CHECKING:
    from behaviorlm.profiling.segments import UserSegments


class UnknownUser(KeyError):
    """The store holds no events of the user asked for."""


@dataclass(frozen=True)
class UserProfile:
    user_id: str
    events: int
    events_by_type: dict[str, int]
    first_event: str
    last_event: str
    active_days: int
    recent_items: list[dict[str, str]]
    """The latest events, newest first: item id, title (when known), event type, time."""
    interests: list[dict[str, Any]] = field(default_factory=list)
    """Top interest topics: keywords and the user's share of interest (sums to 1 over all topics)."""
    anomaly_percentile: float | None = None
    """Share of users whose behaviour is less anomalous (0.99 = more anomalous than 99% of users)."""
    anomaly_reasons: list[dict[str, Any]] = field(default_factory=list)
    segment: int | None = None
    """The user's behaviour segment (``-1``: in none), when segments were given and include the user."""
    next_items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InterestTopics:
    """The interest topics of a catalogue and the item vectors they were found in: the same for every user."""

    topics: Topics
    item_ids: np.ndarray
    """Row ``i`` of ``item_vectors`` embeds the text of item ``item_ids[i]``."""
    item_vectors: np.ndarray
    latest_event: int
    """The store's latest event (UTC seconds) when the topics were found. Interests weigh an event by its
    age at this time, or at the user's own latest event if that is later."""
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.item_vectors):
            raise ValueError(f"{len(self.item_vectors)} item vectors for {len(self.item_ids)} items")
        object.__setattr__(self, "_rows", {str(item): n for n, item in enumerate(self.item_ids.tolist())})

    def rows(self, item_ids: list[str]) -> np.ndarray:
        """``int64``: each item's row in ``item_vectors``; ``-1`` for items the topics were found without."""
        return np.array([self._rows.get(str(item), -1) for item in item_ids], dtype=np.int64)


def interest_topics(store: EventStore, *, k_values: range = range(4, 13)) -> InterestTopics | None:
    """Topics of the texts of the items in ``store``'s events (:func:`.interests.find_topics`, k by
    silhouette over ``k_values``); None when no such item has a text (title, category, brand, textual
    attributes or free text), as then there is nothing to read interests from.

    Texts are embedded with the packaged sentence model and cached in the store, so each is embedded once.
    """
    from behaviorlm.data.text import embed_texts, item_texts

    # The same item order as store.interactions() (sorted ids), so topics match the ones found over it.
    item_ids = np.unique(
        np.array([row[0] for row in store.rows("SELECT DISTINCT item_id FROM events")], dtype=object)
    )
    texts = item_texts(store, [str(item) for item in item_ids])
    if not any(texts):
        return None
    vectors = embed_texts(texts, store=store)
    return InterestTopics(
        topics=find_topics(texts, vectors, k_values=k_values),
        item_ids=item_ids,
        item_vectors=vectors,
        latest_event=int(store.scalar("SELECT epoch(max(timestamp))::BIGINT FROM events")),
    )


def build_profile(
    store: EventStore,
    user_id: str,
    *,
    model: Any | None = None,
    with_interests: bool = True,
    with_anomaly: bool = True,
    recent: int = 5,
    half_life_days: float = 30.0,
    detector: AnomalyDetector | None = None,
    topics: InterestTopics | None = None,
    segments: UserSegments | None = None,
) -> UserProfile:
    """The profile of stored user ``user_id`` (a pseudonym, if the store pseudonymizes users).

    ``detector`` (fitted on the store's users), ``topics`` (:func:`interest_topics`) and ``segments`` are
    shared by all profiles: pass them to reuse them. Without ``detector`` (and with ``with_anomaly``) one is
    fitted on the store; without ``topics`` (and with ``with_interests``) they are found in the store;
    without ``segments`` the profile has no segment. A user who is not among those a given detector or
    segmentation covers (one who arrived since) gets no anomaly score or segment. Raises
    :class:`UnknownUser` (a :class:`KeyError`) for a user without events.
    """
    events = store.user_events(user_id)
    item_ids: list[str] = events["item_id"]
    if not item_ids:
        raise UnknownUser(f"user {user_id!r} has no events in {store.path}")
    types: list[str] = events["event_type"]
    times = np.asarray(events["timestamp"], dtype=np.int64)
    n = len(item_ids)
    latest = list(range(n - 1, max(n - 1 - recent, -1), -1))

    profile: dict[str, Any] = {
        "user_id": user_id,
        "events": n,
        "events_by_type": dict(sorted(Counter(types).items())),
        "first_event": _when(times.min()),
        "last_event": _when(times.max()),
        "active_days": len(np.unique(times // 86_400)),
    }
    if with_interests:
        topics = topics if topics is not None else interest_topics(store)
        if topics is not None:
            profile["interests"] = _interests(topics, user_id, item_ids, times, half_life_days=half_life_days)
    if with_anomaly:
        if detector is None:
            detector = AnomalyDetector().fit(store.interactions())
        rows = np.flatnonzero(detector.user_ids_ == user_id)
        if len(rows):
            u = int(rows[0])
            profile["anomaly_percentile"] = float((detector.scores_ < detector.scores_[u]).mean())
            profile["anomaly_reasons"] = [_reason(r) for r in detector.reasons(u)]
    if segments is not None:
        profile["segment"] = segments.segment(user_id)
    predicted: list[tuple[str, float]] = []
    if model is not None:
        # The model reads the latest events as every single-user path does (behaviorlm.models.window), so
        # these next items are the service's /recommendations and the explanation's target.
        request = model_history(model, events)
        if request.interactions.n_events:
            recs = model.recommend_one(request.interactions, k=5)
            predicted = [
                (str(model.trained_on.item_ids[i]), float(score))
                for i, score in zip(recs.items[0], recs.scores[0], strict=True)
                if np.isfinite(score)
            ]
    titles = _titles(store, [item_ids[j] for j in latest] + [item for item, _ in predicted])
    profile["recent_items"] = [
        {
            "item_id": item_ids[j],
            "title": titles.get(item_ids[j], ""),
            "event_type": types[j],
            "time": _when(times[j]),
        }
        for j in latest
    ]
    profile["next_items"] = [
        {"item_id": item, "title": titles.get(item, ""), "score": score} for item, score in predicted
    ]
    return UserProfile(**profile)


def _interests(
    topics: InterestTopics, user_id: str, item_ids: list[str], times: np.ndarray, *, half_life_days: float
) -> list[dict[str, Any]]:
    """The user's top three topics by share; none when the topics know none of the user's items."""
    rows = topics.rows(item_ids)
    known = rows >= 0
    if not known.any():
        return []
    user = Interactions(
        user_ids=np.array([user_id], dtype=object),
        item_ids=topics.item_ids,
        user_ptr=np.array([0, int(known.sum())], dtype=np.int64),
        items=rows[known],
        timestamps=times[known],
        event_types=np.zeros(int(known.sum()), dtype=np.int16),
        event_type_vocab=("interaction",),
    )
    now = max(topics.latest_event, int(times.max()))
    vector = user_interest_vectors(user, topics.item_vectors, half_life_days=half_life_days, now=now)
    shares = topic_shares(vector, topics.topics)[0]
    return [
        {"topic": int(t), "keywords": topics.topics.describe(int(t)), "share": float(shares[t])}
        for t in np.argsort(-shares)[:3]
    ]


def _titles(store: EventStore, item_ids: list[str]) -> dict[str, str]:
    return {item: known["title"] for item, known in store.item_details(item_ids).items() if "title" in known}


def _when(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).isoformat(timespec="seconds")


def _reason(reason: AnomalyReason) -> dict[str, Any]:
    return {
        "feature": reason.feature,
        "value": reason.value,
        "typical": reason.typical,
        "iqr_units": reason.iqr_units,
        "typical_low": reason.typical_low,
        "typical_high": reason.typical_high,
    }
