"""Model commands: ``train`` (recommenders and task heads), ``distill``, ``pretrain``, ``evaluate``, ``demo``."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from behaviorlm.cli.common import (
    HEAD_NAMES,
    MODEL_NAMES,
    SPLIT_FILE,
    ProtocolOption,
    StoreOption,
    TestFraction,
    ValidationUsers,
    ValidFraction,
    app,
    build_estimator,
    console,
    make_split,
    param_values,
    require_store,
    spinner,
    split_spec,
    trained_model_and_split,
    user_errors,
)
from behaviorlm.data.splits import Split
from behaviorlm.data.store import EventStore


@app.command()
@user_errors
def train(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help=f"Model name: a recommender ({MODEL_NAMES}), a task head ({HEAD_NAMES}; see --label) or "
            "purchase_propensity (will a user buy within N hours; see --label).",
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
    validation_users: ValidationUsers = "auto",
    item_knowledge: Annotated[
        str,
        typer.Option(
            help="Sequence models: add what the catalogue knows about each item to its vector: auto (what "
            "the store holds: text when most items have a title or text, attributes when most share a "
            "category, brand or attribute), none, attributes (category, brand, attribute tokens), text "
            "(sentence vectors of title, category, brand; needs behaviorlm[text]) or text+attributes. With "
            "text, -p item_init=text also starts the item embeddings from the text vectors "
            "(docs/transformer.md#item-knowledge)."
        ),
    ] = "auto",
    label: Annotated[
        str,
        typer.Option(
            help="Task heads: what to predict. sequence_classifier: purchase-within:N (a purchase among the "
            "user's next N events) or user:ATTRIBUTE (a users-table attribute, e.g. user:gender); "
            "event_tagger: session-purchase[:MINUTES] (a purchase follows the event in its session, default "
            "30-minute gaps); next_event_type needs none; purchase_propensity: purchase-within:Nh (a "
            "purchase in the N hours after a daily cutoff, e.g. purchase-within:24h)."
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

    params = param_values(param)
    encoder_state = None
    if init_encoder is not None:
        pretrainer = _load_pretrainer(init_encoder)
        params = {**pretrainer.encoder_params(), **params}
        encoder_state = pretrainer.encoder_state()
    if model == "purchase_propensity":
        _train_propensity(params, store=store, out=out, label=label)
        return
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
            f"unknown --model {model!r}; recommenders: {sorted(registry)}; task heads: {HEAD_NAMES}; "
            "user level: purchase_propensity"
        )
    if encoder_state is not None and (model != "transformer" or item_knowledge not in ("none", "auto")):
        raise ValueError(
            "--init-encoder starts a task head or --model transformer (without --item-knowledge) from the "
            "pretrained encoder"
        )
    estimator = build_estimator(registry[model], params, what=model)
    if distributed.world_size() > 1 and not getattr(estimator, "data_parallel", False):
        raise ValueError(
            f"--model {model} does not train data-parallel: run it as one process, without torchrun "
            "(sequence models such as transformer and gru4rec do)"
        )
    main_process = distributed.is_main_process()
    # Every process reads the store (read-only opens from several processes are fine) and makes the
    # same deterministic split.
    spec = split_spec(
        protocol=protocol,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        validation_users=validation_users,
    )
    sp = make_split(store, **spec)
    if encoder_state is not None:
        item_knowledge = "none"  # the pretrained encoder's item vectors are ID embeddings only
    fit_kwargs = _item_knowledge(store, estimator, sp, item_knowledge, main_process=main_process)
    # Trained models show their own per-epoch progress bar; the others get a spinner.
    status = (
        contextlib.nullcontext()
        if getattr(estimator, "show_progress", False) or not main_process
        else spinner(f"fitting {model} on {sp.train.n_events:,} events …")
    )
    try:
        with status:
            started = time.perf_counter()
            if encoder_state is not None:
                fit_kwargs["init_encoder"] = encoder_state
            estimator.fit(sp.train, valid=RankingValidation(sp.train, sp.valid), **fit_kwargs)
            seconds = time.perf_counter() - started
        if not main_process:
            return
        if hasattr(estimator, "training_summary"):
            console.print_json(json.dumps(estimator.training_summary()))
        estimator.save(out)
        (out / SPLIT_FILE).write_text(json.dumps({"split": spec, "train_seconds": seconds}, indent=2))
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
    estimator = build_estimator(classes[model], params, what=model)
    require_store(store)
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


def _train_propensity(params: dict[str, Any], *, store: Path, out: Path, label: str) -> None:
    """``train --model purchase_propensity``: daily cutoffs, fitted and tested against gradient boosting
    (:func:`behaviorlm.evaluation.purchase.fit_purchase_propensity`)."""
    from behaviorlm.data.purchase import store_time_range
    from behaviorlm.evaluation.purchase import fit_purchase_propensity

    match = re.fullmatch(r"purchase-within:(\d+)h", label)
    if not match or int(match.group(1)) < 1:
        raise ValueError(
            "--label for purchase_propensity: purchase-within:Nh (a purchase in the N hours after each daily "
            f"cutoff, N >= 1), got {label!r}"
        )
    unknown = sorted(set(params) - {"max_len", "purchase_type"})
    if unknown:
        raise ValueError(f"--param {unknown[0]}: purchase_propensity takes max_len and purchase_type")
    require_store(store)
    with EventStore(store, read_only=True) as es:
        # Cutoffs from the 0.1% quantile of event times: a few stray early events (the public Taobao
        # slices have some weeks before their nine days) would otherwise make weeks of empty snapshots.
        first, last = store_time_range(es, start_quantile=0.001)
        data = es.interactions()
    started = time.perf_counter()
    estimator, report = fit_purchase_propensity(
        data, first_timestamp=first, last_timestamp=last, hours=int(match.group(1)), **params
    )
    seconds = time.perf_counter() - started
    estimator.save(out)
    report = {**report, "label": label, "train_seconds": seconds}
    (out / "test_report.json").write_text(json.dumps(report, indent=2, default=str))
    test = report["protocol"]["test"]
    table = Table(
        "model",
        "ROC-AUC",
        "PR-AUC",
        title=f"purchase_propensity: {test['users']:,} test user-days, {test['positives']:,} with a purchase",
        title_justify="left",
    )
    table.add_row("purchase_propensity", f"{report['roc_auc']:.4f}", f"{report['average_precision']:.4f}")
    if "gradient_boosting" in report:
        base = report["gradient_boosting"]
        table.add_row(
            "gradient boosting (baseline)", f"{base['roc_auc']:.4f}", f"{base['average_precision']:.4f}"
        )
    console.print(table)
    if "roc_auc_vs_boosting" in report:
        d = report["roc_auc_vs_boosting"]
        console.print(
            f"ROC-AUC minus boosting: {d['difference']:+.4f} [95% {d['low']:+.4f}, {d['high']:+.4f}]",
            highlight=False,
        )
    if "calibration" in report:
        c = report["calibration"]
        console.print(
            f"probabilities: mean {c['mean_probability']:.3f} against an observed rate of {c['positive_rate']:.3f}; "
            f"Brier {c['brier']:.4f} (the rate alone: {c['brier_base_rate']:.4f}); calibration error "
            f"{c['calibration_error']:.3f}",
            highlight=False,
        )
    console.print(
        f"[green]trained[/] purchase_propensity in {seconds:.2f} s → {out} (report: {out / 'test_report.json'}); "
        "use it as --intent-model",
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


def _item_knowledge(
    store: Path, estimator: Any, split: Split, choice: str, *, main_process: bool
) -> dict[str, Any]:
    """``fit`` keyword arguments for ``--item-knowledge`` (item features read from the store)."""
    from behaviorlm.data.features import KNOWLEDGE_CHOICES, choose_item_knowledge, item_features_from_store
    from behaviorlm.models.sequential import SequentialRecommender

    if choice not in KNOWLEDGE_CHOICES:
        raise ValueError(f"--item-knowledge must be one of {', '.join(KNOWLEDGE_CHOICES)}; got {choice!r}")
    if choice == "none":
        return {}
    if not isinstance(estimator, SequentialRecommender):
        if choice == "auto":
            return {}  # the default: only sequence models read item knowledge
        raise ValueError(
            f"--item-knowledge is for sequence models (transformer, gru4rec), not {estimator.name}"
        )
    automatic = choice == "auto"
    if automatic:
        with EventStore(store, read_only=True) as st:
            picked = choose_item_knowledge(
                st,
                split.train.item_ids,
                item_events=np.bincount(split.train.items, minlength=split.train.n_items),
            )
        if main_process:
            console.print(f"item knowledge (auto): {picked.choice} — {picked.reason}")
        choice = picked.choice
        if choice == "none":
            return {}
    with_text = "text" in choice
    # Text vectors are cached in the store: the first run embeds them, later runs read them. Under
    # torchrun every process opens the store read-only, so the vectors must be cached already.
    from behaviorlm.training import distributed

    one_process = distributed.world_size() == 1
    status = spinner("embedding item texts …") if with_text else contextlib.nullcontext()
    with EventStore(store, read_only=not (with_text and one_process)) as st, status:
        try:
            features = item_features_from_store(
                st, split.train.item_ids, with_text=with_text, with_attributes="attributes" in choice
            )
        except Exception as exc:
            if one_process:
                raise
            if automatic:
                # The default must not fail under torchrun: every rank drops the text alike.
                rest = "attributes" if "attributes" in choice else "none"
                if main_process:
                    console.print(
                        "[yellow]item text vectors are not cached in the store (torchrun opens it read-only): "
                        f"item knowledge {rest}; run `behaviorlm train` once without torchrun to cache them[/]"
                    )
                return _item_knowledge(store, estimator, split, rest, main_process=main_process)
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


@app.command()
@user_errors
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
    compares them on the same test targets; `serve` picks its int8 copy when faster (quantize = "auto")."""
    from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
    from behaviorlm.models.registry import model_registry
    from behaviorlm.models.sequential import SequentialRecommender

    teacher, sp = trained_model_and_split(teacher_dir, store)
    if not isinstance(teacher, SequentialRecommender):
        raise ValueError(
            f"{teacher_dir} holds a {teacher.name} model; a teacher is a sequence model (transformer, gru4rec)"
        )
    registry = model_registry()
    if model not in ("transformer", "gru4rec"):
        raise ValueError(f"--model {model!r}: a student is a transformer or a gru4rec")
    params = param_values(param)
    student = build_estimator(registry[model], {"max_len": teacher.max_len, **params}, what=model)
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
@user_errors
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
    validation_users: ValidationUsers = "auto",
) -> None:
    """Masked-behaviour pretraining (BERT4Rec-style: hidden items and event types recovered from both
    sides) of the behaviour encoder on the training part of a split, without labels. Start a model from it
    with `behaviorlm train --init-encoder OUT` (a task head, or --model transformer)."""
    from behaviorlm.models.pretraining import MaskedBehaviorPretrainer

    params = param_values(param)
    estimator = build_estimator(MaskedBehaviorPretrainer, params, what="the pretrainer")
    spec = split_spec(
        protocol=protocol,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        validation_users=validation_users,
    )
    sp = make_split(store, **spec)
    started = time.perf_counter()
    estimator.fit(sp.train)
    seconds = time.perf_counter() - started
    estimator.save(out)
    summary = estimator.history_.summary(metric="masked_accuracy") if hasattr(estimator, "history_") else {}
    (out / SPLIT_FILE).write_text(
        json.dumps(
            {
                "split": spec,
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
@user_errors
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
    estimator, sp = trained_model_and_split(model_dir, store)
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
@user_errors
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
