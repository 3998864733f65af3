"""Shared pieces of the command line: the Typer app, the console, option types, error reporting and the
helpers several command groups use (stores, splits, model parameters, the language-model client)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from behaviorlm.config import ConfigError, SourceFormat
from behaviorlm.data.ingest import IngestError
from behaviorlm.data.splits import Split, leave_one_out, temporal_split_by_quantile
from behaviorlm.data.store import EventStore, StoreError
from behaviorlm.llm.client import LLMError
from behaviorlm.llm.weights import ModelWeightsError
from behaviorlm.models._validate import ModelLoadError
from behaviorlm.training.options import default_training, fold_training_params

app = typer.Typer(
    name="behaviorlm",
    help="Turn raw user-behaviour logs into clean data, behaviour models, predictions, explanations in "
    "words and a REST service. Start with `behaviorlm demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class LogStatus:
    """What a spinner says, as plain lines on stderr: off a terminal (a log file, CI) a spinner prints
    nothing, and stdout stays the command's output (``--json`` can be piped)."""

    def __init__(self, message: str) -> None:
        self.update(message)

    def update(self, message: str) -> None:
        err_console.print(message, highlight=False, markup=False, soft_wrap=True)

    def __enter__(self) -> LogStatus:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def spinner(message: str):
    """A spinner with ``message`` on a terminal; elsewhere the message (and each update) as a line."""
    return spinner(message) if console.is_terminal else LogStatus(message)


StoreOption = Annotated[Path, typer.Option("--store", "-s", help="Event store file (DuckDB).")]
SPLIT_FILE = "split.json"
MODEL_NAMES = "ease, gru4rec, itemknn, lightgcn, pop, random, transformer"
HEAD_NAMES = "event_tagger, next_event_type, sequence_classifier"
"""The task heads on the behaviour encoder that ``train`` fits with ``--label`` (models.heads)."""
"""The recommenders of models.registry.model_registry(), for help texts; written out because importing every
model to list them costs each command a second. tests/cli/test_cli.py checks it against the registry."""


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors caused by bad input (a tampered model folder included) into one readable line
    and exit status 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (
            IngestError,
            ConfigError,
            StoreError,
            FileNotFoundError,
            KeyError,
            ValueError,
            ModelLoadError,
            LLMError,
            ModelWeightsError,
        ) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            err_console.print(f"[bold red]error:[/] {message}", highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


def parse_pairs(pairs: list[str], *, flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{flag} expects field=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------------------------------------- ingest
EngineOption = Annotated[
    Literal["duckdb", "spark"],
    typer.Option(help="duckdb (embedded, one machine) or spark (PySpark; local[N] or a cluster)."),
]
SparkMasterOption = Annotated[
    str, typer.Option(help="Spark master with --engine spark: local[N], spark://host:7077, yarn, k8s://…")
]


# The source-reading flags `ingest` and `prepare` share.
FormatOption = Annotated[
    SourceFormat | None,
    typer.Option("--format", "-f", help="Source format (default: the config's, else csv)."),
]
MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", "-m", help="Column mapping field=source_column (repeatable), e.g. -m user_id=uid."),
]
EventTypeOption = Annotated[str | None, typer.Option(help="Constant event type when the source has none.")]
NoHeaderOption = Annotated[
    bool, typer.Option("--no-header", help="CSV has no header (columns are column0..).")
]
DelimiterOption = Annotated[
    str | None, typer.Option(help="Field delimiter (default: tab for .tsv, else comma).")
]
SessionGapOption = Annotated[
    int | None,
    typer.Option(help="Start a new session after this many idle seconds; 0 turns sessionization off."),
]
PseudonymizeOption = Annotated[
    bool, typer.Option(help="Replace user ids by keyed HMAC pseudonyms (key from $BEHAVIORLM_PSEUDONYM_KEY).")
]
IngestConfigOption = Annotated[
    Path | None, typer.Option(help="IngestConfig as .toml or .json (flags override it).")
]
JsonSummaryOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def require_store(store: Path) -> None:
    if not store.exists():
        raise FileNotFoundError(f"event store {store} does not exist; create it with `behaviorlm ingest`")


# ---------------------------------------------------------------------------------------------- split
def trained_model_and_split(model_dir: Path, store: Path) -> tuple[Any, Split]:
    """A model saved by `behaviorlm train` and the same split of ``store`` it was trained on (checked)."""
    from behaviorlm.models.registry import load_recommender

    split_file = model_dir / SPLIT_FILE
    if not split_file.exists():
        if (
            model_dir / "model.json"
        ).exists():  # a task head or pretrainer: say what it is, not what it lacks
            load_recommender(model_dir)
        raise FileNotFoundError(f"{split_file} not found: {model_dir} was not written by `behaviorlm train`")
    spec = json.loads(split_file.read_text())["split"]
    estimator = load_recommender(model_dir)
    sp = make_split(store, **spec)
    if not (
        np.array_equal(sp.train.item_ids, estimator.train_.item_ids)
        and np.array_equal(sp.train.user_ids, estimator.train_.user_ids)
    ):
        raise ValueError(f"the store {store} holds different users/items than {model_dir} was trained on")
    return estimator, sp


def make_split(
    store: Path,
    *,
    protocol: str,
    valid_fraction: float,
    test_fraction: float,
    validation_users: int | str | None = None,
) -> Split:
    """The split of the store's events a command trains and evaluates on; ``validation_users`` is
    :func:`~behaviorlm.data.splits.leave_one_out`'s (loo only; None: every user validates, as models saved
    before the option were trained)."""
    require_store(store)
    with EventStore(store, read_only=True) as st:
        interactions = st.interactions()
    if protocol == "loo":
        return leave_one_out(interactions, validation_users=validation_users)
    if isinstance(validation_users, int):
        raise ValueError(
            "--validation-users N applies to --protocol loo (a temporal split validates on time)"
        )
    if protocol == "temporal":
        return temporal_split_by_quantile(
            interactions, valid_fraction=valid_fraction, test_fraction=test_fraction
        )
    raise ValueError(f"--protocol must be 'loo' or 'temporal', got {protocol!r}")


ProtocolOption = Annotated[
    str, typer.Option(help="Split protocol: loo (leave-one-out) or temporal (global).")
]
ValidFraction = Annotated[float, typer.Option(help="temporal: share of events (by time) for validation.")]
TestFraction = Annotated[float, typer.Option(help="temporal: share of events (by time) for test.")]
ValidationUsers = Annotated[
    str,
    typer.Option(
        help="loo: whose second-last event is a validation target: auto (10% of the users, at least 2,000; "
        "every other user's second-last event is trained on), all (every user: the SASRec protocol) or a "
        "number of users."
    ),
]


def split_spec(
    *, protocol: str, valid_fraction: float, test_fraction: float, validation_users: str = "all"
) -> dict[str, Any]:
    """:func:`make_split`'s keyword arguments from a command's split flags -- what ``split.json`` saves so
    later commands rebuild the same split (``--validation-users`` as typed; ``all``: every user validates)."""
    return {
        "protocol": protocol,
        "valid_fraction": valid_fraction,
        "test_fraction": test_fraction,
        "validation_users": validation_users_value(validation_users),
    }


def validation_users_value(text: str) -> int | str | None:
    """``--validation-users`` as :func:`~behaviorlm.data.splits.leave_one_out` takes it."""
    if text == "auto":
        return "auto"
    if text == "all":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"--validation-users must be auto, all or a positive number of users, got {text!r}")


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def param_values(param: list[str] | None) -> dict[str, Any]:
    """``--param name=value`` flags as keyword arguments (values read as JSON)."""
    return {k: json_value(v) for k, v in parse_pairs(param or [], flag="--param").items()}


def build_estimator(cls: Any, params: dict[str, Any], *, what: str) -> Any:
    """``cls(**params)``, a wrong ``--param`` named in one line. Training options are plain keys
    (``-p epochs=3``; :func:`~behaviorlm.training.options.constructor_params` applies them to the model's
    default ``training``). Trained models show their progress unless ``show_progress`` was given."""
    try:
        estimator = cls.from_params(params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad --param for {what}: {exc}") from None
    training = fold_training_params(cls, params).get("training") or {}  # the options given, flat or not
    if "show_progress" not in params and "show_progress" not in training:
        if default_training(cls) is not None:
            estimator.set_params(training__show_progress=True)
        elif "show_progress" in estimator.get_params():
            estimator.show_progress = True
    return estimator


LLMUrlOption = Annotated[
    str | None,
    typer.Option(
        "--llm-url",
        help="OpenAI-compatible server root (e.g. http://localhost:8000/v1); default: the embedded model. "
        "The API key is read from $BEHAVIORLM_LLM_API_KEY.",
    ),
]
LLMModelOption = Annotated[
    str | None, typer.Option("--llm-model", help="Model name on that server (or an embedded model's name).")
]
IntentModelOption = Annotated[
    Path | None,
    typer.Option(help="Saved intent model (sequence classifier); its probabilities become facts."),
]


def llm_client(llm_url: str | None, llm_model: str | None):
    from behaviorlm.config import LLMConfig
    from behaviorlm.llm.client import LLMClient

    settings: dict[str, Any] = {"base_url": llm_url}
    if llm_model:
        settings["model"] = llm_model
    elif llm_url:
        settings["model"] = "default"
    return LLMClient(LLMConfig(**settings))


def print_task(result: Any, facts: Any, *, title: str) -> None:
    from rich.panel import Panel

    by_id = facts.by_id()
    answer = result.answer
    lines = []
    if hasattr(answer, "intent"):
        lines.append(f"[bold]intent:[/] {answer.intent} (confidence {answer.confidence:.2f})")
    lines.append(escape(answer.text))
    if answer.evidence:
        lines.append("")
        lines.append("[bold]facts behind it[/]")
        lines += [f"  \\[{e}] {escape(by_id[e].text)}" for e in answer.evidence if e in by_id]
    counts = Counter(v["status"] for v in result.claims)
    status = {
        "llm": "every sentence is rendered from a claim checked against its fact",
        "fallback": "no claim of the model's held; shown: the activity and the latest event",
    }[result.source]
    lines.append("")
    lines.append(
        f"[dim]claims: {counts['verified']} verified, {counts['corrected']} corrected, {counts['dropped']} dropped[/]"
    )
    lines.append(f"[dim]{status}[/]")
    lines.append(f"[dim]{result.model} · {result.latency_s:.1f} s · {result.attempts} call(s)[/]")
    console.print(Panel("\n".join(lines), title=title, expand=False))
