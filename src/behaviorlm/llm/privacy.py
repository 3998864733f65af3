"""PII scrubbing for text that may leave the process (review text, questions, prompts to remote servers).

Patterns, not a named-entity model: e-mail addresses, phone numbers (international ``+`` form or
separated groups), payment-card numbers (13–19 digits that pass the Luhn check), IBANs, IPv4 addresses,
street addresses (a house number, a name and a street word) and person names where the text announces
them ("my name is …", "Mr./Mrs./Ms./Dr. …", a signature line "- Anna"). Each match is replaced by a typed
placeholder such as ``[EMAIL]`` so that the text still reads naturally and the model knows something was
there. Bare digit runs that are not card numbers (item ids, ASINs, years, prices) are left alone: facts
carry such numbers and must survive scrubbing unchanged.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# A phone number either starts with + and a country code, or has its digit groups separated
# ("555-123-4567", "(030) 1234 5678"): a bare run of digits is an id far more often than a phone.
_PHONE = re.compile(
    r"(?:(?<![\w+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,4}\b)"
    r"|(?:(?<![\w-])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b)"
    r"|(?:(?<![\w-])\(0\d{1,4}\)\s?\d{3,4}[\s-]?\d{3,4}\b)"
)
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_STREET_WORDS = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    r"strasse|straße|str"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[a-zA-Z]?\s+(?:[A-Z][\w'-]*\s+){{1,3}}(?:{_STREET_WORDS})\b\.?(?:,?\s*(?:apt|suite|unit)\.?\s*\w+)?",
    re.IGNORECASE,
)
_NAME = r"[A-Z][a-z'’-]+(?:\s+[A-Z][a-z'’-]+){0,2}"
_NAME_INTRO = re.compile(
    rf"(?P<lead>\b(?:my name is|my name's|i am called|this is|call me|signed,?)\s+)(?P<name>{_NAME})",
    re.IGNORECASE,
)
_TITLED_NAME = re.compile(rf"(?P<lead>\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+)(?P<name>{_NAME})")
_SIGNATURE = re.compile(rf"(?P<lead>(?:^|\n)\s*(?:-|--|—|~)\s*)(?P<name>{_NAME})\s*$")


@dataclass(frozen=True)
class ScrubResult:
    text: str
    found: dict[str, int] = field(default_factory=dict)
    """How many of each kind of PII was replaced, e.g. ``{"EMAIL": 1}``."""


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def scrub_pii(text: str) -> ScrubResult:
    """``text`` with e-mails, phones, card numbers, IBANs, IP addresses, street addresses and announced
    person names replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[IP]``, ``[ADDRESS]``,
    ``[NAME]``; ``found`` counts the replacements."""
    found: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], label: str, value: str) -> str:
        def repl(m: re.Match[str]) -> str:
            found[label] += 1
            return f"[{label}]"

        return pattern.sub(repl, value)

    def card(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits):
            found["CARD"] += 1
            return "[CARD]"
        return m.group(0)

    def named(m: re.Match[str]) -> str:
        found["NAME"] += 1
        return f"{m.group('lead')}[NAME]"

    out = sub(_EMAIL, "EMAIL", text)
    out = _CARD.sub(card, out)  # before phones: a spaced card number also looks like phone groups
    out = sub(_IBAN, "IBAN", out)
    out = sub(_PHONE, "PHONE", out)
    out = sub(_IPV4, "IP", out)
    out = sub(_ADDRESS, "ADDRESS", out)
    out = _NAME_INTRO.sub(named, out)
    out = _TITLED_NAME.sub(named, out)
    out = _SIGNATURE.sub(named, out)
    return ScrubResult(out, dict(found))
