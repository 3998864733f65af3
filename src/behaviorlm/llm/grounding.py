"""The grounding check: every item, event, number, title and path an answer cites must be in its facts.

Small language models verbalize well and invent freely ("a popular lipstick", "3 purchases"). The check
is deliberately literal, so that a failure is a specific, fixable complaint the model can be told about:

* every cited fact id (in ``evidence`` or written in the text as ``[E3]``/``E3``) exists;
* every number in the text (counts, ratings, probabilities, percentages, dates, item ids) appears in the
  facts, allowing for rounding and for a probability written as a percentage (0.62 ~ 62%);
* every ``item <id>`` names an item that is in the facts, and every quoted string ("…") is found in
  the facts' text (titles, review quotes);
* the intent is one of the allowed labels and, when an intent model produced the probabilities, the
  stated confidence is that model's probability for the stated intent;
* the text does not loop (at least 30% of its words in word trigrams that occur three times or more).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from behaviorlm.llm.facts import FactSet

_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w])(?:\s?%)?")
_FACT_REF = re.compile(r"\[?\b([A-Z]\d{1,3})\b\]?")
_ITEM_REF = re.compile(r"\bitems?\s+(?:id\s+)?#?([\w-]+)", re.IGNORECASE)
REPETITION_PROBLEM = "the text repeats itself; say it once"
"""The problem reported for looping text (see :func:`looping_share`)."""
LOOP_SHARE = 0.3
"""Share of a text's words inside thrice-repeated word trigrams from which it counts as looping. On 200
ML-100k explanations by the 0.5B model, the ten answers that looped to the length bound ("Action,
Comedy, Action, Comedy, ...") had shares 0.46-0.71; enumerations and repeated dates ("from 1997-11-17
to 1997-11-17", "27 vs typical 0, 0.37 vs typical 0.54") had at most 0.17."""
_WORD = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?|\d+(?:\.\d+)?|\w+")
_QUOTED = re.compile(r"[\"“”]([^\"“”]{3,200})[\"“”]")


@dataclass(frozen=True)
class GroundingReport:
    grounded: bool
    problems: list[str] = field(default_factory=list)


def _value(token: str) -> tuple[float, bool]:
    percent = token.rstrip().endswith("%")
    return float(token.rstrip("% ").replace(",", "")), percent


@dataclass(frozen=True)
class AllowedNumbers:
    plain: frozenset[float]
    """Numbers written without a percent sign in the facts."""
    percent: frozenset[float]
    """Percentages in the facts, and every fraction in (0, 1] of the facts times 100."""

    def allows(self, token: str) -> bool:
        y, percent = _value(token)
        if percent:
            return _close(y, self.percent)
        return _close(y, self.plain) or (0 < y <= 1 and _close(100 * y, self.percent))


def _close(y: float, values: frozenset[float]) -> bool:
    for a in values:
        # Rounding: 0.62 may be written 0.6 and 62.4 as 62; integers >= 10 (counts, ids, years) must match
        # exactly, since they are never legitimately rounded.
        tol = 0.0 if abs(a) >= 10 and float(a).is_integer() else 0.051 * max(1.0, abs(a))
        if abs(y - a) <= tol + 1e-9:
            return True
    return False


def allowed_numbers(facts: FactSet) -> AllowedNumbers:
    """The numbers an answer may state: those in the facts' text (a fraction may be given as a percentage)."""
    plain: set[float] = set()
    percent: set[float] = set()
    for fact in facts.facts:
        for token in _NUMBER.findall(fact.text):
            x, is_percent = _value(token)
            if is_percent:
                percent.add(x)
                plain.add(x)  # "more unusual than 65% of users" may be retold as "65 percent"
            else:
                plain.add(x)
                if 0 < x <= 1:
                    percent.add(100 * x)
    return AllowedNumbers(frozenset(plain), frozenset(percent))


def looping_share(text: str) -> float:
    """Share of the words of ``text`` that lie in a word trigram occurring three times or more.

    Dates, times and numbers count as one word each, so a date mentioned three times is not a loop.
    """
    words = _WORD.findall(text.casefold())
    trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
    covered: set[int] = set()
    for start in range(len(words) - 2):
        if trigrams[tuple(words[start : start + 3])] >= 3:
            covered.update(range(start, start + 3))
    return len(covered) / len(words) if words else 0.0


def check_grounding(
    facts: FactSet,
    text: str,
    *,
    evidence: list[str] | None = None,
    intent: str | None = None,
    confidence: float | None = None,
    require_evidence: bool = True,
    forbidden_terms: tuple[str, ...] = (),
) -> GroundingReport:
    """Whether ``text`` (and its cited ``evidence``, ``intent``, ``confidence``) stays within ``facts``.

    ``forbidden_terms``: words that must not appear unless the facts use them (e.g. the words of a
    prompt's worked example, which small models like to copy).
    """
    problems: list[str] = []
    by_id = facts.by_id()
    if evidence is not None:
        if require_evidence and not evidence:
            problems.append("no evidence cited")
        problems += [f"evidence {e!r} is not a fact id" for e in evidence if e not in by_id]
    # Items a fact names: its ``item_id`` and any ``*_item_id`` (a path fact's ``via_item_id``).
    fact_items = {
        str(v) for f in facts.facts for k, v in f.values.items() if k == "item_id" or k.endswith("_item_id")
    }
    prefixes = {f.id[0] for f in facts.facts}
    for m in _FACT_REF.finditer(text):
        ref = m.group(1)
        bracketed = m.group(0).startswith("[")
        after_item = re.search(r"\bitems?\s+(?:id\s+)?#?$", text[: m.start()], re.IGNORECASE) is not None
        if ref in by_id or ref in fact_items or after_item or not (bracketed or ref[0] in prefixes):
            continue
        problems.append(f"the text cites fact {ref}, which does not exist")
    allowed = allowed_numbers(facts)
    fact_ids = set(by_id)
    stripped = _FACT_REF.sub(lambda m: "" if m.group(1) in fact_ids else m.group(0), text)
    for token in _NUMBER.findall(stripped):
        if not allowed.allows(token):
            problems.append(f"the number {token.strip()} is not in the facts")
    for item in _ITEM_REF.findall(text):
        if any(ch.isdigit() for ch in item) and item not in fact_items:
            problems.append(f"item {item} is not in the facts")
    corpus = " ".join(f.text for f in facts.facts).casefold()
    for quote in _QUOTED.findall(text):
        if quote.strip().casefold().rstrip(".…") not in corpus:
            problems.append(f'"{quote}" is not in the facts')
    if looping_share(text) >= LOOP_SHARE:
        # A small model that loops lists true words again and again: nothing false, nothing said.
        problems.append(REPETITION_PROBLEM)
    words = set(re.findall(r"[a-z]+", text.casefold()))
    for term in forbidden_terms:
        if term in words and term not in corpus:
            problems.append(f"'{term}' is not in the facts")
    if intent is not None and facts.intents and intent not in facts.intents:
        problems.append(f"intent {intent!r} is not one of {list(facts.intents)}")
    if confidence is not None:
        if not 0.0 <= confidence <= 1.0:
            problems.append(f"confidence {confidence} is not a probability")
        elif facts.intent_from_model and intent is not None:
            model_p = [
                f.values["probability"] for f in facts.of_kind("intent") if f.values.get("intent") == intent
            ]
            if model_p and abs(model_p[0] - confidence) > 0.015:
                problems.append(
                    f"confidence {confidence} differs from the intent model's probability {model_p[0]} for {intent!r}"
                )
    return GroundingReport(grounded=not problems, problems=list(dict.fromkeys(problems)))
