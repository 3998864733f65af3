"""Facts, then words: the structured, id-carrying facts the language model may talk about.

The LLM never reads the store. :func:`user_facts` collects what the data and the models say about one
user -- recent events with ids, times, ratings and (scrubbed) review text, activity counts, interest
topics, how anomalous the behaviour is, the sequence model's likely next items and intent probabilities,
and the past events that most influence the top prediction (deletion influence, :mod:`behaviorlm.causal`)
-- into a :class:`FactSet`. Every fact has a short id (``E1``, ``N2``, ``C1`` …) that answers cite, and
the structured values the grounding check (:mod:`.grounding`) compares the answer against.

Privacy: the user appears only under an alias (a keyed HMAC of the stored id), review text passes
:func:`.privacy.scrub_pii`, and nothing else about the person (attributes, raw ids) is included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from behaviorlm.data.store import EventStore
from behaviorlm.llm.privacy import scrub_pii
from behaviorlm.llm.weights import cache_dir
from behaviorlm.models.window import last_events, latest_events, model_history

SHOPPING_INTENTS = ("browsing", "comparing options", "ready to buy", "repeat purchase", "lapsing")
"""Intent labels for stores with commerce events (cart, purchase, …) and no intent model."""
CONTENT_INTENTS = (
    "exploring new genres",
    "deepening a favourite genre",
    "catching up on popular titles",
    "lapsing",
)
"""Intent labels for content stores (views, ratings) with no intent model."""
_COMMERCE_TYPES = {"cart", "purchase", "fav", "checkout", "order"}


@dataclass(frozen=True)
class Fact:
    id: str
    kind: str
    """``activity``, ``event``, ``review``, ``interest``, ``anomaly``, ``next_item``, ``intent``,
    ``intent_reason`` (a purchase-propensity model's feature that moves its answer), ``influence``,
    ``segment`` or ``stat``."""
    text: str
    """One line, as the model reads it."""
    values: dict[str, Any] = field(default_factory=dict)
    """The structured values behind the text (item ids, titles, numbers), for the grounding check."""


@dataclass
class FactSet:
    """The facts about one subject (a user alias or a segment), and the intent labels allowed for it."""

    subject: str
    facts: list[Fact]
    intents: tuple[str, ...] = ()
    intent_from_model: bool = False
    """True when the intent probabilities are an intent model's output (then the answer's confidence
    must be that model's probability)."""

    def __post_init__(self) -> None:
        ids = [f.id for f in self.facts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate fact ids in {ids}")

    def by_id(self) -> dict[str, Fact]:
        return {f.id: f for f in self.facts}

    def of_kind(self, kind: str) -> list[Fact]:
        return [f for f in self.facts if f.kind == kind]

    def render(self) -> str:
        """The facts as the prompt shows them, one ``[ID] text`` per line."""
        return "\n".join(f"[{f.id}] {f.text}" for f in self.facts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "intents": list(self.intents),
            "intent_from_model": self.intent_from_model,
            "facts": [asdict(f) for f in self.facts],
        }


def _alias_key() -> bytes:
    """The HMAC key for prompt aliases: ``$BEHAVIORLM_ALIAS_KEY``, else one random key kept (0600) in the
    user cache dir, so aliases are stable on this machine yet cannot be reversed by hashing guesses."""
    if env := os.environ.get("BEHAVIORLM_ALIAS_KEY"):
        return env.encode()
    path = cache_dir() / "alias.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        return key


def user_alias(user_id: str) -> str:
    """How a user is named in prompts: ``user-`` and 10 hex digits of a keyed HMAC of the stored id."""
    return "user-" + hmac.new(_alias_key(), user_id.encode(), hashlib.sha256).hexdigest()[:10]


ORDER_ONLY_BEFORE = 366 * 86_400
"""Event times before 1971-01-02 are positions, not times: logs without times (S3-Rec and BERT4Rec
sequence files) are stored at 1970-01-01 + k seconds. A user whose events are all that early has an
order but no dates, and facts say so instead of stating 1970 dates and "1 active day"."""


def has_times(ts: int) -> bool:
    """Whether a log whose latest event is at ``ts`` (UTC seconds) records times (:data:`ORDER_ONLY_BEFORE`)."""
    return int(ts) >= ORDER_ONLY_BEFORE


def _latest(rank: int) -> str:
    """``latest``, ``2nd latest``, ``3rd latest``, ... (an event's place when the log has no times)."""
    if rank == 1:
        return "latest"
    suffix = "th" if 10 <= rank % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(rank % 10, "th")
    return f"{rank}{suffix} latest"


def _when(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(x: float) -> str:
    """A number as facts print it (and answers may quote it): integers plain, others to 2 significant
    decimals."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".") if abs(x) >= 0.01 else f"{x:.2g}"


def user_facts(
    store: EventStore,
    user_id: str,
    *,
    model: Any | None = None,
    intent_model: Any | None = None,
    recent: int = 8,
    next_items: int = 5,
    with_influence: bool = True,
    with_interests: bool = False,
    with_anomaly: bool = True,
    review_chars: int = 240,
    detector: Any | None = None,
    topics: Any | None = None,
    segments: Any | None = None,
    graph: Any | None = None,
    paths: int = 3,
    top_categories: int = 3,
) -> FactSet:
    """The :class:`FactSet` of stored user ``user_id`` (a pseudonym, if the store pseudonymizes users).

    ``graph``: the behaviour knowledge graph (:func:`behaviorlm.data.graph.build_graph`); with it and a
    ``model``, up to ``paths`` explanation paths from the user to the top guess N1 become facts ``K1``..
    (user → item → shared attribute ← N1, :func:`behaviorlm.models.graph_paths.explanation_paths`).

    ``top_categories``: how many of the categories (genres, category, brand) of all the user's items to
    state as fact ``P2`` with their event counts (0: none).

    ``model``: a fitted sequence model (likely next items, and with ``with_influence`` the events behind
    the top one); ``intent_model``: a fitted sequence classifier whose classes are intent labels.
    ``with_interests`` embeds every item text once (cached in the store) to find interest topics.
    ``detector``, ``topics`` and ``segments`` are the shared, pre-fitted parts of a profile
    (:func:`behaviorlm.profiling.profile.build_profile`): pass them when explaining many users.
    Raises ``KeyError`` for an unknown user.
    """
    from behaviorlm.profiling.profile import build_profile

    profile = build_profile(
        store,
        user_id,
        model=None,
        with_interests=with_interests,
        with_anomaly=with_anomaly,
        recent=0,
        detector=detector,
        topics=topics,
        segments=segments,
    )
    facts: list[Fact] = []
    alias = user_alias(user_id)
    by_type = ", ".join(f"{t} {n}" for t, n in profile.events_by_type.items())
    # One read of the user's latest events serves the activity and event facts and both models' windows.
    latest = latest_events(store, user_id, model, intent_model, at_least=recent, details=True)
    timed = has_times(max(latest["timestamp"], default=ORDER_ONLY_BEFORE))
    if timed:
        days = f"{profile.active_days} active day{'s' if profile.active_days != 1 else ''}"
        activity = (
            f"{profile.events} events on {days} from {profile.first_event[:10]} to {profile.last_event[:10]}"
        )
        when = {
            "active_days": profile.active_days,
            "first_date": profile.first_event[:10],
            "last_date": profile.last_event[:10],
        }
    else:
        activity, when = f"{profile.events} events (in order; the log has no times)", {}
    facts.append(
        Fact(
            "P1",
            "activity",
            f"{activity}; by type: {by_type}",
            {
                "user": alias,
                "events": profile.events,
                **when,
                "events_by_type": dict(profile.events_by_type),
            },
        )
    )
    if top_categories:
        category_fact = _category_fact(store, user_id, k=top_categories)
        if category_fact is not None:
            facts.append(category_fact)
    events = last_events(latest, recent)
    titles = item_info(store, set(events["item_id"]))
    n = len(events["item_id"])
    reviews: list[Fact] = []
    for rank, j in enumerate(range(n - 1, -1, -1), start=1):
        item, etype, ts = events["item_id"][j], events["event_type"][j], events["timestamp"][j]
        info = titles.get(item, _NO_INFO)
        value = events["value"][j]
        text = f"{_when(ts)}: " if timed else f"{_latest(rank)}: "
        text += f"{verb(etype)} item {item}"
        if info.title:
            text += f' "{info.title}"'
        if info.descriptor:
            text += f" ({info.descriptor})"
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            text += f", {'rating' if etype in ('rate', 'review') else 'value'} {_num(float(value))}"
        else:
            value = None
        fid = f"E{rank}"
        facts.append(
            Fact(
                fid,
                "event",
                text,
                {
                    "item_id": item,
                    "title": info.title,
                    "event_type": etype,
                    **({"time": _when(ts), "date": _when(ts)[:10]} if timed else {}),
                    "ts": int(ts),
                    "value": value,
                    "categories": list(info.categories),
                    "leaf_categories": list(info.leaf_categories),
                    "brand": info.brand,
                    "attributes": dict(info.attributes),
                },
            )
        )
        review = events["text"][j]
        if review:
            clean = scrub_pii(str(review)).text.replace("\n", " ").strip()
            if len(clean) > review_chars:
                clean = clean[:review_chars].rsplit(" ", 1)[0] + " …"
            reviews.append(
                Fact(
                    f"R{len(reviews) + 1}",
                    "review",
                    f'review of item {item} ({fid}): "{clean}"',
                    {"item_id": item},
                )
            )
    facts.extend(reviews)
    for i, interest in enumerate(profile.interests, start=1):
        facts.append(
            Fact(
                f"T{i}",
                "interest",
                f"interest topic '{interest['keywords']}': {100 * interest['share']:.0f}% of recent interest",
                {"keywords": interest["keywords"], "share_pct": round(100 * interest["share"])},
            )
        )
    if profile.anomaly_percentile is not None:
        pct = 100 * profile.anomaly_percentile
        reasons = "; ".join(
            f"{r['feature']} {_num(r['value'])} vs typical {_num(r['typical'])}"
            for r in profile.anomaly_reasons
        )
        facts.append(
            Fact(
                "A1",
                "anomaly",
                f"behaviour is more unusual than {pct:.0f}% of users" + (f" ({reasons})" if reasons else ""),
                {"percentile": round(pct)},
            )
        )
    if profile.segment is not None and profile.segment >= 0:
        facts.append(
            Fact(
                "G1",
                "segment",
                f"member of behaviour segment {profile.segment}",
                {"segment": profile.segment},
            )
        )
    if model is not None:
        facts.extend(
            _model_facts(
                store,
                latest,
                model,
                k=next_items,
                with_influence=with_influence,
                event_facts=n,
            )
        )
        if graph is not None:
            facts.extend(_path_facts(store, graph, user_id, facts, k=paths))
    intents, from_model = _intent_facts(store, latest, intent_model, facts)
    return FactSet(alias, facts, intents=intents, intent_from_model=from_model)


def _path_facts(store: EventStore, graph: Any, user_id: str, facts: list[Fact], *, k: int) -> list[Fact]:
    """Explanation paths from the user to guess N1 as facts K1..Kk; the user appears as "the user", items
    with their titles where the catalogue has them."""
    from behaviorlm.models.graph_paths import explanation_paths

    top = next((f for f in facts if f.id == "N1"), None)
    if top is None or k < 1:
        return []
    try:
        found = explanation_paths(graph, user_id=user_id, item_id=str(top.values["item_id"]), k=k)
    except KeyError:  # the user or the item is not in the graph (e.g. built before their events)
        return []
    info = item_info(store, {p.via_item_id for p in found} | {p.item_id for p in found})
    out = []
    for i, path in enumerate(found, start=1):
        values = {key: v for key, v in path.to_dict().items() if key not in ("user_id", "path", "text")}
        text = path.text
        for item in (path.via_item_id, path.item_id):
            title = info.get(item, _NO_INFO).title
            if title:
                values["via_title" if item == path.via_item_id else "item_title"] = title
                text = text.replace(f"item {item} ", f'item {item} "{title}" ', 1)
        out.append(Fact(f"K{i}", "path", f"graph path for guess N1: {text}", values))
    return out


@dataclass(frozen=True)
class ItemInfo:
    """What the catalogue says about an item: title, categories (genres, every level of a category path),
    brand, other scalar attributes, and the one-line descriptor facts print."""

    title: str = ""
    categories: tuple[str, ...] = ()
    leaf_categories: tuple[str, ...] = ()
    """The categories an item is counted under: its genres, or the last level of its category path."""
    brand: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    descriptor: str = ""


_NO_INFO = ItemInfo()


def _split_categories(category: str) -> list[str]:
    """``"Beauty > Makeup"``, ``"'Beauty', 'Makeup'"`` or ``"shoes"`` as a list of names."""
    parts = re.split(r"\s*(?:,|>|\|)\s*", category)
    return [p.strip().strip("'\"").strip() for p in parts if p.strip().strip("'\"").strip()]


def item_info(store: EventStore, items: set[str]) -> dict[str, ItemInfo]:
    """:class:`ItemInfo` of each of ``items`` that the catalogue knows."""
    if not items:
        return {}
    marks = ",".join("?" * len(items))
    rows = store.rows(
        f"SELECT item_id, title, category, brand, attributes FROM items WHERE item_id IN ({marks})",
        sorted(items),
    )
    out = {}
    for item, title, category, brand, attributes in rows:
        categories = _split_categories(str(category)) if category else []
        leaves = categories[-1:]
        parts = [f"category: {category}"] if category else []
        if brand:
            parts.append(f"brand: {brand}")
        try:
            attrs = json.loads(attributes) if attributes else {}
        except ValueError:
            attrs = {}
        scalars = []
        for key, value in list(attrs.items())[:3] if isinstance(attrs, dict) else []:
            if isinstance(value, list) and value and len(value) <= 6:
                names = [str(v) for v in value if isinstance(v, str)]
                if names:  # lists of numbers are internal attribute ids, not words
                    parts.append(f"{key}: {', '.join(names)}")
                    categories += names
                    leaves += names
            elif isinstance(value, str | int | float) and len(str(value)) <= 40:
                parts.append(f"{key}: {value}")
                scalars.append((str(key), str(value)))
        out[str(item)] = ItemInfo(
            title=str(title or ""),
            categories=tuple(dict.fromkeys(categories)),
            leaf_categories=tuple(dict.fromkeys(leaves)),
            brand=str(brand or ""),
            attributes=tuple(scalars),
            descriptor="; ".join(parts),
        )
    return out


def _category_fact(store: EventStore, user_id: str, *, k: int) -> Fact | None:
    """Fact ``P2``: the ``k`` categories most frequent among all the user's events, with their counts
    (an event counts once for each genre, or the leaf of the category path, of its item)."""
    rows = store.rows("SELECT item_id, count(*) FROM events WHERE user_id = ? GROUP BY item_id", [user_id])
    infos = item_info(store, {str(item) for item, _ in rows})
    counts: Counter[str] = Counter()
    for item, n in rows:
        for category in infos.get(str(item), _NO_INFO).leaf_categories:
            counts[category] += int(n)
    if not counts:
        return None
    top = counts.most_common()
    shown = top[:k]
    total = sum(int(n) for _, n in rows)
    text = "most frequent categories of the user's events: " + ", ".join(
        f"{name} {n} of {total}" for name, n in shown
    )
    return Fact(
        "P2",
        "categories",
        text,
        {"counts": dict(top), "shown": [name for name, _ in shown], "events": total},
    )


_VERBS = {
    "view": "viewed",
    "click": "clicked",
    "cart": "added to cart",
    "fav": "favourited",
    "purchase": "purchased",
    "search": "searched for",
    "review": "reviewed",
    "rate": "rated",
}


def verb(event_type: str) -> str:
    """The past-tense verb facts use for an event type ("purchase" -> "purchased")."""
    return _VERBS.get(event_type, event_type)


def _model_facts(
    store: EventStore,
    events: dict[str, list[Any]],
    model: Any,
    *,
    k: int,
    with_influence: bool,
    event_facts: int,
) -> list[Fact]:
    """Next-item facts from the user's latest events (read as :func:`model_history` reads them: the last
    ``max_len + 1``, so that deleting a window event lets the older one in, as it would for the model)."""
    from behaviorlm.causal.influence import deletion_influence

    request = model_history(model, events)
    if request.interactions.n_events == 0:
        return []
    recs = model.recommend_one(request.interactions, k=k)
    item_ids = [str(model.train_.item_ids[i]) for i in recs.items[0]]
    titles = item_info(store, set(item_ids))
    out = []
    for rank, item in enumerate(item_ids, start=1):
        info = titles.get(item, _NO_INFO)
        text = f"the recommender's #{rank} guess for the user's next item: item {item}"
        if info.title:
            text += f' "{info.title}"'
        if info.descriptor:
            text += f" ({info.descriptor})"
        out.append(
            Fact(
                f"N{rank}",
                "next_item",
                text,
                {"item_id": item, "title": info.title, "rank": rank, "categories": list(info.categories)},
            )
        )
    if with_influence:
        influence = deletion_influence(model, request.interactions, 0, target_item=int(recs.items[0, 0]))
        top_prob = math.exp(influence.base_log_prob)
        out[0] = Fact(
            "N1",
            "next_item",
            out[0].text + f", probability {_num(top_prob)}",
            {**out[0].values, "probability": round(top_prob, 2)},
        )
        reasons = [f for f in influence.top(3) if f["effect"] > 0]
        reason_info = item_info(store, {str(f["item_id"]) for f in reasons})
        for i, fact in enumerate(reasons):
            ago = int(fact["events_ago"])
            eid = f"E{ago}" if ago <= event_facts else None
            out.append(
                Fact(
                    f"C{i + 1}",
                    "influence",
                    f"reason #{i + 1} for guess N1: the user {verb(fact['event_type'])} item {fact['item_id']} "
                    f"({eid or 'an older event'}, {fact['time'][:16].replace('T', ' ')} UTC); "
                    f"without that event the recommender finds N1 less likely (log-probability lower by "
                    f"{_num(fact['effect'])})",
                    {
                        "item_id": fact["item_id"],
                        "title": reason_info.get(str(fact["item_id"]), _NO_INFO).title,
                        "event_type": fact["event_type"],
                        "date": str(fact["time"])[:10],
                        "event": eid,
                        "rank": i + 1,
                        "effect": round(fact["effect"], 2),
                        "events_ago": ago,
                    },
                )
            )
    return out


def _intent_facts(
    store: EventStore, events: dict[str, list[Any]], intent_model: Any | None, facts: list[Fact]
) -> tuple[tuple[str, ...], bool]:
    if intent_model is None:
        types = {t for (t,) in store.rows("SELECT DISTINCT event_type FROM events")}
        return (SHOPPING_INTENTS if types & _COMMERCE_TYPES else CONTENT_INTENTS), False
    from behaviorlm.data.purchase import store_now
    from behaviorlm.models.heads import read_intent

    history = model_history(intent_model, events)
    reading = read_intent(intent_model, history.interactions, now=lambda: store_now(store))
    proba = reading.probabilities
    classes = reading.classes
    for rank, i in enumerate(np.argsort(-proba), start=1):
        facts.append(
            Fact(
                f"I{rank}",
                "intent",
                f"intent model: P({classes[i]}) = {_num(round(float(proba[i]), 2))}",
                {"intent": classes[i], "probability": round(float(proba[i]), 2)},
            )
        )
    for n, reason in enumerate(reading.reasons, start=1):  # a purchase-propensity model's strongest features
        way = "more" if reason.log_odds > 0 else "less"
        facts.append(
            Fact(
                f"I{len(classes) + n}",
                "intent_reason",
                f"intent model reason: {reason.label}: {_num(round(reason.value, 2))}, which makes a purchase "
                f"{way} likely than for the average user",
                {
                    "feature": reason.feature,
                    "label": reason.label,
                    "value": round(reason.value, 2),
                    "log_odds": round(reason.log_odds, 2),
                },
            )
        )
    return tuple(classes), True


def segment_facts(summary: Any, *, total_users: int | None = None) -> FactSet:
    """The facts of one segment: a :class:`behaviorlm.profiling.segments.SegmentSummary`."""
    facts = [
        Fact(
            "S1",
            "segment",
            f"{summary.users} users, {100 * summary.share:.0f}% of all users",
            {"users": summary.users, "share_pct": round(100 * summary.share), "share": summary.share},
        ),
        Fact(
            "S2",
            "segment",
            f"median events per user: {_num(round(summary.median_events, 1))}; median days since the user's last "
            f"event: {_num(round(summary.median_recency_days, 1))}",
            {"median_events": summary.median_events, "median_recency_days": summary.median_recency_days},
        ),
    ]
    if not math.isnan(summary.median_monetary):
        facts.append(
            Fact(
                f"S{len(facts) + 1}",
                "segment",
                f"median per-user sum of event values: {_num(round(summary.median_monetary, 1))}",
                {"median_monetary": summary.median_monetary},
            )
        )
    if summary.conversion_rate is not None:
        facts.append(
            Fact(
                f"S{len(facts) + 1}",
                "segment",
                f"{100 * summary.conversion_rate:.0f}% of its users purchased",
                {"conversion_pct": round(100 * summary.conversion_rate)},
            )
        )
    for attribute, lift in summary.top_attributes:
        facts.append(
            Fact(
                f"S{len(facts) + 1}",
                "segment",
                f"attribute '{attribute}' is {_num(round(lift, 1))} times as common in its events as overall",
                {"attribute": attribute, "lift": round(lift, 1)},
            )
        )
    return FactSet(f"segment {summary.segment}", facts)
