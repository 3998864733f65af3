"""Bias audit of pop, ItemKNN, EASE and the Behaviour Transformer on ML-100k (leave-one-out, full ranking).

For each model: NDCG@10 / HR@10 per user group (gender, age band, occupation from ML-100k's user file;
activity = history-length tertile) with 1,000-resample bootstrap intervals, the best-minus-worst gap with
its interval and permutation p-value, popularity bias (ratio of recommended to consumed popularity, Gini
of exposure, long-tail share, coverage@10), and the popularity-penalty trade-off. One record per model is
appended to benchmarks/results.jsonl as dataset "ml-100k-audit"; the plot of NDCG@10 per group goes to
docs/img/audit-ml-100k.png. Then run benchmarks/make_tables.py.

    .venv/bin/python benchmarks/run_audit.py                  # all four, the transformer capped at 300 s
    .venv/bin/python benchmarks/run_audit.py --models pop ease --no-plot

ML-1M is not audited: its copy in shared/data has no timestamps (no chronological leave-one-out split)
and is not a dataset the package ingests.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
PLOT = HERE.parent / "docs" / "img" / "audit-ml-100k.png"

# Baselines as in run_baselines.py; the transformer as in run_sequential.py (ML-100k), its training
# capped so the whole audit stays a CPU job of a few minutes.
MODELS: dict[str, tuple[str, dict]] = {
    "pop": ("pop", {}),
    "itemknn": ("itemknn", {"k": 100}),
    "ease": ("ease", {"l2": 500.0}),
    "transformer": (
        "transformer",
        {"max_len": 200, "batch_size": 32, "dropout": 0.2, "d_model": 128, "max_train_seconds": 300.0},
    ),
}
PENALTIES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
GROUPS = ("gender", "age", "occupation", "activity")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--max-train-seconds", type=float, default=None, help="override the transformer cap")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from behaviorlm.data.datasets import open_dataset_store
    from behaviorlm.data.splits import leave_one_out
    from behaviorlm.evaluation.audit import audit_recommender, plot_group_quality, read_user_attributes
    from behaviorlm.evaluation.benchmark import append_jsonl, git_commit, machine_description, peak_rss_mb
    from behaviorlm.models.base import model_registry

    with open_dataset_store("ml-100k", read_only=True) as store:
        interactions = store.interactions()
        attributes = read_user_attributes(store)
    split = leave_one_out(interactions)
    registry = model_registry()
    reports = []
    for key in args.models:
        name, params = MODELS[key]
        if key == "transformer" and args.max_train_seconds is not None:
            params = {**params, "max_train_seconds": args.max_train_seconds}
        model = registry[name](**params)
        started = time.perf_counter()
        model.fit(split.train, valid=split.valid)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = audit_recommender(
            model,
            history=split.test_history,
            targets=split.test,
            user_attributes=attributes,
            groups=GROUPS,
            n_resamples=args.resamples,
            penalties=PENALTIES,
            split_name=str(split.protocol["split"]),
        )
        audit_seconds = time.perf_counter() - started
        reports.append(report)
        audit = report.to_dict()
        headline = {
            "overall_ndcg@10": report.metrics["ndcg@10"],
            "overall_hr@10": report.metrics["hr@10"],
            "coverage@10": report.popularity.coverage,
            "gini_exposure": report.popularity.gini_exposure,
            "longtail_share": report.popularity.longtail_share,
            "popularity_ratio": report.popularity.popularity_ratio,
        }
        for attribute, gap in report.groups.items():
            if "ndcg@10" in gap.gap:
                interval = gap.gap["ndcg@10"]
                headline[f"ndcg@10_gap:{attribute}"] = interval.estimate
                headline[f"ndcg@10_gap_low:{attribute}"] = interval.low
                headline[f"ndcg@10_gap_high:{attribute}"] = interval.high
                headline[f"ndcg@10_gap_p:{attribute}"] = gap.p_value["ndcg@10"]
        record = {
            "dataset": "ml-100k-audit",
            "model": key,
            "params": params,
            "protocol": {**audit["protocol"], "split_params": split.protocol, "torch_threads": 1},
            "metrics": headline,
            "n_users": int((split.test.lengths() > 0).sum()),
            "attributes_used": audit["attributes_used"],
            "attribute_use": audit["attribute_use"],
            "groups": audit["groups"],
            "popularity": audit["popularity"],
            "mitigation": audit["mitigation"],
            "train_seconds": train_seconds,
            "eval_seconds": audit_seconds,
            "training": model.training_summary() if hasattr(model, "training_summary") else {},
            "peak_rss_mb": peak_rss_mb(),
            "machine": machine_description(),
            "git_commit": git_commit(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        append_jsonl(args.out, record)
        gaps = " ".join(
            f"{a} {headline[f'ndcg@10_gap:{a}']:.3f} (p={headline[f'ndcg@10_gap_p:{a}']:.3f})"
            for a in report.groups
            if f"ndcg@10_gap:{a}" in headline
        )
        print(
            f"{key:12s} NDCG@10 {headline['overall_ndcg@10']:.4f} gaps: {gaps} | Gini {headline['gini_exposure']:.3f} "
            f"long-tail {headline['longtail_share']:.3f} pop ratio {headline['popularity_ratio']:.2f} | "
            f"train {train_seconds:.0f}s audit {audit_seconds:.0f}s",
            flush=True,
        )
        for point in report.mitigation:
            print(
                f"    penalty {point.penalty:<4g} NDCG@10 {point.metrics['ndcg@10']:.4f} "
                f"long-tail {point.popularity.longtail_share:.3f} Gini {point.popularity.gini_exposure:.3f} "
                f"pop ratio {point.popularity.popularity_ratio:.2f} activity gap "
                f"{point.gaps.get('activity:ndcg@10').estimate:.3f}",
                flush=True,
            )
    if not args.no_plot:
        print(f"wrote {plot_group_quality(reports, args.plot)}")


if __name__ == "__main__":
    main()
