"""GET /v1/users/{id}/explanation/words: the intent in words from grounded facts, through any
OpenAI-compatible server (a scripted one on loopback here)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from tests.serving.conftest import auth

from behaviorlm.config import LLMConfig, ServiceConfig
from behaviorlm.serving.app import create_app
from behaviorlm.testing.fake_llm import FakeLLMServer, Step

ANSWER = {
    "intent": "exploring new genres",
    "confidence": 0.55,
    "claims": [
        {"fact": "E1", "field": "action", "value": "viewed"},
        {"fact": "N1", "field": "rank", "value": "1"},
        {"fact": "E1", "field": "country", "value": "United States"},
    ],
}


def make_app(deployment, tmp_path, url: str | None):
    llm = (
        None if url is None else LLMConfig(base_url=url, model="fake", max_retries=0, cache_dir=str(tmp_path))
    )
    config = ServiceConfig(
        store=deployment["store"], model=deployment["model"], keys_file=deployment["keys_file"], llm=llm
    )
    return create_app(config)


def test_intent_in_words(deployment, tmp_path):
    with (
        FakeLLMServer(default=Step(text=json.dumps(ANSWER))) as server,
        TestClient(make_app(deployment, tmp_path, server.url)) as client,
    ):
        reply = client.get("/v1/users/user3/explanation/words", headers=auth(deployment, "reader"))
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["intent"] == "exploring new genres" and body["source"] == "llm" and body["grounded"], body
        assert len(server.requests) == 1
        assert [e["id"] for e in body["evidence"]] == ["E1", "N1"]
        # The invented attribute is dropped, reported, and never reaches the words.
        assert [c["status"] for c in body["claims"]] == ["verified", "verified", "dropped"]
        assert "United States" not in body["text"] and not body["first_try_grounded"]
        assert body["evidence"][0]["text"].startswith("20") and "viewed item i" in body["evidence"][0]["text"]
        assert "guess for the user's next item" in body["evidence"][1]["text"]
        # The prompt does not name the user at all (an explanation needs no alias; the raw id never).
        prompt = server.requests[0]["messages"][1]["content"]
        assert "user3" not in prompt and prompt.startswith("Facts:\n")

        headers = auth(deployment, "reader")
        assert client.get("/v1/users/nobody/explanation/words", headers=headers).status_code == 404
        assert client.get("/v1/users/user3/explanation/words").status_code == 401
        admin = auth(deployment, "admin")
        assert client.get("/v1/users/user3/explanation/words", headers=admin).status_code == 403


def test_unreachable_language_model_is_503(deployment, tmp_path):
    with TestClient(make_app(deployment, tmp_path, "http://127.0.0.1:9/v1")) as client:
        reply = client.get("/v1/users/user3/explanation/words", headers=auth(deployment, "reader"))
    assert reply.status_code == 503 and "language model unavailable" in reply.json()["detail"]


@pytest.mark.parametrize("url", [None])
def test_no_endpoint_without_a_language_model(deployment, tmp_path, url):
    with TestClient(make_app(deployment, tmp_path, url)) as client:
        assert "/v1/users/{user_id}/explanation/words" not in client.get("/openapi.json").json()["paths"]


def test_questions_are_answered_from_tools(deployment, tmp_path):
    plan = {"calls": [{"tool": "count_events", "event_type": "any", "period": ""}]}
    with (
        FakeLLMServer(default=Step(text=json.dumps(plan))) as server,
        TestClient(make_app(deployment, tmp_path, server.url)) as client,
    ):
        headers = auth(deployment, "reader")
        reply = client.post(
            "/v1/users/user3/questions", json={"question": "How many events?"}, headers=headers
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["source"] == "tools" and body["calls"][0]["tool"] == "count_events"
        count = body["calls"][0]["result"]["count"]
        assert count > 0 and f"The user has {count:,} events." == body["answer"]
        personal = client.post(
            "/v1/users/user3/questions",
            json={"question": "What is the user's email address?"},
            headers=headers,
        )
        assert personal.status_code == 200 and personal.json()["source"] == "personal"
        assert len(server.requests) == 1  # the personal question never reached the model
        assert (
            client.post("/v1/users/user3/questions", json={"question": ""}, headers=headers).status_code
            == 422
        )
        assert (
            client.post(
                "/v1/users/nobody/questions", json={"question": "How many?"}, headers=headers
            ).status_code
            == 404
        )
