"""Facts, tasks and privacy end to end, against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json

import pytest
from tests.llm.conftest import PLANTED_PII, RAW_USER

from behaviorlm.config import LLMConfig
from behaviorlm.data.store import EventStore
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import SHOPPING_INTENTS, Fact, FactSet, segment_facts, user_alias, user_facts
from behaviorlm.llm.tasks import IDK, ask, describe_segment, explain_intent
from behaviorlm.testing.fake_llm import FakeLLMServer, Step


@pytest.fixture
def facts(shop_store):
    with EventStore(shop_store, read_only=True) as store:
        return user_facts(store, RAW_USER)


def client_for(server, tmp_path):
    return LLMClient(
        LLMConfig(base_url=server.url, model="fake", backoff_seconds=0.01, cache_dir=str(tmp_path / "c"))
    )


def intent_json(**kw):
    answer = {
        "intent": "ready to buy",
        "confidence": 0.7,
        "evidence": ["E2", "E3"],
        "text": "The user put the wool socks in the cart.",
    }
    return json.dumps({**answer, **kw})


def test_user_facts_are_the_stores_facts(facts):
    by_id = facts.by_id()
    assert facts.subject == user_alias(RAW_USER) and RAW_USER not in facts.subject
    assert by_id["P1"].values["events"] == 4 and by_id["P1"].values["cart"] == 1
    # Newest first: the review, then the cart, then the views.
    assert [by_id[f"E{i}"].values["event_type"] for i in range(1, 5)] == ["review", "cart", "view", "view"]
    assert by_id["E2"].values["item_id"] == "sku-102" and '"Wool socks"' in by_id["E2"].text
    assert "rating 4" in by_id["E1"].text
    review = facts.of_kind("review")[0].text
    assert "Lovely boots" in review and all(p not in review for p in PLANTED_PII)
    assert facts.intents == SHOPPING_INTENTS and not facts.intent_from_model


def test_unknown_user_is_a_key_error(shop_store):
    with EventStore(shop_store, read_only=True) as store, pytest.raises(KeyError):
        user_facts(store, "nobody")


def test_explain_intent_first_try(facts, tmp_path):
    with FakeLLMServer([Step(text=intent_json())]) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "llm" and result.grounded and result.first_try_grounded and result.attempts == 1
    assert result.answer.intent == "ready to buy" and result.answer.evidence == ["E2", "E3"]
    sent = server.requests[0]
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["intent"]["enum"] == list(SHOPPING_INTENTS)
    assert set(schema["properties"]["evidence"]["items"]["enum"]) == set(facts.by_id())
    assert "[E2]" in sent["messages"][1]["content"]


def test_malformed_json_gets_one_repair(facts, tmp_path):
    steps = [
        Step(text='{"intent": "ready to buy", "confidence": 0.7, "evid'),
        Step(text="```json\n" + intent_json() + "\n```"),
    ]
    with FakeLLMServer(steps) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "llm" and result.attempts == 2
    assert "not valid" in server.requests[1]["messages"][-1]["content"]


def test_invalid_twice_is_an_error(facts, tmp_path):
    with (
        FakeLLMServer(default=Step(text='{"intent": "ready to buy"}')) as server,
        client_for(server, tmp_path) as client,
        pytest.raises(LLMError, match="valid JSON"),
    ):
        explain_intent(client, facts)


def test_ungrounded_answer_is_regenerated(facts, tmp_path):
    steps = [Step(text=intent_json(text="The user bought 7 pairs of boots.")), Step(text=intent_json())]
    with FakeLLMServer(steps) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "llm" and result.grounded and not result.first_try_grounded
    assert "the number 7 is not in the facts" in server.requests[1]["messages"][-1]["content"]


def test_looping_answer_is_asked_afresh_without_the_loop(facts, tmp_path):
    loop = "The user carted socks, socks, socks, carted socks, socks, socks, carted socks, socks, socks."
    steps = [Step(text=intent_json(text=loop, confidence=0.5)), Step(text=intent_json())]
    with FakeLLMServer(steps) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "llm" and result.grounded and not result.first_try_grounded
    retry = server.requests[1]["messages"]
    # The same system prompt and facts, no assistant turn carrying the loop, and the reason stated.
    assert [m["role"] for m in retry] == ["system", "user"]
    assert retry[0] == server.requests[0]["messages"][0]
    assert retry[1]["content"].startswith(server.requests[0]["messages"][1]["content"])
    assert "went into a loop" in retry[1]["content"]
    assert all(loop not in m["content"] for m in retry)
    # The rejected answer is kept for diagnosis, but never in what is handed out.
    assert [json.loads(r["text"])["text"] for r in result.rejected] == [loop]
    assert result.rejected[0]["problems"] == ["the text repeats itself; say it once"]
    assert "rejected" not in result.to_dict() and loop not in json.dumps(result.to_dict())


def test_looping_answer_with_another_problem_names_both(facts, tmp_path):
    loop = (
        "The user bought 7 socks, socks, socks, bought 7 socks, socks, socks, bought 7 socks, socks, socks."
    )
    steps = [Step(text=intent_json(text=loop)), Step(text=intent_json())]
    with FakeLLMServer(steps) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "llm"
    content = server.requests[1]["messages"][-1]["content"]
    assert "went into a loop" in content and "Also: the number 7 is not in the facts." in content


def test_still_ungrounded_falls_back_to_the_facts(facts, tmp_path):
    bad = intent_json(text='They adore "Hiking poles".')
    with FakeLLMServer([Step(text=bad), Step(text=bad)]) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "fallback" and result.grounded and result.problems
    assert "Hiking poles" not in result.answer.text and facts.by_id()["E2"].text in result.answer.text


def test_ask_answers_from_the_facts_or_says_it_does_not_know(facts, tmp_path):
    known = json.dumps({"known": True, "text": "Wool socks (item sku-102).", "evidence": ["E2"]})
    unknown = json.dumps({"known": False, "text": "no idea", "evidence": []})
    invented = json.dumps({"known": True, "text": "They live at 12 Oak Lane.", "evidence": ["E1"]})
    with (
        FakeLLMServer(
            [Step(text=known), Step(text=unknown), Step(text=invented), Step(text=invented)]
        ) as server,
        client_for(server, tmp_path) as client,
    ):
        a = ask(client, facts, "What is in the cart?")
        b = ask(client, facts, "What is their salary?")
        c = ask(client, facts, "Where do they live?")
    assert a.source == "llm" and a.answer.known and "sku-102" in a.answer.text
    assert b.source == "refused" and b.answer.text == IDK
    assert c.source == "refused" and c.answer.text == IDK and not c.first_try_grounded
    assert "What is in the cart?" in server.requests[0]["messages"][1]["content"]


def test_describe_segment(tmp_path):
    from behaviorlm.profiling.segments import SegmentSummary

    summary = SegmentSummary(3, 120, 0.25, 4.0, 18.0, 250.5, 0.4, [("brand:acme", 2.5)])
    seg = segment_facts(summary)
    assert "120 users, 25% of all users" in seg.render() and "2.5 times" in seg.render()
    reply = json.dumps(
        {"name": "Acme loyalists", "text": "A quarter of users; 40% purchased.", "evidence": ["S1", "S4"]}
    )
    with FakeLLMServer([Step(text=reply)]) as server, client_for(server, tmp_path) as client:
        result = describe_segment(client, seg)
    assert result.source == "llm" and result.answer.name == "Acme loyalists"


def test_nothing_personal_leaves_the_process(shop_store, tmp_path):
    """Every byte sent to a remote server: no raw user id, no planted PII (facts and the question)."""
    with EventStore(shop_store, read_only=True) as store:
        facts = user_facts(store, RAW_USER)
    answers = [Step(text=intent_json()), Step(text=json.dumps({"known": False, "text": "?", "evidence": []}))]
    with FakeLLMServer(answers) as server, client_for(server, tmp_path) as client:
        explain_intent(client, facts)
        ask(client, facts, "Customer alice@example.com says her card 4111 1111 1111 1111 was charged twice?")
    sent = b"".join(server.raw_requests).decode()
    assert len(server.raw_requests) == 2
    for secret in (RAW_USER, *PLANTED_PII):
        assert secret not in sent, secret
    assert user_alias(RAW_USER) in sent


def test_fact_ids_are_unique():
    with pytest.raises(ValueError, match="duplicate"):
        FactSet("x", [Fact("E1", "event", "a"), Fact("E1", "event", "b")])


def test_graph_paths_become_facts_about_the_top_guess(shop_store):
    pytest.importorskip("torch_geometric")
    from behaviorlm.config import IngestConfig
    from behaviorlm.data.graph import build_graph
    from behaviorlm.data.ingest import pseudonymize_user_id
    from behaviorlm.llm.facts import _path_facts
    from behaviorlm.llm.grounding import check_grounding

    with EventStore(shop_store) as store:
        store.execute(
            "INSERT INTO items (item_id, title, category) VALUES ('sku-103', 'Rain boots', 'shoes')"
        )
        graph = build_graph(store)
        user = pseudonymize_user_id(RAW_USER, config=IngestConfig())
        guess = Fact("N1", "next_item", "the recommender's #1 guess: item sku-103", {"item_id": "sku-103"})
        paths = _path_facts(graph, user, [guess], k=3)
        # the user reviewed and viewed sku-101 (shoes); a review says more about taste than a view
        assert [(p.id, p.values["relation"]) for p in paths] == [("K1", "review"), ("K2", "view")]
        assert "item sku-101" in paths[0].text and "category=shoes" in paths[0].text
        assert paths[0].values["via_item_id"] == "sku-101" and "user_id" not in paths[0].values
        assert _path_facts(graph, user, [], k=3) == []  # no guess, no paths
        facts = FactSet("user-test", [guess, *paths])
        report = check_grounding(
            facts, "Item sku-103 shares category=shoes with item sku-101.", evidence=["K1"]
        )
        assert report.grounded, report.problems
