"""Run one (dataset, model) benchmark in a fresh process, so its peak RSS is its own."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def _fit_evaluate(
    dataset: str, model_name: str, params: dict[str, Any], threads: int, queue: mp.Queue
) -> None:
    import torch

    from behaviorlm.data.datasets import load_interactions
    from behaviorlm.data.splits import leave_one_out
    from behaviorlm.evaluation.benchmark import fit_and_evaluate
    from behaviorlm.models.registry import model_registry

    torch.set_num_threads(threads)
    split = leave_one_out(load_interactions(dataset))
    model = model_registry()[model_name].from_params(params)
    record = fit_and_evaluate(model, split, dataset=dataset).to_dict()
    record["protocol"]["torch_threads"] = threads
    queue.put(record)


def run_isolated(
    dataset: str, model_name: str, params: dict[str, Any], *, threads: int = 2
) -> dict[str, Any]:
    """Fit ``model_name(**params)`` on the leave-one-out split of ``dataset`` in a spawned process with
    ``threads`` torch threads and return its benchmark record (see :mod:`behaviorlm.evaluation.benchmark`)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_fit_evaluate, args=(dataset, model_name, params, threads, queue))
    proc.start()
    record = queue.get()
    proc.join()
    return record
