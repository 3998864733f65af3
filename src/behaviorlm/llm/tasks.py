"""What the LLM layer does with facts: explain an intent, describe a segment (answers: :mod:`.tools`).

The model's output is a list of claims (:mod:`.claims`), produced under constrained decoding: a JSON
schema whose claim items can only name a fact that exists and a field that fact has (``response_format``
on OpenAI-compatible servers, a llama.cpp grammar for the embedded model; a server that cannot do
structured output gets one repair round-trip showing its validation error). Every claim is verified
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

from behaviorlm.llm.claims import Claim, ClaimReport, claimable_fields, render_claims, verify_claims
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import Fact, FactSet, verb

_CLAIM_FORMAT = (
    'Each claim copies ONE value from ONE fact, exactly as the fact writes it: {"fact": "E1", "field": '
    '"title", "value": "<the title in fact E1>"}. Fields: for events (E) title, category, date, rating, '
    "action, most_recent (yes/no), before/after (another event id); for P1 events, <type>_events, "
    "active_days, first_date, last_date; for P2 most_common_category; for guesses (N) title, probability; "
    "for reasons (C) title, date; for segment facts (S) users, share_pct, size (small/medium/large), "
    "attribute, lift, conversion_pct. Never write a value that is not in that fact."
)


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
    "event": 5,
    "next_item": 3,
    "influence": 3,
    "intent": 9,
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
    schema: dict[str, Any],
    *,
    shown: set[str] | None = None,
) -> tuple[T, ClaimReport, int]:
    """Ask for ``model`` (a JSON object with a ``claims`` list) and verify its claims against all ``facts``
    (the prompt shows the ``shown`` ones, all by default)."""
    prompt = "\n".join(f"[{f.id}] {prompt_line(f)}" for f in facts.facts if shown is None or f.id in shown)
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Facts about {facts.subject}:\n{prompt}"},
    ]
    answer, calls = ask_json(client, messages, model, schema)
    return answer, verify_claims(list(answer.claims), facts), calls  # type: ignore[attr-defined]


def prompt_line(fact: Fact) -> str:
    """A fact as the model reads it: the values a claim may state, without what no claim can use (the
    time of day, ``UTC``, anomaly feature names). A third fewer prompt tokens than :attr:`Fact.text`,
    and prompt tokens are most of an explanation's time on a CPU."""
    v = fact.values
    if fact.kind == "event" and "ts" in v:
        what = f'"{v["title"]}"' if v.get("title") else f"item {v['item_id']}"
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
    return fact.text


def explain_intent(client: LLMClient, facts: FactSet) -> TaskResult[IntentExplanation]:
    """The user's likely intent, a confidence, and 1-4 verified claims from the facts that support it."""
    start = time.perf_counter()
    labels = ", ".join(facts.intents)
    shown = explanation_facts(facts)
    system = (
        "You explain what an online user is probably trying to do, for a product analyst. Reply with JSON: "
        f"the intent (one of: {labels}), "
        + ("" if facts.intent_from_model else "your confidence between 0 and 1, ")
        + "and 2 or 3 claims from the facts that show why: the latest events, the activity, the most "
        f"common category, the recommender's guesses and their reasons. {_CLAIM_FORMAT}"
    )
    # With an intent model the confidence is its probability, copied by code: asking the language model
    # to copy it cost ~7 output tokens (a quarter of a second) for a number that was then replaced.
    confidence_schema = (
        {} if facts.intent_from_model else {"confidence": {"type": "number", "minimum": 0, "maximum": 1}}
    )
    schema = _object_schema(
        {
            "intent": {"type": "string", "enum": list(facts.intents)},
            **confidence_schema,
            "claims": claims_schema(facts, shown=shown),
        }
    )
    answer, report, calls = _claims_task(client, facts, system, IntentExplanation, schema, shown=shown)
    problems = list(report.problems)
    intent, confidence = answer.intent, answer.confidence
    if intent not in facts.intents:
        problems.append(f"intent {intent!r} is not one of {list(facts.intents)}")
        intent = facts.intents[0]
    if facts.intent_from_model:
        model_p = {f.values["intent"]: f.values["probability"] for f in facts.of_kind("intent")}
        confidence = float(model_p.get(intent, 0.0))
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
        "You describe a customer segment for a marketing team. Reply with JSON: a short name (at most five "
        "words, built from words in the facts) and 2 or 3 claims from the facts on what sets it apart: "
        f"its size, activity and over-represented attributes. {_CLAIM_FORMAT}"
    )
    schema = _object_schema({"name": {"type": "string", "maxLength": 48}, "claims": claims_schema(facts)})
    answer, report, calls = _claims_task(client, facts, system, SegmentDescription, schema)
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
