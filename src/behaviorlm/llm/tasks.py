"""What the LLM layer does with facts: explain an intent, describe a segment, answer a question.

Each task sends the facts (:mod:`.facts`) with instructions to stay within them, asks for JSON that a
pydantic model validates (constrained decoding where the server supports it; otherwise one repair
retry that shows the model its validation error), then runs the grounding check (:mod:`.grounding`).
An answer that cites anything not in the facts is regenerated once with the list of problems. If it
still fails, the task does not pass it on: an intent explanation falls back to a text assembled from the
cited facts themselves, an answer to a question becomes "I don't know", and the result says so
(``source`` and ``first_try_grounded``), so groundedness can be measured before and after the check.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import FactSet
from behaviorlm.llm.grounding import REPETITION_PROBLEM, GroundingReport, check_grounding

IDK = "I don't know: the data about this user does not cover that."

_RULES = (
    "Rules: use ONLY the facts. Cite the ids of the facts you use in 'evidence'. Never state a number, "
    "date, item, title or reason that is not written in the facts; say nothing about popularity, price, "
    "quality, genre or the person unless a fact says it. Call the person 'the user'. Keep 'text' to two "
    "or three short sentences and do not repeat yourself."
)


class IntentExplanation(BaseModel):
    intent: str
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[str] = Field(min_length=1)
    text: str = Field(min_length=1)


class SegmentDescription(BaseModel):
    name: str = Field(min_length=1, max_length=60)
    text: str = Field(min_length=1)
    evidence: list[str] = Field(min_length=1)


class Answer(BaseModel):
    # Field order is generation order under constrained decoding: the model writes its answer and cites
    # facts before it judges whether the facts cover the question (a 0.5B model that had to decide
    # first said "I don't know" to everything).
    text: str = Field(min_length=1)
    evidence: list[str] = Field(default_factory=list)
    known: bool = True
    """False when the facts do not cover the question (then ``text`` says so)."""


T = TypeVar("T", bound=BaseModel)


@dataclass
class TaskResult(Generic[T]):
    answer: T
    grounded: bool
    """Whether the answer handed back is grounded (after regeneration and fallback)."""
    first_try_grounded: bool
    source: str
    """``llm`` (the model's answer), ``fallback`` (assembled from facts) or ``refused`` ("I don't know")."""
    attempts: int
    latency_s: float
    problems: list[str] = field(default_factory=list)
    """Grounding problems of the last model answer (empty when it was grounded)."""
    model: str = ""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """Model answers that failed the grounding check, ``{"text", "problems"}`` each: for diagnosing
    fallbacks (``run_llm_explain.py --log``). Never handed out, and not part of :meth:`to_dict`."""

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
        }


def _schema(model: type[BaseModel], facts: FactSet, *, enum_intents: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema()
    props = schema["properties"]
    ids = [f.id for f in facts.facts]
    if "evidence" in props:
        props["evidence"] = {
            "type": "array",
            "items": {"type": "string", "enum": ids},
            # The grammar must ask for what pydantic will require, or a valid-looking reply fails validation.
            "minItems": props["evidence"].get("minItems", 0),
            "maxItems": 6,
        }
    if enum_intents and facts.intents:
        props["intent"] = {"type": "string", "enum": list(facts.intents)}
    for name, prop in props.items():
        prop.pop("title", None)
        if prop.get("type") == "string" and name in ("text", "name"):
            # A bound on free text makes the grammar close the JSON: small models otherwise can loop
            # until max_tokens and leave it unterminated.
            prop["maxLength"] = min(prop.get("maxLength", 600), 600)
    schema.pop("title", None)
    schema["additionalProperties"] = False
    return schema


def _ask_json(
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


@dataclass
class _Outcome(Generic[T]):
    """The model's last answer after at most one regeneration, and what happened on the way."""

    answer: T
    report: GroundingReport
    first: bool
    calls: int
    rejected: list[dict[str, Any]]
    model: str

    def handed_out(self, answer: T, *, source: str, started: float) -> TaskResult[T]:
        """The task's result when ``answer`` (the model's, a fallback or a refusal) is handed out."""
        return TaskResult(
            answer=answer,
            grounded=True,  # the model's answer passed the check, or a grounded-by-construction stand-in
            first_try_grounded=self.first,
            source=source,
            attempts=self.calls,
            latency_s=time.perf_counter() - started,
            problems=self.report.problems,
            model=self.model,
            rejected=self.rejected,
        )


def _run(
    client: LLMClient,
    facts: FactSet,
    instruction: str,
    model: type[T],
    schema: dict[str, Any],
    check: Any,
    *,
    question: str | None = None,
) -> _Outcome[T]:
    prompt = f"Facts about {facts.subject}:\n{facts.render()}"
    if question is not None:
        prompt += f"\n\nQuestion: {question}"
    messages = [
        {"role": "system", "content": f"{instruction}\n{_RULES}"},
        {"role": "user", "content": prompt},
    ]
    answer, calls = _ask_json(client, messages, model, schema)
    report = check(answer)
    first = report.grounded
    rejected: list[dict[str, Any]] = []
    if not report.grounded:
        shown = answer.model_dump_json()
        rejected.append({"text": shown, "problems": report.problems})
        if REPETITION_PROBLEM in report.problems:
            # A looping answer is not shown back: with the loop in its context the small embedded model
            # looped again on every retry (ML-100k). It is asked afresh, told what went wrong.
            others = "".join(f" Also: {p}." for p in report.problems if p != REPETITION_PROBLEM)
            messages = [
                messages[0],
                {
                    "role": "user",
                    "content": f"{prompt}\n\nAn earlier answer went into a loop, repeating the same words. "
                    "Write two short sentences, name at most three titles or genres, and never list "
                    f"anything twice.{others}",
                },
            ]
        else:
            messages = [
                *messages,
                {"role": "assistant", "content": shown},
                {
                    "role": "user",
                    "content": "Your answer is not supported by the facts: "
                    + "; ".join(report.problems)
                    + ". Answer again, using only what the facts say.",
                },
            ]
        answer, more = _ask_json(client, messages, model, schema)
        calls += more
        report = check(answer)
        if not report.grounded:
            rejected.append({"text": answer.model_dump_json(), "problems": report.problems})
    return _Outcome(answer, report, first, calls, rejected, client.name)


def explain_intent(client: LLMClient, facts: FactSet) -> TaskResult[IntentExplanation]:
    """The user's likely intent, a confidence, the facts behind it and a short explanation in words."""
    start = time.perf_counter()
    labels = ", ".join(facts.intents)
    instruction = (
        "You explain what an online user is probably trying to do, for a product analyst. "
        f"Choose the intent from: {labels}. "
        + (
            "Intent-model probabilities are in the facts: use the probability of the intent you choose as "
            "the confidence. "
            if facts.intent_from_model
            else "Give your confidence between 0 and 1. "
        )
        + "In 'text' write two sentences: first what the user did recently, naming one or two titles "
        "from the facts; then why that points to the intent you chose."
    )
    schema = _schema(IntentExplanation, facts, enum_intents=True)

    def check(a: IntentExplanation) -> GroundingReport:
        return check_grounding(
            facts,
            a.text,
            evidence=a.evidence,
            intent=a.intent,
            confidence=a.confidence,
        )

    outcome = _run(client, facts, instruction, IntentExplanation, schema, check)
    if outcome.report.grounded:
        return outcome.handed_out(outcome.answer, source="llm", started=start)
    return outcome.handed_out(_fallback_explanation(facts, outcome.answer), source="fallback", started=start)


def _fallback_explanation(facts: FactSet, answer: IntentExplanation) -> IntentExplanation:
    """An explanation assembled from the facts the model cited (or the first facts): grounded by construction."""
    by_id = facts.by_id()
    cited = [e for e in answer.evidence if e in by_id][:4] or [f.id for f in facts.facts[:3]]
    intent = answer.intent if answer.intent in facts.intents else facts.intents[0]
    confidence = answer.confidence
    if facts.intent_from_model:
        top = facts.of_kind("intent")[0]
        intent, confidence = top.values["intent"], top.values["probability"]
        cited = [top.id, *[c for c in cited if c != top.id]][:4]
    text = f"Likely intent: {intent}. Based on: " + "; ".join(by_id[c].text for c in cited) + "."
    return IntentExplanation(intent=intent, confidence=confidence, evidence=cited, text=text)


def describe_segment(client: LLMClient, facts: FactSet) -> TaskResult[SegmentDescription]:
    """A short name and a description of a segment from its summary facts (:func:`.facts.segment_facts`)."""
    start = time.perf_counter()
    instruction = (
        "You describe a customer segment for a marketing team: a short name (at most five words) and two "
        "sentences on what sets it apart."
    )
    schema = _schema(SegmentDescription, facts)

    def check(a: SegmentDescription) -> GroundingReport:
        return check_grounding(facts, f"{a.name}. {a.text}", evidence=a.evidence)

    outcome = _run(client, facts, instruction, SegmentDescription, schema, check)
    if outcome.report.grounded:
        return outcome.handed_out(outcome.answer, source="llm", started=start)
    cited = [f.id for f in facts.facts[:3]]
    fallback = SegmentDescription(
        name=facts.subject, text="; ".join(f.text for f in facts.facts[:3]) + ".", evidence=cited
    )
    return outcome.handed_out(fallback, source="fallback", started=start)


def ask(client: LLMClient, facts: FactSet, question: str) -> TaskResult[Answer]:
    """A customer-service answer to ``question`` from the facts only; "I don't know" when they do not cover it."""
    start = time.perf_counter()
    instruction = (
        "You are a customer-service assistant. Answer the question from the facts only. If the facts do "
        f'not answer it, set known to false and text to "{IDK}". When they do, set known to true and '
        "answer in one sentence that names the item (title and id) and the date from the fact you cite."
    )
    schema = _schema(Answer, facts)

    def check(a: Answer) -> GroundingReport:
        if not a.known:
            return GroundingReport(True)
        return check_grounding(facts, a.text, evidence=a.evidence)

    outcome = _run(client, facts, instruction, Answer, schema, check, question=question)
    answer = outcome.answer
    refusal = "don't know" in answer.text.casefold() or "do not know" in answer.text.casefold()
    if not answer.known or not answer.evidence or refusal or not outcome.report.grounded:
        # Unknown, or still unsupported after a regeneration: refuse rather than risk an invented answer.
        return outcome.handed_out(Answer(known=False, text=IDK, evidence=[]), source="refused", started=start)
    return outcome.handed_out(answer, source="llm", started=start)
