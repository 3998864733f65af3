"""LLMClient against a real HTTP server on loopback: retries, timeouts, errors, cache, concurrency, keys."""

from __future__ import annotations

import threading

import pytest

from behaviorlm.config import LLMConfig
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.testing.fake_llm import FakeLLMServer, Step

HELLO = [{"role": "user", "content": "hello"}]


def client_for(server: FakeLLMServer, tmp_path, **overrides) -> LLMClient:
    settings = {
        "base_url": server.url,
        "model": "fake",
        "backoff_seconds": 0.01,
        "cache_dir": str(tmp_path / "c"),
    }
    return LLMClient(LLMConfig(**{**settings, **overrides}))


def test_answer_and_accounting(tmp_path):
    with FakeLLMServer([Step(text="hi there")]) as server, client_for(server, tmp_path) as client:
        reply = client.chat(HELLO)
    assert reply.text == "hi there" and not reply.cached and reply.attempts == 1
    assert (
        client.usage.requests == 1 and client.usage.prompt_tokens > 0 and client.usage.completion_tokens == 2
    )
    assert server.requests[0]["messages"] == HELLO and server.requests[0]["temperature"] == 0.0


def test_retries_5xx_and_429_then_succeeds(tmp_path):
    steps = [
        Step(status=500, body="boom"),
        Step(status=429, body="slow down", headers=(("retry-after", "0"),)),
        Step(text="ok"),
    ]
    with FakeLLMServer(steps) as server, client_for(server, tmp_path, max_retries=2) as client:
        reply = client.chat(HELLO)
    assert reply.text == "ok" and reply.attempts == 3
    assert client.usage.retries == 2 and client.usage.failures == 0 and len(server.requests) == 3


def test_gives_up_after_max_retries_with_the_reason(tmp_path):
    with (
        FakeLLMServer(default=Step(status=503, body="overloaded")) as server,
        client_for(server, tmp_path, max_retries=1) as client,
        pytest.raises(LLMError, match="503"),
    ):
        client.chat(HELLO)
    assert len(server.requests) == 2 and client.usage.failures == 1


def test_timeout_is_retried(tmp_path):
    with (
        FakeLLMServer([Step(text="late", delay_s=1.0), Step(text="on time")]) as server,
        client_for(server, tmp_path, timeout_seconds=0.3, max_retries=1) as client,
    ):
        reply = client.chat(HELLO)
    assert reply.text == "on time" and reply.attempts == 2


def test_timeouts_exhausted_raise(tmp_path):
    with (
        FakeLLMServer(default=Step(text="late", delay_s=1.0)) as server,
        client_for(server, tmp_path, timeout_seconds=0.2, max_retries=1) as client,
        pytest.raises(LLMError, match="timed out"),
    ):
        client.chat(HELLO)


def test_client_error_is_not_retried(tmp_path):
    with (
        FakeLLMServer(default=Step(status=401, body="bad key")) as server,
        client_for(server, tmp_path) as client,
        pytest.raises(LLMError, match="401"),
    ):
        client.chat(HELLO)
    assert len(server.requests) == 1


def test_malformed_body_is_retried_then_reported(tmp_path):
    with (
        FakeLLMServer(default=Step(status=200, body="<html>not json")) as server,
        client_for(server, tmp_path, max_retries=1) as client,
        pytest.raises(LLMError, match="not JSON"),
    ):
        client.chat(HELLO)
    assert len(server.requests) == 2


def test_reply_without_choices_is_an_error(tmp_path):
    with (
        FakeLLMServer([Step(status=200, body='{"object": "error"}')]) as server,
        client_for(server, tmp_path) as client,
        pytest.raises(LLMError, match="choices"),
    ):
        client.chat(HELLO)


def test_schema_rejected_is_resent_without_response_format(tmp_path):
    steps = [
        Step(status=400, body="response_format not supported"),
        Step(text='{"a": 1}'),
        Step(text='{"a": 2}'),
    ]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    with FakeLLMServer(steps) as server, client_for(server, tmp_path) as client:
        assert client.chat(HELLO, json_schema=schema).text == '{"a": 1}'
        client.chat([{"role": "user", "content": "again"}], json_schema=schema)
    assert "response_format" in server.requests[0]
    assert "response_format" not in server.requests[1] and "response_format" not in server.requests[2]


def test_cache_answers_repeats_without_a_request(tmp_path):
    with (
        FakeLLMServer([Step(text="first"), Step(text="second")]) as server,
        client_for(server, tmp_path) as client,
    ):
        a = client.chat(HELLO)
        b = client.chat(HELLO)
        c = client.chat([{"role": "user", "content": "other"}])
    assert (a.text, b.text, c.text) == ("first", "first", "second")
    assert b.cached and not a.cached and len(server.requests) == 2 and client.usage.cache_hits == 1
    # A new client (another process, later) reads the same on-disk cache.
    with FakeLLMServer([]) as server2:
        again = LLMClient(LLMConfig(base_url=server.url, model="fake", cache_dir=str(tmp_path / "c"))).chat(
            HELLO
        )
    assert again.cached and again.text == "first" and not server2.requests


def test_cache_can_be_turned_off(tmp_path):
    with (
        FakeLLMServer([Step(text="a"), Step(text="b")]) as server,
        client_for(server, tmp_path, cache_dir="") as client,
    ):
        assert [client.chat(HELLO).text for _ in range(2)] == ["a", "b"]


def test_concurrency_limit(tmp_path):
    with (
        FakeLLMServer(default=Step(text="x", delay_s=0.15)) as server,
        client_for(server, tmp_path, max_concurrency=2, cache_dir="") as client,
    ):
        threads = [
            threading.Thread(target=client.chat, args=([{"role": "user", "content": str(i)}],))
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(server.requests) == 6 and server.max_in_flight == 2


def test_api_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
    seen = {}
    with (
        FakeLLMServer([Step(text="ok")]) as server,
        client_for(server, tmp_path, api_key_env="MY_LLM_KEY") as client,
    ):
        original = client._transport._http.post

        def spy(url, **kw):
            seen.update(client._transport._http.headers)
            return original(url, **kw)

        client._transport._http.post = spy
        client.chat(HELLO)
    assert seen.get("authorization") == "Bearer sk-test-123"


def test_remote_messages_are_scrubbed(tmp_path):
    with FakeLLMServer([Step(text="ok")]) as server, client_for(server, tmp_path) as client:
        client.chat([{"role": "user", "content": "mail me at bob@example.org about item 0205616461"}])
    sent = server.raw_requests[0].decode()
    assert "bob@example.org" not in sent and "[EMAIL]" in sent and "0205616461" in sent


def test_unknown_embedded_model_is_a_clear_error():
    with pytest.raises(LLMError, match="unknown"):
        LLMClient(LLMConfig(model="gpt-17"))
