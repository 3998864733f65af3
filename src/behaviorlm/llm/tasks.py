"""What the LLM layer does with facts: explain an intent, describe a segment (answers: :mod:`.tools`).

The model's output is a list of claims (:mod:`.claims`), produced under constrained decoding whose
claims can only name a fact that exists and a field that fact has: a JSON schema as ``response_format``
on OpenAI-compatible servers (a server that cannot do structured output gets one repair round-trip
showing its validation error), and for the embedded model one claim per line under an llguidance
grammar that also holds each value to its field's shape (:func:`claim_lines_grammar`; a third of the
output tokens, which are most of an explanation's time on a CPU). Every claim is verified
against its fact; a wrong value is corrected from the fact, an invented fact, field or relation is
dropped, and the words a user reads are rendered from the kept claims with the facts' own values. When
no claim survives, the explanation falls back to the user's activity and latest event (``source``
``fallback``). ``first_try_grounded`` says whether every claim the model made was true as made, so the
raw model's accuracy is measured, not hidden.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from behaviorlm.llm.claims import (
    Claim,
    ClaimReport,
    claimable_fields,
    fields_of,
    normalize,
    render_claims,
    verify_claims,
)
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import Fact, FactSet, verb

_CLAIM_FIELDS = (
    "Fields: for events (E) title, category, date, rating, action, most_recent (yes/no), before/after "
    "(another event id); for P1 events, <type>_events, active_days, first_date, last_date; for P2 "
    "most_common_category; for guesses (N) title, probability; for reasons (C) title, date; for intent-model "
    "reasons (I) feature, value; for segment facts (S) users, share_pct, size (small/medium/large), "
    "attribute, lift, conversion_pct. Never write a value that is not in that fact."
)
_CLAIM_FORMAT = (
    "Reply with JSON. Each claim copies ONE value from ONE fact, exactly as the fact writes it: "
    '{"fact": "E1", "field": "title", "value": "<the title in fact E1>"}. ' + _CLAIM_FIELDS
)
"""How a server behind ``--llm-url`` is asked for claims (as a JSON object, ``response_format``)."""
_CLAIM_LINES = (
    "Reply with lines: first {header}, then one line per claim: a fact id, a field, a colon and ONE "
    'value copied exactly from that fact, text in double quotes, e.g. E1 title: "..." ' + _CLAIM_FIELDS
)
"""How the embedded model is asked for claims (lines under a grammar, :func:`claim_lines_grammar`): a
third of the output tokens of the same claims as JSON, and each output token is a full decoding step."""


class IntentExplanation(BaseModel):
    intent: str
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    """The intent model's probability of ``intent`` when there is an intent model (the language model
    is then not asked for it); else the language model's own confidence."""
    claims: list[Claim] = Field(min_length=1)
    text: str = ""
    """Rendered from the verified claims (never the model's own words)."""
    evidence: list[str] = Field(default_factory=list)
    """The fact ids the kept claims rest on."""


class SegmentDescription(BaseModel):
    name: str = Field(min_length=1, max_length=60)
    claims: list[Claim] = Field(min_length=1)
    text: str = ""
    evidence: list[str] = Field(default_factory=list)


T = TypeVar("T", bound=BaseModel)


@dataclass
class TaskResult(Generic[T]):
    answer: T
    grounded: bool
    """Whether every statement handed out is true of the facts (rendered from verified or corrected
    claims; always true unless a caller builds a result by hand)."""
    first_try_grounded: bool
    """Whether every claim the model made was true as made (before corrections and drops)."""
    source: str
    """``llm`` (rendered from the model's claims), ``fallback`` (no claim survived) or ``refused``."""
    attempts: int
    latency_s: float
    problems: list[str] = field(default_factory=list)
    """Why claims were corrected or dropped."""
    model: str = ""
    claims: list[dict[str, Any]] = field(default_factory=list)
    """Every claim the model made with its verdict (``verified`` / ``corrected`` / ``dropped``)."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """Replies that could not be used (invalid JSON), for diagnosis; not part of :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.answer.model_dump(),
            "grounded": self.grounded,
            "first_try_grounded": self.first_try_grounded,
            "source": self.source,
            "attempts": self.attempts,
            "latency_s": round(self.latency_s, 3),
            "problems": self.problems,
            "model": self.model,
            "claim_verdicts": self.claims,
        }


def claims_schema(
    facts: FactSet, *, min_items: int = 1, max_items: int = 3, shown: set[str] | None = None
) -> dict[str, Any]:
    """JSON schema of a claim list: each item names an existing fact (of ``shown``, when given) and one of
    that fact's fields."""
    variants = [
        {
            "type": "object",
            "properties": {
                "fact": {"type": "string", "enum": [fid]},
                "field": {"type": "string", "enum": names},
                "value": {"type": "string", "maxLength": 160},
            },
            "required": ["fact", "field", "value"],
            "additionalProperties": False,
        }
        for fid, names in claimable_fields(facts).items()
        if shown is None or fid in shown
    ]
    return {"type": "array", "items": {"anyOf": variants}, "minItems": min_items, "maxItems": max_items}


def _lark(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_QUOTED = r'/"[^"\n<>…]{1,120}…?"/'
_LINE_VALUES = {
    "number": r"/-?[0-9]{1,7}(\.[0-9]{1,3})?/",
    "percent": r"/[0-9]{1,3}(\.[0-9]{1,2})?%?/",
    "date": r"/[0-9]{4}-[0-9]{2}-[0-9]{2}/",
    "size": '("small" | "medium" | "large")',
    "most": '("yes" | "no")',
}
"""What a claim line's value may look like, by the kind of its field (:func:`.claims.fields_of`): the
grammar keeps the value to the field's shape (a date, a count, yes/no, text in quotes; a category is one
of the categories the prompt shows), so a small model cannot run past it ("Drama and Comedy", "25,1998")
into the next fact; whether it is the *right* value is the verifier's job."""


def _header_rule(name: str, spec: dict[str, Any]) -> str:
    if "enum" in spec:
        values = " | ".join(_lark(str(v)) for v in spec["enum"])
    elif spec.get("type") == "number":
        values = r"/(0(\.[0-9]{1,2})?|1(\.0{1,2})?)/"
    else:
        values = f"/[^\\n]{{1,{int(spec.get('maxLength', 60))}}}/"
    return f"{_lark(name + ': ')} ({values})"


def claim_lines_grammar(
    facts: FactSet,
    header: dict[str, Any],
    *,
    min_items: int = 2,
    max_items: int = 3,
    shown: set[str] | None = None,
    unnamed: tuple[str, ...] = (),
) -> str:
    """An llguidance grammar for the line format of :data:`_CLAIM_LINES`: one ``name: value`` line per
    ``header`` property (JSON-schema properties: an enum, a number in [0, 1] or a string), then
    ``min_items``..``max_items`` lines ``<fact id> <field>: <value>`` naming a fact (of ``shown``, when
    given), one of its fields (not those named in ``unnamed``) and a value of that field's shape."""
    events = [f.id for f in facts.facts if f.kind == "event"]
    event_ids = "(" + " | ".join(_lark(e) for e in events) + ")" if events else _QUOTED
    names: dict[str, None] = {}
    for fact in facts.facts:
        if shown is None or fact.id in shown:
            for key in ("shown", "leaf_categories", "categories"):
                names.update(dict.fromkeys(str(c) for c in fact.values.get(key) or []))
    # Sorted: the same facts give the same grammar in every process (some category lists come from sets).
    categories = "(" + " | ".join(_lark(c) for c in sorted(names)) + ")" if names else _QUOTED
    alternatives = []
    for fact in facts.facts:
        if shown is not None and fact.id not in shown:
            continue
        for name, spec in fields_of(fact, facts).items():
            if name in unnamed:
                continue
            if name == "intent":
                value = "(" + " | ".join(_lark(i) for i in facts.intents) + ")"
            elif spec.kind in ("order", "identity"):
                value = event_ids
            elif spec.kind == "member":
                value = categories
            elif spec.kind == "count":  # a digit more than the truth has: "3" then zeros is not a count
                value = f"/[0-9]{{1,{len(str(abs(int(spec.truth)))) + 1}}}/"
            else:
                value = _LINE_VALUES.get(spec.kind, _QUOTED)
            alternatives.append(f"{_lark(f'{fact.id} {name}: ')} {value}")
    if not alternatives:
        raise LLMError(f"no fact about {facts.subject} has a field a claim could state")
    lines = ['start: header "\\n" claim' + ' "\\n" claim' * (min_items - 1)]
    lines[0] += ' ("\\n" claim)?' * (max_items - min_items)
    lines.append("header: " + ' "\\n" '.join(_header_rule(n, spec) for n, spec in header.items()))
    lines.append("claim: " + " | ".join(alternatives))
    return "%llguidance {}\n" + "\n".join(lines) + "\n"


def parse_claim_lines(text: str, header: dict[str, Any]) -> dict[str, Any]:
    """The object a line-format reply (:func:`claim_lines_grammar`) stands for: the header values and the
    claims, in the shape of the JSON the same task asks a remote server for."""
    lines = text.strip().splitlines()
    if len(lines) < len(header):
        raise ValueError(f"the reply has {len(lines)} lines, fewer than the {len(header)} header values")
    out: dict[str, Any] = {"claims": []}
    for (name, spec), line in zip(header.items(), lines, strict=False):
        value = line.removeprefix(f"{name}: ").strip()
        out[name] = float(value) if spec.get("type") == "number" else value
    for line in lines[len(header) :]:
        key, sep, value = line.partition(": ")
        if not sep:
            raise ValueError(f"the line {line!r} has no ': '")
        fact, _, field_name = key.partition(" ")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out["claims"].append({"fact": fact, "field": field_name, "value": value})
    return out


def _object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _handed_out(
    answer: T,
    report: ClaimReport,
    problems: list[str],
    *,
    source: str,
    calls: int,
    started: float,
    model: str,
) -> TaskResult[T]:
    """The task's result: ``answer`` rendered from kept claims, so grounded; first try only if every claim
    (and the intent/name) was right as made."""
    return TaskResult(
        answer=answer,
        grounded=True,
        first_try_grounded=not problems and report.all_verified,
        source=source,
        attempts=calls,
        latency_s=time.perf_counter() - started,
        problems=problems,
        model=model,
        claims=_verdicts(report),
    )


def _verdicts(report: ClaimReport) -> list[dict[str, Any]]:
    return [
        {**v.claim.model_dump(), "status": v.status, "reason": v.reason, "truth": v.truth}
        for v in report.verdicts
    ]


def ask_json(
    client: LLMClient, messages: list[dict[str, str]], model: type[T], schema: dict[str, Any]
) -> tuple[T, int]:
    """The model's reply parsed into ``model``; one repair round-trip if it is not valid JSON of that shape."""
    reply = client.chat(messages, json_schema=schema)
    calls = 1
    try:
        return model.model_validate(_loads(reply.text)), calls
    except (ValueError, ValidationError) as e:
        error = (
            str(e).splitlines()[0]
            if isinstance(e, ValueError) and not isinstance(e, ValidationError)
            else str(e)
        )
    repair = [
        *messages,
        {"role": "assistant", "content": reply.text},
        {
            "role": "user",
            "content": f"That reply is not valid: {error[:400]}. Reply again with only a JSON object "
            f"matching this schema: {json.dumps(schema)}",
        },
    ]
    reply = client.chat(repair, json_schema=schema)
    calls += 1
    try:
        return model.model_validate(_loads(reply.text)), calls
    except (ValueError, ValidationError) as e:
        raise LLMError(f"the model did not produce valid JSON after a repair retry: {e}") from e


def _loads(text: str) -> Any:
    """JSON from a reply, tolerating a Markdown code fence around it (common without constrained output)."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else text
        text = text.rsplit("```", 1)[0]
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end < start:
        raise ValueError(f"no JSON object in the reply: {text[:120]!r}")
    return json.loads(text[start : end + 1])


_EXPLANATION_FACTS = {
    "activity": 1,
    "categories": 1,
    "event": 4,
    "next_item": 3,
    "influence": 3,
    "intent": 9,
    "intent_reason": 3,
    "segment": 1,
    "path": 2,
}
"""How many facts of each kind an explanation's prompt shows. Prompt tokens are most of an explanation's
time on a CPU (25 ms each on one core, against 60 ms per generated token); reviews, interest topics,
the anomaly percentile and events beyond the latest five rarely carry an intent."""


def explanation_facts(facts: FactSet) -> set[str]:
    """The ids of the facts an intent explanation's prompt shows (:data:`_EXPLANATION_FACTS`)."""
    seen: Counter[str] = Counter()
    shown = set()
    for fact in facts.facts:
        seen[fact.kind] += 1
        if seen[fact.kind] <= _EXPLANATION_FACTS.get(fact.kind, 0):
            shown.add(fact.id)
    return shown


def _claims_task(
    client: LLMClient,
    facts: FactSet,
    system: str,
    model: type[T],
    header: dict[str, Any],
    *,
    shown: set[str] | None = None,
    claims: tuple[int, int] = (2, 3),
    name_subject: bool = True,
) -> tuple[T, ClaimReport, int]:
    """Ask for ``model`` (the ``header`` properties and a ``claims`` list) and verify its claims against all
    ``facts`` (the prompt shows the ``shown`` ones, all by default).

    ``system`` ends with ``{format}``, filled with how to write the reply: a server behind ``--llm-url``
    returns a JSON object under ``response_format``; the embedded model writes lines under a grammar
    (:func:`claim_lines_grammar`), which takes a third of the output tokens: ``claims`` bounds their
    number there. Without ``name_subject`` the prompt does not name the subject (a user's alias is a dozen
    prompt tokens that no explanation needs), and no claim may state it."""
    prompt = prompt_lines(facts, shown)
    about = f" about {facts.subject}" if name_subject else ""
    user = {"role": "user", "content": f"Facts{about}:\n{prompt}"}
    if client.remote:
        schema = _object_schema({**header, "claims": claims_schema(facts, shown=shown)})
        # replace, not str.format: an intent label in the system text may hold braces.
        messages = [{"role": "system", "content": system.replace("{format}", _CLAIM_FORMAT)}, user]
        answer, calls = ask_json(client, messages, model, schema)
    else:
        head = ", ".join(f"{name}: ..." for name in header)
        messages = [
            {"role": "system", "content": system.replace("{format}", _CLAIM_LINES.format(header=head))},
            user,
        ]
        grammar = claim_lines_grammar(
            facts,
            header,
            shown=shown,
            min_items=claims[0],
            max_items=claims[1],
            unnamed=() if name_subject else ("user",),
        )
        reply, calls = client.chat(messages, grammar=grammar), 1
        try:
            answer = model.model_validate(parse_claim_lines(reply.text, header))
        except (ValueError, ValidationError) as e:  # the grammar rules this out; say so if it happens
            raise LLMError(f"the embedded model's reply does not parse: {e}: {reply.text[:200]!r}") from e
    return answer, verify_claims(list(answer.claims), facts), calls  # type: ignore[attr-defined]


def prompt_lines(facts: FactSet, shown: set[str] | None = None) -> str:
    """The facts (the ``shown`` ones, all by default) as the model reads them, one ``[id] ...`` line each.
    An event on the same day as the event line above it says "same day" instead of the date again: a
    date is ten prompt tokens (one per digit and dash)."""
    lines, day = [], None
    for fact in facts.facts:
        if shown is not None and fact.id not in shown:
            continue
        line = prompt_line(fact)
        if fact.kind == "event" and "date" in fact.values:
            date = str(fact.values["date"])
            if date == day:
                line = "same day" + line[len(date) :]
            day = date
        lines.append(f"[{fact.id}] {line}")
    return "\n".join(lines)


def short_title(title: str, *, keep: int = 40) -> str:
    """``title`` cut after the first whole word that makes it at least ``keep`` characters, with "…": the
    verifier accepts such a prefix as the title (:mod:`.claims`), the rendered text states the whole one,
    and long product titles ("100% Pure Cosmetics - Organic Coffee Bean Eye Cream, 1 fl oz cream") were a
    third of a Beauty prompt's tokens and of the copied claims."""
    if len(normalize(title)) <= keep + 8:
        return title
    cut = title.find(" ", keep)
    while cut != -1 and len(normalize(title[:cut])) < keep:  # as the verifier counts: without punctuation
        cut = title.find(" ", cut + 1)
    return title if cut == -1 else title[:cut].rstrip(" ,;:-") + "…"


def prompt_line(fact: Fact) -> str:
    """A fact as the model reads it: the values a claim may state, without what no claim can use (the
    time of day, ``UTC``, anomaly feature names). A third fewer prompt tokens than :attr:`Fact.text`,
    and prompt tokens are most of an explanation's time on a CPU."""
    v = fact.values
    if fact.kind == "event" and "ts" in v:
        what = f'"{short_title(str(v["title"]))}"' if v.get("title") else f"item {v['item_id']}"
        # Without times (a sequence log) the event's place in the order is all there is to say.
        when = v["date"] if "date" in v else fact.text.split(":", 1)[0]
        line = f"{when} {verb(str(v['event_type']))} {what}"
        # The item's genres, or the last level of its category path ("Brushes", not "Beauty, Hair Care,
        # Styling Tools, Brushes"): the other levels cost prompt tokens and say little about intent.
        shown = v.get("leaf_categories") or v.get("categories") or []
        if shown:
            line += f" ({', '.join(shown[:4])})"
        if v.get("value") is not None:
            line += f", {'rating' if v['event_type'] in ('rate', 'review') else 'value'} {v['value']:g}"
        return line
    if fact.kind == "anomaly":
        return f"behaviour more unusual than {v['percentile']}% of users"
    if fact.kind == "intent_reason":
        return f"{v['label']}: {v['value']:g} (makes a purchase {'more' if v['log_odds'] > 0 else 'less'} likely)"
    if fact.kind == "activity" and v.get("events_by_type"):
        by_type = ", ".join(f"{t} {n}" for t, n in v["events_by_type"].items())
        line = f"{v['events']} events ({by_type})"
        if "first_date" not in v:
            return line + " in order; the log has no times"
        days = v["active_days"]
        span = (
            v["first_date"] if v["first_date"] == v["last_date"] else f"{v['first_date']} to {v['last_date']}"
        )
        return f"{line} on {days} active day{'s' if days != 1 else ''}, {span}"
    if fact.kind == "categories" and v.get("shown"):
        # Worded as the claim's field is named: "top categories: Thriller 13, Action 10" had the model
        # name a runner-up as the most common category in 14 of 40 explanations.
        first, *rest = v["shown"]
        line = f"most_common_category: {first} ({v['counts'][first]} of {v['events']} events)"
        counts = v["counts"]
        return line + ("; then " + ", ".join(f"{c} {counts[c]}" for c in rest) if rest else "")
    return fact.text


def explain_intent(client: LLMClient, facts: FactSet) -> TaskResult[IntentExplanation]:
    """The user's likely intent, a confidence, and 1-4 verified claims from the facts that support it."""
    start = time.perf_counter()
    shown = explanation_facts(facts)
    # With an intent model, code states its most likely intent and that probability: the language model
    # only finds the facts that support it. Left to pick, the embedded model named a 0.29 class over a 0.71
    # one on the Taobao slice, and the answer then said "likely" of the less likely intent.
    model_p = (
        {f.values["intent"]: f.values["probability"] for f in facts.of_kind("intent")}
        if facts.intent_from_model
        else {}
    )
    allowed = [max(model_p, key=model_p.__getitem__)] if model_p else list(facts.intents)
    if model_p:  # code states the probability; the claims are to say why
        shown -= {f.id for f in facts.of_kind("intent")}
    labels = ", ".join(allowed)
    system = (
        "You explain what an online user is probably trying to do, for a product analyst. "
        + (
            f"The intent model's most likely intent is {labels}: give it as the intent, "
            if model_p
            else f"Give the intent (one of: {labels}), your confidence between 0 and 1, "
        )
        + "and 2 claims from the facts that show why: "
        + ("the intent model's reasons, " if facts.of_kind("intent_reason") else "")
        + "the latest events, the activity, the most common category, the recommender's guesses and their "
        "reasons. {format}"
    )
    # With an intent model the confidence is its probability, copied by code: asking the language model
    # to copy it cost ~7 output tokens (a quarter of a second) for a number that was then replaced.
    confidence_schema = (
        {} if facts.intent_from_model else {"confidence": {"type": "number", "minimum": 0, "maximum": 1}}
    )
    header = {"intent": {"type": "string", "enum": allowed}, **confidence_schema}
    answer, report, calls = _claims_task(
        client, facts, system, IntentExplanation, header, shown=shown, claims=(2, 2), name_subject=False
    )
    problems = list(report.problems)
    intent, confidence = answer.intent, answer.confidence
    if intent not in allowed:
        problems.append(f"intent {intent!r} is not one of {allowed}")
        intent = allowed[0]
    if model_p:
        confidence = float(model_p[intent])
    kept = report.kept
    source = "llm"
    if not kept:
        fallback = [Claim(fact=f.id, field=name, value="") for f, name in _fallback_fields(facts)]
        kept = verify_claims(fallback, facts).kept
        source = "fallback"
    who = "intent-model probability" if facts.intent_from_model else "the language model's confidence"
    text = f"Likely intent: {intent} ({who} {confidence:.2f}). " + " ".join(render_claims(kept, facts))
    evidence = list(dict.fromkeys(v.claim.fact_id for v in kept))
    handed = IntentExplanation(
        intent=intent, confidence=confidence, claims=[v.claim for v in kept], text=text, evidence=evidence
    )
    return _handed_out(handed, report, problems, source=source, calls=calls, started=start, model=client.name)


def _fallback_fields(facts: FactSet) -> list[tuple[Any, str]]:
    """What an explanation says when no model claim survives: the activity and the latest event."""
    by_id = facts.by_id()
    out = []
    if "P1" in by_id:
        out.append((by_id["P1"], "events"))
    if "E1" in by_id:
        out += [(by_id["E1"], "title"), (by_id["E1"], "date")]
    return out


_NAME_WORDS = frozenset(
    [
        "segment",
        "group",
        "users",
        "customers",
        "shoppers",
        "buyers",
        "viewers",
        "raters",
        "watchers",
        "fans",
        "lovers",
        "enthusiasts",
        "audience",
        "cohort",
        "crowd",
        "members",
        "of",
        "and",
        "with",
        "the",
        "a",
        "for",
        "in",
        "on",
    ]
)
"""Words a segment name may use beyond the words of its facts (which carry every adjective a name could
truthfully use: a name such as "small US shoppers" has words no fact supports)."""


def segment_name_problems(name: str, facts: FactSet) -> list[str]:
    """Words of a segment name that neither its facts nor the generic nouns of :data:`_NAME_WORDS` contain."""
    fact_words = set(re.findall(r"[a-z0-9]+", " ".join(f.text for f in facts.facts).casefold()))
    for f in facts.facts:
        for value in f.values.values():
            fact_words |= set(re.findall(r"[a-z0-9]+", str(value).casefold()))
    unsupported = [w for w in re.findall(r"[a-z0-9]+", name.casefold()) if w not in fact_words | _NAME_WORDS]
    return [f"the name's word {w!r} is not in the facts" for w in dict.fromkeys(unsupported)]


def describe_segment(client: LLMClient, facts: FactSet) -> TaskResult[SegmentDescription]:
    """A short name and 1-4 verified claims for a segment (:func:`.facts.segment_facts`)."""
    start = time.perf_counter()
    system = (
        "You describe a customer segment for a marketing team. Give a short name (at most five "
        "words, built from words in the facts) and 2 or 3 claims from the facts on what sets it apart: "
        "its size, activity and over-represented attributes. {format}"
    )
    header = {"name": {"type": "string", "maxLength": 48}}
    answer, report, calls = _claims_task(client, facts, system, SegmentDescription, header)
    problems = list(report.problems) + segment_name_problems(answer.name, facts)
    name = (
        answer.name.strip()
        if not segment_name_problems(answer.name, facts) and answer.name.strip()
        else (facts.subject)
    )
    kept = report.kept
    source = "llm"
    if not kept:
        kept = verify_claims([Claim(fact="S1", field="users", value="")], facts).kept
        source = "fallback"
    text = " ".join(render_claims(kept, facts))
    evidence = list(dict.fromkeys(v.claim.fact_id for v in kept))
    handed = SegmentDescription(name=name, claims=[v.claim for v in kept], text=text, evidence=evidence)
    return _handed_out(handed, report, problems, source=source, calls=calls, started=start, model=client.name)
