"""The tools ``ask`` may call, the checks on the model's calls, and the ask loop against a scripted server."""

from __future__ import annotations

import json

import pytest
from tests.llm.conftest import RAW_USER

from behaviorlm.config import IngestConfig, LLMConfig
from behaviorlm.data.pseudonyms import pseudonymize_user_id
from behaviorlm.data.store import EventStore
from behaviorlm.llm.client import LLMClient
from behaviorlm.llm.facts import user_alias
from behaviorlm.llm.tools import (
    PERSONAL_REFUSAL,
    REFUSAL,
    TOOLS,
    UserContext,
    ask,
    count_events,
    counts_something_else,
    ground_arguments,
    hide_user_id,
    item_events,
    last_event,
    period_range,
    personal_topic,
    tool_fits,
    top_categories,
)
from behaviorlm.testing.fake_llm import FakeLLMServer, Step


@pytest.fixture
def ctx(shop_store):
    user = pseudonymize_user_id(RAW_USER, config=IngestConfig())
    with EventStore(shop_store, read_only=True) as store:
        yield UserContext(store, user)


def test_tools_read_the_store(ctx):
    # The shopper: view sku-101, view sku-102, cart sku-102, review sku-101 (4 events on 2023-11-14).
    assert count_events(ctx).fact.values["count"] == 4
    assert count_events(ctx, event_type="view").fact.values["count"] == 2
    assert count_events(ctx, period="2023-11-14").fact.values["count"] == 4
    assert count_events(ctx, period="2023-11-15").fact.values["count"] == 0
    cart = last_event(ctx, event_type="cart")
    assert cart.fact.values["item_id"] == "sku-102" and '"Wool socks"' in cart.answer
    assert top_categories(ctx, k=2).fact.values["counts"] == {"shoes": 2, "socks": 2}
    assert [e["event_type"] for e in item_events(ctx, item="Wool socks").fact.values["events"]] == [
        "view",
        "cart",
    ]
    with pytest.raises(ValueError, match="unknown event type"):
        count_events(ctx, event_type="teleport")


def test_periods_are_days_months_or_years():
    day = period_range("2023-11-14")
    assert day is not None and day[1] - day[0] == 86_400
    month = period_range("February 2024")
    assert month is not None and month[1] - month[0] == 29 * 86_400
    assert period_range("") is None
    with pytest.raises(ValueError, match="not a day"):
        period_range("soon")


def test_which_tools_fit_a_question():
    assert tool_fits("count_events", "How many movies has the user rated?")
    assert not tool_fits("count_events", "How many different items has the user seen?")
    assert tool_fits("top_categories", "Which genre does the user rate most?")
    assert not tool_fits("first_event", "What is the user's favourite food first thing?")  # an opinion
    assert not tool_fits("rating_stats", "Why did the user give a low rating?")  # a reason, not a statistic
    # A genre named like a word of the opinion rules is still a genre.
    assert tool_fits("category_count", "How many Children's movies has the user rated?")
    assert tool_fits("top_categories", "Which genre does the user rate most: Children's or Drama?")
    # Words inside a quoted title are the title's ("friend" is an opinion-rule word).
    assert tool_fits("item_events", 'Has the user rated "My Best Friend\'s Wedding"?')
    assert not tool_fits("item_events", "Has the user rated a film with their best friend?")


@pytest.mark.parametrize(
    ("question", "elsewhere"),
    [
        ("How many siblings does the user have?", True),
        ("How many cups of coffee does the user drink?", True),
        ("How many times has the user been abroad?", True),  # "times" without a behaviour
        ("What is the number of languages the user speaks?", True),
        ("How many times did the user buy something?", False),
        ("How many Film-Noir movies has the user rated?", False),
        ("On how many different days was the user active?", False),
        ("How many events does the user have in category 2520377?", False),
        ('How many "cups" has the user bought?', False),  # a quoted title is not the counted thing
        ("What did the user rate last?", False),  # no count at all
    ],
)
def test_counts_only_what_an_event_log_counts(question, elsewhere):
    assert counts_something_else(question) is elsewhere
    if elsewhere:
        assert not any(
            tool_fits(name, question) for name in ("count_events", "category_count", "activity_summary")
        )


def test_personal_questions_and_raw_ids():
    assert personal_topic("What is the user's email address?") and personal_topic("How old is the user?")
    assert not personal_topic('Has the user rated "Home Alone"?')  # a title, not a home
    assert not personal_topic("What is the name of the last movie they rated?")
    assert (
        hide_user_id("What did user 1 rate on 1997-09-21?", "1")
        == f"What did user {user_alias('1')} rate on 1997-09-21?"
    )
    assert "alice.smith" not in hide_user_id("Did alice.smith.1987 buy socks?", "alice.smith.1987")


def test_arguments_are_held_to_the_question(ctx):
    tool = TOOLS["count_events"]
    grounded = ground_arguments(
        "How many views in March 1998?",
        {"event_type": "cart", "period": "2016-05-02"},
        tool,
        types=["view", "cart"],
    )
    assert grounded == {"event_type": "view", "period": "March 1998"}
    assert ground_arguments(
        "How many events?", {"event_type": "cart", "period": "2017"}, tool, types=["view", "cart"]
    ) == {
        "event_type": "any",
        "period": "",
    }


def _client(server, tmp_path) -> LLMClient:
    return LLMClient(
        LLMConfig(base_url=server.url, model="fake", backoff_seconds=0.01, cache_dir=str(tmp_path / "c"))
    )


def test_ask_retries_without_the_rejected_tool(ctx, tmp_path):
    first = {"calls": [{"tool": "category_count", "category": "Western", "event_type": "any"}]}
    second = {"calls": [{"tool": "count_events", "event_type": "any", "period": ""}]}
    steps = [Step(text=json.dumps(first)), Step(text=json.dumps(second))]
    with FakeLLMServer(steps) as server, _client(server, tmp_path) as client:
        result = ask(client, ctx, "How many events does the user have?")
    assert result.source == "tools" and result.answer == "The user has 4 events."
    assert "is not in the question" in " ".join(result.calls[0]["rejected"])
    retry_schema = server.requests[1]["response_format"]["json_schema"]["schema"]
    offered = {
        v["properties"]["tool"]["enum"][0] for v in retry_schema["properties"]["calls"]["items"]["anyOf"]
    }
    assert "category_count" not in offered and "count_events" in offered
    # Only the tools that fit the question were offered at all.
    assert "last_event" not in offered and "refuse" in offered


def test_ask_refuses_personal_and_unfitting_questions_without_the_model(ctx, tmp_path):
    with FakeLLMServer([]) as server, _client(server, tmp_path) as client:
        personal = ask(client, ctx, "What is the user's phone number?")
        unfitting = ask(client, ctx, "Is the user happy?")
    assert personal.answer == PERSONAL_REFUSAL and personal.source == "personal"
    assert unfitting.answer == REFUSAL and unfitting.source == "refused"
    assert server.requests == []


def test_ask_refuses_when_the_model_refuses(ctx, tmp_path):
    steps = [Step(text=json.dumps({"calls": [{"tool": "refuse"}]}))]
    with FakeLLMServer(steps) as server, _client(server, tmp_path) as client:
        result = ask(client, ctx, "How many events will the user have in 2030?")
    assert result.source == "refused" and result.answer == REFUSAL


def test_a_question_that_asks_two_things_is_answered_in_two_parts(ctx, tmp_path):
    from behaviorlm.llm.tools import split_question

    assert split_question("How many events does the user have, and when was their last one?") == [
        "How many events does the user have?",
        "when was their last one?",
    ]
    assert split_question("What did the user buy and add to the cart?") == [
        "What did the user buy and add to the cart?"
    ]
    steps = [
        Step(text=json.dumps({"calls": [{"tool": "count_events", "event_type": "any", "period": ""}]})),
        Step(text=json.dumps({"calls": [{"tool": "last_event", "event_type": "any"}]})),
    ]
    with FakeLLMServer(steps) as server, _client(server, tmp_path) as client:
        result = ask(client, ctx, "How many events does the user have, and when was their last one?")
    assert result.source == "tools" and result.answer.startswith(
        "The user has 4 events. The user's last event was on 2023-11-14"
    )
    assert [c["tool"] for c in result.calls] == ["count_events", "last_event"]


def test_tools_on_a_log_without_times_state_no_dates(untimed_store):
    from behaviorlm.llm.tools import activity_summary, last_event

    ctx = UserContext(untimed_store, "u1")
    last, summary = last_event(ctx), activity_summary(ctx)
    assert "1970" not in last.answer + summary.answer
    assert last.fact.values["item_id"] == "4" and "date" not in last.fact.values
    assert summary.fact.values == {"events": 4, "distinct_items": 4}
