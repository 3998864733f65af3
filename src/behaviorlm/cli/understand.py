"""Understanding commands: ``anomalies``, ``profile``, ``segments``, ``churn``, ``fuse``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
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
from behaviorlm.data.store import EventStore, StoreError


@app.command()
@user_errors
def anomalies(
    store: StoreOption = Path("behaviorlm.duckdb"),
    top: Annotated[int, typer.Option(help="How many of the most anomalous users to list.")] = 20,
    utc_offset: Annotated[
        float, typer.Option("--utc-offset", help="Users' time zone, hours from UTC (for night activity).")
    ] = 0.0,
    json_out: Annotated[Path | None, typer.Option(help="Also write every user's score as JSON.")] = None,
) -> None:
    """Rank users by how anomalous their behaviour is (bots, scrapers, fraud) and say why."""
    from behaviorlm.profiling.anomalies import AnomalyDetector

    require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
    if data.n_users == 0:
        raise ValueError(f"{store} holds no events")
    with spinner(f"scoring {data.n_users:,} users …"):
        detector = AnomalyDetector(utc_offset_hours=utc_offset).fit(data)
    table = Table(
        "rank", "user", "score", "events", "why (value vs typical, in IQRs)", title="most anomalous users"
    )
    for rank, user in enumerate(detector.top(top), start=1):
        why = "; ".join(
            f"{r.feature} {r.value:.3g} vs {r.typical:.3g} ({r.iqr_units:+.1f})"
            for r in detector.reasons(int(user))
        )
        table.add_row(
            str(rank),
            str(data.user_ids[user]),
            f"{detector.scores_[user]:.3f}",
            str(data.lengths()[user]),
            why,
        )
    console.print(table)
    if json_out is not None:
        order = detector.top(data.n_users)
        json_out.write_text(
            json.dumps(
                [{"user_id": str(data.user_ids[u]), "score": float(detector.scores_[u])} for u in order]
            )
        )


@app.command()
@user_errors
def profile(
    user_id: Annotated[
        str, typer.Argument(help="The user's id as stored (a pseudonym if ids are pseudonymized).")
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    model: Annotated[
        Path | None, typer.Option(help="Saved sequence model, for the likely next items.")
    ] = None,
    interests: Annotated[
        bool, typer.Option(help="Interest topics from item texts (embeds them once, cached in the store).")
    ] = True,
    json_out: Annotated[Path | None, typer.Option(help="Also write the profile as JSON.")] = None,
) -> None:
    """A readable card of one user: activity, interests, how anomalous, likely next items."""
    from behaviorlm.models.registry import load_recommender
    from behaviorlm.profiling.profile import build_profile

    require_store(store)
    with EventStore(store) as es, spinner("building the profile …"):
        card = build_profile(
            es,
            user_id,
            model=load_recommender(model) if model is not None else None,
            with_interests=interests,
        )
    lines = [
        f"[bold]{card.user_id}[/]: {card.events:,} events on {card.active_days} days, "
        f"{card.first_event} → {card.last_event}",
        "by type: " + ", ".join(f"{t} {n:,}" for t, n in card.events_by_type.items()),
        "latest: " + "; ".join(f"{r['event_type']} {r['title'] or r['item_id']}" for r in card.recent_items),
    ]
    if card.interests:
        lines.append(
            "interests: " + "; ".join(f"{i['keywords']} ({100 * i['share']:.0f}%)" for i in card.interests)
        )
    if card.anomaly_percentile is not None:
        why = ", ".join(
            f"{r['feature']} {r['value']:.3g} vs {r['typical']:.3g}" for r in card.anomaly_reasons
        )
        lines.append(f"anomaly: more unusual than {100 * card.anomaly_percentile:.1f}% of users ({why})")
    if card.next_items:
        lines.append("likely next: " + "; ".join(i["title"] or i["item_id"] for i in card.next_items))
    from rich.panel import Panel

    console.print(Panel("\n".join(lines), title="user profile", expand=False))
    if json_out is not None:
        json_out.write_text(json.dumps(card.to_dict(), indent=2))


@app.command()
@user_errors
def segments(
    out: Annotated[
        Path, typer.Option(help="Folder for segments.json, segment_map.png and segment_map.html.")
    ],
    model: Annotated[Path, typer.Option(help="Saved sequence model whose user states are segmented.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    method: Annotated[str, typer.Option(help="kmeans (k chosen by silhouette) or hdbscan.")] = "kmeans",
) -> None:
    """Segment users by behaviour; ids stay stable when re-run into the same --out folder."""
    from behaviorlm.data.features import item_features_from_store
    from behaviorlm.models.registry import load_recommender
    from behaviorlm.profiling import segments as seg

    if method not in ("kmeans", "hdbscan"):
        raise ValueError(f"--method must be kmeans or hdbscan, got {method!r}")
    require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
        features = item_features_from_store(es, data.item_ids)
    fitted = load_recommender(model)
    if list(map(str, fitted.trained_on.item_ids)) != list(map(str, data.item_ids)):
        raise ValueError(f"--model {model} was trained on another item catalogue than {store}")
    with spinner(f"encoding {data.n_users:,} users …"):
        x = seg.user_representations(fitted, data)
    with spinner("clustering …"):
        found = seg.segment_kmeans(x) if method == "kmeans" else seg.segment_hdbscan(x)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "segments.json"
    if previous.exists():
        found = seg.align_to_previous(
            found, np.array(json.loads(previous.read_text())["centroids"], dtype=np.float32)
        )
    summaries = seg.summarize_segments(found, data, item_features=features)
    seg.save_segment_map(
        found, x, summaries=summaries, png_path=out / "segment_map.png", html_path=out / "segment_map.html"
    )
    previous.write_text(
        json.dumps(
            {
                "method": found.method,
                "silhouette": found.silhouette,
                "centroids": np.nan_to_num(found.centroids).tolist(),
                "users": {str(u): int(s) for u, s in zip(data.user_ids, found.labels, strict=True)},
            }
        )
    )
    # Readable at 80 columns: no conversion column without purchases, one attribute per line.
    with_conversion = any(s.conversion_rate is not None for s in summaries)
    columns = ["segment", "users", "share", "recency d", "events"] + (
        ["conversion"] if with_conversion else []
    )
    table = Table(*columns, "over-represented (lift)", title=found.method, box=box.SIMPLE_HEAD)
    for s in summaries:
        cells = [
            str(s.segment),
            f"{s.users:,}",
            f"{100 * s.share:.1f}%",
            f"{s.median_recency_days:.1f}",
            f"{s.median_events:.0f}",
        ]
        if with_conversion:
            cells.append("–" if s.conversion_rate is None else f"{100 * s.conversion_rate:.1f}%")
        table.add_row(*cells, "\n".join(f"{a} x{lift:.1f}" for a, lift in s.top_attributes[:3]))
    console.print(table)
    console.print(f"silhouette {found.silhouette:.3f}; map: {out / 'segment_map.html'}")


@app.command()
@user_errors
def churn(
    store: StoreOption = Path("behaviorlm.duckdb"),
    horizon_days: Annotated[
        float, typer.Option("--horizon-days", help="A user churns when they do nothing for this many days.")
    ] = 7.0,
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Time of the test snapshot (ISO-8601, UTC without an offset); default: the last event minus "
            "the horizon, so that every test label is observed."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write each test user's churn probability (CSV, riskiest first) here.")
    ] = None,
) -> None:
    """Churn risk: which users active before a cutoff do nothing within the horizon after it. The model
    (gradient-boosted trees on recency, frequency, tenure, trend, behaviour mix) learns on the snapshot one
    horizon earlier, so no future leaks in, and is compared with a recency/frequency baseline on the test
    snapshot (docs/profiling.md#churn)."""
    from behaviorlm.causal.effects import utc_seconds
    from behaviorlm.evaluation import metrics
    from behaviorlm.profiling.churn import DAY, ChurnModel, RecencyFrequencyBaseline, churn_snapshot

    if horizon_days <= 0:
        raise ValueError(f"--horizon-days must be > 0, got {horizon_days}")
    require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
    if data.n_events == 0:
        raise ValueError(f"{store} holds no events")
    horizon = int(horizon_days * DAY)
    at = utc_seconds(cutoff) if cutoff is not None else int(data.timestamps.max()) - horizon

    def iso(seconds: int) -> str:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")

    if at - horizon <= int(data.timestamps.min()):
        raise ValueError(
            f"the model learns on the snapshot one horizon before the cutoff ({iso(at - horizon)}), which comes "
            f"before the first event ({iso(int(data.timestamps.min()))}): choose a later cutoff or a shorter "
            "--horizon-days"
        )
    train = churn_snapshot(data, cutoff=at - horizon, horizon_seconds=horizon)
    test = churn_snapshot(data, cutoff=at, horizon_seconds=horizon)
    with spinner(f"fitting on {len(train.users):,} users, testing on {len(test.users):,} …"):
        models = {
            "churn-gbm": ChurnModel().fit(train),
            "recency-frequency": RecencyFrequencyBaseline().fit(train),
        }
        scores = {name: m.predict_proba(test) for name, m in models.items()}
    when = iso(at)
    table = Table(
        "model",
        "ROC-AUC",
        "PR-AUC",
        title=f"churn within {horizon_days:g} days after {when}: {len(test.users):,} users, "
        f"{test.churned.mean():.1%} churned",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    both = 0 < test.churned.sum() < len(test.churned)
    for name, score in scores.items():
        table.add_row(
            name,
            f"{metrics.roc_auc(test.churned, y_score=score):.4f}" if both else "–",
            f"{metrics.average_precision(test.churned, y_score=score):.4f}" if both else "–",
        )
    console.print(table)
    if out is not None:
        order = np.argsort(-scores["churn-gbm"], kind="stable")
        with out.open("w") as f:
            f.write("user_id,churn_probability,churned\n")
            for i in order:
                f.write(
                    f"{data.user_ids[test.users[i]]},{scores['churn-gbm'][i]:.6f},{int(test.churned[i])}\n"
                )
        console.print(f"churn probabilities: {out}")


@app.command()
@user_errors
def score(
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="A saved intent model: purchase_propensity (`train --model purchase_propensity`), "
            "sequence_classifier or next_event_type."
        ),
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    out: Annotated[
        Path | None, typer.Option(help="Write every user's probabilities (CSV, most likely first) here.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Score as of this time (ISO-8601, UTC without an offset): only earlier events are read. "
            "Default: one second after the store's latest event."
        ),
    ] = None,
    reasons: Annotated[
        int | None,
        typer.Option(
            help="purchase_propensity: how many features that move each user's probability most to give "
            "(default 3; 0: none)."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="How many users to show.")] = 10,
) -> None:
    """Every user's intent from a saved intent model: with purchase_propensity, who is likely to buy
    within its horizon and why (a campaign's list); with a sequence head, its class probabilities from
    each user's latest events (docs/transformer.md)."""
    import csv

    from behaviorlm.causal.effects import utc_seconds
    from behaviorlm.models.propensity import PurchasePropensity
    from behaviorlm.models.registry import load_intent_model
    from behaviorlm.profiling.intent import score_users

    model = load_intent_model(model_dir)
    if reasons is None:
        reasons = 3 if isinstance(model, PurchasePropensity) else 0
    require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
    scored = score_users(
        model, data, as_of=utc_seconds(as_of) if as_of is not None else None, reasons=reasons
    )
    order = scored.order()

    def said(reason: Any) -> str:  # a reason as the table and the CSV write it
        return f"{reason.label}: {round(reason.value, 2):g} ({reason.log_odds:+.2f})"

    when = datetime.fromtimestamp(scored.as_of, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    shown = scored.ranked_by or scored.classes[0]
    column = scored.classes.index(shown)
    table = Table(
        "user",
        f"P({shown})",
        *(["strongest reason"] if scored.reasons else []),
        title=f"{model.name}: {len(scored.user_ids):,} users as of {when}"
        + (f", mean P({shown}) {scored.probabilities[:, column].mean():.3f}" if scored.ranked_by else ""),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for i in order[:top]:
        row = [str(scored.user_ids[i]), f"{scored.probabilities[i, column]:.3f}"]
        if scored.reasons:
            first = scored.reasons[i][0] if scored.reasons[i] else None
            row.append(said(first) if first else "–")
        table.add_row(*row)
    console.print(table)
    if out is not None:
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            n_reasons = max((len(r) for r in scored.reasons), default=0) if scored.reasons else 0
            writer.writerow(["user_id", *scored.classes, *(f"reason_{k + 1}" for k in range(n_reasons))])
            for i in order:
                cells = [f"{p:.6f}" for p in scored.probabilities[i]]
                why = [said(r) for r in scored.reasons[i]] if scored.reasons else []
                writer.writerow([scored.user_ids[i], *cells, *why])
        console.print(f"scores of {len(scored.user_ids):,} users: {out}")


@app.command()
@user_errors
def fuse(
    model_dir: Annotated[
        Path, typer.Argument(help="A recommender written by `behaviorlm train` (the behaviour side).")
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the chosen weight and the metrics as JSON here.")
    ] = None,
) -> None:
    """Text + behaviour: mix the model's scores with each user's text interest (item descriptions, reviews
    written in training events; the packaged sentence model), the text weight chosen on validation NDCG@10,
    then report the test split by history length (docs/profiling.md#text--behaviour)."""
    from behaviorlm.evaluation.ranking import RankingValidation
    from behaviorlm.profiling.fusion import FusedRecommender, evaluate_by_history_length, fit_text_scorer

    estimator, sp = trained_model_and_split(model_dir, store)
    try:
        es, cache = EventStore(store), True  # writable: embeddings are cached in the store
    except StoreError:
        es, cache = EventStore(store, read_only=True), False
    with es, spinner("embedding item descriptions and reviews …"):
        data = es.interactions()
        text = fit_text_scorer(es, data, sp.train, cache=cache)
    with spinner("choosing the text weight on validation …"):
        fused = FusedRecommender(behaviour=estimator, text=text).fit(
            sp.train, valid=RankingValidation(sp.train, sp.valid)
        )
    lengths = sp.train.lengths()
    results = {
        name: evaluate_by_history_length(model, history=sp.test_history, targets=sp.test, lengths=lengths)
        for name, model in (("behaviour", estimator), ("text", text), ("fused", fused))
    }
    chosen = fused.selection_
    console.print(
        f"text weight {chosen.text_weight:g} chosen on validation {chosen.metric} "
        f"({chosen.validation[0.0]:.4f} with behaviour alone, {chosen.validation[chosen.text_weight]:.4f} chosen)",
        highlight=False,
    )
    table = Table(
        "training events",
        "users",
        f"{estimator.name}",
        "text",
        "fused",
        title="test NDCG@10 by history length",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for bucket, result in results["fused"].items():
        if result is None:
            continue
        cells = [f"{results[name][bucket].metrics['ndcg@10']:.4f}" for name in ("behaviour", "text", "fused")]
        table.add_row(bucket, f"{result.n_users:,}", *cells)
    console.print(table)
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "text_weight": chosen.text_weight,
                    "validation": {str(k): v for k, v in chosen.validation.items()},
                    "test": {
                        name: {b: (r.metrics if r is not None else None) for b, r in by.items()}
                        for name, by in results.items()
                    },
                },
                indent=2,
            )
        )


# ---------------------------------------------------------------------------------------------- causal
