"""PII scrubbing: each kind of PII is replaced; ids, dates and prices that facts carry survive."""

from __future__ import annotations

import pytest

from behaviorlm.llm.privacy import scrub_pii


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        ("write to jane.doe+shop@mail.example.co.uk today", "EMAIL", "jane.doe+shop@mail.example.co.uk"),
        ("call me on +1 415 555 0132 after six", "PHONE", "415 555 0132"),
        ("my number is (415) 555-0132", "PHONE", "555-0132"),
        ("ring 030 1234 5678? no: (030) 1234 5678", "PHONE", "(030) 1234 5678"),
        ("card 4111 1111 1111 1111 exp 12/27", "CARD", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004", "CARD", "5500-0000-0000-0004"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN", "3704 0044"),
        ("from 192.168.10.24 again", "IP", "192.168.10.24"),
        ("ship to 221B Baker Street, London", "ADDRESS", "Baker Street"),
        ("deliver to 12 Oak Lane apt 4", "ADDRESS", "Oak Lane"),
        ("Hi, my name is Maria Lopez and I love it", "NAME", "Maria Lopez"),
        ("Thanks to Mrs. Okafor for the help", "NAME", "Okafor"),
        ("Great fit.\n- Tom", "NAME", "Tom"),
    ],
)
def test_scrubs_each_kind(text, kind, secret):
    result = scrub_pii(text)
    assert secret not in result.text
    assert f"[{kind}]" in result.text and result.found.get(kind, 0) >= 1


@pytest.mark.parametrize(
    "text",
    [
        "rated item 0205616461 with 5 stars on 2014-03-02 10:15 UTC",
        "item B00004TUBL costs 19.99; probability 0.62; 272 events on 12 days",
        "a 16-digit number that fails Luhn: 1234 5678 9012 3456",
        "session 1700000000 ended",
    ],
)
def test_keeps_fact_numbers(text):
    result = scrub_pii(text)
    assert result.text == text and result.found == {}
