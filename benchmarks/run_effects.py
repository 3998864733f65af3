"""Population effects: planted-effect recovery on synthetic users, and cart -> purchase on Taobao.

1. ``causal-synthetic``: users from behaviorlm.synthetic.causal (planted confounding, true ATE
   of carting on purchasing ~0.17, heterogeneous by segment) at a few sizes and seeds. For every
   estimator: the estimate, its relative error and whether its 95% interval covers the truth (the
   sample ATE of that draw); the same for the DR-learner's per-segment effects (model
   "segment-dr-learner-<segment>", truth = the segment's planted effect). Per-segment DR- and X-learner
   effects and their plot for the largest size, seed 0.
2. ``taobao-110k``: the Taobao UserBehavior slice (2 hours). The log's time span is halved: features
   from the first 30 minutes, treatment (``cart``) in the next 30, outcome (``purchase``) in the second
   hour. There is NO ground truth here: the numbers are estimates under the assumption that activity
   in the first 30 minutes captures every common cause, with refutations as the only check.

Appends records to benchmarks/results.jsonl (dataset "causal-synthetic", model = estimator; dataset
"taobao-110k", model "effect-<estimator>") and writes the per-segment plots under --plot-dir.

    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_effects.py
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from behaviorlm.causal.effects import ECONML_METHODS, OWN_METHODS, analyze_effects, plot_segment_effects
from behaviorlm.causal.learners import EffectConfig
from behaviorlm.causal.table import activity_segments, build_effect_table, effect_windows
from behaviorlm.data.datasets import load_interactions
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.synthetic.causal import causal_synthetic

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def _record(
    dataset: str, model: str, *, params: dict, protocol: dict, metrics: dict, n_users: int, seconds: float
) -> dict:
    return {
        "dataset": dataset,
        "model": model,
        "params": params,
        "protocol": protocol,
        "metrics": metrics,
        "n_users": n_users,
        "train_seconds": seconds,
        "eval_seconds": 0.0,
        "training": {},
        **provenance(),
    }


def synthetic(args: argparse.Namespace, methods: tuple[str, ...], config: EffectConfig) -> None:
    rows: dict[tuple[int, str], list[tuple[float, bool]]] = {}
    for n_users in args.sizes:
        for seed in range(args.seeds):
            data = causal_synthetic(n_users=n_users, seed=seed, with_events=False)
            started = time.perf_counter()
            # The DR-learner's segment effects reuse the ATE estimators' cross-fitted models.
            report = analyze_effects(
                data.table,
                methods=methods,
                segment_methods=("dr-learner",),
                refute=False,
                config=EffectConfig(**{**asdict(config), "seed": seed}),
                dowhy=args.dowhy,
            )
            seconds = time.perf_counter() - started
            found = [
                (est.method, est.effect, est.ci_low, est.ci_high, data.true_ate) for est in report.estimates
            ]
            if report.dowhy is not None:  # DoWhy's IPW has no interval (its bootstrap is left out)
                found += [
                    (method, est["effect"], est["ci_low"], est["ci_high"], data.true_ate)
                    for method, est in report.dowhy.estimates.items()
                ]
            found += [
                (
                    f"segment-dr-learner-{seg.segment}",
                    seg.effect,
                    seg.ci_low,
                    seg.ci_high,
                    data.segment_effects[seg.segment],
                )
                for seg in report.segments
            ]
            for model, effect, ci_low, ci_high, truth in found:
                covered = None if ci_low is None else bool(ci_low <= truth <= ci_high)
                relative_error = (effect - truth) / truth
                rows.setdefault((n_users, model), []).append((relative_error, covered))
                append_jsonl(
                    args.out,
                    _record(
                        "causal-synthetic",
                        model,
                        params={
                            "n_users": n_users,
                            "seed": seed,
                            "learner": config.learner,
                            "n_folds": config.n_folds,
                        },
                        protocol={
                            "generator": "behaviorlm.synthetic.causal.causal_synthetic",
                            "estimand": "sample ATE of cart on purchase (additive, by segment)"
                            if not model.startswith("segment-")
                            else "true effect of cart on purchase in the segment",
                            "population_ate": data.population_ate,
                            "confidence": 0.95,
                        },
                        metrics={
                            "ate": effect,
                            "true_ate": truth,
                            "relative_error": relative_error,
                            "ci_low": ci_low,
                            "ci_high": ci_high,
                            "covered": covered,
                        },
                        n_users=n_users,
                        seconds=seconds,
                    ),
                )
            print(
                f"n={n_users:>6} seed={seed} truth={data.true_ate:.4f} "
                + " ".join(f"{e.method}={e.effect:+.4f}" for e in report.estimates)
                + f" ({seconds:.1f}s)",
                flush=True,
            )
    print(
        "\n| users | estimator (segment: true effect 0.10 / 0.20 / 0.30) | mean relative error | mean abs relative error | 95% CI coverage |"
    )
    print("|---:|---|---:|---:|---:|")
    for (n_users, method), found in rows.items():
        errors = np.array([r for r, _ in found])
        covers = [c for _, c in found if c is not None]
        coverage = f"{np.mean(covers):.0%} ({sum(covers)}/{len(covers)})" if covers else "no interval"
        print(f"| {n_users:,} | {method} | {errors.mean():+.1%} | {np.abs(errors).mean():.1%} | {coverage} |")

    data = causal_synthetic(n_users=max(args.sizes), seed=0, with_events=False)
    started = time.perf_counter()
    report = analyze_effects(data.table, methods=("aipw", "dml"), refute=False, config=config)
    print(f"\nper segment, n={max(args.sizes):,}, seed 0 ({time.perf_counter() - started:.1f}s):")
    print("| segment | true effect | method | estimate | 95% CI |\n|---|---:|---|---:|---|")
    for seg in report.segments:
        print(
            f"| {seg.segment} | {data.segment_effects[seg.segment]:.2f} | {seg.method} | {seg.effect:+.4f} | "
            f"[{seg.ci_low:+.4f}, {seg.ci_high:+.4f}] |"
        )
    path = plot_segment_effects(
        report,
        path=args.plot_dir / "effects-synthetic-segments.png",
        title=f"Synthetic users (n={max(args.sizes):,}, seed 0): effect of cart on purchase by segment",
        true_effects=data.segment_effects,
    )
    print(f"plot: {path}")


def taobao(args: argparse.Namespace, methods: tuple[str, ...], config: EffectConfig) -> None:
    log = load_interactions("taobao-110k")
    windows = effect_windows(log)
    table = activity_segments(
        build_effect_table(log, treatment=args.treatment, outcome="purchase", windows=windows), n_groups=3
    )
    started = time.perf_counter()
    report = analyze_effects(table, methods=methods, config=config)
    seconds = time.perf_counter() - started
    print(f"\nTaobao-110k, {args.treatment} -> purchase (no ground truth), {seconds:.1f}s")
    print(f"windows: {windows.describe()}")
    print(report.to_markdown())
    for est in report.estimates:
        metrics: dict[str, float | bool] = {
            "ate": est.effect,
            "ci_low": est.ci_low,
            "ci_high": est.ci_high,
            "std_error": est.std_error,
            "n_treated": est.n_treated,
        }
        for ref in est.refutations:
            key = ref.name.replace("-", "_")
            metrics[f"{key}_passed"] = ref.passed
            metrics[f"{key}_effect"] = ref.new_effect
            if ref.p_value is not None:
                metrics[f"{key}_p_value"] = ref.p_value
        append_jsonl(
            args.out,
            _record(
                "taobao-110k",
                f"effect-{est.method}",
                params={"treatment": args.treatment, "outcome": "purchase", **asdict(config)},
                protocol={
                    "ground_truth": "none (observational log)",
                    "windows": windows.describe(),
                    "population": report.protocol["population"],
                    "features": list(table.feature_names),
                    "outcome_rate_treated": report.outcome_rate_treated,
                    "outcome_rate_untreated": report.outcome_rate_untreated,
                    "confidence": 0.95,
                },
                metrics=metrics,
                n_users=report.n_users,
                seconds=seconds,
            ),
        )
    if report.segments:
        path = plot_segment_effects(
            report,
            path=args.plot_dir / f"effects-taobao-{args.treatment}-segments.png",
            title=f"Taobao-110k: effect of {args.treatment} on purchase by activity (no ground truth)",
        )
        print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--treatment", default="cart", help="Taobao treatment event type (cart or fav).")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-taobao", action="store_true")
    parser.add_argument("--dowhy", action="store_true", help="Also estimate with DoWhy (synthetic users).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot-dir", type=Path, default=DOCS_IMG)
    args = parser.parse_args()
    methods = OWN_METHODS + (ECONML_METHODS if importlib.util.find_spec("econml") else ())
    config = EffectConfig()
    if not args.skip_synthetic:
        synthetic(args, methods, config)
    if not args.skip_taobao:
        taobao(args, methods, config)


if __name__ == "__main__":
    main()
