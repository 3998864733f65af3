"""Causal and marketing commands: ``effects``, ``audience``, ``audit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from behaviorlm.cli.common import (
    StoreOption,
    app,
    console,
    require_store,
    spinner,
    trained_model_and_split,
    user_errors,
)
from behaviorlm.data.store import EventStore


@app.command()
@user_errors
def effects(
    treatment: Annotated[str, typer.Option(help="Treatment: an event type done in the treatment window.")],
    outcome: Annotated[
        str, typer.Option(help="Outcome: an event type done in the outcome window.")
    ] = "purchase",
    store: StoreOption = Path("behaviorlm.duckdb"),
    split_time: Annotated[
        str | None,
        typer.Option("--split-time", help="Start of the outcome window (ISO-8601; UTC if no offset)."),
    ] = None,
    window_hours: Annotated[
        float | None, typer.Option("--window-hours", help="Length of the treatment and outcome windows.")
    ] = None,
    learner: Annotated[str, typer.Option(help="Nuisance models: boosting or linear.")] = "boosting",
    folds: Annotated[int, typer.Option(help="Cross-fitting folds.")] = 5,
    refute: Annotated[bool, typer.Option("--refute/--no-refute", help="Run the refutations.")] = True,
    dowhy: Annotated[
        bool, typer.Option("--dowhy", help="Also cross-check with DoWhy (graph, identification, refuters).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of folds, learners and refutations.")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Also plot the per-segment effects (PNG) here.")] = None,
) -> None:
    """Average causal effect of one behaviour on a later one (naive, regression, IPW, AIPW, DML), with
    refutations and per-activity-segment effects; see docs/causal-effects.md."""
    from behaviorlm.causal.effects import analyze_effects, plot_segment_effects
    from behaviorlm.causal.learners import EffectConfig

    table, windows = _effect_table_from_store(
        store, treatment=treatment, outcome=outcome, split_time=split_time, window_hours=window_hours
    )
    console.print(f"confounders: {', '.join(table.feature_names)}", highlight=False, soft_wrap=True)
    config = EffectConfig(learner=learner, n_folds=folds, seed=seed)
    with spinner(f"estimating on {table.n_users:,} users …"):
        report = analyze_effects(table, refute=refute, config=config, dowhy=dowhy)
    for name, span in windows.describe().items():
        console.print(f"{name} window: {span}", highlight=False, soft_wrap=True)
    console.print(report.summary().replace("`", ""), highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for title, (header, rows) in (
        ("average effect (95% CI) and refutations", report.estimate_rows()),
        ("effect by feature-window activity", report.segment_rows()),
    ):
        if rows:
            grid = Table(*header, title=title, title_justify="left")
            for row in rows:
                grid.add_row(*row)
            console.print(grid)
    if report.segments_left_out():
        console.print(
            f"segments left out (too few treated or untreated): {', '.join(report.segments_left_out())}"
        )
    if report.dowhy is not None:
        header, rows = report.dowhy.rows()
        title = f"DoWhy cross-check (backdoor set from the graph: {len(report.dowhy.backdoor_variables)} features)"
        grid = Table(*header, title=title, title_justify="left")
        for row in rows:
            grid.add_row(*row)
        console.print(grid)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
    if plot is not None:
        plot_segment_effects(report, path=plot)


def _effect_table_from_store(
    store: Path, *, treatment: str, outcome: str, split_time: str | None, window_hours: float | None
) -> tuple[Any, Any]:
    """The per-user effect table (activity segments; category and price confounders when the store has
    them) and its windows, for ``effects`` and ``audience --store``."""
    from behaviorlm.causal.effects import utc_seconds
    from behaviorlm.causal.table import activity_segments, build_effect_table, effect_windows

    require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
        category, price = es.item_confounders(data.item_ids)
    split = utc_seconds(split_time) if split_time is not None else None
    windows = effect_windows(data, split_time=split, window_hours=window_hours)
    table = build_effect_table(
        data, treatment=treatment, outcome=outcome, windows=windows, item_category=category, item_price=price
    )
    return activity_segments(table), windows


# ---------------------------------------------------------------------------------------------- graph
@app.command()
@user_errors
def audience(
    out: Annotated[
        Path, typer.Option(help="Audience file: .parquet, else CSV; a Markdown report goes beside it.")
    ],
    campaign: Annotated[
        Path | None,
        typer.Option(
            help="Past randomised campaign (CSV/Parquet): user_id, treatment, outcome (0/1), numeric features."
        ),
    ] = None,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Use the synthetic campaign (on the Taobao slice if present).")
    ] = False,
    store: Annotated[
        Path | None,
        typer.Option(help="Past campaign from an event store: who did --treatment, who then did --goal."),
    ] = None,
    treatment: Annotated[
        str | None, typer.Option(help="With --store: the treatment event type (e.g. coupon, push, email).")
    ] = None,
    goal: Annotated[
        str, typer.Option(help="With --store: the goal event type (e.g. purchase).")
    ] = "purchase",
    split_time: Annotated[
        str | None,
        typer.Option(
            "--split-time",
            help="With --store: start of the goal window (ISO-8601; default: the middle of the log, or --window-hours before its end).",
        ),
    ] = None,
    window_hours: Annotated[
        float | None,
        typer.Option("--window-hours", help="With --store: length of the treatment and goal windows."),
    ] = None,
    segment_column: Annotated[
        str | None,
        typer.Option("--segment-column", help="Column with segment labels (default: activity tertiles)."),
    ] = None,
    budget: Annotated[float, typer.Option(help="Largest share of users to contact, in (0, 1].")] = 0.2,
    learner: Annotated[
        str, typer.Option(help="Uplift meta-learner: t-learner, x-learner or dr-learner.")
    ] = "x-learner",
    value: Annotated[float, typer.Option(help="Value of one extra conversion.")] = 1.0,
    cost: Annotated[float, typer.Option(help="Cost of one contact, in the unit of --value.")] = 0.0,
    folds: Annotated[int, typer.Option(help="Cross-fitting folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of folds, learners and the synthetic campaign.")] = 0,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare", help="Also compare uplift, propensity and random targeting on held-out users."
        ),
    ] = False,
    qini_plot: Annotated[
        Path | None, typer.Option("--qini-plot", help="With --compare: Qini curves (PNG) here.")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="With --compare: the comparison (summaries and Qini curves) as JSON here, the service's "
            "[reports] targeting file.",
        ),
    ] = None,
) -> None:
    """Campaign audience by uplift under a budget: who to contact so the contact adds the most
    conversions (not who converts anyway); see docs/marketing.md."""
    from behaviorlm.causal.learners import EffectConfig
    from behaviorlm.marketing.audience import AudienceConfig, build_audience, compare_targeting, read_campaign
    from behaviorlm.synthetic.campaign import default_campaign

    if sum([campaign is not None, synthetic, store is not None]) != 1:
        raise ValueError(
            "give exactly one of --campaign FILE, --store STORE (with --treatment) and --synthetic"
        )
    if store is not None and treatment is None:
        raise ValueError("--store needs --treatment: the event type that marks a contacted user")
    if (qini_plot is not None or json_out is not None) and not compare:
        raise ValueError("--qini-plot and --json describe the comparison: add --compare")
    effects_config = EffectConfig(n_folds=folds, seed=seed)
    config = AudienceConfig(
        learner=learner,  # type: ignore[arg-type]
        budget=budget,
        value_per_conversion=value,
        cost_per_contact=cost,
        effects=effects_config,
    )
    true_uplift = None
    if campaign is not None:
        table = read_campaign(campaign, segment_column=segment_column)
    elif store is not None:
        table, windows = _effect_table_from_store(
            store, treatment=str(treatment), outcome=goal, split_time=split_time, window_hours=window_hours
        )
        for name, span in windows.describe().items():
            console.print(f"{name} window: {span}", highlight=False, soft_wrap=True)
        console.print(
            f"{int(table.treatment.sum()):,} of {table.n_users:,} users did {treatment!r} in the treatment window; "
            "unless that contact was randomised, the uplift estimates assume that the behaviour features "
            "capture why users were contacted",
            highlight=False,
            soft_wrap=True,
        )
    else:
        drawn, source = default_campaign(seed=seed)
        table, true_uplift = drawn.table, drawn.true_uplift
        shares = ", ".join(f"{kind} {share:.0%}" for kind, share in drawn.kind_shares().items())
        console.print(f"synthetic campaign on {source}: {table.n_users:,} users ({shares})")
    with spinner(f"scoring {table.n_users:,} users …"):
        result = build_audience(table, config=config)
    result.write(out)
    report = out.with_suffix(".md")
    report.write_text(result.to_markdown())
    console.print(result.to_markdown(), highlight=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(f"audience: {out}; report: {report}")
    if compare:
        with spinner("comparing targeting on held-out users …"):
            comparison = compare_targeting(table, config=effects_config, true_uplift=true_uplift)
        console.print(comparison.to_markdown(), highlight=False, soft_wrap=True)
        if qini_plot is not None:
            comparison.plot_qini(qini_plot)
            console.print(f"Qini curves: {qini_plot}")
        if json_out is not None:
            json_out.write_text(json.dumps(comparison.to_dict(), indent=2))
            console.print(f"comparison as JSON: {json_out}")


# ---------------------------------------------------------------------------------------------- audit
@app.command()
@user_errors
def audit(
    model_dir: Annotated[Path, typer.Argument(help="Checkpoint directory written by `behaviorlm train`.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    groups: Annotated[
        str,
        typer.Option(help="Groupings, comma-separated: gender, age, occupation (user attributes), activity."),
    ] = "gender,age,occupation,activity",
    penalties: Annotated[
        str,
        typer.Option(help="Popularity penalties to measure the trade-off for, comma-separated (e.g. 0.5,1)."),
    ] = "",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (and permutations).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Save a PNG of NDCG@10 per group here.")] = None,
) -> None:
    """Audit a saved model for quality gaps between user groups and for popularity bias (test targets).

    User attributes are read from the store only to group the results; the model never sees them.
    """
    from behaviorlm.evaluation.audit import audit_recommender, plot_group_quality, read_user_attributes

    estimator, sp = trained_model_and_split(model_dir, store)
    with EventStore(store, read_only=True) as st:
        attributes = read_user_attributes(st)
    chosen = [g.strip() for g in groups.split(",") if g.strip()]
    try:
        penalty_values = [float(p) for p in penalties.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--penalties expects comma-separated numbers, got {penalties!r}") from None
    with spinner("auditing …") as status:
        report = audit_recommender(
            estimator,
            history=sp.test_history,
            targets=sp.test,
            user_attributes=attributes,
            groups=chosen,
            n_resamples=resamples,
            seed=seed,
            penalties=penalty_values,
            split_name=str(sp.protocol.get("split")),
            progress=lambda message: status.update(f"auditing: {message} …"),
        )
    k = report.protocol["audit_k"]
    conf = f"{report.protocol['confidence']:.0%}"
    for attribute, gap in report.groups.items():
        # Readable at 80 columns: each estimate over its interval, three decimals, light rules.
        table = Table(
            "group",
            "users",
            f"NDCG@{k}\n[{conf} CI]",
            f"HR@{k}\n[{conf} CI]",
            f"NDCG@{k}\nvs the rest",
            "pop.\nlift",
            title=f"{estimator.name}: quality by {attribute} (pop. lift: popularity of the recommended items "
            "over the user's own)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for g in sorted(gap.groups, key=lambda g: -g.metrics[f"ndcg@{k}"].estimate):
            n, h = g.metrics[f"ndcg@{k}"], g.metrics[f"hr@{k}"]
            diff = g.vs_rest.get(f"ndcg@{k}")
            flag = "" if g.group not in gap.small_groups else "\n(small)"
            table.add_row(
                g.group + flag,
                f"{g.n_users:,}",
                f"{n.estimate:.3f}\n[{n.low:.3f}, {n.high:.3f}]",
                f"{h.estimate:.3f}\n[{h.low:.3f}, {h.high:.3f}]",
                "–" if diff is None else f"{diff.estimate:+.3f}\n[{diff.low:+.3f}, {diff.high:+.3f}]",
                f"{g.popularity_lift:.2f}",
            )
        console.print(table)
        if f"ndcg@{k}" in gap.gap:
            d = gap.gap[f"ndcg@{k}"]
            console.print(
                f"gap (best {gap.best[f'ndcg@{k}']} − worst {gap.worst[f'ndcg@{k}']}): {d.estimate:.4f} "
                f"[{d.low:.4f}, {d.high:.4f}], permutation p = {gap.p_value[f'ndcg@{k}']:.3f}",
                highlight=False,
            )
    pop = report.popularity
    table = Table(
        "popularity bias", "value", title=f"{estimator.name}: popularity bias", title_justify="left"
    )
    table.add_row("recommended / history popularity", f"{pop.popularity_ratio:.3f}")
    table.add_row("Gini of exposure", f"{pop.gini_exposure:.3f}")
    table.add_row(f"long-tail share (outside {pop.n_head_items} head items)", f"{pop.longtail_share:.3f}")
    table.add_row(f"coverage@{k}", f"{pop.coverage:.3f}")
    console.print(table)
    if report.mitigation:
        # One column per penalty (the first without), so that any number of groupings fits 80 columns.
        table = Table(
            "",
            "no penalty",
            *(f"penalty {p.penalty:g}" for p in report.mitigation),
            title="popularity-penalized re-ranking",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        points = [
            (report.metrics, report.popularity),
            *((p.metrics, p.popularity) for p in report.mitigation),
        ]
        table.add_row(f"NDCG@{k}", *(f"{m[f'ndcg@{k}']:.4f}" for m, _ in points))
        table.add_row(f"HR@{k}", *(f"{m[f'hr@{k}']:.4f}" for m, _ in points))
        table.add_row("long-tail share", *(f"{p.longtail_share:.3f}" for _, p in points))
        table.add_row("Gini of exposure", *(f"{p.gini_exposure:.3f}" for _, p in points))
        table.add_row("popularity ratio", *(f"{p.popularity_ratio:.3f}" for _, p in points))
        for a, gap in report.groups.items():
            before = gap.gap.get(f"ndcg@{k}")
            after = (p.gaps.get(f"{a}:ndcg@{k}") for p in report.mitigation)
            table.add_row(
                f"{a} gap (NDCG@{k})",
                "–" if before is None else f"{before.estimate:.4f}",
                *("–" if g is None else f"{g.estimate:.4f}" for g in after),
            )
        console.print(table)
    used = ", ".join(report.attributes_used) or "none"
    console.print(
        f"{report.metrics[f'ndcg@{k}']:.4f} NDCG@{k} over all users; split={report.protocol['split']}, full "
        f"ranking, seen items masked; user attributes used for grouping only: {used}",
        highlight=False,
    )
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
    if plot is not None:
        plot_group_quality(report, plot)
        console.print(f"plot → {plot}")
