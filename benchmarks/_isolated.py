"""Run one (dataset, model) benchmark in a fresh process, so its peak RSS is its own."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


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


def _fit_evaluate(
    dataset: str, model_name: str, params: dict[str, Any], threads: int, knowledge: str, queue: mp.Queue
) -> None:
    import torch

    from behaviorlm.data.datasets import load_interactions
    from behaviorlm.data.splits import leave_one_out
    from behaviorlm.evaluation.benchmark import fit_and_evaluate
    from behaviorlm.models.registry import model_registry
    from behaviorlm.models.sequential import SequentialRecommender

    torch.set_num_threads(threads)
    split = leave_one_out(load_interactions(dataset))
    model = model_registry()[model_name].from_params(params)
    fit_kwargs: dict[str, Any] = {}
    used, reason = "none", "not a sequence model"
    if isinstance(model, SequentialRecommender):
        features, used, reason = item_knowledge(dataset, split.train, knowledge)
        if features is not None:
            fit_kwargs["item_features"] = features
    record = fit_and_evaluate(model, split, dataset=dataset, fit_kwargs=fit_kwargs).to_dict()
    record["protocol"]["torch_threads"] = threads
    record["protocol"]["item_knowledge"] = used
    record["protocol"]["item_knowledge_reason"] = reason
    queue.put(record)


def run_isolated(
    dataset: str, model_name: str, params: dict[str, Any], *, threads: int = 2, item_knowledge: str = "none"
) -> dict[str, Any]:
    """Fit ``model_name(**params)`` on the leave-one-out split of ``dataset`` in a spawned process with
    ``threads`` torch threads and return its benchmark record (see :mod:`behaviorlm.evaluation.benchmark`).
    Sequence models read ``item_knowledge`` (``auto``: what ``behaviorlm train`` would choose)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(
        target=_fit_evaluate, args=(dataset, model_name, params, threads, item_knowledge, queue)
    )
    proc.start()
    record = queue.get()
    proc.join()
    return record
