"""End-to-end demo on the bundled ML-100k data: ingest, quarantine, split, train baselines, evaluate.

Run with ``make demo`` or ``python -m behaviorlm.demo``. Everything it needs ships with the package.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Column, Table

from behaviorlm.config import IngestConfig, LLMConfig
from behaviorlm.data.datasets import ingest_dataset
from behaviorlm.data.ingest import ingest_file
from behaviorlm.data.splits import leave_one_out
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.benchmark import fit_and_evaluate, machine_description
from behaviorlm.models.baselines import EASE, ItemKNN, Popularity, RandomRecommender
from behaviorlm.models.transformer import BehaviorTransformer

ML100K_TRANSFORMER = {"max_len": 200, "batch_size": 32, "dropout": 0.2, "d_model": 128}
"""ML-100k settings chosen on validation NDCG@10 (long histories: a longer window, smaller batches)."""

DEMO_TRANSFORMER = {**ML100K_TRANSFORMER, "max_len": 100, "epochs": 12, "patience": 3}
"""The demo's Transformer as flat parameters (``BehaviorTransformer.from_params``, or ``-p`` flags): a fixed number of epochs (with early stopping on validation), never a time
budget, so a busy laptop gets the same model, only later. A 100-event window trains in half the time
of 200 and, at 12 epochs, scored test NDCG@10 0.0921 (0.0876 for the 200-event window at 8 epochs, the
same time), against 0.0735 for EASE (one thread, benchmarks in docs/quickstart.md)."""

MESSY_CSV = """user,item,action,time,price
u1,i1,view,2024-03-01T10:00:00Z,19.99
u1,i2,add_to_cart,2024-03-01T10:05:00Z,5.00
u2,i1,buy,1709287200,19.99
u2,i1,buy,1709287200,19.99
u3,i3,teleport,2024-03-01T11:00:00Z,1.00
u4,,view,2024-03-01T11:30:00Z,2.00
u5,i5,view,yesterday,3.00
u6,i6,purchase,2024-03-01T12:00:00Z,-4.00
u7,i7,view
"""


class _Clock:
    """Starts each numbered step with a rule and ends it with its elapsed time (and the total so far)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.perf_counter()
        self._step: tuple[str, float] | None = None

    def step(self, title: str) -> None:
        self.end()
        self.console.rule(f"[bold]{title}")
        self._step = (title.split(".")[0], time.perf_counter())

    def end(self) -> None:
        if self._step is None:
            return
        number, started = self._step
        now = time.perf_counter()
        self.console.print(
            f"[dim]step {number}: {now - started:.1f} s (total {_minutes(now - self.started)})[/dim]",
            highlight=False,
        )
        self._step = None


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def run_demo(
    *,
    workdir: Path = Path("work-dir/demo"),
    console: Console | None = None,
    transformer_epochs: int = DEMO_TRANSFORMER["epochs"],
    explain_in_words: bool = True,
) -> dict[str, dict[str, float]]:
    """Run the demo, print its tables, and return ``{model: metrics}`` for the test split.

    ``explain_in_words`` runs step 6 with the embedded language model (needs the llm wheels)."""
    console = console or Console()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    store_path = workdir / "store.duckdb"

    clock = _Clock(console)
    clock.step("1. Clean data: ingest with validation and quarantine")
    messy = workdir / "messy_events.csv"
    messy.write_text(MESSY_CSV)
    with EventStore(workdir / "messy.duckdb") as scratch:
        config = IngestConfig(
            columns={
                "user_id": "user",
                "item_id": "item",
                "event_type": "action",
                "timestamp": "time",
                "value": "price",
            }
        )
        summary = ingest_file(scratch, messy, config=config)
        console.print(
            f"{messy}: read {summary.rows_read}, stored {summary.stored}, quarantined {summary.quarantined}, "
            f"duplicates {summary.duplicates}  (read = stored + quarantined + duplicates)"
        )
        table = Table(
            "line",
            "reason",
            Column("raw row", overflow="fold"),
            title="quarantine",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for line, reason, raw in scratch.rows(
            "SELECT source_row, reason, raw FROM quarantine ORDER BY source_row"
        ):
            table.add_row(str(line), reason, raw or "")
        console.print(table)

    with EventStore(store_path) as store:
        summary = ingest_dataset(store, "ml-100k")
        console.print(
            f"ml-100k: read {summary.rows_read:,} ratings, stored {summary.stored:,}, quarantined "
            f"{summary.quarantined}, duplicates {summary.duplicates} in {summary.seconds:.2f} s; "
            f"{summary.items_upserted:,} movies, {summary.users_upserted:,} users"
        )
        interactions = store.interactions()
        titles = dict(store.rows("SELECT item_id, title FROM items"))

    clock.step("2. Leave-one-out split")
    split = leave_one_out(interactions)
    console.print(
        f"{interactions.n_users:,} users x {interactions.n_items:,} items; train {split.train.n_events:,} events, "
        f"{split.valid.n_events:,} validation and {split.test.n_events:,} test targets"
    )

    clock.step("3. Baselines and the Behaviour Transformer, full ranking on the test targets")
    transformer = BehaviorTransformer.from_params(
        {**DEMO_TRANSFORMER, "epochs": transformer_epochs, "show_progress": True, "seed": 0}
    )
    models = [RandomRecommender(seed=0), Popularity(), ItemKNN(k=100), EASE(l2=500.0), transformer]
    results: dict[str, dict[str, float]] = {}
    table = Table(
        Column("model", min_width=len("transformer")),
        "HR@10",
        "NDCG@10",
        "HR@20",
        "NDCG@20",
        "MRR",
        "train s",
        "eval s",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    protocol_line = ""
    for model in models:
        record = fit_and_evaluate(model, split, dataset="ml-100k")
        m = record.metrics
        results[model.name] = m
        table.add_row(
            model.name,
            f"{m['hr@10']:.4f}",
            f"{m['ndcg@10']:.4f}",
            f"{m['hr@20']:.4f}",
            f"{m['ndcg@20']:.4f}",
            f"{m['mrr']:.4f}",
            f"{record.train_seconds:.2f}",
            f"{record.eval_seconds:.2f}",
        )
        p = record.protocol
        protocol_line = (
            f"protocol: {p['split']}, {p['ranking']} ranking over {p['n_candidates']:,} items, "
            f"seen items {'masked' if p['mask_seen'] else 'not masked'}, {p['tie_handling']} ties, "
            f"history = {p['history']}, {record.n_users:,} users"
        )
    console.print(table)
    console.print(protocol_line, highlight=False)
    summary = transformer.training_summary()
    console.print(
        f"transformer: {summary['epochs_run']} of at most {transformer_epochs} epochs "
        f"({summary['seconds_per_epoch']:.1f} s each), best validation NDCG@10 "
        f"{summary['best_valid_ndcg@10']:.4f} at epoch {summary['best_epoch']}"
        + (" (stopped early: no gain on validation)" if summary["stopped_early"] else "")
        + "; a fixed epoch budget, so a busy machine gives the same model, only later",
        highlight=False,
    )
    console.print(f"machine: {machine_description()}", highlight=False)

    clock.step("4. Real-time next-item prediction from a raw history (Transformer)")
    user = 0
    history = split.test_history
    start, end = history.user_ptr[user], history.user_ptr[user + 1]
    items = [str(history.item_ids[i]) for i in history.items[start:end]]
    times = history.timestamps[start:end].tolist()
    console.print(
        f"user {history.user_ids[user]} recently rated: " + "; ".join(titles.get(i, i) for i in items[-5:])
    )
    first = transformer.predict_next(items, timestamps=times, k=5)
    for rank, item_id in enumerate(first.item_ids, start=1):
        console.print(f"  {rank}. {titles.get(item_id, item_id)}")
    new_item = first.item_ids[0]
    second = transformer.predict_next([*items, new_item], timestamps=[*times, times[-1] + 60], k=5)
    console.print(f"after a new event ({titles.get(new_item, new_item)}), without retraining:")
    for rank, item_id in enumerate(second.item_ids, start=1):
        console.print(f"  {rank}. {titles.get(item_id, item_id)}")
    console.print(f"\nstore: {store_path}  (explore it with `behaviorlm stats --store {store_path}`)")

    shared = _understand_users(
        console, clock, store_path=store_path, model=transformer, history=history, titles=titles
    )
    if explain_in_words:
        _explain_in_words(
            console, clock, store_path=store_path, model=transformer, user=str(history.user_ids[0]), **shared
        )

    _act_responsibly(console, clock, store_path=store_path, model=models[3], split=split, workdir=workdir)

    clock.step("8. Serve it: REST API and dashboard")
    service_config = _prepare_service(workdir, store_path=store_path, model=transformer)
    key = (workdir / "demo-key.txt").read_text().strip()
    console.print(
        "start the service on the demo data (Ctrl-C stops it):\n"
        f"  .venv/bin/behaviorlm serve --config {service_config}\n"
        "then open http://127.0.0.1:8000/dashboard (or the API docs at http://127.0.0.1:8000/docs) with the "
        f"demo's API key (read + write; also in {workdir / 'demo-key.txt'}):\n  {key}\n"
        f"  curl -H 'X-API-Key: {key}' http://127.0.0.1:8000/v1/users/{history.user_ids[user]}/recommendations",
        highlight=False,
        soft_wrap=True,
    )
    clock.end()
    return results


def _understand_users(
    console: Console, clock: _Clock, *, store_path: Path, model, history, titles: dict[str, str]
) -> dict[str, Any]:
    """Step 5: anomalous users with reasons, behaviour segments, and one user's profile card. Returns the
    fitted detector and the largest segment's summary for step 6."""
    from behaviorlm.profiling.anomalies import AnomalyDetector
    from behaviorlm.profiling.profile import build_profile
    from behaviorlm.profiling.segments import segment_kmeans, summarize_segments, user_representations

    clock.step("5. Understanding users: anomalies, segments, a profile")
    detector = AnomalyDetector().fit(history)
    table = Table(
        "user",
        "score",
        "ratings",
        "why (value vs typical)",
        title="most anomalous raters",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for user in detector.top(3):
        why = "; ".join(f"{r.feature} {r.value:.3g} vs {r.typical:.3g}" for r in detector.reasons(int(user)))
        table.add_row(
            str(history.user_ids[user]), f"{detector.scores_[user]:.3f}", str(history.lengths()[user]), why
        )
    console.print(table)

    segments = segment_kmeans(user_representations(model, history), k_values=range(2, 9))
    with EventStore(store_path, read_only=True) as store:
        from behaviorlm.data.features import item_features_from_store

        features = item_features_from_store(store, history.item_ids)
    summaries = summarize_segments(segments, history, item_features=features, top=3)
    table = Table(
        "segment",
        "users",
        "median ratings",
        "over-represented attributes (lift)",
        title=segments.method,
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for s in summaries:
        table.add_row(
            str(s.segment),
            str(s.users),
            f"{s.median_events:.0f}",
            ", ".join(f"{a.split('=')[-1]} x{lift:.1f}" for a, lift in s.top_attributes),
        )
    console.print(table)

    user = str(history.user_ids[0])
    with EventStore(store_path) as store:
        card = build_profile(store, user, model=model)
    console.print(
        f"profile of user {user}: {card.events} ratings on {card.active_days} days", highlight=False
    )
    console.print(
        "  interests: " + "; ".join(f"{i['keywords']} ({100 * i['share']:.0f}%)" for i in card.interests),
        highlight=False,
    )
    console.print(
        f"  more unusual than {100 * card.anomaly_percentile:.0f}% of users; likely next: "
        + "; ".join(i["title"] or i["item_id"] for i in card.next_items[:3]),
        highlight=False,
    )
    return {"detector": detector, "segment": summaries[0]}


def _explain_in_words(
    console: Console, clock: _Clock, *, store_path: Path, model, user: str, detector, segment
) -> None:
    """Step 6: the embedded language model explains a user's intent, answers two questions and names a
    segment, each from grounded facts only (every cited item, number and fact id checked)."""
    from behaviorlm.llm.client import LLMClient, LLMError
    from behaviorlm.llm.facts import user_facts

    clock.step("6. Explanations in words: an embedded LLM, grounded in the facts")
    from behaviorlm.data.graph import build_graph

    with EventStore(store_path, read_only=True) as store:
        # The knowledge graph (users, movies, genres, years) adds paths to the top guess as facts K1..
        graph = build_graph(store, with_knowledge_graph=False)
        facts = user_facts(store, user, model=model, detector=detector, graph=graph)
    client = LLMClient(LLMConfig(cache_dir=""))  # fresh answers: the demo shows real latency
    console.print(
        f"{len(facts.facts)} facts about user {user} (in prompts only as {facts.subject}); model: {client.name}",
        highlight=False,
    )
    for fact in facts.facts:
        if fact.kind == "path":
            console.print(f"  {fact.id}: {fact.text}", highlight=False, markup=False, soft_wrap=True)

    def status(result) -> str:
        verdicts = Counter(v["status"] for v in result.claims)
        return (
            f"[{result.source}; claims {verdicts['verified']} verified, {verdicts['corrected']} corrected, "
            f"{verdicts['dropped']} dropped; {result.latency_s:.1f} s]"
        )

    try:
        _verbalize(console, client, facts, segment, status, store_path=store_path, user=user, model=model)
    except LLMError as exc:  # the demo goes on: the rest does not depend on the words
        console.print(f"the language model could not answer: {exc}", highlight=False, markup=False)
    u = client.usage
    console.print(
        f"LLM usage: {u.requests} requests, {u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion "
        f"tokens, {u.latency_s:.1f} s. Try: behaviorlm explain {user} --store {store_path} --model "
        f"{store_path.parent / 'model'} (or --llm-url for your own server)",
        highlight=False,
        soft_wrap=True,
    )


def _verbalize(
    console: Console, client, facts, segment, status, *, store_path: Path, user: str, model
) -> None:
    from behaviorlm.llm.facts import segment_facts
    from behaviorlm.llm.tasks import describe_segment, explain_intent
    from behaviorlm.llm.tools import UserContext, ask

    by_id = facts.by_id()
    result = explain_intent(client, facts)
    console.print(
        f"intent: {result.answer.intent} (confidence {result.answer.confidence:.2f}) {status(result)}\n"
        f"  {result.answer.text}",
        highlight=False,
        markup=False,
    )
    for e in result.answer.evidence[:4]:
        console.print(f"  [{e}] {by_id[e].text}", highlight=False, markup=False)
    with EventStore(store_path, read_only=True) as store:
        context = UserContext(store, user, model=model)
        for question in (
            "How many movies has this user rated, and when was their last rating?",
            "Which genre does the user rate most?",
            "What is the user's email address?",
        ):
            answer = ask(client, context, question)
            tools = ", ".join(c["tool"] for c in answer.calls if "result" in c) or "none"
            console.print(
                f"Q: {question}\nA: {answer.answer} [{answer.source}; tools: {tools}; {answer.latency_s:.1f} s]",
                highlight=False,
                markup=False,
            )
    seg = describe_segment(client, segment_facts(segment))
    console.print(
        f"segment {segment.segment}: {seg.answer.name!r}: {seg.answer.text} {status(seg)}",
        highlight=False,
        markup=False,
    )


def _act_responsibly(
    console: Console, clock: _Clock, *, store_path: Path, model, split, workdir: Path
) -> None:
    """Step 7: whom to target (uplift beats propensity on a campaign with known effects) and a bias audit of
    a recommender (quality per user group with bootstrap intervals, popularity bias, a mitigation)."""
    from behaviorlm.evaluation.audit import audit_recommender, read_user_attributes
    from behaviorlm.marketing.audience import synthetic_comparison

    clock.step("7. Act on it: campaign audiences by uplift, and a bias audit")
    comparison = synthetic_comparison()
    table = Table(
        "targeting",
        "AUUC",
        "incr. @10%",
        "incr. @20%",
        "true incr. @20%",
        title=f"synthetic campaign with planted effects, {comparison.n_test:,} held-out users "
        "(incremental conversions per 1,000 users)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for r in comparison.results:
        true20 = f"{r.true_incremental[0.2]:+.1f}" if r.true_incremental else "–"
        table.add_row(
            r.name, f"{r.auuc:.4f}", f"{r.incremental[0.1]:+.1f}", f"{r.incremental[0.2]:+.1f}", true20
        )
    console.print(table)
    (workdir / "targeting.json").write_text(json.dumps(comparison.to_dict()))  # for the dashboard
    console.print(
        "propensity targeting reaches the 'sleeping dogs' whom the treatment puts off; uplift targeting does not "
        "(docs/marketing.md)",
        highlight=False,
    )
    with EventStore(store_path, read_only=True) as store:
        attributes = read_user_attributes(store)
    report = audit_recommender(
        model,
        history=split.test_history,
        targets=split.test,
        user_attributes=attributes,
        groups=("gender", "age", "activity"),
        n_resamples=200,
        penalties=(0.5,),
    )
    table = Table(
        "grouping",
        "best − worst NDCG@10\n[95% CI]",
        "groups",
        "p",
        title=f"bias audit of {report.model} (attributes used for grouping only: "
        f"{', '.join(report.attributes_used) or 'none'})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name, g in report.groups.items():
        gap = g.gap["ndcg@10"]
        table.add_row(
            name,
            f"{gap.estimate:.3f}\n[{gap.low:.3f}, {gap.high:.3f}]",
            f"{g.best['ndcg@10']} >\n{g.worst['ndcg@10']}",
            f"{g.p_value['ndcg@10']:.3f}",
        )
    console.print(table)
    (workdir / "audit.json").write_text(json.dumps(report.to_dict()))
    pop, mitigated = report.popularity, report.mitigation[0]
    console.print(
        f"popularity bias: recommended items {pop.popularity_ratio:.2f}x as popular as users' own, Gini of "
        f"exposure {pop.gini_exposure:.3f}; with the popularity penalty 0.5: NDCG@10 "
        f"{report.metrics['ndcg@10']:.4f} -> {mitigated.metrics['ndcg@10']:.4f}, ratio "
        f"{mitigated.popularity.popularity_ratio:.2f} (docs/audit.md)",
        highlight=False,
    )


def _prepare_service(workdir: Path, *, store_path: Path, model: BehaviorTransformer) -> Path:
    """Save the demo's model, create a demo API key and write a service config; returns the config path."""
    from behaviorlm.serving.security import create_key

    model_path = model.save(workdir / "model")
    keys_file = workdir / "keys.json"
    key = create_key(keys_file, name="demo", scopes=["read", "write"])
    (workdir / "demo-key.txt").write_text(key + "\n")
    (workdir / "demo-key.txt").chmod(0o600)
    config = workdir / "service.toml"
    config.write_text(
        f'store = "{store_path.resolve()}"\nmodel = "{Path(model_path).resolve()}"\nkeys_file = "{keys_file.resolve()}"\n'
        "\n# The embedded language model explains intents in words (/v1/users/{id}/explanation/words).\n[llm]\n"
        "\n# Reports the dashboard draws: targeting (Qini curves) and the bias audit from step 7.\n[reports]\n"
        f'targeting = "{(workdir / "targeting.json").resolve()}"\naudit = "{(workdir / "audit.json").resolve()}"\n'
    )
    return config


if __name__ == "__main__":
    run_demo()
