"""Questions answered from the data: the language model chooses typed, read-only tools; code answers.

``ask`` does not hand the model a fixed list of facts and hope the answer is among them. The model reads
the question and returns, under constrained decoding, one or two tool calls from a small typed set
(:data:`TOOLS`): count events by type and period, first / last event, top categories, items in a
period, events on an item, rating statistics, the activity summary, the user's segment, the
recommender's next-item guesses, the events behind the top guess, the population effect of one
behaviour on another -- or ``refuse``. Each tool is a plain function over the event store (through
:class:`~behaviorlm.data.store.EventStore`'s read methods; no SQL from the model, arguments are
validated against the schema and the store's own vocabulary) and the models. Its result is a
:class:`~behaviorlm.llm.facts.Fact` with structured values, and the answer a user reads is rendered
from those values by code, so every number, title and date in it is the data's.

Questions about the person (contact details, address, name, age, payment, ...) are refused before any
model sees them (:func:`personal_topic`), and the question is PII-scrubbed before it is sent.
"""

from __future__ import annotations

import json
import math
import re
import time
from calendar import monthrange
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field

from behaviorlm.data.store import EventStore
from behaviorlm.llm.claims import parse_date
from behaviorlm.llm.client import LLMClient
from behaviorlm.llm.facts import Fact, has_times, item_info, user_alias, verb
from behaviorlm.llm.privacy import scrub_pii
from behaviorlm.llm.tasks import ask_json
from behaviorlm.models.window import latest_events, model_history

REFUSAL = "I don't know: the data about this user does not answer that."
PERSONAL_REFUSAL = (
    "I can't answer that: it asks for personal information, which behaviorlm does not hold or share."
)


@dataclass
class UserContext:
    """What the tools may read for one user."""

    store: EventStore
    user_id: str
    model: Any | None = None
    """A fitted sequence model (next-item guesses and their reasons)."""
    segment_of: dict[str, int] | None = None
    """Stored user id -> behaviour segment id."""
    effects: list[dict[str, Any]] = field(default_factory=list)
    """Population effect reports (``EffectReport.to_dict()``, e.g. ``behaviorlm effects --json``)."""
    intent_model: Any | None = None
    """A saved intent model (``purchase_propensity``, ``sequence_classifier``, ``next_event_type``): the
    ``intent`` tool's probabilities and, for ``purchase_propensity``, its reasons."""

    def event_types(self) -> list[str]:
        """The store's event types (read once per context: a scan of all events, asked for several times
        by every question)."""
        return list(self._event_types)

    @cached_property
    def _event_types(self) -> tuple[str, ...]:
        return tuple(t for (t,) in self.store.rows("SELECT DISTINCT event_type FROM events ORDER BY 1"))

    def names_an_item(self, text: str) -> bool:
        """Whether ``text`` is an item id or a whole item title of the catalogue."""
        return bool(
            self.store.scalar(
                "SELECT count(*) FROM items WHERE item_id = ? OR lower(title) = lower(?)",
                [text.strip(), text.strip()],
            )
        )

    def categories(self) -> set[str]:
        """Every category name of the user's items (genres, category path levels)."""
        items = {
            str(i)
            for (i,) in self.store.rows(
                "SELECT DISTINCT item_id FROM events WHERE user_id = ?", [self.user_id]
            )
        }
        return {c for info in item_info(self.store, items).values() for c in info.categories}


# ---------------------------------------------------------------------------------------------- periods


def period_range(period: str) -> tuple[int, int] | None:
    """``[start, end)`` unix seconds of a day, month or year named by ``period``; None for all time."""
    if not period or not period.strip() or period.strip().casefold() in ("all", "any", "ever", "all time"):
        return None
    parsed = parse_date(period)
    if parsed is None:
        raise ValueError(f"not a day, month or year: {period!r}")
    day, precision = parsed
    if precision == "day":
        end = day + timedelta(days=1)
    elif precision == "month":
        end = day.replace(day=monthrange(day.year, day.month)[1]) + timedelta(days=1)
    else:
        end = date(day.year + 1, 1, 1)
    start_ts = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return start_ts, int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp())


def _when(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d")


# ------------------------------------------------------------------------------------------------ tools


@dataclass(frozen=True)
class ToolResult:
    fact: Fact
    answer: str
    """The result in words, rendered from the fact's values."""


def _type_filter(ctx: UserContext, event_type: str) -> tuple[str, list[Any]]:
    if not event_type or event_type == "any":
        return "", []
    if event_type not in ctx.event_types():
        raise ValueError(f"unknown event type {event_type!r}; the store has {ctx.event_types()}")
    return " AND event_type = ?", [event_type]


def _period_filter(period: str) -> tuple[str, list[Any]]:
    span = period_range(period)
    if span is None:
        return "", []
    return " AND epoch(timestamp) >= ? AND epoch(timestamp) < ?", [span[0], span[1]]


def _what(event_type: str) -> str:
    return "events" if not event_type or event_type == "any" else f"{event_type} events"


def _in(period: str) -> str:
    return f" in {period.strip()}" if period and period_range(period) is not None else ""


def count_events(ctx: UserContext, *, event_type: str = "any", period: str = "") -> ToolResult:
    types_sql, types_args = _type_filter(ctx, event_type)
    period_sql, period_args = _period_filter(period)
    n = int(
        ctx.store.scalar(
            f"SELECT count(*) FROM events WHERE user_id = ?{types_sql}{period_sql}",
            [ctx.user_id, *types_args, *period_args],
        )
    )
    fact = Fact("Q", "tool", f"count_events: {n}", {"count": n, "event_type": event_type, "period": period})
    return ToolResult(fact, f"The user has {n:,} {_what(event_type)}{_in(period)}.")


def _one_event(ctx: UserContext, *, event_type: str, newest: bool) -> ToolResult:
    types_sql, types_args = _type_filter(ctx, event_type)
    order = "DESC" if newest else "ASC"
    rows = ctx.store.rows(
        f"SELECT item_id, event_type, epoch(timestamp)::BIGINT, value FROM events WHERE user_id = ?{types_sql} "
        f"ORDER BY timestamp {order}, ingest_seq {order} LIMIT 1",
        [ctx.user_id, *types_args],
    )
    which = "last" if newest else "first"
    if not rows:
        fact = Fact("Q", "tool", f"{which}_event: none", {"found": False})
        return ToolResult(fact, f"The user has no {_what(event_type)}.")
    item, etype, ts, value = rows[0]
    title = item_info(ctx.store, {str(item)}).get(str(item))
    name = f'"{title.title}" (item {item})' if title and title.title else f"item {item}"
    values = {"item_id": str(item), "title": title.title if title else "", "event_type": etype}
    text = f"The user's {which} {_what(event_type).removesuffix('s')}"
    if has_times(ts):
        values["date"] = _when(ts)
        text += f" was on {_when(ts)}: they {verb(etype)} {name}"
    else:  # a log without times: the order is known, the date is not
        text += f" (the log has no times): they {verb(etype)} {name}"
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        values["value"] = float(value)
        text += f" ({'rating' if etype in ('rate', 'review') else 'value'} {float(value):g})"
    return ToolResult(Fact("Q", "tool", f"{which}_event: {values}", values), text + ".")


def first_event(ctx: UserContext, *, event_type: str = "any") -> ToolResult:
    return _one_event(ctx, event_type=event_type, newest=False)


def last_event(ctx: UserContext, *, event_type: str = "any") -> ToolResult:
    return _one_event(ctx, event_type=event_type, newest=True)


def _category_counts(ctx: UserContext, *, event_type: str = "any", period: str = "") -> Counter[str]:
    types_sql, types_args = _type_filter(ctx, event_type)
    period_sql, period_args = _period_filter(period)
    rows = ctx.store.rows(
        f"SELECT item_id, count(*) FROM events WHERE user_id = ?{types_sql}{period_sql} GROUP BY item_id",
        [ctx.user_id, *types_args, *period_args],
    )
    infos = item_info(ctx.store, {str(i) for i, _ in rows})
    counts: Counter[str] = Counter()
    for item, n in rows:
        info = infos.get(str(item))
        for category in info.leaf_categories if info else ():
            counts[category] += int(n)
    return counts


def top_categories(ctx: UserContext, *, k: int = 3, event_type: str = "any") -> ToolResult:
    counts = _category_counts(ctx, event_type=event_type)
    top = counts.most_common(max(1, min(int(k), 10)))
    if not top:
        return ToolResult(
            Fact("Q", "tool", "top_categories: none", {"top": []}), "The user's items have no categories."
        )
    listed = ", ".join(f"{c} ({n:,})" for c, n in top)
    fact = Fact("Q", "tool", f"top_categories: {listed}", {"top": [c for c, _ in top], "counts": dict(top)})
    return ToolResult(fact, f"The categories the user's {_what(event_type)} fall in most are: {listed}.")


def category_count(ctx: UserContext, *, category: str, event_type: str = "any") -> ToolResult:
    counts = _category_counts(ctx, event_type=event_type)
    wanted = category.strip().casefold()
    match = next((c for c in counts if c.casefold() == wanted), None)
    n = counts[match] if match else 0
    name = match or category.strip()
    fact = Fact("Q", "tool", f"category_count: {name} {n}", {"category": name, "count": n})
    return ToolResult(fact, f"The user has {n:,} {_what(event_type)} on items in {name}.")


def items_in_period(ctx: UserContext, *, period: str, event_type: str = "any") -> ToolResult:
    if period_range(period) is None:
        raise ValueError("items_in_period needs a day, month or year")
    types_sql, types_args = _type_filter(ctx, event_type)
    period_sql, period_args = _period_filter(period)
    rows = ctx.store.rows(
        f"SELECT item_id FROM events WHERE user_id = ?{types_sql}{period_sql} ORDER BY timestamp, ingest_seq",
        [ctx.user_id, *types_args, *period_args],
    )
    items = list(dict.fromkeys(str(i) for (i,) in rows))
    infos = item_info(ctx.store, set(items))
    names = [infos[i].title if i in infos and infos[i].title else f"item {i}" for i in items]
    fact = Fact("Q", "tool", f"items_in_period: {len(items)}", {"items": items, "titles": names})
    if not items:
        return ToolResult(fact, f"The user has no {_what(event_type)}{_in(period)}.")
    shown = "; ".join(f'"{n}"' for n in names[:10]) + (
        f"; and {len(items) - 10} more" if len(items) > 10 else ""
    )
    return ToolResult(fact, f"{len(items):,} items{_in(period)}: {shown}.")


def item_events(ctx: UserContext, *, item: str) -> ToolResult:
    """The user's events on an item named by id or (part of) its title."""
    query = item.strip()
    rows = ctx.store.rows(
        "SELECT e.item_id, e.event_type, epoch(e.timestamp)::BIGINT, i.title FROM events e "
        "LEFT JOIN items i USING (item_id) WHERE e.user_id = ? ORDER BY e.timestamp, e.ingest_seq",
        [ctx.user_id],
    )
    wanted = query.casefold()
    hits = [
        r
        for r in rows
        if str(r[0]) == query or (r[3] and len(wanted) >= 3 and wanted in str(r[3]).casefold())
    ]
    values = {
        "item": query,
        "events": [{"item_id": str(r[0]), "event_type": r[1], "date": _when(r[2])} for r in hits],
    }
    fact = Fact("Q", "tool", f"item_events: {len(hits)}", values)
    if not hits:
        return ToolResult(fact, f"The user has no events on an item matching {query!r}.")
    first = hits[0]
    name = f'"{first[3]}"' if first[3] else f"item {first[0]}"
    listed = ", ".join(f"{verb(r[1])} on {_when(r[2])}" for r in hits[:5])
    return ToolResult(fact, f"Yes: the user {listed} ({name}).")


def rating_stats(ctx: UserContext, *, event_type: str = "any") -> ToolResult:
    types_sql, types_args = _type_filter(ctx, event_type)
    row = ctx.store.rows(
        f"SELECT count(value), avg(value), min(value), max(value) FROM events WHERE user_id = ?{types_sql} "
        "AND value IS NOT NULL AND NOT isnan(value)",
        [ctx.user_id, *types_args],
    )[0]
    n = int(row[0])
    if n == 0:
        return ToolResult(
            Fact("Q", "tool", "rating_stats: none", {"count": 0}),
            "The user's events carry no ratings or values.",
        )
    values = {"count": n, "mean": round(float(row[1]), 2), "min": float(row[2]), "max": float(row[3])}
    fact = Fact("Q", "tool", f"rating_stats: {values}", values)
    return ToolResult(
        fact,
        f"Over {n:,} rated events the user's average is {values['mean']:g} (lowest {values['min']:g}, "
        f"highest {values['max']:g}).",
    )


def activity_summary(ctx: UserContext) -> ToolResult:
    row = ctx.store.rows(
        "SELECT count(*), count(DISTINCT item_id), count(DISTINCT (epoch(timestamp)::BIGINT // 86400)), "
        "min(epoch(timestamp))::BIGINT, max(epoch(timestamp))::BIGINT FROM events WHERE user_id = ?",
        [ctx.user_id],
    )[0]
    values = {"events": int(row[0]), "distinct_items": int(row[1])}
    text = f"The user has {values['events']:,} events on {values['distinct_items']:,} distinct items"
    if has_times(row[4]):
        values.update(active_days=int(row[2]), first_date=_when(row[3]), last_date=_when(row[4]))
        text += f" over {values['active_days']:,} active days, from {values['first_date']} to {values['last_date']}"
    else:
        text += " (the log has no times, so no days or dates)"
    fact = Fact("Q", "tool", f"activity_summary: {values}", values)
    return ToolResult(fact, text + ".")


def user_segment(ctx: UserContext) -> ToolResult:
    if not ctx.segment_of or ctx.user_id not in ctx.segment_of:
        raise LookupError("no segmentation was given")
    segment = int(ctx.segment_of[ctx.user_id])
    size = sum(1 for s in ctx.segment_of.values() if s == segment)
    share = size / len(ctx.segment_of)
    values = {"segment": segment, "users": size, "share_pct": round(100 * share)}
    fact = Fact("Q", "tool", f"user_segment: {values}", values)
    return ToolResult(
        fact,
        f"The user is in behaviour segment {segment}, with {size:,} users ({100 * share:.0f}% of all users).",
    )


def next_items(ctx: UserContext, *, k: int = 3) -> ToolResult:
    model = _require_model(ctx)
    request = _request(ctx, model)
    recs = model.recommend_one(request.interactions, k=max(1, min(int(k), 10)))
    items = [str(model.train_.item_ids[i]) for i in recs.items[0]]
    infos = item_info(ctx.store, set(items))
    names = [infos[i].title if i in infos and infos[i].title else f"item {i}" for i in items]
    fact = Fact("Q", "tool", f"next_items: {items}", {"items": items, "titles": names})
    listed = "; ".join(f'#{r} "{n}"' for r, n in enumerate(names, start=1))
    return ToolResult(fact, f"The recommender's guesses for the user's next item: {listed}.")


def event_influence(ctx: UserContext) -> ToolResult:
    from behaviorlm.causal.influence import deletion_influence

    model = _require_model(ctx)
    request = _request(ctx, model)
    recs = model.recommend_one(request.interactions, k=1)
    influence = deletion_influence(model, request.interactions, 0, target_item=int(recs.items[0, 0]))
    top = [f for f in influence.top(3) if f["effect"] > 0]
    target = str(influence.target_item_id)
    infos = item_info(ctx.store, {target, *(str(f["item_id"]) for f in top)})
    title = lambda i: infos[i].title if i in infos and infos[i].title else f"item {i}"  # noqa: E731
    values = {
        "target": target,
        "reasons": [{"item_id": str(f["item_id"]), "effect": round(f["effect"], 2)} for f in top],
    }
    fact = Fact("Q", "tool", f"event_influence: {values}", values)
    if not top:
        return ToolResult(fact, f'No single past event makes the top guess "{title(target)}" more likely.')
    listed = "; ".join(
        f'{verb(f["event_type"])} "{title(str(f["item_id"]))}" on {str(f["time"])[:10]}' for f in top
    )
    return ToolResult(fact, f'The top guess "{title(target)}" rests most on these past events: {listed}.')


def behaviour_effect(ctx: UserContext, *, treatment: str, outcome: str) -> ToolResult:
    for report in ctx.effects:
        if report.get("treatment") == treatment and report.get("outcome") == outcome:
            estimates = {e["method"]: e for e in report.get("estimates", [])}
            chosen = estimates.get("aipw") or estimates.get("dml") or next(iter(estimates.values()), None)
            if chosen is None:
                break
            values = {k: chosen[k] for k in ("method", "effect", "ci_low", "ci_high", "n")}
            fact = Fact("Q", "tool", f"behaviour_effect: {values}", values)
            return ToolResult(
                fact,
                f"Across {chosen['n']:,} users, doing {treatment} changes the chance of a later {outcome} by "
                f"{100 * chosen['effect']:+.1f} points (95% CI {100 * chosen['ci_low']:+.1f} to "
                f"{100 * chosen['ci_high']:+.1f}; {chosen['method']}).",
            )
    raise LookupError(f"no effect estimate of {treatment} on {outcome} was given")


def intent(ctx: UserContext) -> ToolResult:
    """The intent model's probabilities for the user as of the store's latest event, most likely first,
    and (``purchase_propensity``) the features that move its answer most."""
    from behaviorlm.data.purchase import store_now
    from behaviorlm.models.heads import read_intent

    if ctx.intent_model is None:
        raise LookupError("no intent model was given")
    request = model_history(ctx.intent_model, latest_events(ctx.store, ctx.user_id, ctx.intent_model))
    if request.interactions.n_events == 0:
        raise LookupError("the intent model reads none of the user's events")
    reading = read_intent(ctx.intent_model, request.interactions, now=lambda: store_now(ctx.store))
    ranked = reading.ranked()
    values = {
        "probabilities": {c: round(p, 2) for c, p in ranked},
        "reasons": [
            {"feature": r.label, "value": round(r.value, 2), "log_odds": round(r.log_odds, 2)}
            for r in reading.reasons
        ],
    }
    fact = Fact("Q", "tool", f"intent: {values}", values)
    (top, p), *_ = ranked
    answer = f"The intent model gives '{top}' probability {p:.2f}"
    if reading.reasons:
        answer += "; it reads " + "; ".join(
            f"{r.label}: {round(r.value, 2):g} (makes a purchase {'more' if r.log_odds > 0 else 'less'} likely)"
            for r in reading.reasons
        )
    return ToolResult(fact, answer + ".")


def _require_model(ctx: UserContext) -> Any:
    if ctx.model is None:
        raise LookupError("no sequence model was given")
    return ctx.model


def _request(ctx: UserContext, model: Any) -> Any:
    return model_history(model, latest_events(ctx.store, ctx.user_id, model))


@dataclass(frozen=True)
class Tool:
    name: str
    function: Callable[..., ToolResult]
    description: str
    arguments: dict[str, str]
    """Argument name -> ``event_type``, ``period``, ``text``, ``k`` or ``outcome_type``."""


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "count_events",
            count_events,
            "how many events (of a type, in a day/month/year)",
            {"event_type": "event_type", "period": "period"},
        ),
        Tool(
            "first_event",
            first_event,
            "the user's first event (of a type): item and date",
            {"event_type": "event_type"},
        ),
        Tool(
            "last_event",
            last_event,
            "the user's latest event (of a type): item and date",
            {"event_type": "event_type"},
        ),
        Tool(
            "top_categories",
            top_categories,
            "the categories/genres of the user's events, most common first",
            {"k": "k", "event_type": "event_type"},
        ),
        Tool(
            "category_count",
            category_count,
            "how many of the user's events are in one category/genre",
            {"category": "text", "event_type": "event_type"},
        ),
        Tool(
            "items_in_period",
            items_in_period,
            "which items the user had events on in a day/month/year",
            {"period": "period", "event_type": "event_type"},
        ),
        Tool(
            "item_events",
            item_events,
            "whether and when the user had events on an item (id or title)",
            {"item": "text"},
        ),
        Tool(
            "rating_stats",
            rating_stats,
            "average, lowest and highest rating or value",
            {"event_type": "event_type"},
        ),
        Tool(
            "activity_summary",
            activity_summary,
            "events, distinct items, active days, first and last date",
            {},
        ),
        Tool("user_segment", user_segment, "the user's behaviour segment and its size", {}),
        Tool(
            "next_items",
            next_items,
            "what the user will probably do next: the recommender's guesses",
            {"k": "k"},
        ),
        Tool(
            "event_influence",
            event_influence,
            "why the recommender guesses that: the past events behind it",
            {},
        ),
        Tool(
            "intent",
            intent,
            "how likely the user is to buy (or do what the intent model predicts) soon, and why",
            {},
        ),
        Tool(
            "behaviour_effect",
            behaviour_effect,
            "population effect of one behaviour on a later one",
            {"treatment": "event_type", "outcome": "event_type"},
        ),
        Tool("refuse", lambda ctx: None, "the question is about something the data does not hold", {}),  # type: ignore[arg-type,return-value]
    )
}


def available_tools(ctx: UserContext) -> list[Tool]:
    """The tools that can answer for this context (no model: no guesses; no segments: no segment tool)."""
    out = []
    for tool in TOOLS.values():
        if tool.name in ("next_items", "event_influence") and ctx.model is None:
            continue
        if tool.name == "user_segment" and not ctx.segment_of:
            continue
        if tool.name == "behaviour_effect" and not ctx.effects:
            continue
        if tool.name == "intent" and ctx.intent_model is None:
            continue
        out.append(tool)
    return out


def tool_schema(
    ctx: UserContext, *, max_calls: int = 2, exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """JSON schema of ``{"calls": [...]}``: each call names an available tool (not in ``exclude``) with
    its typed arguments."""
    types = ["any", *ctx.event_types()]
    variants = []
    for tool in available_tools(ctx):
        if tool.name in exclude:
            continue
        props: dict[str, Any] = {"tool": {"type": "string", "enum": [tool.name]}}
        for name, kind in tool.arguments.items():
            if kind == "event_type":
                props[name] = {"type": "string", "enum": types if name == "event_type" else types[1:]}
            elif kind == "k":
                props[name] = {"type": "integer", "minimum": 1, "maximum": 10}
            else:
                props[name] = {"type": "string", "maxLength": 60}
        variants.append(
            {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
        )
    return {
        "type": "object",
        "properties": {
            "calls": {"type": "array", "items": {"anyOf": variants}, "minItems": 1, "maxItems": max_calls}
        },
        "required": ["calls"],
        "additionalProperties": False,
    }


_PERSONAL = re.compile(
    r"\b(e-?mail|phone|telephone|mobile number|(?:home |postal |street |ip |mailing )?address|"
    r"where (?:does|do|did) (?:the user|the customer|they|he|she) (?:live|work|come from)|zip ?code|"
    r"post ?code|(?:user's|customer's|their|his|her|real|full|first|last) name|name of the (?:user|customer)|"
    r"who is (?:the user|this user|the customer)|how old|age of|birthday|date of birth|born|gender|"
    r"religio\w*|ethnic\w*|nationality|passport|social security|ssn|credit card|card number|iban|"
    r"bank account|password|salary|income|political|sexual orientation|medical)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"[\"“”][^\"“”]{2,}[\"“”]")


def personal_topic(question: str) -> bool:
    """Whether ``question`` asks about the person rather than their behaviour (contact, identity,
    demographics, money, health): such questions are refused without asking any model."""
    return bool(_PERSONAL.search(_QUOTED.sub(" ", question)))


@dataclass
class AnswerResult:
    answer: str
    source: str
    """``tools`` (answered from tool results), ``refused`` or ``personal`` (refused before any model)."""
    calls: list[dict[str, Any]]
    """The tool calls the model made, each with its result or error."""
    latency_s: float
    model: str = ""
    facts: list[Fact] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    """The tools that fit the question (:func:`tool_fits`), among which the model chose."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "source": self.source,
            "candidates": self.candidates,
            "calls": self.calls,
            "latency_s": round(self.latency_s, 3),
            "model": self.model,
        }


_SYSTEM = (
    'You route questions about one user\'s recorded behaviour to tools. Reply with JSON {"calls": [...]}: '
    "one call; two only when the question asks two things. Copy a day, month or year from the question "
    "into period exactly as written; '' means all time. event_type is 'any' unless the question names a "
    "kind of event. If the tools cannot answer (opinions, feelings, reasons, facts about the person, the "
    "world outside this data), call refuse.\nTools:\n"
)
_EXAMPLES = (
    (
        "How often did the user view products on 2016-05-02?",
        "count_events",
        {"event_type": "view", "period": "2016-05-02"},
    ),
    ("Count all of this user's purchases.", "count_events", {"event_type": "purchase", "period": ""}),
    ("How many events does the user have in total?", "count_events", {"event_type": "any", "period": ""}),
    ("What was the first thing the user added to the cart?", "first_event", {"event_type": "cart"}),
    ("What did they do most recently?", "last_event", {"event_type": "any"}),
    ("Name the user's three favourite categories.", "top_categories", {"k": 3, "event_type": "any"}),
    (
        "Which kind of product does the user look at most often?",
        "top_categories",
        {"k": 1, "event_type": "view"},
    ),
    (
        "How many of the user's events are in the Garden category?",
        "category_count",
        {"category": "Garden", "event_type": "any"},
    ),
    (
        "What did the user buy in June 2016?",
        "items_in_period",
        {"period": "June 2016", "event_type": "purchase"},
    ),
    ("Did the user ever rate Fargo?", "item_events", {"item": "Fargo"}),
    ("What is the highest rating the user gave?", "rating_stats", {"event_type": "any"}),
    ("Since when has the user been active, and on how many days?", "activity_summary", {}),
    ("How many distinct products has the user touched?", "activity_summary", {}),
    ("Which segment does the user belong to?", "user_segment", {}),
    ("What will the user probably pick next?", "next_items", {"k": 3}),
    ("Why does the recommender suggest that?", "event_influence", {}),
    (
        "Does adding to the cart make people buy?",
        "behaviour_effect",
        {"treatment": "cart", "outcome": "purchase"},
    ),
    ("What is the user's favourite colour?", "refuse", {}),
    ("Why was the user unhappy with the delivery?", "refuse", {}),
)
"""Worked examples in the fixed system prompt (its prefix is cached between requests). Only examples
whose tools are available are shown, so the model is never shown a tool it may not call."""


def _system_prompt(ctx: UserContext) -> str:
    tools = available_tools(ctx)
    names = {t.name for t in tools}
    listed = "\n".join(f"- {t.name}({', '.join(t.arguments)}): {t.description}" for t in tools)
    examples = "\n".join(
        f"{question} -> {json.dumps({'calls': [{'tool': tool, **arguments}]})}"
        for question, tool, arguments in _EXAMPLES
        if tool in names
    )
    return f"{_SYSTEM}{listed}\nEvent types: {', '.join(ctx.event_types())}.\nExamples:\n{examples}"


_PERIOD_IN_TEXT = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{4}/\d{1,2}/\d{1,2}\b"
    r"|\b(?:\d{1,2}\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?(?:\s+\d{1,2})?,?\s+\d{4}\b"
    r"|\b(?:19|20)\d{2}\b",
    re.IGNORECASE,
)


_TYPE_WORDS = {
    "view": r"view\w*|look\w* at|browse\w*|pv|page views?",
    "click": r"click\w*",
    "cart": r"cart\w*|basket",
    "fav": r"fav\w*|favou?rit\w*|wish ?list|saved",
    "purchase": r"purchas\w*|buy\w*|bought|order\w*",
    "search": r"search\w*",
    "review": r"review\w*",
    "rate": r"rat(?:e|es|ed|ing|ings)\b",
}


def named_event_types(question: str, types: list[str] | tuple[str, ...]) -> list[str]:
    """The store's event types that ``question`` names ("favourites" -> ``fav``, "bought" -> ``purchase``)."""
    return [
        t for t in types if re.search(rf"\b(?:{_TYPE_WORDS.get(t, re.escape(t))})", question, re.IGNORECASE)
    ]


def ground_arguments(
    question: str, arguments: dict[str, Any], tool: Tool, *, types: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """The model's arguments, held to the question: a period must be one the question names (else the
    question's own period, or all time); an event type must be one the question names (else the one it
    names, or ``any``; ``types``: the store's); free text must occur in the question (else its quoted part).

    A small model copies values from its worked examples ("2016-05-02" for a question about March
    1998); arguments are facts about the question, so the question is their ground truth.
    """
    out = dict(arguments)
    periods = _PERIOD_IN_TEXT.findall(question)
    for name, kind in tool.arguments.items():
        value = str(out.get(name, "") or "")
        if kind == "period":
            said = parse_date(value) if value.strip() else None
            named = [parse_date(p) for p in periods]
            if said is not None and said in named:
                continue
            out[name] = periods[0] if periods else ""
        elif kind == "event_type" and name == "event_type":
            named = named_event_types(question, types)
            if value not in named:
                out[name] = named[0] if len(named) == 1 else "any"
        elif kind == "text" and value and value.casefold() not in question.casefold():
            quoted = _QUOTED.findall(question)
            out[name] = quoted[0].strip('"“”') if quoted else value
    return out


def hide_user_id(text: str, user_id: str) -> str:
    """``text`` with the stored user id replaced by the user's alias: everywhere as a whole word when the
    id is distinctive (4+ characters), else only where it follows "user" (a short id such as "1" is
    also a count, a rating or an item id)."""
    escaped = re.escape(user_id)
    pattern = rf"(?<![\w-]){escaped}(?![\w-])" if len(user_id) >= 4 else rf"(?<=\buser )(?:id )?#?{escaped}\b"
    return re.sub(pattern, user_alias(user_id), text, flags=re.IGNORECASE)


_ANCHORS: dict[str, tuple[str, ...]] = {
    "count_events": ("how many", "how often", "number of", "count", "times", "total"),
    "first_event": ("first", "earliest", "start", "began", "begin", "oldest", "show up", "join"),
    "last_event": ("last", "latest", "recent", "newest", "final"),
    "top_categories": ("genre", "categor", "kind of", "type of", "sort of"),
    "category_count": ("how many", "number of", "count"),
    "items_in_period": ("which", "what"),
    "item_events": ("ever", "item", '"', "“"),
    "rating_stats": ("average", "mean", "highest", "lowest", "best", "worst", "score", "stars", "rating"),
    "activity_summary": ("active", "days", "different", "distinct", "unique", "since", "how long", "span"),
    "user_segment": ("segment", "group", "cluster"),
    "next_items": ("next", "will", "recommend", "suggest", "likely", "predict", "probably"),
    "event_influence": ("why", "reason", "because", "explain", "behind"),
    "behaviour_effect": ("effect", "cause", "make", "lead", "impact", "increase", "influence", "affect"),
    "intent": ("chance", "likely", "probab", "buy", "purchas", "intent", "convert", "odds"),
}
"""Words a question must contain for a tool to be a candidate answer to it. Tool retrieval: the model
chooses among the candidates only (a 0.5B model choosing among all fourteen answered "What is their
favourite food?" with the first event, and "Which genre ... most?" with a count of Westerns)."""
_NOT_FOR: dict[str, tuple[str, ...]] = {
    "count_events": ("different", "distinct", "unique"),
    "items_in_period": ("how many", "genre", "categor"),
}
"""Words that rule a tool out: "how many different items" is not a count of events."""
_OPINION = re.compile(
    r"\b(think|thinks|feel|feels|felt|opinion|happy|unhappy|angry|like about|love|hate|enjoy|want|wants|"
    r"hope|dream|believe|prefer|intend|plan to|pets?|job|car|school|team|weather|breakfast|"
    r"colou?r|food|music|friends?|holiday|vacation|tall|language)\b",
    re.IGNORECASE,
)


COUNTED_NOUNS = frozenset(
    [
        "event",
        "events",
        "action",
        "actions",
        "interaction",
        "interactions",
        "item",
        "items",
        "product",
        "products",
        "movie",
        "movies",
        "film",
        "films",
        "title",
        "titles",
        "thing",
        "things",
        "view",
        "views",
        "click",
        "clicks",
        "purchase",
        "purchases",
        "buy",
        "buys",
        "order",
        "orders",
        "rating",
        "ratings",
        "review",
        "reviews",
        "favourite",
        "favourites",
        "favorite",
        "favorites",
        "fav",
        "favs",
        "cart",
        "carts",
        "add-to-cart",
        "day",
        "days",
        "week",
        "weeks",
        "month",
        "months",
        "genre",
        "genres",
        "category",
        "categories",
        "brand",
        "brands",
        "session",
        "sessions",
        "visit",
        "visits",
    ]
)
"""What a "how many ..." question can count in an event log: events and their kinds, items (by the words
item, product, movie, film, title, thing), days and other periods, categories and brands. A catalogue of
books or songs would add its own word for items here."""
_HOW_MANY = re.compile(
    r"\b(?:how many|number of)\s+(?:(?:different|distinct|unique|separate|individual)\s+)?([^?.,;]*)",
    re.IGNORECASE,
)
_BEHAVIOUR_VERB = re.compile(
    r"\b(view|viewed|click|clicked|buy|bought|purchas\w*|rate|rated|order|ordered|add|added|favou?rit\w*|"
    r"visit|visited|interact\w*|active|watch|watched|event|cart)\b",
    re.IGNORECASE,
)


def counts_something_else(question: str) -> bool:
    """Whether ``question`` asks "how many" / "the number of" something an event log does not count
    ("How many siblings …", "How many cups of coffee …", "How many times has the user been abroad?").

    The counted phrase must contain one of :data:`COUNTED_NOUNS` within its first three words ("How many
    Comedy movies …", "How many different days …"); "times" counts only when the question also names a
    behaviour ("How many times did the user buy …").
    """
    # A quoted title names items ('How many "Heat" has the user rated?').
    for phrase in _HOW_MANY.findall(_QUOTED.sub(" items ", question)):
        words = [w.strip("'\"“”").casefold() for w in phrase.split()[:3]]
        if any(w in COUNTED_NOUNS for w in words):
            continue
        if "times" in words and _BEHAVIOUR_VERB.search(question):
            continue
        return True
    return False


def asks_opinion(question: str) -> bool:
    """Whether ``question`` asks about the person's views or life (:data:`_OPINION`), outside any quoted
    title: 'Has the user rated "My Best Friend's Wedding"?' asks about a film, not about friends."""
    return bool(_OPINION.search(_QUOTED.sub(" ", question)))


def tool_fits(name: str, question: str) -> bool:
    """Whether tool ``name`` is a candidate for ``question`` (:data:`_ANCHORS`, :data:`_NOT_FOR`,
    :func:`counts_something_else`)."""
    text = question.casefold()
    if counts_something_else(question):
        return False
    if not any(a in text for a in _ANCHORS.get(name, ())) or any(w in text for w in _NOT_FOR.get(name, ())):
        return False
    if name in ("event_influence", "behaviour_effect", "intent"):
        return True
    return not asks_opinion(question) and not text.lstrip().startswith("why")


def call_problems(ctx: UserContext, question: str, tool: Tool, arguments: dict[str, Any]) -> list[str]:
    """Why a tool call cannot answer ``question`` (empty when it can): the question has none of the tool's
    anchor words, asks for an opinion or a reason outside the data, or an argument names a category or an
    item that the question does not."""
    text = question.casefold()
    problems = []
    if not tool_fits(tool.name, question):
        problems.append(f"{tool.name} does not answer this kind of question")
    if asks_opinion(question) and tool.name not in ("event_influence", "behaviour_effect", "intent"):
        problems.append("the question asks about the person's views or life, not their recorded behaviour")
    if text.lstrip().startswith("why") and tool.name not in ("event_influence", "behaviour_effect", "intent"):
        problems.append("the question asks for a reason the events do not record")
    for name, kind in tool.arguments.items():
        value = str(arguments.get(name, "") or "").strip()
        if kind == "text" and value and value.casefold() not in text:
            problems.append(f"{name} {value!r} is not in the question")
        if name == "category" and value and value.casefold() not in {c.casefold() for c in ctx.categories()}:
            problems.append(f"{value!r} is not a category in the data")
        if name == "item" and value and not ctx.names_an_item(value) and f'"{value}"' not in question:
            problems.append(f"{value!r} is not an item id or title in the data")
    return problems


MAX_ATTEMPTS = 4
"""Model calls per question at most: after a rejected plan the model is told why and the rejected tools
leave the schema, so each retry is a different choice (a retry costs ~0.5 s: the prompt prefix is cached)."""


_SECOND_QUESTION = re.compile(
    r",?\s+and\s+(?=(?:when|what|which|how|who|where|did|does|do|has|have|is|was|were)\b)", re.IGNORECASE
)


def split_question(question: str) -> list[str]:
    """A question that asks two things ("How many …, and when was …?") as two questions; else itself."""
    parts = [p.strip(" ,?") for p in _SECOND_QUESTION.split(question) if p.strip(" ,?")]
    return [f"{p}?" for p in parts] if len(parts) > 1 else [question]


def ask(client: LLMClient, ctx: UserContext, question: str) -> AnswerResult:
    """Answer ``question`` about ``ctx``'s user from tool results (see the module docstring).

    A question that asks two things is split in two (:func:`split_question`), each answered on its own:
    the 0.5B model made one call for "How many movies has this user rated, and when was their last
    rating?" every time. The model's calls are checked (:func:`call_problems`); a call that does not fit
    is reported back and its tool leaves the schema, and with no fitting call the question is refused.
    """
    start = time.perf_counter()
    if personal_topic(question):
        return AnswerResult(PERSONAL_REFUSAL, "personal", [], time.perf_counter() - start, client.name)
    parts = split_question(question)
    if len(parts) > 1:
        results = [_ask_one(client, ctx, part) for part in parts]
        answered = [r for r in results if r.source == "tools"]
        return AnswerResult(
            " ".join(r.answer for r in answered) if answered else REFUSAL,
            "tools" if answered else "refused",
            [c for r in results for c in r.calls],
            time.perf_counter() - start,
            client.name,
            [f for r in results for f in r.facts],
            candidates=sorted({c for r in results for c in r.candidates}),
        )
    return _ask_one(client, ctx, question)


def _ask_one(client: LLMClient, ctx: UserContext, question: str) -> AnswerResult:
    start = time.perf_counter()
    clean = hide_user_id(scrub_pii(question).text, ctx.user_id)
    messages = [
        {"role": "system", "content": _system_prompt(ctx)},
        {"role": "user", "content": clean},
    ]
    candidates = {t.name for t in available_tools(ctx) if t.name != "refuse" and tool_fits(t.name, clean)}
    if not candidates:
        # No tool answers this kind of question: nothing for the model to choose.
        return AnswerResult(REFUSAL, "refused", [], time.perf_counter() - start, client.name)
    messages[1]["content"] += f"\n(tools that fit: {', '.join(sorted(candidates))})"
    rejected_tools: set[str] = {t.name for t in available_tools(ctx)} - candidates - {"refuse"}
    schema = tool_schema(ctx, exclude=frozenset(rejected_tools))
    calls: list[dict[str, Any]] = []
    answers: list[str] = []
    facts: list[Fact] = []
    for attempt in range(MAX_ATTEMPTS):
        plan, _ = ask_json(client, messages, _Plan, schema)
        problems: list[str] = []
        refused = False
        for raw in plan.calls:
            name = str(raw.get("tool", ""))
            args = {k: v for k, v in raw.items() if k != "tool"}
            record: dict[str, Any] = {"tool": name, "arguments": args, "attempt": attempt + 1}
            calls.append(record)
            tool = TOOLS.get(name)
            if tool is None or name == "refuse" or tool not in available_tools(ctx):
                record["result"] = "refused"
                refused = True
                continue
            args = ground_arguments(clean, args, tool, types=ctx.event_types())
            record["arguments"] = args
            wrong = call_problems(ctx, clean, tool, args)
            if wrong:
                record["rejected"] = wrong
                problems += wrong
                rejected_tools.add(name)
                continue
            try:
                result = tool.function(ctx, **{k: args[k] for k in tool.arguments if k in args})
            except (ValueError, LookupError, TypeError) as e:
                record["error"] = str(e)
                problems.append(str(e))
                rejected_tools.add(name)
                continue
            record["result"] = result.fact.values
            facts.append(Fact(f"Q{len(facts) + 1}", "tool", result.fact.text, result.fact.values))
            answers.append(result.answer)
        if answers or refused or not problems:
            break
        messages = [
            *messages,
            {"role": "assistant", "content": json.dumps({"calls": plan.calls})},
            {
                "role": "user",
                "content": "Those calls cannot answer the question: "
                + "; ".join(dict.fromkeys(problems))
                + ". Choose other tools, or call refuse.",
            },
        ]
        # Constrained decoding keeps the model from choosing a rejected tool again (it would: at
        # temperature 0 the 0.5B model repeats its first choice word for word).
        schema = tool_schema(ctx, exclude=frozenset(rejected_tools))
    latency = time.perf_counter() - start
    chosen_from = sorted(candidates)
    if not answers:
        return AnswerResult(REFUSAL, "refused", calls, latency, client.name, candidates=chosen_from)
    text = " ".join(dict.fromkeys(answers))
    return AnswerResult(text, "tools", calls, latency, client.name, facts, candidates=chosen_from)


class _Plan(BaseModel):
    calls: list[dict[str, Any]] = Field(min_length=1, max_length=3)
