"""Campaign targeting: uplift vs propensity vs random on a synthetic campaign over real Taobao users.

The campaign is behaviorlm.synthetic.campaign.synthetic_campaign layered on the Taobao UserBehavior slice
(taobao-110k: every user's behaviour in the slice as features, a randomised 50% coupon, planted
persuadables / sure things / lost causes / sleeping dogs). For each seed, half the users (stratified by
treatment) train the models and the other half are ranked by each ordering; the metrics come from the
held-out users' outcomes (AUUC, Qini coefficient, incremental conversions per 1,000 users at 10/20/30%
budgets) and from the planted effects ("true_incremental@..."). The Qini curves of seed 0 go to
docs/img/qini-campaign.png.

Appends records to benchmarks/results.jsonl: dataset "campaign-synthetic", models "uplift-<learner>",
"propensity", "random" and "true-uplift" (the oracle ordering by the planted effects).

    OMP_NUM_THREADS=1 BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_campaign.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.causal.learners import EffectConfig
from behaviorlm.data.datasets import load_interactions
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.marketing.audience import compare_targeting
from behaviorlm.synthetic.campaign import synthetic_campaign

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="taobao-110k")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=DOCS_IMG / "qini-campaign.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    events = load_interactions(args.dataset)
    summary: dict[str, list[dict[str, float]]] = {}
    for seed in range(args.seeds):
        campaign = synthetic_campaign(events, max_users=args.max_users, seed=seed)
        config = EffectConfig(seed=seed)
        started = time.perf_counter()
        comparison = compare_targeting(campaign.table, config=config, true_uplift=campaign.true_uplift)
        seconds = time.perf_counter() - started
        if seed == 0:
            comparison.plot_qini(
                args.plot,
                title=f"Qini curves, synthetic campaign on {args.dataset} ({comparison.n_test:,} held-out users)",
            )
        for result in comparison.results:
            metrics = result.metrics()
            summary.setdefault(result.name, []).append(metrics)
            append_jsonl(
                args.out,
                {
                    "dataset": "campaign-synthetic",
                    "model": result.name,
                    "params": {"seed": seed, "learner": config.learner, "events": args.dataset},
                    "protocol": {
                        **comparison.protocol,
                        "generator": "behaviorlm.synthetic.campaign.synthetic_campaign",
                        "treatment_share": 0.5,
                        "kind_shares": campaign.kind_shares(),
                        "true_ate": campaign.true_ate,
                        "n_train": comparison.n_train,
                        "n_test": comparison.n_test,
                    },
                    "metrics": metrics,
                    "n_users": campaign.table.n_users,
                    "train_seconds": seconds,
                    "eval_seconds": 0.0,
                    "training": {},
                    **provenance(),
                },
            )
        print(f"seed {seed}: {seconds:.1f} s\n{comparison.to_markdown()}")
    print(f"mean over {args.seeds} seeds:")
    for name, runs in summary.items():
        means = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(name, {k: round(v, 4) for k, v in means.items()})


if __name__ == "__main__":
    main()
