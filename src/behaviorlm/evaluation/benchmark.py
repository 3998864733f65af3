"""Benchmark runner: fit a model on a split, rank the test targets, and record one result line.

A record is one JSON object per (dataset, model) in ``benchmarks/results.jsonl``::

    {"dataset", "model", "params", "protocol", "metrics", "n_users", "train_seconds", "eval_seconds",
     "peak_rss_mb", "machine", "git_commit", "date"}

``protocol`` states the split, full vs sampled ranking, seen-item masking, tie handling and what the
model read as history, so no number is ever separated from how it was measured.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from behaviorlm.data.splits import Split
from behaviorlm.estimator import json_params
from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking, metrics_by_target_popularity
from behaviorlm.models.base import Recommender


@dataclass(frozen=True)
class BenchmarkRecord:
    """One benchmark result line (see the module docstring)."""

    dataset: str
    model: str
    params: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, float]
    n_users: int
    train_seconds: float
    eval_seconds: float
    training: dict[str, Any]
    peak_rss_mb: float
    machine: str
    git_commit: str
    date: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_and_evaluate(
    model: Recommender,
    split: Split,
    *,
    dataset: str,
    ks: tuple[int, ...] = (10, 20),
    on: str = "test",
    mask_seen: bool = True,
    fit_kwargs: dict[str, Any] | None = None,
    by_popularity: bool = False,
) -> BenchmarkRecord:
    """Fit ``model`` on ``split.train`` (validation targets available for early stopping) and rank the
    ``on`` targets ("test" or "valid") in full.

    For test, the model reads train + validation events as history (``split.test_history``); for
    validation it reads the training events. ``fit_kwargs`` go to ``model.fit`` (e.g. ``item_features``);
    ``by_popularity`` adds the metrics of users whose target is a long-tail or cold item
    (:func:`~behaviorlm.evaluation.ranking.metrics_by_target_popularity`, training popularity).
    """
    if on not in ("test", "valid"):
        raise ValueError(f"on must be 'test' or 'valid', got {on!r}")
    started = time.perf_counter()
    model.fit(split.train, valid=RankingValidation(split.train, split.valid), **(fit_kwargs or {}))
    train_seconds = time.perf_counter() - started
    history, targets = (split.test_history, split.test) if on == "test" else (split.train, split.valid)
    result = evaluate_ranking(
        model,
        history=history,
        targets=targets,
        ks=ks,
        mask_seen=mask_seen,
        split_name=str(split.protocol.get("split", "unknown")),
        per_user=by_popularity,
    )
    extra = (
        metrics_by_target_popularity(result, targets=targets, item_counts=split.train.item_counts())
        if by_popularity
        else {}
    )
    protocol = {
        **result.protocol,
        "evaluated_on": on,
        "history": "train+valid" if on == "test" else "train",
        "split_params": split.protocol,
    }
    return BenchmarkRecord(
        dataset=dataset,
        model=model.name,
        params=json_params(model),
        protocol=protocol,
        metrics={**result.metrics, **extra},
        n_users=result.n_users,
        train_seconds=train_seconds,
        eval_seconds=result.eval_seconds,
        training=model.training_summary() if hasattr(model, "training_summary") else {},
        **provenance(accelerator=str(getattr(model, "device", "cpu"))),
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_description(accelerator: str = "cpu") -> str:
    """CPU model, logical cores, memory and OS, e.g. for a benchmark table's footnote; for a CUDA
    ``accelerator`` the GPU's name leads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem = f"{mem_gb:.0f} GiB"
    except (ValueError, OSError):
        mem = "unknown memory"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    host = f"{cpu}, {cores} cores, {mem}, {platform.system()} {platform.release()}"
    if accelerator.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(torch.device(accelerator))} GPU; host {host}"
    return host


def git_commit() -> str:
    """Short hash of the checked-out commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(*, accelerator: str = "cpu") -> dict[str, Any]:
    """Where and when a benchmark record was made: ``peak_rss_mb``, ``machine``, ``git_commit`` and ``date``
    (UTC, seconds) -- the keys every record in benchmarks/results.jsonl ends with."""
    return {
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine_description(accelerator=accelerator),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def append_jsonl(path: str | Path, record: BenchmarkRecord | dict[str, Any]) -> None:
    """Append one JSON object per line (creating the file if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = record.to_dict() if isinstance(record, BenchmarkRecord) else record
    with path.open("a") as fh:
        fh.write(json.dumps(data, sort_keys=True) + "\n")
