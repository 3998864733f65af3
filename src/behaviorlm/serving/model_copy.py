"""Which copy of a sequence model the service scores with: the float model or its int8 / bfloat16 copy.

``model.quantized()`` (int8 linear layers, the item table in bfloat16) halves the bytes read per request,
which pays for a large catalogue and a short window; with a long window and a small catalogue, quantizing
each call's activations costs more than it saves and the float model is faster (docs/transformer.md,
"Serving copy": ML-100k with a 200-event window, float 1.36 ms vs int8 2.05 ms; Amazon Beauty, 54,542
items, the copy 4.0-5.6 vs 6.0-7.3 ms). Which one wins depends on the model's shape and on the CPU, so
with ``quantize = "auto"`` (the default) the service measures both where it runs:

* request-shaped histories (the latest events of the store's most recently active users, read as a
  request reads them; random items from the catalogue when the store is empty);
* the two copies timed in turns, one call each per history, over a few passes (a change in the machine's
  load falls on both alike); the median per copy;
* the quantized copy is served when it is at least ``MIN_SPEEDUP`` times faster *and* its top 10 agrees
  with the float model's on at least ``MIN_AGREEMENT`` of the items (a guard on quality: quantization
  that reorders the top of the list is not worth a small gain in speed).

The decision and its measurements are reported by ``/v1/health`` (``serving_copy``) and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from behaviorlm.models.sequential import EventHistory

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.1
"""The quantized copy must be this many times faster (median call) to be served: below it, timing noise
could flip the choice between runs while its top 10 differs from the float model's."""
MIN_AGREEMENT = 0.8
"""Share of the float model's top 10 the quantized copy must keep, on average over the timed histories."""
SAMPLE_HISTORIES = 32
PASSES = 3

QuantizeMode = bool | Literal["auto"]


@dataclass(frozen=True)
class ServingChoice:
    """What the service serves and why; the timings are medians of one call in milliseconds."""

    quantized: bool
    reason: str
    float_ms: float | None = None
    quantized_ms: float | None = None
    top10_agreement: float | None = None
    histories: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    float_ms: float,
    quantized_ms: float,
    agreement: float,
    *,
    min_speedup: float = MIN_SPEEDUP,
    min_agreement: float = MIN_AGREEMENT,
) -> tuple[bool, str]:
    """The rule: serve the quantized copy when it is ``min_speedup`` x faster and keeps ``min_agreement``
    of the float model's top 10. Returns (quantized, reason)."""
    speedup = float_ms / quantized_ms if quantized_ms > 0 else float("inf")
    timing = f"float {float_ms:.2f} ms, int8 {quantized_ms:.2f} ms per call ({speedup:.2f}x)"
    if agreement < min_agreement:
        return False, f"{timing}, but the int8 copy keeps only {agreement:.0%} of the top 10"
    if speedup < min_speedup:
        return False, f"{timing}: under {min_speedup:.2f}x, the float model is served"
    return True, f"{timing}, top 10 agreement {agreement:.0%}"


def synthetic_histories(model: Any, *, n: int = SAMPLE_HISTORIES, seed: int = 0) -> list[EventHistory]:
    """``n`` histories of the model's full window, items drawn uniformly from its catalogue: what timing
    falls back on when the store has no events yet (the full window is the costliest request)."""
    from behaviorlm.models.window import read_window

    items = np.asarray(model.trained_on.item_ids)
    rng = np.random.default_rng(seed)
    length = max(1, min(read_window(model), 200))
    return [model.history_from_events([str(i) for i in rng.choice(items, size=length)]) for _ in range(n)]


def _call(model: Any, history: EventHistory, k: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    recs = model.recommend_one(history.interactions, k=k)
    return time.perf_counter() - start, recs.items[0]


def measure(
    model: Any, serving: Any, histories: Sequence[EventHistory], *, passes: int = PASSES, k: int = 10
) -> tuple[float, float, float]:
    """Median milliseconds per call of ``model`` and ``serving`` (timed in turns, the order alternating
    per history, after one untimed warm-up call each), and the mean share of ``model``'s top ``k`` that
    ``serving`` keeps."""
    if not histories:
        raise ValueError("measure needs at least one history")
    _call(model, histories[0], k)
    _call(serving, histories[0], k)
    float_times: list[float] = []
    quant_times: list[float] = []
    agreement: list[float] = []
    for p in range(passes):
        for i, history in enumerate(histories):
            if (i + p) % 2 == 0:
                t_float, top_float = _call(model, history, k)
                t_quant, top_quant = _call(serving, history, k)
            else:
                t_quant, top_quant = _call(serving, history, k)
                t_float, top_float = _call(model, history, k)
            float_times.append(t_float)
            quant_times.append(t_quant)
            if p == 0 and len(top_float):
                agreement.append(len(set(top_float.tolist()) & set(top_quant.tolist())) / len(top_float))
    return (
        1e3 * float(np.median(float_times)),
        1e3 * float(np.median(quant_times)),
        float(np.mean(agreement)) if agreement else 1.0,
    )


def choose_serving_copy(
    model: Any,
    mode: QuantizeMode,
    histories: Sequence[EventHistory] | None = None,
    *,
    source: str = "the given histories",
) -> tuple[Any, ServingChoice]:
    """The model to serve for ``mode`` (``True``: the quantized copy, ``False``: the float model,
    ``"auto"``: whichever :func:`decide` picks from :func:`measure` on ``histories`` -- synthetic ones
    when none are given) and the reason; ``source`` says in the reason where the histories came from."""
    if not hasattr(model, "quantized"):
        return model, ServingChoice(False, f"{type(model).__name__} has no quantized copy")
    if mode is False:
        return model, ServingChoice(False, "quantize = false")
    serving = model.quantized()
    if mode is True:
        return serving, ServingChoice(True, "quantize = true")
    if mode != "auto":
        raise ValueError(f"quantize must be true, false or 'auto', got {mode!r}")
    histories = [h for h in (histories or []) if len(h.interactions.items)]
    if not histories:
        histories, source = synthetic_histories(model), "random catalogue items (the store has no events)"
    float_ms, quant_ms, agreement = measure(model, serving, histories)
    quantized, reason = decide(float_ms, quant_ms, agreement)
    choice = ServingChoice(
        quantized,
        f"auto, measured on {len(histories)} histories of {source}: {reason}",
        float_ms=float_ms,
        quantized_ms=quant_ms,
        top10_agreement=agreement,
        histories=len(histories),
    )
    log.info("serving copy: %s", choice.reason)
    return (serving if quantized else model), choice
