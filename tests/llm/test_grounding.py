"""The grounding check flags every invented number, item, quote, fact id and intent confidence."""

from __future__ import annotations

from behaviorlm.llm.facts import Fact, FactSet
from behaviorlm.llm.grounding import check_grounding

FACTS = FactSet(
    "user-abc",
    [
        Fact(
            "P1",
            "activity",
            "12 events on 3 active days from 2024-05-01 to 2024-05-09; by type: view 9, cart 2",
        ),
        Fact(
            "E1",
            "event",
            '2024-05-09 18:02 UTC: added to cart item A7 "Trail running shoes"',
            {"item_id": "A7"},
        ),
        Fact("E2", "event", '2024-05-08 12:10 UTC: rated item 242 "Kolya", rating 5', {"item_id": "242"}),
        Fact(
            "N1",
            "next_item",
            'predicted next item #1: item C2 "Running socks", probability 0.21',
            {"item_id": "C2"},
        ),
        Fact("A1", "anomaly", "behaviour is more unusual than 65% of users"),
    ],
    intents=("browsing", "ready to buy"),
)


def check(text, **kw):
    return check_grounding(FACTS, text, **{"evidence": ["E1"], **kw})


def test_grounded_text_passes():
    report = check(
        'The user put the "Trail running shoes" (item A7) in the cart on 2024-05-09 after 12 events; '
        "the model gives running socks a 21% chance and rates the behaviour more unusual than 65% of users.",
        intent="ready to buy",
        confidence=0.7,
    )
    assert report.grounded, report.problems


def test_rounded_probability_and_fraction_forms_pass():
    assert check("a 0.2 chance").grounded
    assert check("more unusual than 0.65 of users").grounded


def test_invented_numbers_fail():
    for text in (
        "the user bought 4 pairs",
        "after 13 events",
        "a 40% chance",
        "in the top 100 items",
        "on 2023-01-02",
    ):
        report = check(text)
        assert not report.grounded, text
        assert any("number" in p for p in report.problems)


def test_invented_item_and_quote_fail():
    assert "item Z9 is not in the facts" in check("they will buy item Z9").problems
    assert not check('they loved "Hiking poles"').grounded
    assert check('they rated "Kolya" highly').grounded


def test_fact_ids_must_exist():
    assert not check("see E7 for details").grounded
    report = check_grounding(FACTS, "fine", evidence=["E1", "X9"])
    assert report.problems == ["evidence 'X9' is not a fact id"]
    assert not check_grounding(FACTS, "fine", evidence=[]).grounded


def test_intent_must_be_allowed_and_confidence_a_probability():
    assert not check("fine", intent="planning a wedding").grounded
    assert not check("fine", intent="browsing", confidence=1.5).grounded


def test_confidence_must_match_the_intent_model():
    facts = FactSet(
        "user-abc",
        [
            Fact("I1", "intent", "intent model: P(buy) = 0.8", {"intent": "buy", "probability": 0.8}),
            Fact("I2", "intent", "intent model: P(browse) = 0.2", {"intent": "browse", "probability": 0.2}),
        ],
        intents=("buy", "browse"),
        intent_from_model=True,
    )
    assert check_grounding(facts, "likely to buy", evidence=["I1"], intent="buy", confidence=0.8).grounded
    report = check_grounding(facts, "likely to buy", evidence=["I1"], intent="buy", confidence=0.95)
    assert not report.grounded and "intent model" in report.problems[0]


def test_forbidden_terms_only_when_not_in_facts():
    assert not check("they want hiking boots", forbidden_terms=("boots",)).grounded
    assert check("they want running shoes", forbidden_terms=("running",)).grounded


def test_looping_text_fails():
    looping = "They rated Comedy, Drama, Thriller, then Comedy, Drama, Thriller, and Comedy, Drama, Thriller."
    assert "the text repeats itself; say it once" in check(looping).problems
    assert check("They rated Comedy, Drama and Thriller titles.").grounded


def test_repeated_dates_and_enumerations_are_not_loops():
    from behaviorlm.llm.grounding import looping_share

    # Shapes of answers the trigram-count rule used to reject on ML-100k: a date said three times, and a
    # list of "x vs typical y" comparisons. Neither says anything twice.
    dates = (
        "The user rated three films from 1997-11-17 to 1997-11-17; the most unusual was item 215 "
        "(1997-11-17 17:43 UTC)."
    )
    comparisons = (
        "Unusual: median_gap_seconds 27 vs typical 0, burst_share 0.37 vs typical 0.54, "
        "gap_regularity 0.34 vs typical 0.33."
    )
    assert looping_share(dates) == 0.0 and looping_share(comparisons) < 0.3
    # A loop to the length bound, as the 0.5B model writes it, is far above the threshold.
    loop = "They rated items in these genres: Drama, War, " + "Horror, Action, Adventure, Drama, War, " * 12
    assert looping_share(loop) > 0.8
    assert looping_share("") == 0.0
