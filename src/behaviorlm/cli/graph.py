"""The ``graph`` command group: ``stats``, ``build``, ``train``, ``paths``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from behaviorlm.cli.common import (
    SPLIT_FILE,
    ProtocolOption,
    StoreOption,
    TestFraction,
    ValidFraction,
    app,
    console,
    make_split,
    require_store,
    spinner,
    split_spec,
    user_errors,
)
from behaviorlm.data.store import EventStore

graph_app = typer.Typer(
    help="The behaviour knowledge graph (users, items, attributes, KG entities).", no_args_is_help=True
)
app.add_typer(graph_app, name="graph")


def _print_graph_stats(stats: dict) -> None:
    table = Table(
        "edge type (source__relation__target)",
        "edges",
        title="behaviour knowledge graph",
        title_justify="left",
    )
    for name, n in sorted(stats["edges"].items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{n:,}")
    console.print(table)
    console.print(
        "nodes: "
        + ", ".join(f"{t} {n:,}" for t, n in stats["nodes"].items())
        + f"; {stats['total_edges']:,} edges, {stats['edge_bytes'] / 2**20:.1f} MiB of edge lists "
        f"({stats['bytes_per_million_edges'] / 2**20:.1f} MiB per million edges)",
        highlight=False,
    )


@graph_app.command("stats")
@user_errors
def graph_stats(store: StoreOption = Path("behaviorlm.duckdb")) -> None:
    """Node and edge counts per type, and the memory the edge lists take."""
    from behaviorlm.data.graph import build_graph

    require_store(store)
    with EventStore(store, read_only=True) as es, spinner("building the graph …"):
        graph = build_graph(es)
    _print_graph_stats(graph.stats())


@graph_app.command("build")
@user_errors
def graph_build(
    out: Annotated[Path, typer.Option(help="Folder for the Parquet node and edge lists.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    knowledge_graph: Annotated[
        bool, typer.Option(help="Include the store's KG triples and item links.")
    ] = True,
) -> None:
    """Build the graph from the store and write it as Parquet edge lists (one file per edge type)."""
    from behaviorlm.data.graph import build_graph

    require_store(store)
    with EventStore(store, read_only=True) as es, spinner("building the graph …"):
        graph = build_graph(es, with_knowledge_graph=knowledge_graph)
    files = graph.to_parquet(out)
    _print_graph_stats(graph.stats())
    console.print(f"[green]wrote[/] {len(files)} Parquet files to {out}")


PURCHASE_MODELS = ("auto", "hetero-gnn", "logistic-regression")


@graph_app.command("train")
@user_errors
def graph_train(
    out: Annotated[Path, typer.Option(help="Directory for the trained model.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    task: Annotated[
        str, typer.Option(help="purchase (hetero GNN, purchase prediction) or recommend (LightGCN).")
    ] = "purchase",
    window_minutes: Annotated[int, typer.Option(help="purchase: label window after each cutoff.")] = 20,
    step_minutes: Annotated[int, typer.Option(help="purchase: minutes between cutoffs.")] = 10,
    warmup_minutes: Annotated[int, typer.Option(help="purchase: history before the first cutoff.")] = 20,
    exclude_purchased: Annotated[
        bool, typer.Option(help="purchase: leave out pairs already bought before the cutoff.")
    ] = False,
    start_quantile: Annotated[
        float,
        typer.Option(
            help="purchase: start the cutoffs at this quantile of event times (skips stray early events)."
        ),
    ] = 0.0,
    model: Annotated[
        str,
        typer.Option(
            help="purchase: the model to save: auto (the simplest whose validation ROC-AUC is within the noise "
            "of the best), hetero-gnn or logistic-regression. Both are trained and compared either way."
        ),
    ] = "auto",
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    protocol: ProtocolOption = "temporal",
    valid_fraction: ValidFraction = 0.1,
    test_fraction: TestFraction = 0.1,
) -> None:
    """Train a graph model on the store, save it to --out and print its test metrics.

    purchase: snapshots every --step-minutes (graph and features from events before the cutoff, label =
    purchase within --window-minutes after it); the last two cutoffs are tested, the two before tune. The
    hetero GNN and the logistic regression on the pair features are both trained; --model auto saves the
    GNN only when its validation lead over the logistic regression is outside the noise (95% interval).
    recommend: LightGCN on a split of the store (temporal by default), full-ranking test metrics.
    """
    require_store(store)
    if task == "recommend":
        _graph_train_recommend(
            out,
            store=store,
            epochs=epochs,
            seed=seed,
            spec=split_spec(protocol=protocol, valid_fraction=valid_fraction, test_fraction=test_fraction),
        )
    elif task == "purchase":
        if model not in PURCHASE_MODELS:
            raise ValueError(f"--model for --task purchase: one of {list(PURCHASE_MODELS)}, got {model!r}")
        _graph_train_purchase(
            out,
            store=store,
            window_seconds=60 * window_minutes,
            step_seconds=60 * step_minutes,
            warmup_seconds=60 * warmup_minutes,
            exclude_purchased=exclude_purchased,
            start_quantile=start_quantile,
            choice=model,
            epochs=epochs,
            seed=seed,
        )
    else:
        raise ValueError(f"--task must be 'purchase' or 'recommend', got {task!r}")


def _graph_train_recommend(out: Path, *, store: Path, epochs: int, seed: int, spec: dict) -> None:
    from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
    from behaviorlm.models.lightgcn import LIGHTGCN_TRAINING, LightGCN

    sp = make_split(store, **spec)
    model = LightGCN(training=LIGHTGCN_TRAINING.replace(epochs=epochs, seed=seed, show_progress=True))
    started = time.perf_counter()
    model.fit(sp.train, valid=RankingValidation(sp.train, sp.valid))
    seconds = time.perf_counter() - started
    model.save(out)
    (out / SPLIT_FILE).write_text(json.dumps({"split": spec, "train_seconds": seconds}, indent=2))
    result = evaluate_ranking(
        model, history=sp.test_history, targets=sp.test, split_name=str(sp.protocol.get("split"))
    )
    console.print_json(json.dumps({"test": result.metrics, "protocol": result.protocol}))
    console.print(f"[green]trained[/] lightgcn in {seconds:.1f} s → {out}")


def _graph_train_purchase(
    out: Path,
    *,
    store: Path,
    window_seconds: int,
    step_seconds: int,
    warmup_seconds: int,
    exclude_purchased: bool,
    start_quantile: float,
    choice: str,
    epochs: int,
    seed: int,
) -> None:
    from behaviorlm.data.purchase import purchase_cutoffs, purchase_snapshot, store_time_range
    from behaviorlm.evaluation.purchase import (
        choose_purchase_model,
        evaluate_purchase_model,
        purchase_protocol,
    )
    from behaviorlm.models.hetero_gnn import GNN_TRAINING, PurchaseGNN
    from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline

    with EventStore(store, read_only=True) as es:
        first, last = store_time_range(es, start_quantile=start_quantile)
        cutoffs = purchase_cutoffs(
            first,
            last,
            window_seconds=window_seconds,
            step_seconds=step_seconds,
            warmup_seconds=warmup_seconds,
        )
        snapshots: dict[str, list] = {}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("graph snapshots", total=sum(len(c) for c in cutoffs.values()))
            for group, group_cutoffs in cutoffs.items():
                for cutoff in group_cutoffs:
                    snapshots.setdefault(group, []).append(
                        purchase_snapshot(
                            es,
                            cutoff=cutoff,
                            window_seconds=window_seconds,
                            exclude_purchased=exclude_purchased,
                        )
                    )
                    progress.advance(bar)
    protocol = purchase_protocol(**snapshots)
    for group in ("train", "valid", "test"):
        if protocol[group]["positives"] == 0:
            raise ValueError(
                f"the {group} cutoffs have no purchase among their candidate pairs; use longer "
                "--window-minutes or a store with more purchases"
            )
    logistic = PurchaseFeatureBaseline(kind="logistic", seed=seed)
    gnn = PurchaseGNN(training=GNN_TRAINING.replace(epochs=epochs, seed=seed, show_progress=True))
    models = {m.name: m for m in (logistic, gnn)}  # simplest first
    results = [evaluate_purchase_model(m, **snapshots) for m in models.values()]
    if choice == "auto":
        chosen = choose_purchase_model(results, snapshots["valid"], seed=seed)
        kept, reason = chosen.name, f"auto: {chosen.reason}"
    else:
        kept, reason = choice, f"--model {choice}"
    models[kept].save(out)
    metrics = {
        r.name: {"test": r.metrics, "valid": r.valid_metrics, "threshold": r.threshold} for r in results
    }
    (out / "purchase.json").write_text(
        json.dumps({"protocol": protocol, "results": metrics, "saved": kept, "reason": reason}, indent=2)
    )
    # One column per model, one row per metric: fits a terminal of any width.
    table = Table("metric", *(r.name for r in results), title="purchase prediction", title_justify="left")
    table.add_row("valid roc_auc", *(f"{r.valid_metrics['roc_auc']:.4f}" for r in results))
    for metric in results[0].metrics:
        table.add_row(f"test {metric}", *(f"{r.metrics[metric]:.4f}" for r in results))
    console.print(table)
    console.print(
        f"test: {protocol['test']['pairs']:,} candidate pairs, {protocol['test']['positives']:,} bought "
        f"(GNN best epoch {gnn.best_epoch_})\n[green]saved[/] {kept} → {out} ({reason})",
        highlight=False,
    )


@graph_app.command("paths")
@user_errors
def graph_paths(
    user: Annotated[str, typer.Argument(help="User id as stored.")],
    item: Annotated[str, typer.Argument(help="Item id as stored.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    k: Annotated[int, typer.Option("-k", help="How many paths.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
) -> None:
    """Why the graph links USER to ITEM: the top-k scored user → item → attribute ← item paths."""
    from behaviorlm.data.graph import build_graph
    from behaviorlm.models.graph_paths import explanation_paths

    require_store(store)
    with EventStore(store, read_only=True) as es, spinner("building the graph …"):
        graph = build_graph(es, with_knowledge_graph=False)
    facts = explanation_paths(graph, user_id=user, item_id=item, k=k)
    if as_json:
        console.print_json(json.dumps([f.to_dict() for f in facts]))
        return
    if not facts:
        console.print(f"no user → item → attribute ← item path links {user} to {item}")
    for rank, fact in enumerate(facts, 1):
        console.print(f"{rank}. [{fact.score:.3f}] {fact.text}", highlight=False)


# ---------------------------------------------------------------------------------------------- service
