"""Churn on a temporal split: will a user who rated before the cutoff rate nothing in the next 30 days?

ML-100k (Sep 1997 - Apr 1998). For each test cutoff the model is trained on the snapshot one horizon
earlier (its labels end at the test cutoff, so nothing from the test window is seen), and evaluated on
the cutoff's snapshot. Models: gradient-boosted trees over all churn features, and the
recency-frequency logistic baseline. PR-AUC of a constant guess equals the churn rate (stated).
Appends records with model "churn-gbm" / "churn-recency-frequency" to benchmarks/results.jsonl.

    .venv/bin/python benchmarks/run_churn.py
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from behaviorlm.data.datasets import load_interactions
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.ranking import evaluate_classification
from behaviorlm.profiling.churn import DAY, ChurnModel, RecencyFrequencyBaseline, churn_snapshot

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
CUTOFFS = ("1998-01-15", "1998-02-01", "1998-03-01")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--horizon-days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    data = load_interactions("ml-100k")
    horizon = args.horizon_days * DAY
    for day in CUTOFFS:
        cutoff = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
        train = churn_snapshot(data, cutoff=cutoff - horizon, horizon_seconds=horizon)
        test = churn_snapshot(data, cutoff=cutoff, horizon_seconds=horizon)
        for name, model in (
            ("churn-gbm", ChurnModel()),
            ("churn-recency-frequency", RecencyFrequencyBaseline()),
        ):
            started = time.perf_counter()
            proba = model.fit(train).predict_proba(test)
            seconds = time.perf_counter() - started
            metrics = evaluate_classification(test.churned, proba)
            append_jsonl(
                args.out,
                {
                    "dataset": f"ml-100k-churn@{day}",
                    "model": name,
                    "params": {"horizon_days": args.horizon_days},
                    "protocol": {
                        "task": f"no event in the {args.horizon_days} days after the cutoff",
                        "test_cutoff": day,
                        "train_cutoff": datetime.fromtimestamp(cutoff - horizon, UTC).date().isoformat(),
                        "train_users": len(train.users),
                        "train_churn_rate": float(train.churned.mean()),
                    },
                    "metrics": metrics,
                    "n_users": len(test.users),
                    "train_seconds": seconds,
                    "eval_seconds": 0.0,
                    "training": {},
                    **provenance(),
                },
            )
            print(day, name, {k: round(v, 4) for k, v in metrics.items()}, flush=True)


if __name__ == "__main__":
    main()
