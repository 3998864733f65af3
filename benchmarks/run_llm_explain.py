"""Claims and latency of the LLM intent explanations with the embedded model.

For ``--users`` users drawn at random (seeded) from a dataset's store, the fact set is built
(:func:`behaviorlm.llm.facts.user_facts`: recent events, activity, top categories, anomaly percentile,
and with ``--model`` the sequence model's next items and the events behind the top one) and
:func:`behaviorlm.llm.tasks.explain_intent` asks the embedded model for {intent, confidence, claims}.
Every claim is verified against its fact (:mod:`behaviorlm.llm.claims`). Reported:

* ``groundedness_first_try``: share of explanations whose every claim was true as the model made it;
* ``groundedness_llm``: share rendered from the model's claims (at least one kept; else ``fallback``);
* ``groundedness``: share of explanations handed out whose words are rendered from verified or
  corrected claims (must be 1.0);
* ``claims_per_answer``, ``claims_verified_share``, ``claims_corrected_share`` (the rest were dropped);
* ``fallback_rate``, ``latency_s_mean`` / ``_p50`` / ``_p95`` per explanation (model calls only; facts
  are timed apart as ``facts_s_mean``), ``calls_mean``, ``completion_tokens_per_s``.

One JSON line per dataset is appended to benchmarks/results.jsonl with model
``llm-explain-<embedded model>``.

    .venv/bin/python benchmarks/run_llm_explain.py --dataset ml-100k --model work-dir/demo/model
    .venv/bin/python benchmarks/run_llm_explain.py --dataset beauty
    .venv/bin/python benchmarks/run_llm_explain.py --dataset taobao-9days --intent-model runs/propensity

With ``--intent-model`` (a saved ``purchase_propensity``, say) the intent is that model's most likely
class and the facts carry its reasons; ``reason_cited_share`` is the share of explanations with a kept
claim on one of them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.config import LLMConfig
from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import user_facts
from behaviorlm.llm.tasks import explain_intent
from behaviorlm.models.registry import load_intent_model, load_model
from behaviorlm.profiling.anomalies import AnomalyDetector

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument(
        "--model", type=Path, default=None, help="saved sequence model trained on this dataset"
    )
    parser.add_argument(
        "--intent-model", type=Path, default=None, help="saved intent model (e.g. purchase_propensity)"
    )
    parser.add_argument("--llm-model", default=LLMConfig().model)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="write one JSON line per user: the answer handed out and every rejected model answer",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    client = LLMClient(LLMConfig(model=args.llm_model, threads=args.threads, cache_dir=""))
    model = load_model(args.model) if args.model is not None else None
    intent_model = load_intent_model(args.intent_model) if args.intent_model is not None else None
    rows = []
    log = args.log.open("w", encoding="utf-8") if args.log is not None else None
    with open_dataset_store(args.dataset, read_only=True) as store:
        start = time.perf_counter()
        detector = AnomalyDetector().fit(store.interactions())
        print(f"anomaly detector fitted in {time.perf_counter() - start:.1f} s", flush=True)
        users = sorted(u for (u,) in store.rows("SELECT DISTINCT user_id FROM events"))
        rng = np.random.default_rng(args.seed)
        chosen = [users[i] for i in rng.choice(len(users), size=min(args.users, len(users)), replace=False)]
        for n, user in enumerate(chosen, start=1):
            t0 = time.perf_counter()
            facts = user_facts(store, user, model=model, intent_model=intent_model, detector=detector)
            facts_s = time.perf_counter() - t0
            before = client.usage.completion_tokens
            try:
                result = explain_intent(client, facts)
            except LLMError as exc:  # no valid answer at all: counted, never hidden
                print(f"{n:4d} {user:>12s} FAILED: {exc}", flush=True)
                rows.append({"failed": True, "facts_s": facts_s})
                continue
            row = {
                "facts_s": facts_s,
                "latency_s": result.latency_s,
                "first": result.first_try_grounded,
                "llm": result.source == "llm",
                "grounded": result.grounded,
                "calls": result.attempts,
                "tokens": client.usage.completion_tokens - before,
            }
            verdicts = [v["status"] for v in result.claims]
            row["claims"] = len(verdicts)
            row["claims_verified"] = verdicts.count("verified")
            row["claims_corrected"] = verdicts.count("corrected")
            kinds = {f.id: f.kind for f in facts.facts}
            row["reason_cited"] = any(
                kinds.get(str(c.fact).strip().upper()) == "intent_reason" for c in result.answer.claims
            )
            rows.append(row)
            if log is not None:
                entry = {"user": user, **result.to_dict(), "rejected": result.rejected}
                log.write(json.dumps(entry) + "\n")
                log.flush()
            print(
                f"{n:4d} {user:>12s} first={row['first']!s:5s} llm={row['llm']!s:5s} {result.latency_s:5.1f}s "
                f"{result.answer.intent!r}: {result.answer.text[:90]!r}"
                + (f" | problems: {result.problems[:2]}" if result.problems else ""),
                flush=True,
            )
    if log is not None:
        log.close()
    failed = [r for r in rows if r.get("failed")]
    done = [r for r in rows if not r.get("failed")]
    lat = np.array([r["latency_s"] for r in done])
    n = len(rows)
    metrics = {
        # Over all users: an explanation that failed outright counts as not grounded.
        "groundedness": sum(r["grounded"] for r in done) / n,
        "groundedness_llm": sum(r["llm"] for r in done) / n,
        "groundedness_first_try": sum(r["first"] for r in done) / n,
        "fallback_rate": sum(not r["llm"] for r in done) / n,
        "failure_rate": len(failed) / n,
        "latency_s_mean": float(lat.mean()),
        "latency_s_p50": float(np.percentile(lat, 50)),
        "latency_s_p95": float(np.percentile(lat, 95)),
        "facts_s_mean": float(np.mean([r["facts_s"] for r in rows])),
        "calls_mean": float(np.mean([r["calls"] for r in done])),
        "completion_tokens_per_s": float(sum(r["tokens"] for r in done) / lat.sum()),
    }
    claims = sum(r["claims"] for r in done)
    metrics["claims_per_answer"] = claims / max(len(done), 1)
    metrics["claims_verified_share"] = sum(r["claims_verified"] for r in done) / max(claims, 1)
    metrics["claims_corrected_share"] = sum(r["claims_corrected"] for r in done) / max(claims, 1)
    if intent_model is not None:
        metrics["reason_cited_share"] = sum(r["reason_cited"] for r in done) / max(len(done), 1)
    print({k: round(v, 4) for k, v in metrics.items()})
    if args.no_record:
        return
    append_jsonl(
        RESULTS,
        {
            "dataset": args.dataset,
            "metrics": metrics,
            "model": f"llm-explain-{args.llm_model}",
            "n_users": len(rows),
            "params": {
                "threads": args.threads,
                "seed": args.seed,
                "sequence_model": str(args.model) if args.model else None,
                "intent_model": str(args.intent_model) if args.intent_model else None,
                # How the embedded model writes claims (tasks._claims_task): lines under a grammar.
                "output": "claim lines",
                "usage": client.usage.to_dict(),
            },
            **provenance(),
        },
    )


if __name__ == "__main__":
    main()
