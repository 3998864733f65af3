"""Per-user influence on ML-100k or Beauty: how faithful each event ordering is, by the deletion curve.

Protocol: the Behaviour Transformer with the dataset's settings of benchmarks/run_sequential.py is fitted
on the leave-one-out training split (early stopping on validation NDCG@10, training capped at
``--max-train-seconds``). For ``--users`` test users drawn at random (seeded), the explained prediction
is the model's top-1 unseen next item after the test history (train + validation events, the last 200
read). Each ordering removes the user's events cumulatively, first 1, then 2, ..., ``--steps``, and the
target's log-probability (log-softmax over all items: 1,682 in ML-100k, 54,542 in Beauty) is recomputed each time, re-reading the
history as the model would (gaps recomputed, older events entering the 200-event window). Orderings:

* ``influence-deletion``: largest exact leave-one-out deletion influence first;
* ``influence-gradient``: largest gradient x input first (8-step path from the empty-slot reference);
* ``influence-random``: a seeded random order;
* ``influence-recency``: most recent first.
* ``influence-greedy``: deletion influence recomputed after every removal (``steps`` deletion passes).

Metrics (means over users): ``deletion_auc`` (area under the log-probability change over the removed
share 0..1, nats; lower = more faithful), ``drop_at_k`` (fall of log p after removing k events),
``rank_at_k`` (rank of the target among all items) and ``top1_share_at_k`` (share still ranked first),
and ``seconds`` (ordering + curve for all users, one torch thread). One JSON line per ordering is
appended to benchmarks/results.jsonl with the dataset's name. The random and recency orderings are named
``influence-random`` / ``influence-recency`` so they never replace the ``random`` recommender's record.

    .venv/bin/python benchmarks/run_influence.py
    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_influence.py --dataset beauty \
        --max-train-seconds 900 --steps 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.causal.influence import DELETION_ORDERS, deletion_curve
from behaviorlm.data.datasets import load_interactions
from behaviorlm.data.splits import leave_one_out
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.ranking import RankingValidation
from behaviorlm.models.transformer import BehaviorTransformer
from run_sequential import MODELS

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
TRANSFORMER_SETTINGS = {d: MODELS[d]["transformer"][1] for d in ("ml-100k", "beauty")}
"""The Transformer settings of benchmarks/run_sequential.py per dataset (ML-100k's chosen on validation NDCG@10;
Beauty uses the defaults)."""
MODEL_NAMES = {
    "greedy": "influence-greedy",
    "influence": "influence-deletion",
    "gradient": "influence-gradient",
    "random": "influence-random",
    "recency": "influence-recency",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k", choices=list(TRANSFORMER_SETTINGS))
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-train-seconds", type=float, default=150.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", nargs="+", default=list(DELETION_ORDERS), choices=DELETION_ORDERS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = TRANSFORMER_SETTINGS[args.dataset]
    split = leave_one_out(load_interactions(args.dataset))
    model = BehaviorTransformer.from_params(
        {**settings, "max_train_seconds": args.max_train_seconds, "seed": args.seed}
    )
    started = time.perf_counter()
    model.fit(split.train, valid=RankingValidation(split.train, split.valid))
    train_seconds = time.perf_counter() - started
    training = model.training_summary()
    print(
        f"transformer: {training['epochs_run']} epochs, best validation NDCG@10 "
        f"{training['best_valid_ndcg@10']} at epoch {training['best_epoch']}, {train_seconds:.0f} s",
        flush=True,
    )

    history = split.test_history
    # Users with at least steps + 1 events in their history, so that every sampled user has a full curve.
    candidates = np.flatnonzero((split.test.lengths() > 0) & (history.lengths() > args.steps))
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(candidates, size=min(args.users, len(candidates)), replace=False))
    window = np.minimum(history.lengths()[users], model.max_len)
    for order in args.orders:
        started = time.perf_counter()
        curve = deletion_curve(model, history, users, order=order, steps=args.steps, seed=args.seed)
        seconds = time.perf_counter() - started
        metrics = {**curve.metrics(), "seconds": seconds}
        append_jsonl(
            args.out,
            {
                "dataset": args.dataset,
                "model": MODEL_NAMES[order],
                "params": {"order": order, "steps": args.steps, "seed": args.seed, "gradient_steps": 8},
                "protocol": {
                    "split": "leave_one_out",
                    "explained_model": {"name": model.name, **settings},
                    "history": f"train+valid (test history), last max_len={model.max_len} events",
                    "users": int(curve.n_users),
                    "user_sample": f"seeded random test users with more than {args.steps} history events",
                    "skipped_users": curve.skipped_users,
                    "mean_window_events": float(window.mean()),
                    "target": "model's top-1 unseen next item for the full history",
                    "measured": "log-softmax probability of the target over all items after removing the "
                    "first 1..steps events of the order (cumulative); deletion_auc = trapezoid area of the "
                    "mean change over removed share 0..1 (nats, lower = more faithful)",
                    "log_prob_change_curve": [float(v) for v in curve.log_prob_change],
                    "mean_rank_curve": [float(v) for v in curve.mean_rank],
                    "torch_threads": args.threads,
                },
                "metrics": metrics,
                "n_users": int(curve.n_users),
                "train_seconds": train_seconds,
                "eval_seconds": seconds,
                "training": training,
                **provenance(),
            },
        )
        shown = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if not k.startswith("top1"))
        print(f"{MODEL_NAMES[order]:20s} {shown}", flush=True)


if __name__ == "__main__":
    main()
