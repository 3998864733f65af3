"""The claim verifier, case by case: what each field type accepts, what it rejects, and the words rendered."""

from __future__ import annotations

from datetime import date

import pytest

from behaviorlm.llm.claims import (
    Claim,
    fields_of,
    normalize,
    parse_date,
    render_claims,
    size_word,
    verify_claim,
    verify_claims,
)
from behaviorlm.llm.facts import Fact, FactSet


def _event(fid: str, ts: int, title: str, categories: list[str], rating: float | None = None) -> Fact:
    return Fact(
        fid,
        "event",
        f"... {title}",
        {
            "item_id": f"i{fid}",
            "title": title,
            "event_type": "rate",
            "date": "1998-03-13" if ts >= 889_747_200 else "1997-09-22",
            "ts": ts,
            "value": rating,
            "categories": categories,
            "brand": "",
            "attributes": {"release_year": "1970"},
        },
    )


@pytest.fixture
def facts() -> FactSet:
    return FactSet(
        "user-abc",
        [
            Fact(
                "P1",
                "activity",
                "272 events",
                {
                    "user": "user-abc",
                    "events": 272,
                    "active_days": 12,
                    "first_date": "1997-09-22",
                    "last_date": "1998-03-13",
                    "events_by_type": {"rate": 272},
                },
            ),
            Fact(
                "P2",
                "categories",
                "Drama 107, Comedy 91",
                {
                    "counts": {"Drama": 107, "Comedy": 91, "Action": 75},
                    "shown": ["Drama", "Comedy"],
                    "events": 272,
                },
            ),
            _event("E1", 889_751_700, "Aristocats, The", ["Animation", "Children's"], 2.0),
            _event("E2", 889_751_600, "Copycat", ["Crime", "Drama"], 3.0),
            _event("E3", 874_965_478, "Toy Story", ["Animation", "Comedy"], 5.0),
            Fact(
                "N1",
                "next_item",
                "guess",
                {"item_id": "50", "title": "Star Wars", "rank": 1, "probability": 0.62},
            ),
            Fact("S1", "segment", "941 users", {"users": 941, "share_pct": 100, "share": 0.998}),
        ],
    )


def _ok(facts: FactSet, fact: str, field: str, value: str) -> bool:
    return verify_claim(Claim(fact=fact, field=field, value=value), facts).ok


@pytest.mark.parametrize(
    ("value", "day", "precision"),
    [
        ("1998-03-13", date(1998, 3, 13), "day"),
        ("1998-03-13 01:15 UTC", date(1998, 3, 13), "day"),
        ("March 13, 1998", date(1998, 3, 13), "day"),
        ("13 Mar 1998", date(1998, 3, 13), "day"),
        ("1998/3/13", date(1998, 3, 13), "day"),
        ("March 1998", date(1998, 3, 1), "month"),
        ("1998-03", date(1998, 3, 1), "month"),
        ("1998", date(1998, 1, 1), "year"),
    ],
)
def test_dates_in_common_forms(value, day, precision):
    assert parse_date(value) == (day, precision)


def test_unparseable_dates_are_none():
    assert parse_date("recently") is None and parse_date("1998-02-30") is None


def test_titles_normalise_articles_case_and_years():
    assert normalize("Aristocats, The") == normalize("the aristocats") == normalize("The Aristocats (1970)")


def test_text_and_member_fields(facts):
    assert _ok(facts, "E1", "title", "The Aristocats") and _ok(facts, "E1", "title", "Aristocats")
    assert not _ok(facts, "E1", "title", "Toy Story")  # another item's title
    assert _ok(facts, "E1", "category", "animation")
    assert not _ok(facts, "E1", "category", "Drama")  # a genre of another item
    assert _ok(facts, "E1", "release_year", "1970") and not _ok(facts, "E1", "release_year", "1949")


def test_counts_are_exact_and_numbers_are_roundings(facts):
    assert _ok(facts, "P1", "events", "272") and _ok(facts, "P1", "rate_events", "272 ratings")
    assert not _ok(facts, "P1", "events", "273") and not _ok(facts, "P1", "events", "270")
    assert _ok(facts, "N1", "probability", "0.62") and _ok(facts, "N1", "probability", "0.6")
    assert _ok(facts, "N1", "probability", "62%") and not _ok(facts, "N1", "probability", "0.7")
    assert not _ok(facts, "N1", "probability", "0.62%")  # 0.62 is not 0.62 percent
    assert _ok(facts, "E1", "rating", "2") and not _ok(facts, "E1", "rating", "2.5")


def test_dates_compare_at_the_precision_written(facts):
    assert _ok(facts, "P1", "last_date", "March 13, 1998") and _ok(facts, "P1", "last_date", "March 1998")
    assert not _ok(facts, "P1", "last_date", "1998-03-14") and not _ok(facts, "P1", "last_date", "April 1998")


def test_comparatives_follow_the_data(facts):
    assert _ok(facts, "E1", "most_recent", "yes") and not _ok(facts, "E2", "most_recent", "yes")
    assert _ok(facts, "E2", "most_recent", "no")
    assert _ok(facts, "E3", "before", "E1") and not _ok(facts, "E3", "after", "E1")
    assert _ok(facts, "E2", "before", "The Aristocats")  # the other event named by its title
    assert _ok(facts, "P2", "most_common_category", "Drama")
    assert not _ok(facts, "P2", "most_common_category", "Comedy")  # second, not most


def test_group_sizes_and_size_words(facts):
    assert _ok(facts, "S1", "users", "941") and not _ok(facts, "S1", "users", "943")
    assert _ok(facts, "S1", "size", "large") and _ok(facts, "S1", "size", "the majority")
    assert not _ok(facts, "S1", "size", "relatively small")
    assert size_word("tiny") == "small" and size_word("purple") is None


def test_invented_facts_fields_and_users_are_dropped(facts):
    invented = verify_claim(Claim(fact="E1", field="country", value="United States"), facts)
    missing = verify_claim(Claim(fact="E9", field="title", value="Heat"), facts)
    assert invented.status == missing.status == "dropped"
    assert "says nothing about 'country'" in invented.reason and "no fact E9" in missing.reason
    assert _ok(facts, "P1", "user", "user-abc") and not _ok(facts, "P1", "user", "user-def")


def test_a_wrong_value_is_corrected_from_the_fact_and_rendered_true(facts):
    report = verify_claims(
        [
            Claim(fact="E1", field="title", value="Star Wars"),
            Claim(fact="E1", field="date", value="1998-01-01"),
            Claim(fact="P1", field="events", value="300"),
            Claim(fact="E3", field="after", value="E1"),
        ],
        facts,
    )
    assert [v.status for v in report.verdicts] == ["corrected", "corrected", "corrected", "dropped"]
    assert report.verdicts[0].truth == "Aristocats, The" and report.verdicts[2].truth == "272"
    words = " ".join(render_claims(report.kept, facts))
    assert words == 'The user rated "Aristocats, The" on 1998-03-13. The user has 272 events in all.'
    assert "Star Wars" not in words and "300" not in words and "after" not in words


def test_rendering_repeats_nothing_and_uses_the_facts_values(facts):
    report = verify_claims(
        [
            Claim(fact="P2", field="most_common_category", value="drama"),
            Claim(fact="P2", field="most_common_category", value="Drama"),
            Claim(fact="S1", field="size", value="big"),
        ],
        facts,
    )
    assert render_claims(report.kept, facts) == [
        "The most common category of the user's events is Drama (107 of 272 events).",
        "A large group: 941 users, 100% of all users.",
    ]


def test_a_corrected_category_claim_renders_the_true_categories(facts):
    report = verify_claims([Claim(fact="P2", field="most_common_category", value="Western")], facts)
    assert report.verdicts[0].status == "corrected"
    assert render_claims(report.kept, facts) == [
        "The most common category of the user's events is Drama (107 of 272 events)."
    ]


def test_a_log_without_times_gives_order_not_dates(untimed_store):
    from behaviorlm.llm.facts import user_facts
    from behaviorlm.llm.tasks import prompt_line

    # S3-Rec / BERT4Rec sequence files have an order but no times (stored at 1970-01-01 + k seconds).
    facts = user_facts(untimed_store, "u1")
    by_id = facts.by_id()
    assert "1970" not in " ".join(f.text for f in facts.facts)
    assert by_id["P1"].text.startswith("4 events (in order; the log has no times)")
    assert prompt_line(by_id["E1"]).startswith("latest ") and prompt_line(by_id["E2"]).startswith(
        "2nd latest "
    )
    assert not {"date", "active_days", "first_date", "last_date"} & (
        set(fields_of(by_id["E1"], facts)) | set(fields_of(by_id["P1"], facts))
    )
    # Order is still a fact: E1 is the most recent, and a claim about it renders without a date.
    report = verify_claims(
        [
            Claim(fact="E1", field="most_recent", value="yes"),
            Claim(fact="E2", field="date", value="1970-01-01"),
        ],
        facts,
    )
    assert [v.status for v in report.verdicts] == ["verified", "dropped"]
    assert "1970" not in " ".join(render_claims(report.kept, facts))
