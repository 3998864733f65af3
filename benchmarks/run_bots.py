"""Planted bots in the Taobao slice: ROC-AUC and precision@50 of the anomaly detectors, per bot style.

50 bots of each style (behaviorlm.testing.bots) are added to the 66,454 real users of the Taobao
UserBehavior slice (2 hours of traffic). Detectors score every user without labels; a style's ROC-AUC
ranks its bots against all real users, precision@50 is the share of bots among the 50 highest scores
of (real users + that style's bots). Detectors: the isolation forest over behaviour features, a
one-feature baseline (events per hour), the sequence model's largest per-event surprisal (a behaviour
Transformer fitted, without labels, on the same planted data for ``--surprisal-epochs`` epochs), and the
rank average of the forest and the surprisal. The detectors' settings were chosen on bots planted with
seed 1; this table uses seed 0. Appends records with dataset "bots-taobao" to benchmarks/results.jsonl.

    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_bots.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.data.datasets import load_interactions
from behaviorlm.evaluation import metrics
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.profiling.anomalies import (
    FEATURES,
    AnomalyDetector,
    ForestSurprisalDetector,
    sequence_surprisal,
    user_behaviour_features,
)
from behaviorlm.testing.bots import BOT_STYLES, plant_bots

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def evaluate(scores: np.ndarray, style: np.ndarray, *, k: int = 50) -> dict[str, float]:
    human = style == ""
    out = {"roc_auc": metrics.roc_auc((~human).astype(int), y_score=scores)}
    order = np.argsort(-scores, kind="stable")
    out[f"precision@{k}"] = float((~human[order[:k]]).mean())
    for name in BOT_STYLES:
        subset = human | (style == name)
        y = (style[subset] == name).astype(int)
        s = scores[subset]
        out[f"{name}_roc_auc"] = metrics.roc_auc(y, y_score=s)
        out[f"{name}_precision@{k}"] = float(y[np.argsort(-s, kind="stable")[:k]].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-style", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--surprisal-epochs", type=int, default=20)
    # Chosen on the seed-1 planting: max beat mean alone (ROC-AUC 0.857 vs 0.836) and rank-averaged with
    # the forest (precision@50 0.86 vs 0.64).
    parser.add_argument("--surprisal-statistic", choices=("mean", "max"), default="max")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    planted = plant_bots(load_interactions("taobao-110k"), per_style=args.per_style, seed=args.seed)
    data = planted.interactions
    # The sequence model behind the surprisal: sampled softmax keeps an epoch over 85k items to seconds;
    # there are no labels and no validation split, so it trains a fixed number of epochs.
    model_params = {
        "d_model": 64,
        "max_len": 50,
        "loss": "sampled",
        "epochs": args.surprisal_epochs,
        "seed": 0,
    }
    started = time.perf_counter()
    model = BehaviorTransformer.from_params(model_params).fit(data)
    model_seconds = time.perf_counter() - started
    statistic = args.surprisal_statistic

    # Taobao timestamps are UTC; the users are in China (UTC+8), which is where "night" is.
    detectors = {
        "isolation-forest": lambda: AnomalyDetector(utc_offset_hours=8).fit(data).scores_,
        "events-per-hour": lambda: np.nan_to_num(
            user_behaviour_features(data)[:, FEATURES.index("events_per_hour")], nan=0.0
        ),
        # One event has no surprisal (NaN); -1 ranks such users below every scored user (surprisal >= 0).
        f"sequence-surprisal-{statistic}": lambda: np.nan_to_num(
            getattr(sequence_surprisal(model, data), statistic), nan=-1.0
        ),
        f"isolation-forest+surprisal-{statistic}": lambda: (
            ForestSurprisalDetector(model=model, statistic=statistic, utc_offset_hours=8).fit(data).scores_
        ),
    }
    for name, run in detectors.items():
        started = time.perf_counter()
        scores = run()
        seconds = time.perf_counter() - started
        uses_model = "surprisal" in name
        result = evaluate(scores, planted.style)
        append_jsonl(
            args.out,
            {
                "dataset": "bots-taobao",
                "model": name,
                "params": {
                    "per_style": args.per_style,
                    "seed": args.seed,
                    **({"sequence_model": {"model": "transformer", **model_params}} if uses_model else {}),
                },
                "protocol": {
                    "real_users": int((planted.style == "").sum()),
                    "bots": int(planted.is_bot.sum()),
                    "styles": list(BOT_STYLES),
                    "labels_used": False,
                },
                "metrics": result,
                "n_users": int(data.n_users),
                "train_seconds": seconds + (model_seconds if uses_model else 0.0),
                "eval_seconds": 0.0,
                "training": model.training_summary() if uses_model else {},
                **provenance(),
            },
        )
        print(name, {k: round(v, 4) for k, v in result.items()}, f"{seconds:.1f}s", flush=True)
    print(f"sequence model: {model_seconds:.0f}s, {model.training_summary()}", flush=True)


if __name__ == "__main__":
    main()
