"""Recommenders on a global temporal split: LightGCN against popularity, ItemKNN and EASE.

Protocol: ``temporal_split_by_quantile`` -- the last 10% of events (by time) are test targets, the 10%
before them validation targets; history for test = every earlier event; full ranking over all items, seen
items masked, targets rankable. Users whose test events have no earlier history are scored from nothing
(the models fall back to their cold-start scores), as a deployed model would.

Only datasets with real timestamps can be split in time: ML-100k has them; the benchmark Beauty and Sports
files (BERT4Rec / S3Rec sequence files) carry event order only, so a "temporal" split there would be a
per-user position split in disguise and is not run.

    .venv/bin/python benchmarks/run_temporal.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from behaviorlm.data.datasets import load_interactions
from behaviorlm.data.splits import temporal_split_by_quantile
from behaviorlm.evaluation.benchmark import append_jsonl, fit_and_evaluate
from behaviorlm.models.registry import model_registry

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
MODELS = {
    "pop": {},
    "itemknn": {"k": 100},
    "ease": {"l2": 500.0},
    "lightgcn": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    split = temporal_split_by_quantile(load_interactions(args.dataset), valid_fraction=0.1, test_fraction=0.1)
    dataset = f"{args.dataset}-temporal"
    registry = model_registry()
    for name in args.models:
        record = fit_and_evaluate(registry[name].from_params(MODELS[name]), split, dataset=dataset)
        append_jsonl(args.out, record)
        m = record.metrics
        print(
            f"{dataset} {name:10s} NDCG@10 {m['ndcg@10']:.4f} HR@10 {m['hr@10']:.4f} "
            f"Recall@20 {m.get('recall@20', float('nan')):.4f} users {record.n_users} train {record.train_seconds:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
