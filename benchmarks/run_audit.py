"""Bias audit of pop, ItemKNN, EASE and the Behaviour Transformer on ML-100k (leave-one-out, full ranking),
and of pop, ItemKNN and EASE on ML-1M (random hold-out: that copy has no timestamps).

For each model: NDCG@10 / HR@10 per user group (gender, age band, occupation from ML-100k's user file;
activity = history-length tertile) with 1,000-resample bootstrap intervals, the best-minus-worst gap with
its interval and permutation p-value, popularity bias (ratio of recommended to consumed popularity, Gini
of exposure, long-tail share, coverage@10), and the popularity-penalty trade-off. One record per model is
appended to benchmarks/results.jsonl as dataset "ml-100k-audit"; the plot of NDCG@10 per group goes to
docs/img/audit-ml-100k.png. Then run benchmarks/make_tables.py.

    .venv/bin/python benchmarks/run_audit.py                  # all four, the transformer capped at 300 s
    .venv/bin/python benchmarks/run_audit.py --models pop ease --no-plot

``--dataset ml-1m`` audits ML-1M from ../shared/data (``$BEHAVIORLM_DATA_DIR``): ratings.parquet has no
rating and no timestamp columns, so the split is a *random* leave-one-out (each user's events shuffled with
a fixed seed, the last one held out as test, the one before as validation) and only the non-sequential
models are audited; groups from users.dat (gender, ML-1M's age codes, which are band lower bounds, and
occupation codes 0-20). Records go to dataset "ml-1m-audit".

    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_audit.py --dataset ml-1m --no-plot
"""

from __future__ import annotations

import argparse
import os
import time
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
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--models", nargs="+", default=None, choices=list(MODELS))
    parser.add_argument("--max-train-seconds", type=float, default=None, help="override the transformer cap")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=None, help="default: docs/img/audit-<dataset>.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from behaviorlm.data.datasets import open_dataset_store
    from behaviorlm.data.splits import leave_one_out
    from behaviorlm.evaluation.audit import audit_recommender, plot_group_quality, read_user_attributes
    from behaviorlm.evaluation.benchmark import (
        append_jsonl,
        provenance,
    )
    from behaviorlm.evaluation.ranking import RankingValidation
    from behaviorlm.models.registry import model_registry

    if args.dataset == "ml-1m":
        interactions, attributes = _ml1m(seed=0)
        models = args.models or ["pop", "itemknn", "ease"]
        if "transformer" in models:
            parser.error("--dataset ml-1m: the transformer needs event order, which this copy of ML-1M lacks")
    else:
        with open_dataset_store("ml-100k", read_only=True) as store:
            interactions = store.interactions()
            attributes = read_user_attributes(store)
        models = args.models or list(MODELS)
    split = leave_one_out(interactions)
    registry = model_registry()
    reports = []
    for key in models:
        name, params = MODELS[key]
        if key == "transformer" and args.max_train_seconds is not None:
            params = {**params, "max_train_seconds": args.max_train_seconds}
        model = registry[name].from_params(params)
        started = time.perf_counter()
        model.fit(split.train, valid=RankingValidation(split.train, split.valid))
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
            "dataset": f"{args.dataset}-audit",
            "model": key,
            "params": params,
            "protocol": {
                **audit["protocol"],
                "split_params": split.protocol,
                "torch_threads": 1,
                **({"order": "random per user (seed 0): no timestamps"} if args.dataset == "ml-1m" else {}),
            },
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
            **provenance(),
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
        plot = args.plot or PLOT.with_name(f"audit-{args.dataset}.png")
        print(f"wrote {plot_group_quality(reports, plot)}")


ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
"""ML-1M's occupation codes 0-20 (its README)."""


def _ml1m(*, seed: int):
    """ML-1M from the shared data: Interactions with a seeded random order per user, and user attributes."""
    import numpy as np
    import pyarrow.parquet as pq

    from behaviorlm.data.datasets import shared_data_dir
    from behaviorlm.data.sequences import Interactions

    root = shared_data_dir()
    if root is None or not (root / "ml-1m" / "ratings.parquet").exists():
        raise SystemExit("ml-1m/ratings.parquet not found: set BEHAVIORLM_DATA_DIR to the shared data folder")
    ratings = pq.read_table(root / "ml-1m" / "ratings.parquet")
    users = np.asarray(ratings.column("userID").to_pylist(), dtype=object).astype(str)
    items = np.asarray(ratings.column("movieID").to_pylist(), dtype=object).astype(str)
    # Ordinal times from a seeded shuffle: leave-one-out then holds out a random event per user.
    order = np.random.default_rng(seed).permutation(len(users))
    interactions = Interactions.from_events(
        user_ids=users, item_ids=items, timestamps=order, event_type_vocab=("rate",)
    )
    attributes = {}
    for line in (root / "ml-1m" / "users.dat").read_text(encoding="latin-1").splitlines():
        user, gender, age, occupation, _zip = line.split("::")
        attributes[user] = {
            "gender": gender,
            "age": int(age),
            "occupation": ML1M_OCCUPATIONS[int(occupation)],
        }
    return interactions, attributes


if __name__ == "__main__":
    main()
