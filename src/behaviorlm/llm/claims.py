"""Claims, not prose: what a language-model answer asserts, checked one by one against the facts.

The model does not write the sentences a user reads. Under constrained decoding it returns a list of
claims, each a triple ``(fact id, field, value)``: "fact E1's title is *Aristocats, The*", "fact P1's
``rate_events`` is 272", "fact E3 happened before E1", "segment fact S1's size is *small*". The verifier
(:func:`verify_claim`) compares each value with the structured values the fact carries
(:class:`behaviorlm.llm.facts.Fact`), by the field's type:

===========  ==============================================================================
type         a value passes when
===========  ==============================================================================
text         it equals the truth after normalisation (case, punctuation, "X, The" = "The X");
             a title may be shortened to whole words from its start: at least 12 characters and
             half of it (or 40 characters of a longer one)
member       it is one of the fact's list (a genre among the item's genres)
count        it is exactly the integer
number       it is a rounding of the true number (0.62 as 0.6 or 62%; 2.14 as 2.1, not 2)
date         it names the same day (or month, or year, at that precision), in any common format
size         small / medium / large agrees with the group's share of all users
order        ``before`` / ``after`` another event: the two timestamps are in that order
most         ``most_recent`` (the newest event), ``most_common_category`` (the top count)
identity     the user alias, an intent label, an event reference
===========  ==============================================================================

A claim whose fact or field does not exist is an invented claim and is dropped; a claim whose value is
wrong is corrected from the fact (the words say the fact's value, and the result records the
correction). :func:`render_claims` then writes the sentences from the verified claims, with every value
taken from the facts, so what a user reads is true of the data by construction. How well the verifier
catches false claims is measured by mutation testing (``benchmarks/run_llm_claims.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from behaviorlm.llm.facts import Fact, FactSet
from behaviorlm.llm.facts import verb as verb_of


class Claim(BaseModel):
    """One assertion: fact ``fact``'s ``field`` is ``value``."""

    fact: str
    field: str
    value: str = Field(max_length=2000)

    @property
    def fact_id(self) -> str:
        """The fact id as facts spell it (``" [e1]"`` -> ``"E1"``)."""
        return self.fact.strip().strip("[]").upper()


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str
    """``verified``, ``corrected`` (the field exists, the value was wrong) or ``dropped`` (no such fact or
    field, or a relation that is false)."""
    reason: str = ""
    truth: str = ""
    """The fact's value for the claimed field, as the rendered text states it."""

    @property
    def ok(self) -> bool:
        return self.status == "verified"


# ---------------------------------------------------------------------------------------------- parsing

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_MONTHS = {
    m: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for m in names
}


def normalize(text: str) -> str:
    """Case-, accent- and punctuation-free form; a trailing article moves to the front ("Aristocats,
    The" = "The Aristocats"); a trailing "(1995)" year is dropped."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode().casefold().strip()
    text = re.sub(r"\s*\(\d{4}\)\s*$", "", text)
    m = re.match(r"^(.*),\s*(the|a|an|le|la|les|il|el|der|die|das)$", text)
    if m:
        text = f"{m.group(2)} {m.group(1)}"
    return " ".join(re.findall(r"[a-z0-9]+", text))


def parse_number(value: str) -> tuple[float, int, bool] | None:
    """The first number in ``value``: (number, decimals written, written as a percentage)."""
    m = _NUMBER.search(str(value))
    if m is None:
        return None
    token = m.group(0).replace(",", "")
    try:
        number = float(token)
    except ValueError:
        return None
    decimals = len(token.split(".", 1)[1]) if "." in token else 0
    rest = str(value)[m.end() :].lstrip()
    percent = rest.startswith("%") or rest.casefold().startswith("percent")
    return number, decimals, percent


def parse_date(value: str) -> tuple[date, str] | None:
    """A day, month or year named by ``value``: (first day of it, precision ``day``/``month``/``year``).

    Accepts ISO dates and times (``1998-03-13``, ``1998-03-13 01:15 UTC``), ``1998/03/13``,
    ``March 13, 1998``, ``13 March 1998``, ``Mar 1998``, ``1998-03`` and ``1998``.
    """
    text = str(value).strip().casefold().replace(",", " ")
    if m := re.search(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b", text):
        return _day(int(m.group(1)), int(m.group(2)), int(m.group(3)), "day")
    words = re.findall(r"[a-z]+|\d+", text)
    month = next((_MONTHS[w] for w in words if w in _MONTHS), None)
    numbers = [int(w) for w in words if w.isdigit()]
    years = [n for n in numbers if 1000 <= n <= 9999]
    days = [n for n in numbers if 1 <= n <= 31]
    if month is not None and years:
        if days:
            return _day(years[0], month, days[0], "day")
        return _day(years[0], month, 1, "month")
    if m := re.fullmatch(r"\s*(\d{4})[-/](\d{1,2})\s*", text):
        return _day(int(m.group(1)), int(m.group(2)), 1, "month")
    if len(years) == 1 and len(numbers) == 1:
        return _day(years[0], 1, 1, "year")
    return None


def _day(year: int, month: int, day: int, precision: str) -> tuple[date, str] | None:
    try:
        return date(year, month, day), precision
    except ValueError:
        return None


def _same_date(value: str, truth: str) -> bool:
    parsed = parse_date(value)
    true_day = date.fromisoformat(str(truth)[:10])
    if parsed is None:
        return False
    day, precision = parsed
    if precision == "day":
        return day == true_day
    if precision == "month":
        return (day.year, day.month) == (true_day.year, true_day.month)
    return day.year == true_day.year


def _is_rounding(written: float, decimals: int, truth: float) -> bool:
    """Whether ``written`` (with ``decimals`` decimals) is ``truth`` rounded to that many decimals."""
    return abs(written - truth) <= 0.5 * 10.0**-decimals + 1e-9


def _number_ok(value: str, truth: float, *, fraction: bool) -> bool:
    """A number claim: a rounding of ``truth``; a fraction (``fraction``) may be written as a percentage."""
    parsed = parse_number(value)
    if parsed is None:
        return False
    number, decimals, percent = parsed
    if _is_rounding(number, decimals, truth):
        return not percent or not fraction
    return fraction and (percent or number > 1) and _is_rounding(number, decimals, 100 * truth)


def _percent_ok(value: str, truth_pct: float) -> bool:
    """A percentage claim (``truth_pct`` in percent, rounded to an integer by the fact): 99, 99% or 0.99."""
    parsed = parse_number(value)
    if parsed is None:
        return False
    number, decimals, percent = parsed
    if not percent and number <= 1 and decimals > 0:
        number, decimals = 100 * number, max(decimals - 2, 0)
    return abs(number - truth_pct) <= max(0.5 * 10.0**-decimals, 0.5) + 1e-9


def _count_ok(value: str, truth: int) -> bool:
    parsed = parse_number(value)
    return parsed is not None and parsed[1] == 0 and not parsed[2] and int(parsed[0]) == int(truth)


def _without_article(text: str) -> str:
    return re.sub(r"^(?:the|a|an|le|la|les|il|el|der|die|das) ", "", text)


def _text_ok(value: str, truth: str, *, prefix: bool = False) -> bool:
    a, b = normalize(value), normalize(truth)
    if not a or not b:
        return False
    if a == b or (prefix and _without_article(a) == _without_article(b)):
        return True
    if prefix:  # "Island of Dr. Moreau" is a fair way to write "Island of Dr. Moreau, The"
        a, b = _without_article(a), _without_article(b)
    return (
        prefix
        and len(a) >= 12
        and (2 * len(a) >= len(b) or len(a) >= 40)
        and b.startswith(a)
        and b[len(a) : len(a) + 1] in ("", " ")
    )


_ACTION_WORDS = {
    "view": ("view", "viewed", "views", "viewing", "pv", "looked at", "browsed", "visited"),
    "click": ("click", "clicked", "clicks"),
    "cart": ("cart", "carted", "added to cart", "add to cart", "added to the cart", "put in the cart"),
    "fav": ("fav", "favourited", "favorited", "favourite", "favorite", "saved"),
    "purchase": ("purchase", "purchased", "bought", "buy", "ordered", "order"),
    "buy": ("purchase", "purchased", "bought", "buy"),
    "pv": ("view", "viewed", "pv"),
    "search": ("search", "searched", "searched for"),
    "review": ("review", "reviewed", "wrote a review"),
    "rate": ("rate", "rated", "rating", "gave a rating", "scored"),
}


def _action_ok(value: str, event_type: str) -> bool:
    words = {normalize(w) for w in _ACTION_WORDS.get(event_type, ())} | {normalize(event_type)}
    return normalize(value) in words


_SIZE_WORDS = {
    "small": ("small", "tiny", "niche", "minority", "few", "little"),
    "medium": ("medium", "midsized", "moderate", "sizeable", "sizable", "average"),
    "large": ("large", "big", "majority", "huge", "most", "main", "dominant", "biggest"),
}
SIZE_RANGES = {"small": (0.0, 20.0), "medium": (10.0, 50.0), "large": (40.0, 100.0)}
"""Share of all users (percent) for which each size word is true; neighbours overlap so that a group of
15% may be called small or medium, but a group of 99% is never small."""


def size_word(value: str) -> str | None:
    """small / medium / large for a size phrase ("relatively small", "the majority"); None if it has no
    size word, or two that disagree."""
    words = normalize(value).replace("mid sized", "midsized").split()
    sizes = {size for size, names in _SIZE_WORDS.items() for w in words if w in {normalize(n) for n in names}}
    return sizes.pop() if len(sizes) == 1 else None


def _yes(value: str) -> bool | None:
    word = normalize(value)
    if word in ("yes", "true", "1", "y"):
        return True
    if word in ("no", "false", "0", "n"):
        return False
    return None


# ---------------------------------------------------------------------------------------- the fields


@dataclass(frozen=True)
class _Field:
    """A claimable field of a fact: how its value is checked and what the truth is."""

    kind: str
    truth: Any
    check: Callable[[str], bool]
    shown: str
    """The truth as words (for corrections and rendering)."""


def _show_number(x: float) -> str:
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _events_of(facts: FactSet) -> dict[str, Fact]:
    return {f.id: f for f in facts.facts if f.kind == "event"}


def _resolve_event(value: str, facts: FactSet) -> Fact | None:
    """The event fact ``value`` names: its id (``E3``) or its title."""
    events = _events_of(facts)
    token = str(value).strip().strip("[]").upper()
    if token in events:
        return events[token]
    matches = [f for f in events.values() if f.values.get("title") and _text_ok(value, f.values["title"])]
    return matches[0] if len(matches) == 1 else None


def fields_of(fact: Fact, facts: FactSet) -> dict[str, _Field]:
    """Every field a claim may state about ``fact``, with its check (see the module docstring)."""
    v = fact.values
    out: dict[str, _Field] = {}

    def text(name: str, truth: Any, *, prefix: bool = False) -> None:
        if truth not in (None, ""):
            out[name] = _Field("text", truth, lambda x: _text_ok(x, str(truth), prefix=prefix), str(truth))

    def count(name: str, truth: Any) -> None:
        if truth is not None:
            out[name] = _Field("count", int(truth), lambda x: _count_ok(x, int(truth)), _show_number(truth))

    def number(name: str, truth: Any, *, fraction: bool = False) -> None:
        if truth is not None:
            t = float(truth)
            out[name] = _Field("number", t, lambda x: _number_ok(x, t, fraction=fraction), _show_number(t))

    def percent(name: str, truth: Any) -> None:
        if truth is not None:
            t = float(truth)
            out[name] = _Field("percent", t, lambda x: _percent_ok(x, t), f"{_show_number(t)}%")

    def day(name: str, truth: Any) -> None:
        if truth:
            out[name] = _Field("date", str(truth), lambda x: _same_date(x, str(truth)), str(truth)[:10])

    def member(name: str, truth: list[str]) -> None:
        if truth:
            normal = {normalize(t) for t in truth}
            out[name] = _Field("member", list(truth), lambda x: normalize(x) in normal, ", ".join(truth))

    if fact.kind == "activity":
        text("user", v.get("user"))
        count("events", v.get("events"))
        count("active_days", v.get("active_days"))
        day("first_date", v.get("first_date"))
        day("last_date", v.get("last_date"))
        for event_type, n in (v.get("events_by_type") or {}).items():
            count(f"{event_type}_events", n)
    elif fact.kind == "categories":
        counts: dict[str, int] = v.get("counts") or {}
        top_n = max(counts.values(), default=0)
        top = [c for c, n in counts.items() if n == top_n]
        member("most_common_category", top)
        member("category", list(v.get("shown") or []))
        for name in v.get("shown") or []:
            count(f"{name}_events", counts[name])
    elif fact.kind in ("event", "next_item", "influence"):
        text("item", v.get("item_id"))
        text("title", v.get("title"), prefix=True)
        member("category", list(v.get("categories") or []))
        text("brand", v.get("brand"))
        for key, value in v.get("attributes", {}).items():
            text(key, value)
        if v.get("event_type"):
            et = str(v["event_type"])
            out["action"] = _Field("text", et, lambda x: _action_ok(x, et), et)
        day("date", v.get("date"))
        if fact.kind == "event":
            if v.get("value") is not None:
                number("rating" if v.get("event_type") in ("rate", "review") else "value", v["value"])
            _event_relations(fact, facts, out)
        if fact.kind == "next_item":
            count("rank", v.get("rank"))
            number("probability", v.get("probability"), fraction=True)
        if fact.kind == "influence":
            count("rank", v.get("rank"))
            number("effect", v.get("effect"))
            if v.get("event"):
                eid = str(v["event"])
                out["event"] = _Field("identity", eid, lambda x: x.strip().strip("[]").upper() == eid, eid)
    elif fact.kind == "path":
        text("item", v.get("via_item_id"))
        text("attribute", v.get("attribute"))
    elif fact.kind == "review":
        text("item", v.get("item_id"))
    elif fact.kind == "interest":
        text("keywords", v.get("keywords"))
        percent("share_pct", v.get("share_pct"))
    elif fact.kind == "anomaly":
        percent("percentile", v.get("percentile"))
    elif fact.kind == "intent":
        text("intent", v.get("intent"))
        number("probability", v.get("probability"), fraction=True)
    elif fact.kind == "intent_reason":
        text("feature", v.get("label"))
        number("value", v.get("value"))
    elif fact.kind == "segment":
        if "segment" in v:
            count("segment", v["segment"])
        count("users", v.get("users"))
        if "share_pct" in v:
            percent("share_pct", v["share_pct"])
            pct = float(v.get("share", v["share_pct"] / 100)) * 100
            fits = [s for s, (lo, hi) in SIZE_RANGES.items() if lo <= pct <= hi]
            out["size"] = _Field("size", fits, lambda x: size_word(x) in fits, fits[0] if fits else "")
        for key in ("median_events", "median_recency_days", "median_monetary", "lift"):
            number(key, v.get(key))
        percent("conversion_pct", v.get("conversion_pct"))
        text("attribute", v.get("attribute"))
    return out


def _event_relations(fact: Fact, facts: FactSet, out: dict[str, _Field]) -> None:
    """``most_recent``, ``before`` and ``after`` of an event fact, from the timestamps of all event facts."""
    ts = fact.values.get("ts")
    if ts is None:
        return
    events = _events_of(facts)
    newest = max(int(f.values["ts"]) for f in events.values() if f.values.get("ts") is not None)
    is_newest = int(ts) == newest

    def recent(x: str) -> bool:
        said = _yes(x)
        return said is not None and said == is_newest

    out["most_recent"] = _Field("most", is_newest, recent, "yes" if is_newest else "no")

    def order(direction: str) -> Callable[[str], bool]:
        def check(x: str) -> bool:
            other = _resolve_event(x, facts)
            if other is None or other.id == fact.id:
                return False
            a, b = int(ts), int(other.values["ts"])
            return a < b if direction == "before" else a > b

        return check

    later = [f.id for f in events.values() if int(f.values["ts"]) > int(ts)]
    earlier = [f.id for f in events.values() if int(f.values["ts"]) < int(ts)]
    out["before"] = _Field("order", later, order("before"), ", ".join(later))
    out["after"] = _Field("order", earlier, order("after"), ", ".join(earlier))


def claimable_fields(facts: FactSet) -> dict[str, list[str]]:
    """Fact id -> the fields a claim may state about it (for the decoding schema and the prompt)."""
    return {f.id: list(fields_of(f, facts)) for f in facts.facts if fields_of(f, facts)}


# ------------------------------------------------------------------------------------------ verifying


def verify_claim(claim: Claim, facts: FactSet) -> Verdict:
    """Whether ``claim`` is true of ``facts`` (see the module docstring for each field type)."""
    fact = facts.by_id().get(claim.fact_id)
    if fact is None:
        return Verdict(claim, "dropped", f"there is no fact {claim.fact}")
    fields = fields_of(fact, facts)
    name = claim.field.strip()
    spec = fields.get(name)
    if spec is None:
        return Verdict(claim, "dropped", f"fact {fact.id} says nothing about {name!r}")
    if spec.check(claim.value):
        return Verdict(claim, "verified", truth=spec.shown)
    if spec.kind in ("order", "most") or (spec.kind == "identity" and name == "event"):
        # A false relation has no single corrected value to state instead: say nothing.
        return Verdict(claim, "dropped", f"{fact.id} {name} {claim.value!r} is false", spec.shown)
    return Verdict(claim, "corrected", f"{fact.id} {name} is {spec.shown!r}, not {claim.value!r}", spec.shown)


@dataclass(frozen=True)
class ClaimReport:
    verdicts: list[Verdict]

    @property
    def verified(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.ok]

    @property
    def kept(self) -> list[Verdict]:
        """Verified and corrected claims, in order, without repeats: what the words are rendered from."""
        seen: set[tuple[str, str]] = set()
        out = []
        for v in self.verdicts:
            key = (v.claim.fact_id, v.claim.field.strip())
            if v.status != "dropped" and key not in seen:
                seen.add(key)
                out.append(v)
        return out

    @property
    def problems(self) -> list[str]:
        return [v.reason for v in self.verdicts if not v.ok]

    @property
    def all_verified(self) -> bool:
        return bool(self.verdicts) and all(v.ok for v in self.verdicts)


def verify_claims(claims: list[Claim], facts: FactSet) -> ClaimReport:
    return ClaimReport([verify_claim(c, facts) for c in claims])


# ------------------------------------------------------------------------------------------ rendering


def _quote(title: str) -> str:
    return f'"{title}"'


def _event_phrase(fact: Fact, fields: dict[str, str], facts: FactSet) -> str:
    v = fact.values
    what = _quote(v["title"]) if v.get("title") else f"item {v['item_id']}"
    verb = verb_of(str(v.get("event_type", ""))) if v.get("event_type") else "chose"
    phrase = f"the user {verb} {what}"
    if fact.kind == "event":
        extra = []
        if "category" in fields:
            extra.append(fields["category"])
        if "brand" in fields:
            extra.append(f"by {v['brand']}")
        if extra:
            phrase += f" ({'; '.join(extra)})"
        if ("date" in fields or "most_recent" in fields) and v.get("date"):
            phrase += f" on {v['date']}"
        if "rating" in fields or "value" in fields:
            phrase += f", {'rating' if 'rating' in fields else 'value'} {_show_number(float(v['value']))}"
        if fields.get("most_recent") == "yes":
            phrase += ", the most recent event"
        for direction in ("before", "after"):
            if direction in fields:
                other = _resolve_event(fields[direction], facts)
                if other is not None:
                    name = _quote(other.values["title"]) if other.values.get("title") else other.id
                    phrase += f", {direction} {name}"
    return phrase


def render_claims(verdicts: list[Verdict], facts: FactSet) -> list[str]:
    """One sentence per fact claimed, every value taken from the fact (``verdicts``: the kept ones)."""
    by_id = facts.by_id()
    grouped: dict[str, dict[str, str]] = {}
    for verdict in verdicts:
        fid = verdict.claim.fact_id
        value = verdict.claim.value if verdict.ok else verdict.truth
        grouped.setdefault(fid, {})[verdict.claim.field.strip()] = value
    sentences = []
    for fid, fields in grouped.items():
        fact = by_id[fid]
        v = fact.values
        if fact.kind == "event":
            sentence = _event_phrase(fact, fields, facts)
        elif fact.kind == "activity":
            parts = []
            if "events" in fields:
                parts.append(f"{_show_number(v['events'])} events in all")
            parts += [
                f"{_show_number(v['events_by_type'][k[: -len('_events')]])} {k[: -len('_events')]} events"
                for k in fields
                if k.endswith("_events") and k != "events"
            ]
            if "active_days" in fields:
                parts.append(f"{_show_number(v['active_days'])} active days")
            if "first_date" in fields or "last_date" in fields:
                parts.append(f"from {v['first_date']} to {v['last_date']}")
            sentence = "the user has " + ", ".join(parts) if parts else ""
        elif fact.kind == "categories":
            counts = v["counts"]
            named = [fields[k] for k in ("most_common_category", "category") if k in fields]
            named += [k[: -len("_events")] for k in fields if k.endswith("_events")]
            # A corrected member claim carries the true list ("Drama, Comedy"): state each of it.
            parts = [part for n in named for part in (n, *n.split(", "))]
            named = list(
                dict.fromkeys(c for part in parts for c in counts if normalize(c) == normalize(part))
            )
            lead = (
                "the most common category of the user's events is"
                if "most_common_category" in fields
                else ("the user's events include")
            )
            sentence = f"{lead} " + ", ".join(f"{c} ({counts[c]:,} of {v['events']:,} events)" for c in named)
        elif fact.kind == "next_item":
            what = _quote(v["title"]) if v.get("title") else f"item {v['item_id']}"
            sentence = f"the recommender's #{v['rank']} guess for the next item is {what}"
            if "probability" in fields and v.get("probability") is not None:
                sentence += f" (probability {_show_number(v['probability'])})"
        elif fact.kind == "influence":
            done = _event_phrase(fact, {}, facts).removeprefix("the user ")
            sentence = f"reason #{v['rank']} for the top guess: the user {done}"
            sentence += f" on {v['date']}" if v.get("date") else ""
        elif fact.kind == "intent":
            sentence = f"the intent model gives {v['intent']!r} probability {_show_number(v['probability'])}"
        elif fact.kind == "intent_reason":
            way = "more" if v["log_odds"] > 0 else "less"
            sentence = (
                f"the intent model reads {v['label']}: {_show_number(v['value'])}, which makes a purchase {way} "
                "likely than for the average user"
            )
        elif fact.kind == "interest":
            sentence = f"{v['share_pct']}% of the user's recent interest is in '{v['keywords']}'"
        elif fact.kind == "anomaly":
            sentence = f"the user's behaviour is more unusual than {v['percentile']}% of users"
        elif fact.kind == "review":
            sentence = f"the user reviewed item {v['item_id']}"
        elif fact.kind == "segment":
            sentence = _segment_sentence(v, fields)
        else:
            sentence = fact.text
        if sentence:
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
    return sentences


def _segment_sentence(v: dict[str, Any], fields: dict[str, str]) -> str:
    if "users" in v:
        size = (
            f"a {size_word(fields['size'])} group: " if "size" in fields and size_word(fields["size"]) else ""
        )
        return f"{size}{v['users']:,} users, {v['share_pct']}% of all users"
    if "median_events" in v:
        return (
            f"its users have a median of {_show_number(v['median_events'])} events and were last active a median "
            f"of {_show_number(v['median_recency_days'])} days before the data ends"
        )
    if "median_monetary" in v:
        return f"the median per-user sum of event values is {_show_number(round(v['median_monetary'], 1))}"
    if "conversion_pct" in v:
        return f"{v['conversion_pct']}% of its users purchased"
    if "attribute" in v:
        return f"'{v['attribute']}' is {_show_number(v['lift'])} times as common in its events as overall"
    if "segment" in v:
        return f"the user belongs to behaviour segment {v['segment']}"
    return ""
