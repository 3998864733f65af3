"""One user's profile: the facts a person (or the LLM layer) reads about them, all computed from the store.

:func:`build_profile` gathers activity (events by type, first and last event, active days, latest items),
interests (topics of the item texts they engaged with, recency-weighted; :mod:`.interests`), how
anomalous their behaviour is (:mod:`.anomalies`, as a percentile among all users, with reasons) and,
given a sequence model, their likely next items. Every field is a fact from the data or a model output
with its provenance; nothing is invented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from behaviorlm.data.store import EventStore
from behaviorlm.profiling.anomalies import AnomalyDetector, AnomalyReason


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
    next_items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_profile(
    store: EventStore,
    user_id: str,
    *,
    model: Any | None = None,
    with_interests: bool = True,
    with_anomaly: bool = True,
    recent: int = 5,
    half_life_days: float = 30.0,
) -> UserProfile:
    """The profile of stored user ``user_id`` (a pseudonym, if the store pseudonymizes users)."""
    data = store.interactions()
    index = {str(u): i for i, u in enumerate(data.user_ids.tolist())}
    if user_id not in index:
        raise KeyError(f"user {user_id!r} has no events in {store.path}")
    u = index[user_id]
    lo, hi = data.user_ptr[u], data.user_ptr[u + 1]
    vocab = data.event_type_vocab
    types = data.event_types[lo:hi]
    times = data.timestamps[lo:hi]
    items = data.items[lo:hi]
    titles = dict(store.rows("SELECT item_id, title FROM items WHERE title IS NOT NULL"))

    def when(ts: int) -> str:
        return datetime.fromtimestamp(int(ts), UTC).isoformat(timespec="seconds")

    profile: dict[str, Any] = {
        "user_id": user_id,
        "events": int(hi - lo),
        "events_by_type": {
            vocab[t]: int(n) for t, n in zip(*np.unique(types, return_counts=True), strict=True)
        },
        "first_event": when(times.min()),
        "last_event": when(times.max()),
        "active_days": len(np.unique(times // 86_400)),
        "recent_items": [
            {
                "item_id": str(data.item_ids[items[j]]),
                "title": str(titles.get(str(data.item_ids[items[j]]), "")),
                "event_type": vocab[types[j]],
                "time": when(times[j]),
            }
            for j in range(hi - lo - 1, max(hi - lo - 1 - recent, -1), -1)
        ],
    }
    if with_interests:
        from behaviorlm.data.text import embed_texts, item_texts
        from behaviorlm.profiling.interests import find_topics, topic_shares, user_interest_vectors

        texts = item_texts(store, [str(i) for i in data.item_ids])
        vectors = embed_texts(texts, store=store)  # cached in the store: embedded once per text
        topics = find_topics(texts, vectors, k_values=range(4, 13))
        interest = user_interest_vectors(data, vectors, half_life_days=half_life_days)[u : u + 1]
        shares = topic_shares(interest, topics)[0]
        profile["interests"] = [
            {"topic": int(t), "keywords": topics.describe(int(t)), "share": float(shares[t])}
            for t in np.argsort(-shares)[:3]
        ]
    if with_anomaly:
        detector = AnomalyDetector().fit(data)
        profile["anomaly_percentile"] = float((detector.scores_ < detector.scores_[u]).mean())
        profile["anomaly_reasons"] = [_reason(r) for r in detector.reasons(u)]
    if model is not None:
        prediction = model.predict_next(
            [str(data.item_ids[i]) for i in items],
            event_types=[vocab[t] for t in types]
            if set(vocab) <= set(model.trained_on.event_type_vocab)
            else None,
            timestamps=times.tolist(),
            k=5,
        )
        profile["next_items"] = [
            {"item_id": i, "title": str(titles.get(i, "")), "score": float(s)}
            for i, s in zip(prediction.item_ids, prediction.scores, strict=True)
        ]
    return UserProfile(**profile)


def _reason(reason: AnomalyReason) -> dict[str, Any]:
    return {
        "feature": reason.feature,
        "value": reason.value,
        "typical": reason.typical,
        "iqr_units": reason.iqr_units,
    }
