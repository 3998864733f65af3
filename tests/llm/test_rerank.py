"""LLM re-ranking: the label verbalizer orders candidates, unscored labels keep the retriever's order,
only titles leave the process, and the embedded model prefers an obvious continuation."""

from __future__ import annotations

import pytest

from behaviorlm.config import LLMConfig
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.rerank import label_prior, llm_rerank, rerank_messages
from behaviorlm.testing.fake_llm import FakeLLMServer, Step

HISTORY = ["Star Wars", "The Empire Strikes Back"]
CANDIDATES = ["Toy Story", "Return of the Jedi", "Fargo", "Heat"]


def _client(server: FakeLLMServer) -> LLMClient:
    return LLMClient(LLMConfig(base_url=server.url, model="fake", cache_dir="", backoff_seconds=0.01))


def test_candidates_are_ordered_by_label_logprob_and_the_rest_keep_their_place():
    step = Step(
        text="B", top_logprobs=(("B", -0.1), (" D", -1.5), ("Answer", -2.0), ("B.", -3.0), ("Z", -4.0))
    )
    with FakeLLMServer([step]) as server, _client(server) as client:
        result = llm_rerank(client, HISTORY, CANDIDATES)
    assert result.order == (1, 3, 0, 2)  # B, D scored; A and C unscored keep retriever order
    assert result.scored == 2 and result.label_logprobs == {"B": -0.1, "D": -1.5}
    sent = server.requests[0]
    assert sent["max_tokens"] == 1 and sent["logprobs"] is True and sent["top_logprobs"] == 40
    prompt = sent["messages"][1]["content"]
    assert "B. Return of the Jedi" in prompt and "2. The Empire Strikes Back" in prompt
    assert "(A-D)" in prompt


def test_a_server_without_logprobs_is_a_clear_error():
    with (
        FakeLLMServer([Step(text="B")]) as server,
        _client(server) as client,
        pytest.raises(LLMError, match="does not return token log-probabilities"),
    ):
        llm_rerank(client, HISTORY, CANDIDATES)


def test_candidate_count_is_checked():
    with pytest.raises(ValueError, match="1 to 20 candidates"):
        rerank_messages(HISTORY, [f"item {i}" for i in range(21)])


def test_calibration_subtracts_the_content_free_prior():
    prior_step = Step(text="A", top_logprobs=(("A", -0.5), ("B", -1.0), ("C", -2.0), ("D", -3.0)))
    step = Step(text="A", top_logprobs=(("A", -0.6), ("B", -1.2), ("C", -1.5), ("D", -3.5)))
    with FakeLLMServer([prior_step, step]) as server, _client(server) as client:
        prior = label_prior(client, 4)
        result = llm_rerank(client, HISTORY, CANDIDATES, prior=prior)
    assert prior == {"A": -0.5, "B": -1.0, "C": -2.0, "D": -3.0}
    content_free = server.requests[0]["messages"][1]["content"]
    assert "1. N/A" in content_free and "D. N/A" in content_free
    # calibrated: A -0.1, B -0.2, C +0.5, D -0.5
    assert result.order == (2, 0, 1, 3)


def test_embedded_model_returns_a_score_for_every_label():
    """The embedded 0.5B model scores every label (the plumbing works); whether its order is any good is
    measured by benchmarks/run_llm_rerank.py, not asserted here."""
    pytest.importorskip("xllamacpp", reason="the embedded model needs the llm wheels (make install)")
    with LLMClient(LLMConfig(cache_dir="")) as client:
        prior = label_prior(client, 3)
        result = llm_rerank(
            client,
            ["Harry Potter and the Philosopher's Stone", "Harry Potter and the Chamber of Secrets"],
            ["Kitchen sponge (pack of 10)", "Harry Potter and the Prisoner of Azkaban", "Motor oil 5W-30"],
            prior=prior,
        )
    assert set(prior) == {"A", "B", "C"} and all(-20 < v < 0 for v in prior.values())
    assert result.scored == 3 and sorted(result.order) == [0, 1, 2]
