"""The ``behaviorlm`` command line: thin commands that parse, show progress and call the library.

Every command reports user errors (bad file, bad row, bad flag, unknown model) as one red line naming
what is wrong and exits with status 2; it never prints a traceback for a user mistake.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from behaviorlm.config import ConfigError, IngestConfig, SourceFormat, load_config
from behaviorlm.data.ingest import IngestError, IngestSummary, ingest_file
from behaviorlm.data.splits import Split, leave_one_out, temporal_split_by_quantile
from behaviorlm.data.store import EventStore, StoreError
from behaviorlm.llm.client import LLMError
from behaviorlm.llm.weights import ModelWeightsError
from behaviorlm.models._validate import ModelLoadError

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


class _LogStatus:
    """What a spinner says, as plain lines on stderr: off a terminal (a log file, CI) a spinner prints
    nothing, and stdout stays the command's output (``--json`` can be piped)."""

    def __init__(self, message: str) -> None:
        self.update(message)

    def update(self, message: str) -> None:
        err_console.print(message, highlight=False, markup=False, soft_wrap=True)

    def __enter__(self) -> _LogStatus:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _status(message: str):
    """A spinner with ``message`` on a terminal; elsewhere the message (and each update) as a line."""
    return _status(message) if console.is_terminal else _LogStatus(message)


StoreOption = Annotated[Path, typer.Option("--store", "-s", help="Event store file (DuckDB).")]
SPLIT_FILE = "split.json"
MODEL_NAMES = "ease, gru4rec, itemknn, lightgcn, pop, random, transformer"
HEAD_NAMES = "event_tagger, next_event_type, sequence_classifier"
"""The task heads on the behaviour encoder that ``train`` fits with ``--label`` (models.heads)."""
"""The recommenders of models.registry.model_registry(), for help texts; written out because importing every
model to list them costs each command a second. tests/cli/test_cli.py checks it against the registry."""


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
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


def _parse_pairs(pairs: list[str], *, flag: str) -> dict[str, str]:
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


@app.command()
@_user_errors
def ingest(
    path: Annotated[
        Path, typer.Argument(help="Source file (CSV/TSV/Parquet/JSONL/RecBole .inter/sequence/reviews).")
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    format: FormatOption = None,
    map_: MapOption = None,
    event_type: EventTypeOption = None,
    no_header: NoHeaderOption = False,
    delimiter: DelimiterOption = None,
    session_gap: SessionGapOption = None,
    pseudonymize: PseudonymizeOption = False,
    config: IngestConfigOption = None,
    engine: EngineOption = "duckdb",
    spark_master: SparkMasterOption = "local[2]",
    json_out: JsonSummaryOption = False,
) -> None:
    """Validate and load a behaviour log into the event store; bad rows go to quarantine with a reason."""
    cfg = _ingest_config(
        config,
        format=format,
        session_gap=session_gap,
        map_=map_,
        event_type=event_type,
        no_header=no_header,
        delimiter=delimiter,
        pseudonymize=pseudonymize,
    )
    created = not store.exists()
    try:
        with EventStore(store) as st, _status(f"ingesting {path} with {engine} …"):
            if engine == "spark":
                from behaviorlm.data.prepare import ingest_with_spark

                summary = ingest_with_spark(st, path, config=cfg, spark_master=spark_master)
            else:
                summary = ingest_file(st, path, config=cfg)
    except Exception:
        # A store this command created and then failed to fill (a bad mapping, a missing file) is not
        # left behind as an empty file that later commands would take for data.
        if created:
            for leftover in (store, store.with_name(store.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    if json_out:
        console.print_json(json.dumps(summary.to_dict()))
    else:
        _print_ingest(summary)


def _ingest_config(
    config: Path | None,
    *,
    format: SourceFormat | None,
    session_gap: int | None,
    map_: list[str] | None,
    event_type: str | None,
    no_header: bool,
    delimiter: str | None,
    pseudonymize: bool,
) -> IngestConfig:
    """The ingest config from an optional file, overridden by the command-line flags."""
    base = load_config(IngestConfig, config).model_dump(exclude_unset=True) if config else {}
    overrides: dict[str, Any] = {}
    if format is not None:
        overrides["format"] = format
    if session_gap is not None:
        overrides["session_gap_seconds"] = session_gap or None
    if map_:
        overrides["columns"] = _parse_pairs(map_, flag="--map")
    if event_type:
        overrides["event_type"] = event_type
    if no_header:
        overrides["header"] = False
    if delimiter:
        overrides["delimiter"] = delimiter
    if pseudonymize:
        overrides["pseudonymize_users"] = True
    return load_config(IngestConfig, {**base, **overrides})


def _print_ingest(summary: IngestSummary, *, verb: str = "ingest", kept: str = "stored") -> None:
    table = Table(title=f"{verb} {summary.source}", show_header=False, title_justify="left")
    table.add_row("rows read", f"{summary.rows_read:,}")
    table.add_row(kept, f"[green]{summary.stored:,}[/]")
    table.add_row("quarantined", f"[yellow]{summary.quarantined:,}[/]")
    table.add_row(
        "duplicates",
        f"{summary.duplicates:,} ({summary.duplicates_in_file:,} in file, "
        f"{summary.duplicates_in_store:,} already stored)",
    )
    # Catalogue rows written (titles, categories, attributes; user demographics), not distinct ids in
    # events: a log with item categories but no user table has item details and no user details.
    if summary.items_upserted:
        table.add_row("item details", f"{summary.items_upserted:,} items")
    if summary.users_upserted:
        table.add_row("user details", f"{summary.users_upserted:,} users")
    table.add_row("time", f"{summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s)")
    if summary.stage_seconds:
        table.add_row(
            "time by step",
            ", ".join(f"{step} {seconds:.2f} s" for step, seconds in summary.stage_seconds.items()),
        )
    console.print(table)
    if summary.quarantine_reasons:
        reasons = Table("quarantine reason", "rows", title="quarantined rows by reason", title_justify="left")
        for reason, n in summary.quarantine_reasons.items():
            reasons.add_row(reason, f"{n:,}")
        console.print(reasons)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command()
@_user_errors
def prepare(
    path: Annotated[
        Path, typer.Argument(help="Source file (CSV/TSV, Taobao UserBehavior; with duckdb any format).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the Parquet outputs.")],
    format: FormatOption = None,
    map_: MapOption = None,
    event_type: EventTypeOption = None,
    no_header: NoHeaderOption = False,
    delimiter: DelimiterOption = None,
    session_gap: SessionGapOption = None,
    pseudonymize: PseudonymizeOption = False,
    config: IngestConfigOption = None,
    engine: EngineOption = "duckdb",
    spark_master: SparkMasterOption = "local[2]",
    json_out: JsonSummaryOption = False,
) -> None:
    """Validate, quarantine, dedup and sequence a log into Parquet files (no store): events, quarantine,
    items, sequences. Same outputs with --engine duckdb and --engine spark."""
    from behaviorlm.data.prepare import prepare as run_prepare

    cfg = _ingest_config(
        config,
        format=format,
        session_gap=session_gap,
        map_=map_,
        event_type=event_type,
        no_header=no_header,
        delimiter=delimiter,
        pseudonymize=pseudonymize,
    )
    with _status(f"preparing {path} with {engine} …"):
        summary = run_prepare(path, out, config=cfg, engine=engine, spark_master=spark_master)
    if json_out:
        console.print_json(json.dumps(summary.to_dict()))
    else:
        _print_ingest(summary, verb="prepare", kept="written to Parquet")
        console.print(
            f"Parquet outputs in {out}: events, quarantine, items, users, kg_triples, item_entities, ingest_log "
            "(the store's export layout, see EventStore.import_parquet) and sequences",
            markup=False,
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------- stats
@app.command()
@_user_errors
def stats(
    store: StoreOption = Path("behaviorlm.duckdb"), json_out: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Summarize the event store: table sizes, event types, users, items, time range, quarantine."""
    _require_store(store)
    with EventStore(store, read_only=True) as st:
        info = st.stats()
    if json_out:
        console.print_json(json.dumps(info))
        return
    table = Table(title=f"event store {store}", show_header=False, title_justify="left")
    for name, n in info["tables"].items():
        table.add_row(f"table {name}", f"{n:,}")
    table.add_row("users / items", f"{info['users']:,} / {info['items']:,}")
    table.add_row("sessions", f"{info['sessions']:,}")
    table.add_row("time range", f"{info['first_event']} → {info['last_event']}")
    table.add_row("density", f"{info['density']:.5f}")
    for event_type_name, n in info["event_types"].items():
        table.add_row(f"events: {event_type_name}", f"{n:,}")
    for row in info["quarantine_reasons"]:
        table.add_row(f"quarantine: {row['reason']}", f"{row['rows']:,}")
    console.print(table)


def _require_store(store: Path) -> None:
    if not store.exists():
        raise FileNotFoundError(f"event store {store} does not exist; create it with `behaviorlm ingest`")


# ---------------------------------------------------------------------------------------------- split
def _trained_model_and_split(model_dir: Path, store: Path) -> tuple[Any, Split]:
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
    sp = _make_split(store, **spec)
    if not (
        np.array_equal(sp.train.item_ids, estimator.train_.item_ids)
        and np.array_equal(sp.train.user_ids, estimator.train_.user_ids)
    ):
        raise ValueError(f"the store {store} holds different users/items than {model_dir} was trained on")
    return estimator, sp


def _make_split(store: Path, *, protocol: str, valid_fraction: float, test_fraction: float) -> Split:
    _require_store(store)
    with EventStore(store, read_only=True) as st:
        interactions = st.interactions()
    if protocol == "loo":
        return leave_one_out(interactions)
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


@app.command()
@_user_errors
def split(
    store: StoreOption = Path("behaviorlm.duckdb"),
    protocol: ProtocolOption = "loo",
    valid_fraction: ValidFraction = 0.1,
    test_fraction: TestFraction = 0.1,
    out: Annotated[Path | None, typer.Option(help="Write train/valid/test events as Parquet here.")] = None,
) -> None:
    """Split the stored events into train / validation / test and show the protocol."""
    sp = _make_split(store, protocol=protocol, valid_fraction=valid_fraction, test_fraction=test_fraction)
    table = Table("part", "users with events", "events", title=f"split {protocol}", title_justify="left")
    for name in ("train", "valid", "test", "test_history"):
        part = getattr(sp, name)
        table.add_row(name, f"{int((part.lengths() > 0).sum()):,}", f"{part.n_events:,}")
    console.print(table)
    console.print_json(json.dumps(sp.protocol))
    if out is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid", "test"):
            part = getattr(sp, name)
            users = part.event_users()
            pq.write_table(
                pa.table(
                    {
                        "user_id": pa.array(part.user_ids[users].astype(str)),
                        "item_id": pa.array(part.item_ids[part.items].astype(str)),
                        "event_type": pa.array(
                            np.asarray(part.event_type_vocab)[part.event_types].astype(str)
                        ),
                        "timestamp": pa.array(part.timestamps, type=pa.timestamp("s")),
                    }
                ),
                out / f"{name}.parquet",
            )
        (out / SPLIT_FILE).write_text(json.dumps(sp.protocol, indent=2))
        console.print(f"wrote {out}/train.parquet, valid.parquet, test.parquet")


# ---------------------------------------------------------------------------------------------- train / evaluate
@app.command()
@_user_errors
def train(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help=f"Model name: a recommender ({MODEL_NAMES}) or a task head ({HEAD_NAMES}; see --label).",
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Directory for the checkpoint (model.json + weights.safetensors).")
    ],
    store: StoreOption = Path("behaviorlm.duckdb"),
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Model parameter name=value (JSON value).")
    ] = None,
    protocol: ProtocolOption = "loo",
    valid_fraction: ValidFraction = 0.1,
    test_fraction: TestFraction = 0.1,
    item_knowledge: Annotated[
        str,
        typer.Option(
            help="Sequence models: add what the catalogue knows about each item to its vector: none, "
            "attributes (category, brand, attribute tokens), text (sentence vectors of title, category, "
            "brand; needs behaviorlm[text]) or text+attributes. With text, -p item_init=text also starts "
            "the item embeddings from the text vectors (docs/transformer.md#item-knowledge)."
        ),
    ] = "none",
    label: Annotated[
        str,
        typer.Option(
            help="Task heads: what to predict. sequence_classifier: purchase-within:N (a purchase among the "
            "user's next N events) or user:ATTRIBUTE (a users-table attribute, e.g. user:gender); "
            "event_tagger: session-purchase[:MINUTES] (a purchase follows the event in its session, default "
            "30-minute gaps); next_event_type needs none."
        ),
    ] = "",
    init_encoder: Annotated[
        Path | None,
        typer.Option(
            help="Start the encoder of a task head or of the transformer from `behaviorlm pretrain` output; "
            "its architecture (d_model, n_layers, ...) becomes the default."
        ),
    ] = None,
) -> None:
    """Fit a model on the training part of a split and save a checkpoint.

    Task heads (--model sequence_classifier, next_event_type, event_tagger) hold out users instead:
    --valid-fraction and --test-fraction are shares of users, and the test users' report is saved as
    test_report.json beside the model.

    Under torchrun (torchrun --nproc_per_node N -m behaviorlm.cli.main train ...) sequence models train
    data-parallel with the same flags; rank 0 alone prints and writes --out (docs/distributed-training.md).
    """
    from behaviorlm.evaluation.ranking import RankingValidation
    from behaviorlm.models.registry import model_registry
    from behaviorlm.training import distributed

    params = _param_values(param)
    encoder_state = None
    if init_encoder is not None:
        pretrainer = _load_pretrainer(init_encoder)
        params = {**pretrainer.encoder_params(), **params}
        encoder_state = pretrainer.encoder_state()
    if model in HEAD_NAMES.split(", "):
        _train_head(
            model,
            params,
            store=store,
            out=out,
            label=label,
            encoder_state=encoder_state,
            valid_fraction=valid_fraction,
            test_fraction=test_fraction,
        )
        return
    if label:
        raise ValueError(f"--label is for the task heads ({HEAD_NAMES}), not --model {model}")
    registry = model_registry()
    if model not in registry:
        raise ValueError(
            f"unknown --model {model!r}; recommenders: {sorted(registry)}; task heads: {HEAD_NAMES}"
        )
    if encoder_state is not None and (model != "transformer" or item_knowledge != "none"):
        raise ValueError(
            "--init-encoder starts a task head or --model transformer (without --item-knowledge) from the "
            "pretrained encoder"
        )
    estimator = _build_estimator(registry[model], params, what=model)
    if distributed.world_size() > 1 and not getattr(estimator, "data_parallel", False):
        raise ValueError(
            f"--model {model} does not train data-parallel: run it as one process, without torchrun "
            "(sequence models such as transformer and gru4rec do)"
        )
    main_process = distributed.is_main_process()
    # Every process reads the store (read-only opens from several processes are fine) and makes the
    # same deterministic split.
    sp = _make_split(store, protocol=protocol, valid_fraction=valid_fraction, test_fraction=test_fraction)
    fit_kwargs = _item_knowledge(store, estimator, sp, item_knowledge, main_process=main_process)
    # Trained models show their own per-epoch progress bar; the others get a spinner.
    status = (
        contextlib.nullcontext()
        if getattr(estimator, "show_progress", False) or not main_process
        else _status(f"fitting {model} on {sp.train.n_events:,} events …")
    )
    try:
        with status:
            started = time.perf_counter()
            if encoder_state is not None:
                from behaviorlm.models.pretraining import fit_from_pretrained

                fit_from_pretrained(
                    estimator, encoder_state, sp.train, valid=RankingValidation(sp.train, sp.valid)
                )
            else:
                estimator.fit(sp.train, valid=RankingValidation(sp.train, sp.valid), **fit_kwargs)
            seconds = time.perf_counter() - started
        if not main_process:
            return
        if hasattr(estimator, "training_summary"):
            console.print_json(json.dumps(estimator.training_summary()))
        estimator.save(out)
        split_spec = {"protocol": protocol, "valid_fraction": valid_fraction, "test_fraction": test_fraction}
        (out / SPLIT_FILE).write_text(json.dumps({"split": split_spec, "train_seconds": seconds}, indent=2))
        processes = distributed.world_size()
        on = f" on {processes} processes" if processes > 1 else ""
        console.print(f"[green]trained[/] {model}{on} in {seconds:.2f} s → {out}")
    finally:
        distributed.cleanup()


def _load_pretrainer(path: Path):
    from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
    from behaviorlm.models.registry import load_model

    pretrainer = load_model(path)
    if not isinstance(pretrainer, MaskedBehaviorPretrainer):
        raise ValueError(
            f"--init-encoder {path} holds a {pretrainer.name} model, not `behaviorlm pretrain` output"
        )
    return pretrainer


def _train_head(
    model: str,
    params: dict[str, Any],
    *,
    store: Path,
    out: Path,
    label: str,
    encoder_state: Any,
    valid_fraction: float,
    test_fraction: float,
) -> None:
    """``train`` for the task heads: labels from ``--label``, users held out for validation and test."""
    from behaviorlm.evaluation.audit import read_user_attributes
    from behaviorlm.models import heads

    classes = {c.name: c for c in (heads.NextEventTypeModel, heads.SequenceClassifier, heads.EventTagger)}
    estimator = _build_estimator(classes[model], params, what=model)
    _require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
        attributes = read_user_attributes(es) if label.startswith("user:") else {}

    def parts(users: np.ndarray) -> tuple[np.ndarray, ...]:
        return heads.split_users(users, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=0)

    started = time.perf_counter()
    if model == "next_event_type":
        if label:
            raise ValueError(
                "--label: next_event_type predicts the type of the next event and takes no --label"
            )
        users = np.flatnonzero(data.lengths() >= 2)
        train_rows, valid_rows, test_rows = parts(users)
        train_data = data.filter_events(np.isin(data.event_users(), users[train_rows]))
        valid = heads.last_event_type_labels(data, users[valid_rows]) if len(valid_rows) else None
        test = heads.last_event_type_labels(data, users[test_rows])
        estimator.fit(train_data, valid=valid, init_encoder=encoder_state)
        report = estimator.evaluate(test)
        what = "the type of each test user's last event"
    elif model == "sequence_classifier":
        labelled, what = _sequence_labels(data, label, attributes)
        train_rows, valid_rows, test_rows = parts(labelled.users)
        valid = labelled.subset(valid_rows) if len(valid_rows) else None
        estimator.fit(labelled.subset(train_rows), valid=valid, init_encoder=encoder_state)
        report = estimator.evaluate(labelled.subset(test_rows))
    else:
        match = re.fullmatch(r"session-purchase(?::(\d+))?", label)
        if not match:
            raise ValueError(
                f"--label for event_tagger: session-purchase or session-purchase:MINUTES, got {label!r}"
            )
        minutes = int(match.group(1) or 30)
        tags = heads.session_purchase_tags(data, gap_seconds=60 * minutes)
        users = np.flatnonzero(data.lengths() > 0)
        train_rows, valid_rows, test_rows = parts(users)

        def tagged(rows: np.ndarray) -> heads.EventTags:
            return heads.EventTags(interactions=data, tags=tags.tags, users=users[rows])

        estimator.fit(
            tagged(train_rows),
            valid=tagged(valid_rows) if len(valid_rows) else None,
            init_encoder=encoder_state,
        )
        report = estimator.evaluate(tagged(test_rows))
        what = f"a purchase later in the event's session ({minutes}-minute gaps)"
    seconds = time.perf_counter() - started
    estimator.save(out)
    report = {
        **report,
        "label": label or "next event type",
        "train_seconds": seconds,
        "pretrained": encoder_state is not None,
    }
    (out / "test_report.json").write_text(json.dumps(report, indent=2, default=str))
    table = Table(
        "metric", "value", title=f"{model}: {len(test_rows):,} held-out users", title_justify="left"
    )
    for key in ("n", "accuracy", "macro_f1", "f1", "roc_auc", "average_precision"):
        if key in report:
            value = report[key]
            table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    console.print(table)
    console.print(f"predicting {what}", highlight=False)
    console.print(
        f"[green]trained[/] {model} in {seconds:.2f} s → {out} (report: {out / 'test_report.json'})"
    )


def _sequence_labels(data: Any, label: str, attributes: dict[str, dict[str, Any]]) -> tuple[Any, str]:
    from behaviorlm.models import heads

    if match := re.fullmatch(r"purchase-within:(\d+)", label):
        n = int(match.group(1))
        return heads.purchase_within_next(data, n_events=n), f"a purchase among the user's next {n} events"
    if label.startswith("user:") and len(label) > 5:
        key = label[5:]
        index = {str(u): i for i, u in enumerate(data.user_ids)}
        pairs = [
            (index[u], str(a[key]))
            for u, a in attributes.items()
            if key in a and a[key] is not None and u in index
        ]
        lengths = data.lengths()
        pairs = [(i, v) for i, v in pairs if lengths[i] > 0]
        if not pairs:
            raise ValueError(
                f"--label {label}: no user with events has the attribute {key!r} in the users table"
            )
        users, values = zip(*sorted(pairs), strict=True)
        labelled = heads.SequenceLabels(history=data, users=np.array(users), labels=np.array(values))
        return labelled, f"the users' {key}"
    raise ValueError(f"--label for sequence_classifier: purchase-within:N or user:ATTRIBUTE, got {label!r}")


_ITEM_KNOWLEDGE = ("none", "attributes", "text", "text+attributes")


def _item_knowledge(
    store: Path, estimator: Any, split: Split, choice: str, *, main_process: bool
) -> dict[str, Any]:
    """``fit`` keyword arguments for ``--item-knowledge`` (item features read from the store)."""
    from behaviorlm.data.features import item_features_from_store
    from behaviorlm.models.sequential import SequentialRecommender

    if choice not in _ITEM_KNOWLEDGE:
        raise ValueError(f"--item-knowledge must be one of {', '.join(_ITEM_KNOWLEDGE)}; got {choice!r}")
    if choice == "none":
        return {}
    if not isinstance(estimator, SequentialRecommender):
        raise ValueError(
            f"--item-knowledge is for sequence models (transformer, gru4rec), not {estimator.name}"
        )
    with_text = "text" in choice
    # Text vectors are cached in the store: the first run embeds them, later runs read them. Under
    # torchrun every process opens the store read-only, so the vectors must be cached already.
    from behaviorlm.training import distributed

    one_process = distributed.world_size() == 1
    status = _status("embedding item texts …") if with_text else contextlib.nullcontext()
    with EventStore(store, read_only=not (with_text and one_process)) as st, status:
        try:
            features = item_features_from_store(
                st, split.train.item_ids, with_text=with_text, with_attributes="attributes" in choice
            )
        except Exception as exc:
            if one_process:
                raise
            raise ValueError(
                "--item-knowledge with text under torchrun needs the item text vectors cached in the store: "
                f"run `behaviorlm train --item-knowledge {choice}` once without torchrun ({exc})"
            ) from None
    if main_process:
        described = int((np.diff(features.attribute_ptr) > 0).sum())
        console.print(
            f"item knowledge: {choice} — {len(features.attribute_vocab):,} attribute tokens on {described:,} of "
            f"{features.n_items:,} items" + (", text vectors for every item" if with_text else "")
        )
    return {"item_features": features}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _param_values(param: list[str] | None) -> dict[str, Any]:
    """``--param name=value`` flags as keyword arguments (values read as JSON)."""
    return {k: _json_value(v) for k, v in _parse_pairs(param or [], flag="--param").items()}


def _build_estimator(cls: Any, params: dict[str, Any], *, what: str) -> Any:
    """``cls(**params)``, a wrong ``--param`` named in one line; trained models show their progress unless
    ``show_progress`` was given."""
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad --param for {what}: {exc}") from None
    if "show_progress" in estimator.get_params() and "show_progress" not in params:
        estimator.show_progress = True
    return estimator


@app.command()
@_user_errors
def distill(
    teacher_dir: Annotated[
        Path, typer.Argument(help="The teacher: a sequence model written by `behaviorlm train`.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the student (model.json + weights.safetensors).")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    model: Annotated[
        str, typer.Option("--model", help="The student's kind: transformer (smaller, via -p) or gru4rec.")
    ] = "transformer",
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="Student parameter name=value (JSON), e.g. -p d_model=64 -p n_layers=1."
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Weight of the teacher's softened scores in the loss (0-1).")
    ] = 0.5,
    temperature: Annotated[float, typer.Option(help="Softening temperature of both distributions.")] = 2.0,
) -> None:
    """Distil a trained sequence model into a smaller student: the student learns from the next item and
    from the teacher's scores over the whole catalogue (KD). Trained on the teacher's split, so `evaluate`
    compares them on the same test targets; `serve` with quantize = true serves its int8 copy."""
    from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
    from behaviorlm.models.registry import model_registry
    from behaviorlm.models.sequential import SequentialRecommender

    teacher, sp = _trained_model_and_split(teacher_dir, store)
    if not isinstance(teacher, SequentialRecommender):
        raise ValueError(
            f"{teacher_dir} holds a {teacher.name} model; a teacher is a sequence model (transformer, gru4rec)"
        )
    registry = model_registry()
    if model not in ("transformer", "gru4rec"):
        raise ValueError(f"--model {model!r}: a student is a transformer or a gru4rec")
    params = _param_values(param)
    student = _build_estimator(registry[model], {"max_len": teacher.max_len, **params}, what=model)
    started = time.perf_counter()
    student.fit(
        sp.train,
        valid=RankingValidation(sp.train, sp.valid),
        teacher=teacher,
        distill_alpha=alpha,
        distill_temperature=temperature,
    )
    seconds = time.perf_counter() - started
    student.save(out)
    (out / SPLIT_FILE).write_text((teacher_dir / SPLIT_FILE).read_text())
    table = Table(
        "model",
        "parameters",
        "test NDCG@10",
        "HR@10",
        title="teacher and student",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name, m in (("teacher " + teacher.name, teacher), ("student " + student.name, student)):
        result = evaluate_ranking(m, history=sp.test_history, targets=sp.test, ks=(10,))
        n_params = sum(p.numel() for p in m.net_.parameters())
        table.add_row(
            name, f"{n_params:,}", f"{result.metrics['ndcg@10']:.4f}", f"{result.metrics['hr@10']:.4f}"
        )
    console.print(table)
    console.print(f"[green]distilled[/] {teacher_dir} into a {model} in {seconds:.2f} s → {out}")


@app.command()
@_user_errors
def pretrain(
    out: Annotated[Path, typer.Option(help="Directory for the pretrained model (model.json + weights).")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Pretrainer parameter name=value (JSON value), e.g. -p epochs=20 -p d_model=128.",
        ),
    ] = None,
    protocol: ProtocolOption = "loo",
    valid_fraction: ValidFraction = 0.1,
    test_fraction: TestFraction = 0.1,
) -> None:
    """Masked-behaviour pretraining (BERT4Rec-style: hidden items and event types recovered from both
    sides) of the behaviour encoder on the training part of a split, without labels. Start a model from it
    with `behaviorlm train --init-encoder OUT` (a task head, or --model transformer)."""
    from behaviorlm.models.pretraining import MaskedBehaviorPretrainer

    params = _param_values(param)
    estimator = _build_estimator(MaskedBehaviorPretrainer, params, what="the pretrainer")
    sp = _make_split(store, protocol=protocol, valid_fraction=valid_fraction, test_fraction=test_fraction)
    started = time.perf_counter()
    estimator.fit(sp.train)
    seconds = time.perf_counter() - started
    estimator.save(out)
    summary = estimator.history_.summary(metric="masked_accuracy") if hasattr(estimator, "history_") else {}
    (out / SPLIT_FILE).write_text(
        json.dumps(
            {
                "split": {
                    "protocol": protocol,
                    "valid_fraction": valid_fraction,
                    "test_fraction": test_fraction,
                },
                "train_seconds": seconds,
                **summary,
            },
            indent=2,
        )
    )
    console.print(
        f"[green]pretrained[/] the encoder on {sp.train.n_events:,} events of {sp.train.n_users:,} users in "
        f"{seconds:.2f} s → {out}; architecture {estimator.encoder_params()}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@_user_errors
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="Checkpoint directory written by `behaviorlm train`.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    on: Annotated[
        str, typer.Option(help="Targets to rank: test (history = train + valid) or valid.")
    ] = "test",
    ks: Annotated[str, typer.Option(help="Cut-offs, comma-separated.")] = "10,20",
    no_mask_seen: Annotated[
        bool, typer.Option("--no-mask-seen", help="Do not mask already-seen items.")
    ] = False,
    sampled: Annotated[
        int | None, typer.Option(help="Rank among N sampled negatives instead of all items.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
) -> None:
    """Rank the held-out targets with a saved model (full ranking unless --sampled) and print metrics."""
    from behaviorlm.evaluation.ranking import evaluate_ranking

    if on not in ("test", "valid"):
        raise ValueError(f"--on must be 'test' or 'valid', got {on!r}")
    estimator, sp = _trained_model_and_split(model_dir, store)
    history, targets = (sp.test_history, sp.test) if on == "test" else (sp.train, sp.valid)
    try:
        cutoffs = tuple(int(k) for k in ks.split(","))
    except ValueError:
        raise ValueError(f"--ks must be comma-separated whole numbers such as 10,20; got {ks!r}") from None
    candidates = targets.n_items if sampled is None else sampled + 1
    if not cutoffs or min(cutoffs) < 1 or max(cutoffs) > candidates:
        # Checked before the progress bar is drawn, so the error is the only output.
        raise ValueError(f"--ks {ks}: each cut-off must be between 1 and the {candidates:,} items ranked")
    with Progress(
        TextColumn("ranking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("rank", total=int((targets.lengths() > 0).sum()))
        result = evaluate_ranking(
            estimator,
            history=history,
            targets=targets,
            ks=cutoffs,
            mask_seen=not no_mask_seen,
            sampled_negatives=sampled,
            split_name=str(sp.protocol.get("split")),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    table = Table("metric", "value", title=f"{estimator.name} on {on}", title_justify="left")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(result.describe(), highlight=False)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))


@app.command()
@_user_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its store and models.")] = Path(
        "work-dir/demo"
    ),
) -> None:
    """Run the end-to-end demo on the bundled ML-100k data in 8 steps: ingest with quarantine, split,
    baselines and the Transformer (full ranking), real-time prediction, anomalies / segments / a profile,
    the embedded LLM's explanation and answers, campaign audiences and a bias audit, and the service."""
    from behaviorlm.demo import run_demo

    run_demo(workdir=workdir, console=console)


# ---------------------------------------------------------------------------------------------- profiling
@app.command()
@_user_errors
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

    _require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
    if data.n_users == 0:
        raise ValueError(f"{store} holds no events")
    with _status(f"scoring {data.n_users:,} users …"):
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
@_user_errors
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

    _require_store(store)
    with EventStore(store) as es, _status("building the profile …"):
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
@_user_errors
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
    _require_store(store)
    with EventStore(store, read_only=True) as es:
        data = es.interactions()
        features = item_features_from_store(es, data.item_ids)
    fitted = load_recommender(model)
    if list(map(str, fitted.trained_on.item_ids)) != list(map(str, data.item_ids)):
        raise ValueError(f"--model {model} was trained on another item catalogue than {store}")
    with _status(f"encoding {data.n_users:,} users …"):
        x = seg.user_representations(fitted, data)
    with _status("clustering …"):
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
@_user_errors
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
    _require_store(store)
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
    with _status(f"fitting on {len(train.users):,} users, testing on {len(test.users):,} …"):
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
@_user_errors
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
    from behaviorlm.data.store import StoreError
    from behaviorlm.evaluation.ranking import RankingValidation
    from behaviorlm.profiling.fusion import FusedRecommender, evaluate_by_history_length, fit_text_scorer

    estimator, sp = _trained_model_and_split(model_dir, store)
    try:
        es, cache = EventStore(store), True  # writable: embeddings are cached in the store
    except StoreError:
        es, cache = EventStore(store, read_only=True), False
    with es, _status("embedding item descriptions and reviews …"):
        data = es.interactions()
        text = fit_text_scorer(es, data, sp.train, cache=cache)
    with _status("choosing the text weight on validation …"):
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


def _llm_client(llm_url: str | None, llm_model: str | None):
    from behaviorlm.config import LLMConfig
    from behaviorlm.llm.client import LLMClient

    settings: dict[str, Any] = {"base_url": llm_url}
    if llm_model:
        settings["model"] = llm_model
    elif llm_url:
        settings["model"] = "default"
    return LLMClient(LLMConfig(**settings))


def _print_task(result: Any, facts: Any, *, title: str) -> None:
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


@app.command()
@_user_errors
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
    _require_store(store)
    estimator = None
    if model is not None:
        estimator = _explain_predictions(user_id, model=model, store=store, top=top, why=why)
    if not words:
        return
    from behaviorlm.llm.facts import user_facts
    from behaviorlm.llm.tasks import explain_intent
    from behaviorlm.models.registry import load_intent_model

    with EventStore(store, read_only=True) as es, _status("collecting the facts …"):
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
        _llm_client(llm_url, llm_model) as client,
        _status("the language model is writing …"),
    ):
        result = explain_intent(client, facts)
    _print_task(result, facts, title=f"intent of {user_id} (in prompts: {facts.subject})")
    if json_out is not None:
        json_out.write_text(json.dumps({"explanation": result.to_dict(), "facts": facts.to_dict()}, indent=2))


@app.command()
@_user_errors
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
    llm_url: LLMUrlOption = None,
    llm_model: LLMModelOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the answer as JSON.")] = None,
) -> None:
    """Answer a question about a user from the data: the language model picks read-only tools (counts,
    first/last events, categories, items in a period, ratings, guesses, reasons, effects), code runs them,
    and the answer is written from their results; "I don't know" when no tool answers it."""
    from behaviorlm.llm.tools import UserContext
    from behaviorlm.llm.tools import ask as ask_tools
    from behaviorlm.models.registry import load_recommender

    if not question.strip():
        raise ValueError("the question is empty")
    _require_store(store)
    effects = [json.loads(path.read_text()) for path in effects_json or []]
    with EventStore(store, read_only=True) as es:
        if not es.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user_id]):
            raise KeyError(f"user {user_id!r} has no events in {store}")
        context = UserContext(
            es, user_id, model=load_recommender(model) if model is not None else None, effects=effects
        )
        with (
            _llm_client(llm_url, llm_model) as client,
            _status("the language model is choosing tools …"),
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


def _explain_predictions(user_id: str, *, model: Path, store: Path, top: int, why: bool) -> Any:
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
    with EventStore(store, read_only=True) as es:
        events = latest_events(es, user_id, estimator)
    if not events["item_id"]:
        raise ValueError(f"user {user_id!r} has no events in {store}")
    request = model_history(estimator, events)
    if request.interactions.n_events == 0:
        raise ValueError(f"none of user {user_id!r}'s events is on an item and event type the model knows")
    recs = estimator.recommend(np.array([0]), k=top, history=request.interactions)
    table = Table("rank", "item", "score", title=f"next items for {user_id}", title_justify="left")
    for rank, (item, score) in enumerate(zip(recs.items[0], recs.scores[0], strict=True), start=1):
        table.add_row(str(rank), str(estimator.train_.item_ids[item]), f"{score:.3f}")
    console.print(table)
    skipped = len(events["item_id"]) - request.interactions.n_events
    if skipped:
        console.print(f"[yellow]note:[/] left out {skipped} events on items or types the model does not know")
    if not why:
        return estimator
    with _status("removing each event in turn …"):
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


@app.command()
@_user_errors
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
    with _status(f"estimating on {table.n_users:,} users …"):
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

    _require_store(store)
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
@_user_errors
def graph_stats(store: StoreOption = Path("behaviorlm.duckdb")) -> None:
    """Node and edge counts per type, and the memory the edge lists take."""
    from behaviorlm.data.graph import build_graph

    _require_store(store)
    with EventStore(store, read_only=True) as es, _status("building the graph …"):
        graph = build_graph(es)
    _print_graph_stats(graph.stats())


@graph_app.command("build")
@_user_errors
def graph_build(
    out: Annotated[Path, typer.Option(help="Folder for the Parquet node and edge lists.")],
    store: StoreOption = Path("behaviorlm.duckdb"),
    knowledge_graph: Annotated[
        bool, typer.Option(help="Include the store's KG triples and item links.")
    ] = True,
) -> None:
    """Build the graph from the store and write it as Parquet edge lists (one file per edge type)."""
    from behaviorlm.data.graph import build_graph

    _require_store(store)
    with EventStore(store, read_only=True) as es, _status("building the graph …"):
        graph = build_graph(es, with_knowledge_graph=knowledge_graph)
    files = graph.to_parquet(out)
    _print_graph_stats(graph.stats())
    console.print(f"[green]wrote[/] {len(files)} Parquet files to {out}")


@graph_app.command("train")
@_user_errors
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
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    protocol: ProtocolOption = "temporal",
    valid_fraction: ValidFraction = 0.1,
    test_fraction: TestFraction = 0.1,
) -> None:
    """Train a graph model on the store, save it to --out and print its test metrics.

    purchase: snapshots every --step-minutes (graph and features from events before the cutoff, label =
    purchase within --window-minutes after it); the last two cutoffs are tested, the two before tune.
    recommend: LightGCN on a split of the store (temporal by default), full-ranking test metrics.
    """
    _require_store(store)
    if task == "recommend":
        _graph_train_recommend(
            out,
            store=store,
            epochs=epochs,
            seed=seed,
            split_spec={
                "protocol": protocol,
                "valid_fraction": valid_fraction,
                "test_fraction": test_fraction,
            },
        )
    elif task == "purchase":
        _graph_train_purchase(
            out,
            store=store,
            window_seconds=60 * window_minutes,
            step_seconds=60 * step_minutes,
            warmup_seconds=60 * warmup_minutes,
            exclude_purchased=exclude_purchased,
            epochs=epochs,
            seed=seed,
        )
    else:
        raise ValueError(f"--task must be 'purchase' or 'recommend', got {task!r}")


def _graph_train_recommend(out: Path, *, store: Path, epochs: int, seed: int, split_spec: dict) -> None:
    from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
    from behaviorlm.models.lightgcn import LightGCN

    sp = _make_split(store, **split_spec)
    model = LightGCN(epochs=epochs, seed=seed, show_progress=True)
    started = time.perf_counter()
    model.fit(sp.train, valid=RankingValidation(sp.train, sp.valid))
    seconds = time.perf_counter() - started
    model.save(out)
    (out / SPLIT_FILE).write_text(json.dumps({"split": split_spec, "train_seconds": seconds}, indent=2))
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
    epochs: int,
    seed: int,
) -> None:
    from behaviorlm.data.purchase import purchase_cutoffs, purchase_snapshot, store_time_range
    from behaviorlm.evaluation.purchase import evaluate_purchase_model, purchase_protocol
    from behaviorlm.models.hetero_gnn import PurchaseGNN, PurchaseGNNConfig
    from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline

    with EventStore(store, read_only=True) as es:
        first, last = store_time_range(es)
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
    gnn = PurchaseGNN(config=PurchaseGNNConfig(epochs=epochs, seed=seed), show_progress=True)
    results = [
        evaluate_purchase_model(gnn, **snapshots),
        evaluate_purchase_model(PurchaseFeatureBaseline(kind="logistic", seed=seed), **snapshots),
    ]
    gnn.save(out)
    metrics = {
        r.name: {"test": r.metrics, "valid": r.valid_metrics, "threshold": r.threshold} for r in results
    }
    (out / "purchase.json").write_text(json.dumps({"protocol": protocol, "results": metrics}, indent=2))
    table = Table(
        "model", *metrics[gnn.name]["test"], title="purchase prediction, test cutoffs", title_justify="left"
    )
    for r in results:
        table.add_row(r.name, *(f"{v:.4f}" for v in r.metrics.values()))
    console.print(table)
    console.print(
        f"test: {protocol['test']['pairs']:,} candidate pairs, {protocol['test']['positives']:,} bought; "
        f"[green]saved[/] {gnn.name} (best epoch {gnn.best_epoch_}) → {out}",
        highlight=False,
    )


@graph_app.command("paths")
@_user_errors
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

    _require_store(store)
    with EventStore(store, read_only=True) as es, _status("building the graph …"):
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
keys_app = typer.Typer(help="API keys of the REST service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@_user_errors
def keys_create(
    name: Annotated[str, typer.Option(help="Name of the key (shown in logs).")],
    keys_file: Annotated[
        Path, typer.Option("--keys-file", help="Keys file (JSON, created if absent).")
    ] = Path("keys.json"),
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="read, write or admin; repeat for several.")
    ] = None,
) -> None:
    """Create an API key; the key is printed once and only its SHA-256 is stored."""
    from behaviorlm.serving.security import create_key

    secret = create_key(keys_file, name=name, scopes=scope or ["read"])
    err_console.print(
        f"key {name!r} ({', '.join(sorted(set(scope or ['read'])))}) added to {keys_file}; it is shown only now:"
    )
    print(secret)


@keys_app.command("revoke")
@_user_errors
def keys_revoke(
    name: Annotated[str, typer.Option(help="Name of the key to revoke.")],
    keys_file: Annotated[Path, typer.Option("--keys-file", help="Keys file (JSON).")] = Path("keys.json"),
) -> None:
    """Revoke an API key: it is removed from the keys file, and a running service refuses it from its
    next request on (the service re-reads the file when it changes; no restart)."""
    from behaviorlm.serving.security import revoke_key

    revoked = revoke_key(keys_file, name=name)
    err_console.print(f"key {revoked.name!r} ({', '.join(revoked.scopes)}) revoked in {keys_file}")


@keys_app.command("list")
@_user_errors
def keys_list(
    keys_file: Annotated[Path, typer.Option("--keys-file", help="Keys file (JSON).")] = Path("keys.json"),
) -> None:
    """List the API keys: name, scopes and the first 8 hex digits of the key's SHA-256 (enough to tell
    keys apart; neither a key nor its full hash is ever printed)."""
    from behaviorlm.serving.security import list_keys

    keys = list_keys(keys_file)
    table = Table("name", "scopes", "sha256", title=f"{len(keys)} keys in {keys_file}", title_justify="left")
    for key in keys:
        table.add_row(key.name, ", ".join(key.scopes), key.sha256[:8] + "…")
    console.print(table)


@app.command()
@_user_errors
def serve(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Service config (.toml/.json): store, model, keys_file, limits."),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Start the REST service (OpenAPI docs at /docs). A model folder that does not load stops it with
    one line saying why."""
    import logging

    import uvicorn

    from behaviorlm.config import ServiceConfig
    from behaviorlm.serving.app import create_app

    service_config = load_config(ServiceConfig, config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn's access log prints raw paths, which hold user ids; the app logs pseudonymized lines itself.
    uvicorn.run(create_app(service_config), host=host, port=port, access_log=False, log_level="info")


@app.command()
@_user_errors
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
    with _status(f"scoring {table.n_users:,} users …"):
        result = build_audience(table, config=config)
    result.write(out)
    report = out.with_suffix(".md")
    report.write_text(result.to_markdown())
    console.print(result.to_markdown(), highlight=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(f"audience: {out}; report: {report}")
    if compare:
        with _status("comparing targeting on held-out users …"):
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
@_user_errors
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

    estimator, sp = _trained_model_and_split(model_dir, store)
    with EventStore(store, read_only=True) as st:
        attributes = read_user_attributes(st)
    chosen = [g.strip() for g in groups.split(",") if g.strip()]
    try:
        penalty_values = [float(p) for p in penalties.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--penalties expects comma-separated numbers, got {penalties!r}") from None
    with _status("auditing …") as status:
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


def main() -> None:  # pragma: no cover - console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
