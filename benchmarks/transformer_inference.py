"""Real-time inference of the Behaviour Transformer: single-user latency and an int8 serving model.

Fits the Transformer on a leave-one-out split (validation early stopping), then for the test users:
* latency of ``predict_next(history)`` for one user at a time (raw item ids in, top-10 out), p50/p99;
* its serving copy, ``model.quantized()``: linear layers dynamically quantized to int8 (``torch.ao``)
  and the item table in bfloat16: test NDCG@10 relative to the float model and the latency speed-up.
Appends one JSON line per variant to benchmarks/results.jsonl.

    .venv/bin/python benchmarks/transformer_inference.py --dataset ml-100k --requests 500

``--serving-copy`` measures instead what the service's ``quantize = "auto"`` chooses for this shape
(:func:`behaviorlm.serving.model_copy.choose_serving_copy` on 32 test users' histories: median ms per
call of each copy, top-10 agreement, the choice), ``--passes`` times over; ``--max-len`` and ``--epochs``
override the dataset's settings (latency depends on the shape, so a briefly fitted model times like a
converged one, but its top-10 agreement is only indicative). One record per pass, model
``serving-copy-auto-w<max_len>``:

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/transformer_inference.py --dataset ml-100k \
        --serving-copy --max-len 200 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _isolated import item_knowledge
from behaviorlm.data.datasets import load_interactions
from behaviorlm.data.splits import Split, leave_one_out
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
from behaviorlm.models.sequential import SequentialRecommender
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.serving.model_copy import SAMPLE_HISTORIES, choose_serving_copy

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
CONFIGS = {"ml-100k": {"max_len": 200, "batch_size": 32, "dropout": 0.2, "d_model": 128}, "beauty": {}}


def raw_request(split: Split, user: int) -> tuple[list[str], list[str], list[int]]:
    """User ``user``'s train + validation history as a request sends it: raw item ids, event-type names,
    UTC seconds (oldest first)."""
    history = split.test_history
    start, end = history.user_ptr[user], history.user_ptr[user + 1]
    vocab = history.event_type_vocab
    return (
        [str(history.item_ids[i]) for i in history.items[start:end]],
        [vocab[t] for t in history.event_types[start:end]],
        history.timestamps[start:end].tolist(),
    )


def latencies_ms(model: SequentialRecommender, split: Split, users: np.ndarray) -> np.ndarray:
    """Milliseconds of ``predict_next`` on each user's full train + validation history, one at a time
    (benchmarks/run_distill.py times its students with it too)."""
    out = []
    for user in users:
        items, types, times = raw_request(split, user)
        began = time.perf_counter()
        model.predict_next(items, event_types=types, timestamps=times, k=10)
        out.append((time.perf_counter() - began) * 1000)
    return np.asarray(out)


def request_histories(model: SequentialRecommender, split: Split, users: np.ndarray) -> list:
    """Each user's train + validation history as a request reads it (raw ids mapped by the model)."""
    out = []
    for user in users:
        items, types, times = raw_request(split, user)
        out.append(model.history_from_events(items, event_types=types, timestamps=times))
    return out


def record(dataset: str, model: str, *, protocol: dict, metrics: dict, train_seconds: float, **extra) -> dict:
    """One results.jsonl line: what was measured, plus the machine, commit and date."""
    return {
        "dataset": dataset,
        "model": model,
        **extra,
        "protocol": protocol,
        "metrics": metrics,
        "train_seconds": train_seconds,
        "eval_seconds": 0.0,
        **provenance(),
    }


def serving_copy_records(
    model: SequentialRecommender,
    split: Split,
    users: np.ndarray,
    args: argparse.Namespace,
    train_seconds: float,
) -> None:
    """What ``quantize = "auto"`` chooses for this model, ``args.passes`` times."""
    histories = request_histories(model, split, users[:SAMPLE_HISTORIES])
    for run in range(args.passes):
        _, choice = choose_serving_copy(model, "auto", histories, source="test users")
        metrics = {
            "float_ms": choice.float_ms,
            "quantized_ms": choice.quantized_ms,
            "speedup": choice.float_ms / choice.quantized_ms,
            "top10_agreement": choice.top10_agreement,
            "quantized": float(choice.quantized),
        }
        line = record(
            args.dataset,
            f"serving-copy-auto-w{model.max_len}",
            params={
                "max_len": model.max_len,
                "d_model": model.d_model,
                "n_layers": model.n_layers,
                "n_items": int(split.train.n_items),
                "epochs": args.epochs,
                "pass": run,
            },
            protocol={
                "task": "quantize = auto at service start",
                "histories": len(histories),
                "torch_threads": args.threads,
            },
            metrics=metrics,
            train_seconds=train_seconds,
        )
        append_jsonl(args.out, line)
        print(json.dumps({"pass": run, "reason": choice.reason}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--serving-copy", action="store_true", help="measure quantize = auto's choice instead"
    )
    parser.add_argument("--passes", type=int, default=3, help="--serving-copy: how many times to decide")
    parser.add_argument("--max-len", type=int, help="override the dataset's window")
    parser.add_argument("--epochs", type=int, help="override the epoch cap")
    parser.add_argument(
        "--item-knowledge",
        default="none",
        choices=["auto", "none", "attributes", "text", "text+attributes"],
        help="what the model reads about items (as run_sequential.py); records get a + <knowledge> suffix",
    )
    args = parser.parse_args()
    split = leave_one_out(load_interactions(args.dataset))
    overrides = {k: v for k, v in (("max_len", args.max_len), ("epochs", args.epochs)) if v is not None}
    model = BehaviorTransformer.from_params({**CONFIGS.get(args.dataset, {}), **overrides})
    features, knowledge, _ = item_knowledge(args.dataset, split.train, args.item_knowledge)
    suffix = "" if features is None else f"+{knowledge}"
    started = time.perf_counter()
    model.fit(split.train, valid=RankingValidation(split.train, split.valid), item_features=features)
    train_seconds = time.perf_counter() - started

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    users = rng.choice(np.flatnonzero(split.test.lengths() > 0), size=args.requests, replace=True)
    if args.serving_copy:
        serving_copy_records(model, split, users, args, train_seconds)
        return
    quantized = model.quantized()
    rows = {}
    for name, variant in (("float32", model), ("int8-bf16-table", quantized)):
        latencies_ms(variant, split, users[:20])  # warm-up
        lat = latencies_ms(variant, split, users)
        result = evaluate_ranking(variant, history=split.test_history, targets=split.test)
        rows[name] = {
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "ndcg@10": result.metrics["ndcg@10"],
            "hr@10": result.metrics["hr@10"],
        }
    base = rows["float32"]
    for name, row in rows.items():
        row["ndcg@10_relative_change"] = row["ndcg@10"] / base["ndcg@10"] - 1
        row["p50_speedup"] = base["p50_ms"] / row["p50_ms"]
        line = record(
            args.dataset,
            f"transformer-inference-{name}{suffix}",
            params={"epochs": args.epochs, "item_knowledge": knowledge},
            protocol={
                "task": "single-user predict_next latency",
                "requests": args.requests,
                "torch_threads": args.threads,
                "split": "leave-one-out",
                "ranking": "full",
                "mask_seen": True,
                "history": "train+valid",
            },
            metrics=row,
            train_seconds=train_seconds,
        )
        append_jsonl(args.out, line)
        print(json.dumps({"variant": name, **{k: round(v, 4) for k, v in row.items()}}), flush=True)


if __name__ == "__main__":
    main()
