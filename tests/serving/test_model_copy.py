"""quantize = "auto": the service times the float model and its int8 copy on request-shaped histories and
serves the faster one when it keeps the float model's top 10."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from behaviorlm.config import ServiceConfig
from behaviorlm.models.base import Recommendations
from behaviorlm.models.registry import load_recommender
from behaviorlm.serving.app import create_app
from behaviorlm.serving.model_copy import (
    MIN_AGREEMENT,
    MIN_SPEEDUP,
    SAMPLE_HISTORIES,
    choose_serving_copy,
    decide,
    measure,
    synthetic_histories,
)


class Timed:
    """A stand-in model: each call takes ``delay`` seconds and returns ``top``."""

    def __init__(self, delay: float, top: list[int], copy: Timed | None = None) -> None:
        self.delay, self.top, self.copy, self.calls = delay, np.array(top), copy, 0

    def recommend_one(self, history, *, k: int = 10, exclude_seen: bool = True) -> Recommendations:
        self.calls += 1
        time.sleep(self.delay)
        return Recommendations(
            users=np.zeros(1, dtype=np.int64), items=self.top[None, :k], scores=np.zeros((1, k))
        )

    def quantized(self) -> Timed:
        return self.copy


HISTORIES = [SimpleNamespace(interactions=SimpleNamespace(items=np.arange(3))) for _ in range(4)]
TOP = list(range(10))


def test_the_rule() -> None:
    assert decide(2.0, 1.0, 1.0)[0] is True
    assert decide(2.0, 2.0 / (MIN_SPEEDUP - 0.01), 1.0)[0] is False
    quantized, reason = decide(5.0, 1.0, MIN_AGREEMENT - 0.1)
    assert quantized is False and "keeps only 70% of the top 10" in reason
    assert decide(5.0, 1.0, MIN_AGREEMENT)[0] is True


def test_auto_serves_the_faster_copy_when_it_agrees() -> None:
    fast = Timed(0.0, TOP)
    slow = Timed(0.004, TOP, copy=fast)
    served, choice = choose_serving_copy(slow, "auto", HISTORIES)
    assert served is fast and choice.quantized
    assert choice.float_ms > 3.0 > choice.quantized_ms and choice.top10_agreement == 1.0
    assert choice.histories == len(HISTORIES) and "auto, measured on 4 histories" in choice.reason
    # Timed in turns: as many calls of each (the warm-up call included).
    assert slow.calls == fast.calls == 1 + 3 * len(HISTORIES)


def test_auto_keeps_the_float_model_when_the_copy_is_slower_or_reorders_the_top() -> None:
    slower = Timed(0.004, TOP)
    model = Timed(0.0, TOP, copy=slower)
    served, choice = choose_serving_copy(model, "auto", HISTORIES)
    assert served is model and not choice.quantized and "the float model is served" in choice.reason

    reordered = Timed(0.0, list(range(5, 15)))
    model = Timed(0.004, TOP, copy=reordered)
    served, choice = choose_serving_copy(model, "auto", HISTORIES)
    assert served is model and not choice.quantized and choice.top10_agreement == pytest.approx(0.5)


def test_true_false_and_models_without_a_copy_are_not_timed() -> None:
    copy = Timed(0.0, TOP)
    model = Timed(0.0, TOP, copy=copy)
    assert choose_serving_copy(model, True, HISTORIES)[0] is copy
    served, choice = choose_serving_copy(model, False, HISTORIES)
    assert served is model and choice.reason == "quantize = false" and choice.float_ms is None
    assert model.calls == copy.calls == 0
    plain = SimpleNamespace()
    served, choice = choose_serving_copy(plain, "auto", HISTORIES)
    assert served is plain and "has no quantized copy" in choice.reason
    with pytest.raises(ValueError, match="true, false or 'auto'"):
        choose_serving_copy(model, "sometimes", HISTORIES)
    with pytest.raises(ValueError, match="at least one history"):
        measure(model, copy, [])


def test_auto_on_a_real_model_with_synthetic_histories(deployment) -> None:
    model = load_recommender(deployment["model"])
    histories = synthetic_histories(model, n=5)
    assert all(len(h.interactions.items) == model.max_len + 1 for h in histories)
    served, choice = choose_serving_copy(model, "auto", None)  # no store histories: synthetic ones
    assert choice.histories == SAMPLE_HISTORIES and "random catalogue items" in choice.reason
    assert choice.float_ms > 0 and choice.quantized_ms > 0 and 0.0 <= choice.top10_agreement <= 1.0
    assert getattr(served, "is_quantized_", False) is choice.quantized


def test_the_service_reports_its_choice(deployment) -> None:
    assert ServiceConfig(store="s", keys_file="k").quantize == "auto"
    with pytest.raises(ValidationError, match="quantize"):
        ServiceConfig(store="s", keys_file="k", quantize="sometimes")
    for quantize in ("auto", False):
        config = ServiceConfig(
            store=deployment["store"],
            model=deployment["model"],
            keys_file=deployment["keys_file"],
            quantize=quantize,
        )
        with TestClient(create_app(config)) as client:
            health = client.get("/v1/health").json()
            service = client.app.state.service
        copy = health["serving_copy"]
        assert copy["quantized"] is getattr(service.model, "is_quantized_", False)
        if quantize == "auto":
            # The store's latest users, read as requests read them.
            assert copy["histories"] == SAMPLE_HISTORIES and "the store's latest users" in copy["reason"]
            assert copy["float_ms"] > 0 and copy["quantized_ms"] > 0
        else:
            assert copy == {**copy, "quantized": False, "reason": "quantize = false", "float_ms": None}


def test_recommend_one_is_recommend_for_one_user(deployment) -> None:
    model = load_recommender(deployment["model"])
    for items in (["i003", "i004", "i005"], []):
        history = model.history_from_events(items).interactions
        one = model.recommend_one(history, k=5)
        batch = model.recommend(np.array([0]), k=5, history=history)
        assert one.items.tolist() == batch.items.tolist()
        np.testing.assert_allclose(one.scores, batch.scores, rtol=1e-5, atol=1e-6)
