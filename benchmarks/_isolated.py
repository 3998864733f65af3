"""Run one (dataset, model) benchmark in a fresh process, so its peak RSS is its own."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
from collections.abc import Callable
from typing import Any


def add_validation_users_argument(parser: Any) -> None:
    """``--validation-users`` for a benchmark script: the split's ``validation_users``, ``auto`` by default
    as in ``behaviorlm train``; read the value with
    ``behaviorlm.cli.common.validation_users_value``."""
    parser.add_argument(
        "--validation-users",
        default="auto",
        help="whose second-last event is a validation target: auto (the default of `behaviorlm train`: 10%% "
        "of the users, at least 2,000; the others' are trained on), all (every user's) or a number",
    )


def item_knowledge(dataset: str, train: Any, choice: str) -> tuple[Any, str, str]:
    """(``fit``'s ``item_features`` or None, the knowledge used, why) for ``choice`` -- ``auto`` is the rule
    of ``behaviorlm train``'s default (``behaviorlm.data.features.choose_item_knowledge``)."""
    import numpy as np

    from behaviorlm.data.datasets import open_dataset_store
    from behaviorlm.data.features import choose_item_knowledge, item_features_from_store

    if choice == "none":
        return None, "none", "asked for none"
    with open_dataset_store(dataset) as store:  # writable: the first text run caches the vectors
        reason = f"asked for {choice}"
        if choice == "auto":
            picked = choose_item_knowledge(
                store, train.item_ids, item_events=np.bincount(train.items, minlength=train.n_items)
            )
            choice, reason = picked.choice, f"auto: {picked.reason}"
        if choice == "none":
            return None, choice, reason
        parts = set(choice.split("+"))
        features = item_features_from_store(
            store, train.item_ids, with_text="text" in parts, with_attributes="attributes" in parts
        )
    return features, choice, reason


def pretrained_encoder(model: Any, train: Any, *, epochs: int) -> tuple[Any, dict[str, Any]]:
    """Masked-behaviour pretraining (``MaskedBehaviorPretrainer``) of ``model``'s architecture on ``train``
    (no labels, no validation: ``epochs`` fixed); returns (``encoder_state()``, what was done)."""
    import time

    from behaviorlm.models.pretraining import MaskedBehaviorPretrainer

    # Same shape as the model to fine-tune; the pretrainer keeps its own dropout (fine-tuning uses the model's).
    shape = {k: getattr(model, k) for k in MaskedBehaviorPretrainer.ENCODER_PARAMS if k != "dropout"}
    pretrainer = MaskedBehaviorPretrainer.from_params(
        {**shape, "epochs": epochs, "seed": model.training.seed, "show_progress": False}
    )
    started = time.perf_counter()
    pretrainer.fit(train)
    seconds = time.perf_counter() - started
    return pretrainer.encoder_state(), {
        "epochs": epochs,
        "seconds": seconds,
        "mask_prob": pretrainer.mask_prob,
        "architecture": shape,
    }


def _fit_evaluate(
    dataset: str,
    model_name: str,
    params: dict[str, Any],
    threads: int,
    knowledge: str,
    pretrain_epochs: int,
    validation_users: int | str | None = None,
) -> dict[str, Any]:
    import torch

    from behaviorlm.data.datasets import load_interactions
    from behaviorlm.data.splits import leave_one_out
    from behaviorlm.evaluation.benchmark import fit_and_evaluate
    from behaviorlm.models.registry import model_registry
    from behaviorlm.models.sequential import SequentialRecommender

    torch.set_num_threads(threads)
    split = leave_one_out(load_interactions(dataset), validation_users=validation_users)
    model = model_registry()[model_name].from_params(params)
    fit_kwargs: dict[str, Any] = {}
    used, reason = "none", "not a sequence model"
    pretraining = None
    if pretrain_epochs > 0:
        # A pretrained encoder carries ID embeddings only, as `behaviorlm train --init-encoder` does.
        fit_kwargs["init_encoder"], pretraining = pretrained_encoder(
            model, split.train, epochs=pretrain_epochs
        )
        reason = "pretrained encoder (ID embeddings only)"
    elif isinstance(model, SequentialRecommender):
        features, used, reason = item_knowledge(dataset, split.train, knowledge)
        if features is not None:
            fit_kwargs["item_features"] = features
    record = fit_and_evaluate(model, split, dataset=dataset, fit_kwargs=fit_kwargs).to_dict()
    if pretraining is not None:
        record["model"] = f"{record['model']}-pretrained"
        record["protocol"]["pretraining"] = pretraining
    record["protocol"]["torch_threads"] = threads
    record["protocol"]["item_knowledge"] = used
    record["protocol"]["item_knowledge_reason"] = reason
    return record


def run_isolated(
    dataset: str,
    model_name: str,
    params: dict[str, Any],
    *,
    threads: int = 2,
    item_knowledge: str = "none",
    pretrain_epochs: int = 0,
    validation_users: int | str | None = None,
) -> dict[str, Any]:
    """Fit ``model_name(**params)`` on the leave-one-out split of ``dataset`` in a spawned process with
    ``threads`` torch threads and return its benchmark record (see :mod:`behaviorlm.evaluation.benchmark`).
    Sequence models read ``item_knowledge`` (``auto``: what ``behaviorlm train`` would choose); with
    ``pretrain_epochs`` a Transformer starts from a masked-behaviour-pretrained encoder instead (the
    record's model gets ``-pretrained``, its protocol the pretraining time). ``validation_users`` is the
    split's (:func:`behaviorlm.data.splits.leave_one_out`; None: every user validates)."""
    return run_in_worker(
        _fit_evaluate,
        (dataset, model_name, params, threads, item_knowledge, pretrain_epochs, validation_users),
        what=f"{model_name} on {dataset}",
    )


def run_in_worker(target: Callable[..., Any], args: tuple, *, what: str) -> Any:
    """``target(*args)`` in a spawned process (its own peak RSS, its own torch threads); returns what it
    returns. The worker exits if this process dies, and a worker that dies without a result (a crash, an
    OOM kill) is a ``RuntimeError`` naming ``what`` and its exit code instead of a wait forever."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(os.getpid(), target, args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"{what}: the worker exited with code {proc.exitcode} without a result"
                ) from None
    proc.join()
    return result


def _worker(parent: int, target: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    exit_with_parent(parent)
    queue.put(target(*args))


def exit_with_parent(parent: int) -> None:
    """In a spawned worker: exit as soon as ``parent`` is gone. A killed benchmark (``pkill -f
    run_sequential.py``) otherwise leaves its worker training for an hour on a pinned core, and every
    timing taken meanwhile on that machine is wrong."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
