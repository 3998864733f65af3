"""Baselines on the public benchmark sets with leave-one-out full ranking.

Each (dataset, model) runs in a fresh subprocess so ``peak_rss_mb`` is that run's own peak, and appends
one JSON line to benchmarks/results.jsonl. Then run benchmarks/make_tables.py to regenerate
docs/benchmarks.md. The split is leave-one-out with ``--validation-users auto`` (the default of ``behaviorlm
train``: 10% of the users, at least 2,000, keep a validation target; the others' second-last events are
trained on); ``--validation-users all`` is the SASRec protocol.

    .venv/bin/python benchmarks/run_baselines.py                      # all
    .venv/bin/python benchmarks/run_baselines.py --datasets ml-100k --models ease
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _isolated import add_validation_users_argument, run_isolated
from behaviorlm.cli.common import validation_users_value

RESULTS = Path(__file__).resolve().parent / "results.jsonl"

# Model constructors per dataset. EASE needs a dense item x item inverse: on Beauty's 54,542 items that is
# 12 GB and an O(n^3) inversion, so it is restricted to the most popular items (stated in its params).
MODELS: dict[str, dict[str, tuple[str, dict]]] = {
    "ml-100k": {
        "random": ("random", {"seed": 0}),
        "pop": ("pop", {}),
        "itemknn": ("itemknn", {"k": 100}),
        "ease": ("ease", {"l2": 500.0}),
    },
    "beauty": {
        "random": ("random", {"seed": 0}),
        "pop": ("pop", {}),
        "itemknn": ("itemknn", {"k": 100}),
        "ease": ("ease", {"l2": 500.0, "max_items": 20000}),
    },
    "s3rec-beauty": {
        "pop": ("pop", {}),
        "itemknn": ("itemknn", {"k": 100}),
        "ease": ("ease", {"l2": 500.0}),
    },
    "sports": {
        "pop": ("pop", {}),
        "itemknn": ("itemknn", {"k": 100}),
        "ease": ("ease", {"l2": 500.0}),
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(MODELS))
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_validation_users_argument(parser)
    args = parser.parse_args()
    validation_users = validation_users_value(args.validation_users)
    from behaviorlm.evaluation.benchmark import append_jsonl

    for dataset in args.datasets:
        for model_key in MODELS[dataset]:
            if args.models and model_key not in args.models:
                continue
            name, params = MODELS[dataset][model_key]
            record = run_isolated(dataset, name, params, validation_users=validation_users)
            append_jsonl(args.out, record)
            m = record["metrics"]
            print(
                f"{dataset:10s} {model_key:8s} HR@10 {m['hr@10']:.4f} NDCG@10 {m['ndcg@10']:.4f} "
                f"HR@20 {m['hr@20']:.4f} NDCG@20 {m['ndcg@20']:.4f} train {record['train_seconds']:.1f}s "
                f"eval {record['eval_seconds']:.1f}s rss {record['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    print(json.dumps({"appended_to": str(args.out)}))


if __name__ == "__main__":
    main()
