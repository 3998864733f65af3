"""LLM re-ranking of a recommender's top candidates, LlamaRec-style (Yue et al. 2023, "LlamaRec: Two-stage
recommendation using large language models for ranking").

The sequence model retrieves the top ``k`` (at most 20) items; the language model sees the titles of the
user's latest items and the candidates labelled ``A``, ``B``, ... and is asked which one comes next. As in
LlamaRec, the answer is not generated and parsed: one forward pass gives the log-probability of each label
as the first answer token (a *verbalizer* over the label tokens), and the candidates are ordered by it.
Labels the model gives no probability to (they were not among the returned alternatives) keep the
retriever's order after the scored ones, so the result is always a permutation of the candidates.

Small models answer mostly by position (the embedded 0.5B model gives nearly the same label distribution
whatever the titles). ``prior`` removes that bias by contextual calibration (Zhao et al. 2021, "Calibrate
before use"): :func:`label_prior` asks once, with content-free titles (``N/A``), for the labels'
log-probabilities, and each label's score becomes its log-probability minus its prior.

Only titles and labels reach the model: no user id, no timestamps. The client scrubs PII for remote
servers as for every request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from behaviorlm.llm.client import LLMClient

LABELS = "ABCDEFGHIJKLMNOPQRST"
"""Candidate labels; LlamaRec uses 20 candidates, one letter token each."""
MAX_HISTORY = 10
"""The latest history titles shown to the model."""
MAX_TITLE_CHARS = 80


@dataclass(frozen=True)
class Reranked:
    """One re-ranking: ``order`` indexes the candidates, best first."""

    order: tuple[int, ...]
    label_logprobs: dict[str, float]
    """Log-probability of each label the model scored (before any calibration)."""
    scored: int
    """How many candidates got a probability from the model (the rest kept the retriever's order)."""
    latency_s: float


def rerank_messages(history: list[str], candidates: list[str]) -> list[dict[str, str]]:
    """The chat messages: the user's latest titles (oldest first) and the labelled candidates."""
    if not 1 <= len(candidates) <= len(LABELS):
        raise ValueError(f"LLM re-ranking takes 1 to {len(LABELS)} candidates, got {len(candidates)}")
    shown = [_short(t) for t in history[-MAX_HISTORY:]]
    lines = "\n".join(f"{i}. {title}" for i, title in enumerate(shown, start=1)) or "(nothing yet)"
    options = "\n".join(f"{LABELS[i]}. {_short(title)}" for i, title in enumerate(candidates))
    return [
        {
            "role": "system",
            "content": "You recommend what a user will choose next from a list. Answer with one letter only.",
        },
        {
            "role": "user",
            "content": f"The user's latest items, oldest first:\n{lines}\n\nCandidates:\n{options}\n\n"
            f"Which candidate will the user choose next? Answer with its letter ({LABELS[0]}-{LABELS[len(candidates) - 1]}).",
        },
    ]


def llm_rerank(
    client: LLMClient,
    history: list[str],
    candidates: list[str],
    *,
    top_logprobs: int = 40,
    prior: dict[str, float] | None = None,
) -> Reranked:
    """Re-rank ``candidates`` (titles, in the retriever's order) for a user whose latest items are ``history``.

    With ``prior`` (from :func:`label_prior` for the same number of candidates), labels are scored by
    log-probability minus prior; a label missing from the prior is scored by its log-probability alone.
    """
    started = time.perf_counter()
    scores = _label_logprobs(client, rerank_messages(history, candidates), len(candidates), top_logprobs)
    return Reranked(
        order=order_by_labels(scores, len(candidates), prior=prior),
        label_logprobs=scores,
        scored=len(scores),
        latency_s=time.perf_counter() - started,
    )


def order_by_labels(
    label_logprobs: dict[str, float], n_candidates: int, *, prior: dict[str, float] | None = None
) -> tuple[int, ...]:
    """Candidate positions ordered by label log-probability (minus ``prior`` when given), best first;
    unscored labels follow in the retriever's order."""
    scores = dict(label_logprobs)
    if prior is not None:
        scores = {label: lp - prior.get(label, 0.0) for label, lp in scores.items()}
    return tuple(sorted(range(n_candidates), key=lambda i: (-scores.get(LABELS[i], -math.inf), i)))


def label_prior(client: LLMClient, n_candidates: int, *, top_logprobs: int = 40) -> dict[str, float]:
    """The labels' log-probabilities for a content-free prompt (every title ``N/A``): the model's position
    bias for ``n_candidates`` candidates. One request (cached by the client like any other)."""
    messages = rerank_messages(["N/A"], ["N/A"] * n_candidates)
    return _label_logprobs(client, messages, n_candidates, top_logprobs)


def _label_logprobs(
    client: LLMClient, messages: list[dict[str, str]], n_candidates: int, top_logprobs: int
) -> dict[str, float]:
    response = client.chat(messages, max_tokens=1, top_logprobs=top_logprobs)
    wanted = set(LABELS[:n_candidates])
    scores: dict[str, float] = {}
    for token, logprob in response.top_logprobs:
        label = token.strip().rstrip(".):")
        if label in wanted and logprob > scores.get(label, -math.inf):
            scores[label] = logprob
    return scores


def _short(title: str) -> str:
    title = " ".join(str(title).split())
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1] + "…"
