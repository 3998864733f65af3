"""Questions answered from the data: the tool-using ``ask`` on a generated question set with known answers.

For ML-100k and the Taobao 9-day slice, :func:`behaviorlm.testing.questions.question_set` draws users
(seeded) and asks each two questions of up to 17 kinds (counts by type / month / day, first and last
event and date, active days, distinct items, top category, count in a category, items on a day, mean
and highest rating, "has the user rated X", a two-part question, last purchase / cart / favourite),
with answers computed by its own SQL; 25 unanswerable and 25 personal questions must be refused
(``refusal_unanswerable``), and so must 30 more written after the refusal rules were fixed and never
used to tune them (``refusal_heldout``: the honest figure for questions nobody anticipated), and 30 of
a second set written before the counted-thing rule that a failure on the first set motivated
(``refusal_heldout_2``: the honest figure since that rule).
Reported per dataset and overall: ``accuracy_answerable``, ``wrong_refusal_rate`` (answerable questions
refused), ``refusal_unanswerable`` (share of unanswerable/personal questions refused), latency p50/p95,
accuracy by kind, and how much the model decided: ``model_choice_share`` (answerable questions where two
or more tools fit the question and the model chose among them) with ``accuracy_model_choice``. One record per run to benchmarks/results.jsonl, model ``llm-qa-<model>``.

    .venv/bin/python benchmarks/run_llm_qa.py --users 100 --threads 2
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from behaviorlm.config import LLMConfig
from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.tools import UserContext, ask
from behaviorlm.testing.questions import HELDOUT_2, heldout_refusal_set, question_set, refusal_set

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "taobao-9days"])
    parser.add_argument("--users", type=int, default=100, help="users per dataset (two questions each)")
    parser.add_argument("--llm-model", default=LLMConfig().model)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=None, help="one JSON line per question")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    client = LLMClient(LLMConfig(model=args.llm_model, threads=args.threads, cache_dir=""))
    log = args.log.open("w", encoding="utf-8") if args.log is not None else None
    rows = []
    for dataset in args.datasets:
        with open_dataset_store(dataset, read_only=True) as store:
            questions = question_set(store, users=args.users, seed=args.seed)
            users = sorted({q.user_id for q in questions})
            if dataset == args.datasets[0]:
                questions += refusal_set(users=users, seed=args.seed)
                questions += heldout_refusal_set(users=users, seed=args.seed)
                questions += heldout_refusal_set(
                    users=users, seed=args.seed + 1, questions=HELDOUT_2, kind="heldout-2"
                )
            for n, question in enumerate(questions, start=1):
                try:
                    answer = ask(client, UserContext(store, question.user_id), question.text)
                except LLMError as exc:
                    print(f"{dataset} {n:4d} FAILED {question.text!r}: {exc}", flush=True)
                    rows.append(
                        {
                            "dataset": dataset,
                            "kind": question.kind,
                            "answerable": question.answerable,
                            "correct": False,
                            "refused": False,
                            "latency_s": float("nan"),
                        }
                    )
                    continue
                correct = question.check(answer)
                refused = answer.source in ("refused", "personal")
                rows.append(
                    {
                        "dataset": dataset,
                        "kind": question.kind,
                        "answerable": question.answerable,
                        "correct": correct,
                        "refused": refused,
                        "latency_s": answer.latency_s,
                        "personal": answer.source == "personal",
                        "model_chose": len(answer.candidates) >= 2,
                        "model_calls": len({c.get("attempt", 1) for c in answer.calls}),
                    }
                )
                mark = "ok " if correct else "BAD"
                print(
                    f"{dataset} {n:4d} {mark} {answer.latency_s:5.1f}s [{question.kind}] {question.text} -> "
                    f"{answer.answer[:100]}",
                    flush=True,
                )
                if log is not None:
                    log.write(
                        json.dumps(
                            {
                                "dataset": dataset,
                                "kind": question.kind,
                                "question": question.text,
                                "expected": question.expected,
                                "correct": correct,
                                **answer.to_dict(),
                            },
                            default=str,
                        )
                        + "\n"
                    )
                    log.flush()
    if log is not None:
        log.close()
    metrics = _metrics(rows)
    for dataset in args.datasets:
        part = [r for r in rows if r["dataset"] == dataset]
        metrics.update({f"{dataset}_{k}": v for k, v in _metrics(part).items() if not k.startswith("kind_")})
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
    if args.no_record:
        return
    append_jsonl(
        RESULTS,
        {
            "dataset": "+".join(args.datasets),
            "metrics": metrics,
            "model": f"llm-qa-{args.llm_model}",
            "n_questions": len(rows),
            "params": {
                "threads": args.threads,
                "seed": args.seed,
                "users_per_dataset": args.users,
                "usage": client.usage.to_dict(),
            },
            **provenance(),
        },
    )


def _metrics(rows: list[dict]) -> dict[str, float]:
    answerable = [r for r in rows if r["answerable"]]
    refusals = [r for r in rows if not r["answerable"] and not r["kind"].startswith("heldout")]
    heldout = [r for r in rows if r["kind"] == "heldout"]
    heldout_2 = [r for r in rows if r["kind"] == "heldout-2"]
    answered_by_model = [r for r in rows if not r.get("personal")]
    latency = np.array([r["latency_s"] for r in answered_by_model if not np.isnan(r["latency_s"])])
    out: dict[str, float] = {"n_answerable": float(len(answerable)), "n_refusal": float(len(refusals))}
    if answerable:
        out["accuracy_answerable"] = float(np.mean([r["correct"] for r in answerable]))
        out["wrong_refusal_rate"] = float(np.mean([r["refused"] for r in answerable]))
    if refusals:
        out["refusal_unanswerable"] = float(np.mean([r["refused"] for r in refusals]))
    if heldout:
        out["refusal_heldout"] = float(np.mean([r["refused"] for r in heldout]))
    if heldout_2:
        out["refusal_heldout_2"] = float(np.mean([r["refused"] for r in heldout_2]))
    if len(latency):
        out["latency_s_p50"] = float(np.percentile(latency, 50))
        out["latency_s_p95"] = float(np.percentile(latency, 95))
    chose = [r for r in answerable if r.get("model_chose")]
    out["model_choice_share"] = float(len(chose) / max(len(answerable), 1))
    """Answerable questions where two or more tools fit and the model chose among them."""
    if chose:
        out["accuracy_model_choice"] = float(np.mean([r["correct"] for r in chose]))
    calls = [r["model_calls"] for r in rows if r.get("model_calls")]
    if calls:
        out["model_calls_mean"] = float(np.mean(calls))
    by_kind = defaultdict(list)
    for r in answerable:
        by_kind[r["kind"]].append(r["correct"])
    out.update({f"kind_{k}": float(np.mean(v)) for k, v in sorted(by_kind.items())})
    return out


if __name__ == "__main__":
    main()
