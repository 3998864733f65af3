"""A purchase-propensity intent model's reasons as facts: in the prompt, claimable, checked and rendered."""

from __future__ import annotations

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest import ingest_records
from behaviorlm.data.purchase import store_time_range
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.purchase import fit_purchase_propensity
from behaviorlm.llm.claims import Claim, render_claims, verify_claims
from behaviorlm.llm.facts import user_facts
from behaviorlm.llm.tasks import explanation_facts, prompt_lines
from behaviorlm.testing.purchase import planted_propensity_events


def test_reason_facts_are_shown_checked_and_rendered(tmp_path) -> None:
    records = planted_propensity_events(n_users=120)
    latest = max(r["timestamp"] for r in records)
    # A shopper who put an item in the cart an hour before the store's latest event.
    records += [
        {"user_id": "keen", "item_id": "i5", "event_type": "view", "timestamp": latest - 7200},
        {"user_id": "keen", "item_id": "i5", "event_type": "cart", "timestamp": latest - 3600},
    ]
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, records, source="t", config=IngestConfig(format="jsonl"))
        first, last = store_time_range(store)
        model, _ = fit_purchase_propensity(
            store.interactions(), first_timestamp=first, last_timestamp=last, n_boot=10
        )
        facts = user_facts(store, "keen", intent_model=model, with_anomaly=False)
    assert facts.intent_from_model and set(facts.intents) == {"purchase within 24h", "no purchase within 24h"}
    reasons = facts.of_kind("intent_reason")
    assert 1 <= len(reasons) <= 3 and [f.id for f in reasons] == ["I3", "I4", "I5"][: len(reasons)]
    cart = next(f for f in reasons if f.values["feature"].startswith("cart_last_"))
    assert cart.values["log_odds"] > 0 and "makes a purchase more likely" in cart.text
    shown = explanation_facts(facts)
    assert {f.id for f in reasons} <= shown and f"[{cart.id}] {cart.values['label']}: 1" in prompt_lines(
        facts, shown
    )
    # A claim copying the reason is verified; a wrong count is corrected to the fact's; the words come
    # from the fact, direction included.
    report = verify_claims(
        [
            Claim(fact=cart.id, field="feature", value=cart.values["label"]),
            Claim(fact=cart.id, field="value", value="3"),
        ],
        facts,
    )
    assert [v.status for v in report.verdicts] == ["verified", "corrected"]
    (sentence,) = render_claims(report.kept, facts)
    assert sentence == (
        f"The intent model reads {cart.values['label']}: 1, which makes a purchase more likely than for the "
        "average user."
    )


def test_ask_answers_how_likely_a_purchase_is_from_the_intent_model(tmp_path) -> None:
    import json

    from behaviorlm.config import LLMConfig
    from behaviorlm.llm.client import LLMClient
    from behaviorlm.llm.tools import UserContext, ask, available_tools, intent, tool_fits
    from behaviorlm.testing.fake_llm import FakeLLMServer, Step

    records = planted_propensity_events(n_users=120)
    latest = max(r["timestamp"] for r in records)
    records += [{"user_id": "keen", "item_id": "i5", "event_type": "cart", "timestamp": latest - 3600}]
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_records(store, records, source="t", config=IngestConfig(format="jsonl"))
        first, last = store_time_range(store)
        model, _ = fit_purchase_propensity(
            store.interactions(), first_timestamp=first, last_timestamp=last, n_boot=10
        )
        plain = UserContext(store, "keen")
        assert "intent" not in {t.name for t in available_tools(plain)}  # no model, no tool
        ctx = UserContext(store, "keen", intent_model=model)
        direct = intent(ctx)
        expected = model.predict_proba(
            model.history_from_events(["i5"], event_types=["cart"], timestamps=[latest - 3600]).interactions,
            as_of=last + 1,
        )[0, 1]
        assert direct.fact.values["probabilities"]["purchase within 24h"] == round(expected, 2)
        assert "cart events in the last 3 h: 1 (makes a purchase more likely)" in direct.answer
        question = "Why is the user likely to buy soon?"
        assert tool_fits("intent", question) and not tool_fits("last_event", question)
        reply = {"calls": [{"tool": "intent"}]}
        with (
            FakeLLMServer([Step(text=json.dumps(reply))]) as server,
            LLMClient(LLMConfig(base_url=server.url, model="fake", cache_dir=str(tmp_path / "c"))) as client,
        ):
            result = ask(client, ctx, question)
    assert result.source == "tools" and result.answer == direct.answer
