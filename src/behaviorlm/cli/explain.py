"""Explanation commands: ``explain`` (next items, their reasons, intent in words) and ``ask``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from behaviorlm.cli.common import (
    IntentModelOption,
    LLMModelOption,
    LLMUrlOption,
    StoreOption,
    app,
    console,
    llm_client,
    print_task,
    require_store,
    spinner,
    user_errors,
)
from behaviorlm.data.store import EventStore


@app.command()
@user_errors
def explain(
    user_id: Annotated[
        str, typer.Argument(help="The user's id as stored (a pseudonym if ids are pseudonymized).")
    ],
    model: Annotated[
        Path | None, typer.Option(help="Saved sequence model (transformer, gru4rec) directory.")
    ] = None,
    store: StoreOption = Path("behaviorlm.duckdb"),
    top: Annotated[int, typer.Option(help="How many next items (and, with --why, events) to show.")] = 5,
    why: Annotated[
        bool, typer.Option("--why", help="Also show the past events the top prediction depends on most.")
    ] = False,
    paths: Annotated[
        bool,
        typer.Option(
            "--paths", help="With --model: give the LLM knowledge-graph paths from the user to the top guess."
        ),
    ] = False,
    words: Annotated[
        bool, typer.Option("--words/--no-words", help="Explain the user's intent in words with the LLM.")
    ] = True,
    intent_model: IntentModelOption = None,
    llm_url: LLMUrlOption = None,
    llm_model: LLMModelOption = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the explanation as JSON.")
    ] = None,
) -> None:
    """A user's likely next items (--model), the events behind the top one (--why), and their intent explained
    in words by a language model that may only cite facts from the data (grounding-checked)."""
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    if model is None and not words:
        raise ValueError("nothing to explain: give --model, or leave --words on")
    require_store(store)
    from behaviorlm.llm.facts import user_facts
    from behaviorlm.llm.tasks import explain_intent
    from behaviorlm.models.registry import load_intent_model

    # One store connection serves the predictions and the facts.
    with EventStore(store, read_only=True) as es:
        estimator = None
        if model is not None:
            estimator = _explain_predictions(user_id, model=model, store=es, top=top, why=why)
        if not words:
            return
        with spinner("collecting the facts …"):
            graph = None
            if paths and estimator is not None:
                from behaviorlm.data.graph import build_graph

                graph = build_graph(es)
            facts = user_facts(
                es,
                user_id,
                model=estimator,
                intent_model=load_intent_model(intent_model) if intent_model is not None else None,
                graph=graph,
            )
    with (
        llm_client(llm_url, llm_model) as client,
        spinner("the language model is writing …"),
    ):
        result = explain_intent(client, facts)
    print_task(result, facts, title=f"intent of {user_id} (in prompts: {facts.subject})")
    if json_out is not None:
        json_out.write_text(json.dumps({"explanation": result.to_dict(), "facts": facts.to_dict()}, indent=2))


@app.command()
@user_errors
def ask(
    user_id: Annotated[
        str, typer.Argument(help="The user's id as stored (a pseudonym if ids are pseudonymized).")
    ],
    question: Annotated[
        str, typer.Argument(help="A question about the user, e.g. 'What did they buy last?'")
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    model: Annotated[
        Path | None, typer.Option(help="Saved sequence model, for next-item guesses and their reasons.")
    ] = None,
    effects_json: Annotated[
        list[Path] | None,
        typer.Option("--effects", help="Effect reports (behaviorlm effects --json) the answer may cite."),
    ] = None,
    intent_model: IntentModelOption = None,
    llm_url: LLMUrlOption = None,
    llm_model: LLMModelOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the answer as JSON.")] = None,
) -> None:
    """Answer a question about a user from the data: the language model picks read-only tools (counts,
    first/last events, categories, items in a period, ratings, guesses, reasons, effects, the intent
    model's probabilities), code runs them, and the answer is written from their results; "I don't know"
    when no tool answers it."""
    from behaviorlm.llm.tools import UserContext
    from behaviorlm.llm.tools import ask as ask_tools
    from behaviorlm.models.registry import load_intent_model, load_recommender

    if not question.strip():
        raise ValueError("the question is empty")
    require_store(store)
    effects = [json.loads(path.read_text()) for path in effects_json or []]
    with EventStore(store, read_only=True) as es:
        if not es.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user_id]):
            raise KeyError(f"user {user_id!r} has no events in {store}")
        context = UserContext(
            es,
            user_id,
            model=load_recommender(model) if model is not None else None,
            effects=effects,
            intent_model=load_intent_model(intent_model) if intent_model is not None else None,
        )
        with (
            llm_client(llm_url, llm_model) as client,
            spinner("the language model is choosing tools …"),
        ):
            result = ask_tools(client, context, question)
    console.print(result.answer, highlight=False, markup=False, soft_wrap=True)
    for call in result.calls:
        outcome = call.get("result", call.get("error") or "; ".join(call.get("rejected", [])))
        console.print(
            f"  [dim]{call['tool']}({', '.join(f'{k}={v!r}' for k, v in call['arguments'].items())}) -> "
            f"{escape(str(outcome))[:160]}[/]",
            highlight=False,
        )
    console.print(f"[dim]{result.source} · {result.model} · {result.latency_s:.1f} s[/]")
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))


def _explain_predictions(user_id: str, *, model: Path, store: EventStore, top: int, why: bool) -> Any:
    """Print the next-item table (and with ``why`` the influence table); return the loaded model."""
    import math

    from behaviorlm.causal.influence import deletion_influence
    from behaviorlm.models.registry import load_recommender
    from behaviorlm.models.sequential import SequentialRecommender
    from behaviorlm.models.window import latest_events, model_history

    estimator = load_recommender(model)
    if not isinstance(estimator, SequentialRecommender):
        raise ValueError(
            f"explain needs a sequence model (transformer, gru4rec); {model} holds {estimator.name!r}"
        )
    events = latest_events(store, user_id, estimator)
    if not events["item_id"]:
        raise ValueError(f"user {user_id!r} has no events in {store.path}")
    request = model_history(estimator, events)
    if request.interactions.n_events == 0:
        raise ValueError(f"none of user {user_id!r}'s events is on an item and event type the model knows")
    recs = estimator.recommend_one(request.interactions, k=top)
    table = Table("rank", "item", "score", title=f"next items for {user_id}", title_justify="left")
    for rank, (item, score) in enumerate(zip(recs.items[0], recs.scores[0], strict=True), start=1):
        table.add_row(str(rank), str(estimator.train_.item_ids[item]), f"{score:.3f}")
    console.print(table)
    skipped = len(events["item_id"]) - request.interactions.n_events
    if skipped:
        console.print(f"[yellow]note:[/] left out {skipped} events on items or types the model does not know")
    if not why:
        return estimator
    with spinner("removing each event in turn …"):
        influence = deletion_influence(estimator, request.interactions, 0, target_item=int(recs.items[0, 0]))
    reasons = Table(
        "events ago",
        "time (UTC)",
        "type",
        "item",
        "effect",
        title=f"why {influence.target_item_id} (p = {math.exp(influence.base_log_prob):.3f}): the events whose "
        "removal lowers its log-probability most",
        title_justify="left",
    )
    for fact in influence.top(top):
        reasons.add_row(
            str(fact["events_ago"]),
            fact["time"],
            fact["event_type"],
            fact["item_id"],
            f"{fact['effect']:+.3f}",
        )
    console.print(reasons)
    return estimator
