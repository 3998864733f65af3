"""Facts, tasks and privacy end to end, against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json

import pytest
from tests.llm.conftest import PLANTED_PII, RAW_USER

from behaviorlm.config import LLMConfig
from behaviorlm.data.store import EventStore
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import SHOPPING_INTENTS, Fact, FactSet, segment_facts, user_alias, user_facts
from behaviorlm.llm.tasks import describe_segment, explain_intent, parse_claim_lines
from behaviorlm.llm.tools import UserContext, ask
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
        "claims": [
            {"fact": "E2", "field": "title", "value": "Wool socks"},
            {"fact": "E2", "field": "action", "value": "added to cart"},
        ],
    }
    return json.dumps({**answer, **kw})


def test_user_facts_are_the_stores_facts(facts):
    by_id = facts.by_id()
    assert facts.subject == user_alias(RAW_USER) and RAW_USER not in facts.subject
    assert by_id["P1"].values["events"] == 4 and by_id["P1"].values["events_by_type"]["cart"] == 1
    assert by_id["P1"].values["user"] == facts.subject
    # Newest first: the review, then the cart, then the views.
    assert [by_id[f"E{i}"].values["event_type"] for i in range(1, 5)] == ["review", "cart", "view", "view"]
    assert by_id["E2"].values["item_id"] == "sku-102" and '"Wool socks"' in by_id["E2"].text
    assert by_id["E2"].values["categories"] == ["socks"] and by_id["E2"].values["date"] == "2023-11-14"
    assert "rating 4" in by_id["E1"].text
    # Categories over all events: boots (sku-101) twice, socks (sku-102) twice.
    assert by_id["P2"].values["counts"] == {"shoes": 2, "socks": 2}
    review = facts.of_kind("review")[0].text
    assert "Lovely boots" in review and all(p not in review for p in PLANTED_PII)
    assert facts.intents == SHOPPING_INTENTS and not facts.intent_from_model


def test_unknown_user_is_a_key_error(shop_store):
    with EventStore(shop_store, read_only=True) as store, pytest.raises(KeyError):
        user_facts(store, "nobody")


def test_explain_intent_renders_verified_claims(facts, tmp_path):
    with FakeLLMServer([Step(text=intent_json())]) as server, client_for(server, tmp_path) as client:
        result = explain_intent(client, facts)
    assert result.source == "llm" and result.grounded and result.first_try_grounded and result.attempts == 1
    assert result.answer.intent == "ready to buy" and result.answer.evidence == ["E2"]
    assert result.answer.text == (
        "Likely intent: ready to buy (the language model's confidence 0.70). "
        'The user added to cart "Wool socks".'
    )
    sent = server.requests[0]
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["intent"]["enum"] == list(SHOPPING_INTENTS)
    # Constrained decoding: each claim names an existing fact and one of that fact's own fields.
    variants = {
        v["properties"]["fact"]["enum"][0]: v for v in schema["properties"]["claims"]["items"]["anyOf"]
    }
    assert set(variants) <= set(facts.by_id()) and {"P1", "P2", "E1", "E2"} <= set(variants)
    assert "title" in variants["E2"]["properties"]["field"]["enum"]
    assert "country" not in variants["E2"]["properties"]["field"]["enum"]
    assert "[E2]" in sent["messages"][1]["content"]


def test_wrong_claims_are_corrected_or_dropped_never_shown(facts, tmp_path):
    claims = [
        {"fact": "E2", "field": "title", "value": "Hiking poles"},  # wrong title: corrected
        {"fact": "P1", "field": "events", "value": "7"},  # wrong count: corrected
        {"fact": "E2", "field": "country", "value": "France"},  # invented field: dropped
        {"fact": "E9", "field": "title", "value": "Socks"},  # no such fact: dropped
        {"fact": "E3", "field": "after", "value": "E2"},  # false order: dropped
    ]
    with (
        FakeLLMServer([Step(text=intent_json(claims=claims))]) as server,
        client_for(server, tmp_path) as client,
    ):
        result = explain_intent(client, facts)
    assert [v["status"] for v in result.claims] == ["corrected", "corrected", "dropped", "dropped", "dropped"]
    assert result.source == "llm" and not result.first_try_grounded and len(result.problems) == 5
    text = result.answer.text
    assert '"Wool socks"' in text and "4 events in all" in text
    for invented in ("Hiking poles", "7 events", "France"):
        assert invented not in text


def test_no_surviving_claim_falls_back_to_the_facts(facts, tmp_path):
    claims = [{"fact": "E2", "field": "colour", "value": "red"}]
    with (
        FakeLLMServer([Step(text=intent_json(claims=claims))]) as server,
        client_for(server, tmp_path) as client,
    ):
        result = explain_intent(client, facts)
    assert result.source == "fallback" and result.grounded
    assert "4 events in all" in result.answer.text and '"Leather boots"' in result.answer.text


def test_intent_model_probability_is_the_confidence(tmp_path):
    facts = FactSet(
        "user-x",
        [Fact("I1", "intent", "intent model: P(buy) = 0.8", {"intent": "buy", "probability": 0.8})],
        intents=("buy", "browse"),
        intent_from_model=True,
    )
    reply = json.dumps({"intent": "buy", "claims": [{"fact": "I1", "field": "probability", "value": "80%"}]})
    with (
        FakeLLMServer([Step(text=reply)]) as server,
        client_for(server, tmp_path) as client,
    ):
        result = explain_intent(client, facts)
        sent = json.dumps(server.requests[0])
    # The language model is not asked to copy the probability: code does.
    assert "confidence" not in sent
    assert result.answer.confidence == 0.8 and "intent-model probability 0.80" in result.answer.text


def test_with_an_intent_model_the_stated_intent_is_its_most_likely_class(tmp_path):
    """The language model is told the intent model's most likely class and may not state another: a reply
    naming the less likely one is replaced (and counted as a first-try miss), with that class's
    probability as the confidence."""
    facts = FactSet(
        "user-x",
        [
            Fact("I1", "intent", "intent model: P(browse) = 0.7", {"intent": "browse", "probability": 0.7}),
            Fact("I2", "intent", "intent model: P(buy) = 0.3", {"intent": "buy", "probability": 0.3}),
        ],
        intents=("buy", "browse"),
        intent_from_model=True,
    )
    reply = json.dumps({"intent": "buy", "claims": [{"fact": "I1", "field": "probability", "value": "0.7"}]})
    with (
        FakeLLMServer([Step(text=reply)]) as server,
        client_for(server, tmp_path) as client,
    ):
        result = explain_intent(client, facts)
        request = server.requests[0]
    assert "most likely intent is browse" in request["messages"][0]["content"]
    assert "[I1]" not in request["messages"][1]["content"]  # its probability is stated by code, not claimed
    assert json.dumps(request).count('"enum": ["browse"]') == 1  # the schema allows that class alone
    assert result.answer.intent == "browse" and result.answer.confidence == 0.7
    assert not result.first_try_grounded
    assert result.answer.text.startswith("Likely intent: browse (intent-model probability 0.70).")


class _LinesClient:
    """The embedded model as tasks see it (``remote`` false, ``chat(grammar=)``), answering ``reply``."""

    remote = False
    name = "embedded:fake"

    def __init__(self, reply: str) -> None:
        self.reply, self.sent = reply, []

    def chat(self, messages, *, grammar=None, **kw):
        self.sent.append({"messages": messages, "grammar": grammar, **kw})
        return type("Reply", (), {"text": self.reply})()


def test_the_embedded_model_writes_claim_lines_under_a_grammar(facts):
    reply = 'intent: ready to buy\nconfidence: 0.6\nE2 title: "Hiking poles"\nP2 most_common_category: shoes'
    client = _LinesClient(reply)
    result = explain_intent(client, facts)
    sent = client.sent[0]
    assert "response_format" not in sent and sent["grammar"].startswith("%llguidance {}")
    grammar = sent["grammar"]
    # Each claim line names a shown fact and one of its fields, with a value of that field's shape: the
    # categories the prompt shows, a count of at most one digit more than the truth (4 events), a date.
    assert '"E2 title: "' in grammar and '"E2 country: "' not in grammar
    assert '"P2 most_common_category: " ("shoes" | "socks")' in grammar
    assert '"P1 events: " /[0-9]{1,2}/' in grammar and "[0-9]{4}-[0-9]{2}-[0-9]{2}" in grammar
    assert '"intent: " (' + " | ".join(json.dumps(i) for i in SHOPPING_INTENTS) + ")" in grammar
    assert "Reply with lines" in sent["messages"][0]["content"]
    # Parsed into the same answer as JSON would be, verified and rendered from the facts.
    assert result.answer.intent == "ready to buy" and result.answer.confidence == 0.6
    assert [v["status"] for v in result.claims] == ["corrected", "verified"]
    assert '"Wool socks"' in result.answer.text and "Hiking poles" not in result.answer.text


def test_claim_lines_parse_and_bounds():
    header = {"name": {"type": "string", "maxLength": 48}}
    parsed = parse_claim_lines('Loyal raters\nS1 users: 120\nE3 title: "Heat"', header)
    assert parsed == {
        "name": "Loyal raters",
        "claims": [
            {"fact": "S1", "field": "users", "value": "120"},
            {"fact": "E3", "field": "title", "value": "Heat"},
        ],
    }
    with pytest.raises(ValueError, match="no ': '"):
        parse_claim_lines("Loyal raters\nS1 users 120", header)


def test_prompt_lines_shorten_what_costs_tokens(facts):
    from behaviorlm.llm.claims import Claim, fields_of, verify_claims
    from behaviorlm.llm.tasks import prompt_lines, short_title

    lines = prompt_lines(facts).splitlines()
    # A second event on the same day says so instead of the date (ten tokens).
    dated = [line for line in lines if line.startswith("[E")]
    assert dated[0].split()[1].count("-") == 2 and any(" same day " in f" {line}" for line in dated[1:])
    assert any(line.startswith("[P2] most_common_category: ") for line in lines)
    long = "100% Pure Cosmetics - Organic Coffee Bean Eye Cream, 1 fl oz cream"
    short = short_title(long)
    assert short.endswith("…") and len(short) < len(long) and short_title("Heat") == "Heat"
    # The verifier takes the shortened title as the title.
    fact = Fact("E1", "event", "x", {"title": long, "item_id": "i1"})
    subject = FactSet("user-x", [fact])
    assert "title" in fields_of(fact, subject)
    assert verify_claims([Claim(fact="E1", field="title", value=short)], subject).verdicts[0].ok


def test_malformed_json_gets_one_repair(facts, tmp_path):
    steps = [
        Step(text='{"intent": "ready to buy", "confidence": 0.7, "clai'),
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


def test_describe_segment_checks_size_words_and_the_name(tmp_path):
    from behaviorlm.profiling.segments import SegmentSummary

    summary = SegmentSummary(3, 941, 0.998, 4.0, 18.0, 250.5, 0.4, [("release_year=1949", 2.1)])
    seg = segment_facts(summary)
    assert "941 users, 100% of all users" in seg.render() and "2.1 times" in seg.render()
    reply = json.dumps(
        {
            "name": "Small US viewers",
            "claims": [
                {"fact": "S1", "field": "size", "value": "relatively small"},
                {"fact": "S1", "field": "users", "value": "941"},
                {"fact": "S5", "field": "attribute", "value": "release_year=1949"},
                {"fact": "S5", "field": "lift", "value": "2.1"},
            ],
        }
    )
    with FakeLLMServer([Step(text=reply)]) as server, client_for(server, tmp_path) as client:
        result = describe_segment(client, seg)
    assert [v["status"] for v in result.claims] == ["corrected", "verified", "verified", "verified"]
    # 941 of 943 users is large; the name's unsupported words ("small", "us") put it back to the default.
    assert result.answer.name == "segment 3" and any("'small'" in p for p in result.problems)
    assert result.answer.text.startswith("A large group: 941 users")
    assert "'release_year=1949' is 2.1 times as common" in result.answer.text


def test_nothing_personal_leaves_the_process(shop_store, tmp_path):
    """Every byte sent to a remote server: no raw user id, no planted PII (facts and the question)."""
    with EventStore(shop_store, read_only=True) as store:
        facts = user_facts(store, RAW_USER)
    answers = [Step(text=intent_json()), Step(text=json.dumps({"calls": [{"tool": "refuse"}]}))]
    with (
        FakeLLMServer(answers) as server,
        client_for(server, tmp_path) as client,
        EventStore(shop_store, read_only=True) as store,
    ):
        explain_intent(client, facts)
        user = facts.by_id()["P1"].values["user"]
        stored = store.rows("SELECT DISTINCT user_id FROM events WHERE user_id NOT LIKE 'other%'")[0][0]
        ask(
            client,
            UserContext(store, stored),
            f"How many times did {stored} (alice@example.com, card 4111 1111 1111 1111) buy last month?",
        )
    sent = b"".join(server.raw_requests).decode()
    assert len(server.raw_requests) == 2 and user in sent
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
    from behaviorlm.data.pseudonyms import pseudonymize_user_id
    from behaviorlm.llm.facts import _path_facts

    with EventStore(shop_store) as store:
        store.execute(
            "INSERT INTO items (item_id, title, category) VALUES ('sku-103', 'Rain boots', 'shoes')"
        )
        graph = build_graph(store)
        user = pseudonymize_user_id(RAW_USER, config=IngestConfig())
        guess = Fact("N1", "next_item", "the recommender's #1 guess: item sku-103", {"item_id": "sku-103"})
        paths = _path_facts(store, graph, user, [guess], k=3)
        # the user reviewed and viewed sku-101 (shoes); a review says more about taste than a view
        assert [(p.id, p.values["relation"]) for p in paths] == [("K1", "review"), ("K2", "view")]
        assert "item sku-101" in paths[0].text and "category=shoes" in paths[0].text
        assert paths[0].values["via_item_id"] == "sku-101" and "user_id" not in paths[0].values
        # Items by title where the catalogue knows them.
        assert 'review of item sku-101 "Leather boots" (once)' in paths[0].text
        assert 'with item sku-103 "Rain boots" (' in paths[0].text
        assert (paths[0].values["via_title"], paths[0].values["item_title"]) == (
            "Leather boots",
            "Rain boots",
        )
        assert _path_facts(store, graph, user, [], k=3) == []  # no guess, no paths
