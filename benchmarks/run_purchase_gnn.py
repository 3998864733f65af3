"""Purchase prediction on the Taobao UserBehavior slice: heterogeneous GraphSAGE vs feature baselines.

Protocol (behaviorlm.data.purchase): a snapshot every --step-minutes from --warmup-minutes after the first
event; candidates = (user, item) pairs with a view/cart/fav before the cutoff; label = purchase of the item
by the user within --window-minutes after it; graph and features from events before the cutoff only.
The last two cutoffs are the test set, the two before them whose windows close by the first test cutoff
are validation (hyperparameters, early stopping, F1 threshold), and the earlier ones whose windows close
by the first validation cutoff are training. Models: logistic regression and gradient boosting on the
pair/user/item counts and recency, and the hetero GNN (behaviorlm.models.hetero_gnn) over the graph plus
the same pair features, for --seeds seeds (the baselines are deterministic given the seed grid).

Appends one record per model and seed to benchmarks/results.jsonl (dataset "taobao-userbehavior"), with
the test ROC-AUC difference GNN - best baseline and its paired-bootstrap 95% interval in "comparison".

    OMP_NUM_THREADS=2 BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_purchase_gnn.py

The 9-day slice with daily cutoffs and a 24-hour label window (issue 22):

    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_purchase_gnn.py --dataset taobao-9days \
        --window-minutes 1440 --step-minutes 1440 --warmup-minutes 1440 --start-quantile 0.001 \\
        --record-dataset taobao-9days-pair
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.data.purchase import purchase_cutoffs, purchase_snapshot, store_time_range
from behaviorlm.estimator import json_params
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.purchase import (
    choose_purchase_model,
    evaluate_purchase_model,
    paired_bootstrap_auc,
    purchase_protocol,
)
from behaviorlm.models.hetero_gnn import GNN_TRAINING, PurchaseGNN
from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
DATASET = "taobao-userbehavior"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="taobao-110k")
    parser.add_argument("--window-minutes", type=int, default=20)
    parser.add_argument("--step-minutes", type=int, default=10)
    parser.add_argument("--warmup-minutes", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--start-quantile", type=float, default=0.0, help="start the cutoffs at this quantile of event times"
    )
    parser.add_argument("--hidden", type=int, default=PurchaseGNN().hidden)
    parser.add_argument("--no-pair-features", action="store_true", help="GNN ablation: graph only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--record-dataset", default=DATASET, help="the records' dataset name (e.g. taobao-9days-pair)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)

    started = time.perf_counter()
    with open_dataset_store(args.dataset, read_only=True) as store:
        first, last = store_time_range(store, start_quantile=args.start_quantile)
        cutoffs = purchase_cutoffs(
            first,
            last,
            window_seconds=60 * args.window_minutes,
            step_seconds=60 * args.step_minutes,
            warmup_seconds=60 * args.warmup_minutes,
        )
        snapshots = {
            group: [purchase_snapshot(store, cutoff=c, window_seconds=60 * args.window_minutes) for c in cs]
            for group, cs in cutoffs.items()
        }
    protocol = purchase_protocol(**snapshots)
    protocol["events"] = args.dataset
    protocol["cutoff_minutes_after_first_event"] = {
        g: [(c - first) // 60 for c in cs] for g, cs in cutoffs.items()
    }
    print(f"snapshots in {time.perf_counter() - started:.1f} s:", {g: protocol[g] for g in cutoffs})
    test_y = np.concatenate([s.labels for s in snapshots["test"]])

    def record(result, *, seed: int, params: dict, comparison: dict | None = None) -> dict:
        return {
            "dataset": args.record_dataset,
            "model": result.name
            + ("-graph-only" if args.no_pair_features and result.name == "hetero-gnn" else ""),
            "params": {**params, "seed": seed},
            "protocol": protocol,
            "metrics": result.metrics,
            "valid_metrics": result.valid_metrics,
            "threshold": result.threshold,
            "comparison": comparison or {},
            "n_users": len(np.unique(np.concatenate([s.pair_ids()[0] for s in snapshots["test"]]))),
            "train_seconds": result.train_seconds,
            "eval_seconds": 0.0,
            "training": result.details,
            **provenance(),
        }

    baseline_scores = {}
    baseline_results = {}
    for kind in ("logistic", "boosting"):
        baseline = PurchaseFeatureBaseline(kind=kind, seed=0)
        result = evaluate_purchase_model(baseline, **snapshots)
        result.details = {"chosen": baseline.chosen_, "valid_roc_auc_grid": baseline.valid_roc_auc_}
        baseline_scores[result.name] = (result.valid_metrics["roc_auc"], result.test_scores)
        baseline_results[result.name] = result
        append_jsonl(
            args.out, record(result, seed=0, params={"kind": kind, "features": list(baseline.feature_names_)})
        )
        print(
            f"{result.name}: {_fmt(result.metrics)} (valid ROC-AUC {result.valid_metrics['roc_auc']:.4f}, chosen {baseline.chosen_})"
        )
    best_baseline = max(baseline_scores, key=lambda n: baseline_scores[n][0])  # chosen on validation

    for seed in range(args.seeds):
        gnn = PurchaseGNN(
            hidden=args.hidden,
            pair_features=not args.no_pair_features,
            training=GNN_TRAINING.replace(seed=seed),
        )
        result = evaluate_purchase_model(gnn, **snapshots)
        result.details = {"best_epoch": gnn.best_epoch_, "epochs_run": len(gnn.history_)}
        comparison = {
            "baseline": best_baseline,
            "roc_auc_difference": paired_bootstrap_auc(
                test_y,
                scores_a=result.test_scores,
                scores_b=baseline_scores[best_baseline][1],
                n_boot=500,
                seed=seed,
            ),
        }
        # What `behaviorlm graph train --task purchase` (--model auto) would save with this seed's GNN.
        logistic = baseline_results["logistic-regression"]
        choice = choose_purchase_model([logistic, result], snapshots["valid"], seed=seed)
        kept = logistic if choice.name == logistic.name else result
        comparison["auto_choice"] = {
            "saved": choice.name,
            "reason": choice.reason,
            "test_roc_auc": kept.metrics["roc_auc"],
            "test_roc_auc_vs_boosting": paired_bootstrap_auc(
                test_y,
                scores_a=kept.test_scores,
                scores_b=baseline_scores["gradient-boosting"][1],
                n_boot=500,
                seed=seed,
            ),
        }
        print(f"  --model auto would save {choice.name}: {choice.reason}")
        append_jsonl(args.out, record(result, seed=seed, params=json_params(gnn), comparison=comparison))
        diff = comparison["roc_auc_difference"]
        print(
            f"{result.name} seed {seed}: {_fmt(result.metrics)} (valid ROC-AUC {result.valid_metrics['roc_auc']:.4f}, "
            f"best epoch {gnn.best_epoch_}, {result.train_seconds:.0f} s); ROC-AUC - {best_baseline} "
            f"{diff['difference']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]"
        )


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


if __name__ == "__main__":
    main()
