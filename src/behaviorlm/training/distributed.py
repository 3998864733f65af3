"""Data-parallel training under ``torchrun``: the process group, rank helpers and per-epoch data shards.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU, or several on a CPU, and
gives each the environment variables ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. A process started without them (plain ``python`` or ``behaviorlm``) is a world of
one: every helper here then does nothing and costs nothing, so single-process code needs no branch.

What the training loop takes from here (it owns the rest):

* :func:`init_process_group` joins the group: ``gloo`` when the model lives on a CPU, ``nccl`` on CUDA.
* :func:`data_parallel_loss` wraps the loss in :class:`~torch.nn.parallel.DistributedDataParallel`
  (Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020):
  every rank computes the loss on its own rows, and the gradients are averaged over ranks during the
  backward pass, so the weights stay identical on every rank.
* :func:`shard_rows` splits one epoch's shuffled rows over the ranks. ``batch_size`` is the *global*
  batch: each rank runs ``ceil(batch_size / world_size)`` rows per step, and when ``batch_size`` is a
  multiple of the world size the rows of step ``s`` over all ranks are exactly the rows of step ``s``
  of a one-process run with the same seed. Every rank gets the same number of equally sized batches
  (the shuffled order is padded by repeating its first rows, as ``DistributedSampler`` does), because a
  rank that ran one step fewer would leave the others waiting forever in the gradient all-reduce.
* :func:`group_by_length` regroups a rank's batches by sequence length (less padding), keeping their
  count and sizes.
* :func:`broadcast_from_main`, :func:`all_reduce_mean`, :func:`any_rank`, :func:`all_gather_objects`
  keep decisions (early stopping, the time budget) and reported numbers identical on every rank.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LaunchEnvironment:
    """This process's place in the job, as ``torchrun`` set it (a world of one when it did not)."""

    world_size: int
    rank: int
    local_rank: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launch_environment() -> LaunchEnvironment:
    """Read ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; a missing variable means a single process."""
    values = {}
    for name, default in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)):
        text = os.environ.get(name)
        try:
            values[name] = default if text in (None, "") else int(text)
        except ValueError:
            raise ValueError(f"environment variable {name}={text!r} is not an integer") from None
    env = LaunchEnvironment(values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"])
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise ValueError(
            f"inconsistent torchrun environment: WORLD_SIZE={env.world_size}, RANK={env.rank}, "
            f"LOCAL_RANK={env.local_rank}"
        )
    return env


def world_size() -> int:
    """Number of processes in the job (1 without torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else launch_environment().world_size


def rank() -> int:
    """This process's rank, 0 to ``world_size() - 1`` (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else launch_environment().rank


def is_main_process() -> bool:
    """Whether this process is rank 0: the one that prints, writes checkpoints and saves models."""
    return rank() == 0


def rank_device(device: str | torch.device) -> torch.device:
    """The device this rank trains on: a bare ``"cuda"`` becomes ``cuda:LOCAL_RANK`` under torchrun (one
    GPU per process); anything else is returned as given."""
    device = torch.device(device)
    env = launch_environment()
    if device.type == "cuda" and device.index is None and env.is_distributed:
        return torch.device("cuda", env.local_rank)
    return device


def init_process_group(device: torch.device, *, timeout_seconds: float = 1800.0) -> bool:
    """Join the torchrun process group (``nccl`` for a CUDA ``device``, else ``gloo``) unless this is a
    single process or the group already exists; returns whether the job is distributed."""
    if not launch_environment().is_distributed:
        return False
    if dist.is_initialized():
        return True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # env:// reads MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE, which torchrun sets.
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_seconds))
    return True


def cleanup() -> None:
    """Leave the process group (a no-op when none was joined), after every rank has got here.

    Without the barrier a rank that finished first tore its gloo connections down while rank 0 was still
    writing its files, and rank 0 then aborted ("terminate called without an active exception"; seen once
    in five fresh-clone CI runs of tests/training/test_distributed.py).
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (a no-op for a single process)."""
    if dist.is_initialized():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: Sequence[float]) -> list[float]:
    """The mean of each value over the ranks (the values themselves for a single process)."""
    if not dist.is_initialized():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / dist.get_world_size()).tolist()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank: a decision every rank then takes together."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def broadcast_from_main(value: float | None) -> float | None:
    """Rank 0's ``value`` on every rank (``None`` stays ``None``); the other ranks' arguments are ignored."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([math.nan if value is None else float(value)], dtype=torch.float64)
    tensor = tensor.to(_collective_device())
    dist.broadcast(tensor, src=0)
    out = float(tensor.item())
    return None if math.isnan(out) else out


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (JSON-like), in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def batches_per_epoch(n_rows: int, *, batch_size: int, world_size: int) -> int:
    """How many batches each rank runs per epoch under :func:`shard_rows` (the same on every rank)."""
    _check_shard_arguments(n_rows, batch_size=batch_size, world_size=world_size)
    rows_per_rank = math.ceil(n_rows / world_size)
    return math.ceil(rows_per_rank / math.ceil(batch_size / world_size))


def shard_rows(
    n_rows: int, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[torch.Tensor]:
    """This rank's batches of row indices for one epoch: a shuffle seeded by ``(seed, epoch)``, split so
    that the ranks' rows are disjoint (up to the ``< world_size`` padding rows) and every rank has the
    same number of batches of the same sizes.

    ``batch_size`` is the global batch (see the module docstring). With ``world_size=1`` this is the
    plain shuffled mini-batching ``randperm(n_rows)[i : i + batch_size]``.
    """
    _check_shard_arguments(n_rows, batch_size=batch_size, world_size=world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_rows, generator=generator)
    padded = math.ceil(n_rows / world_size) * world_size
    if padded > n_rows:
        order = torch.cat([order, order[: padded - n_rows]])
    # Rank r takes every world_size-th row, starting at r: consecutive runs of world_size * per_rank
    # shuffled rows form one global step, as in a one-process run.
    mine = order[rank::world_size]
    per_rank = math.ceil(batch_size / world_size)
    return [mine[start : start + per_rank] for start in range(0, len(mine), per_rank)]


def group_by_length(
    batches: list[torch.Tensor], lengths: torch.Tensor, *, pool: int, seed: int, epoch: int
) -> list[torch.Tensor]:
    """``batches`` (one epoch's, from :func:`shard_rows`) regrouped so that each holds rows of similar
    length: the shuffled rows are taken ``pool`` batches at a time, sorted by ``lengths[row]`` within the
    pool and cut again into batches of the same sizes, whose order is then shuffled (seeded by
    ``(seed, epoch)``, so every rank draws the same order). The idea of Hugging Face's
    ``LengthGroupedSampler`` ("megabatches" of 50 batches): a batch cut to its longest row does
    little padding work, while rows still meet new neighbours every epoch.

    The batch count and sizes are unchanged (all but the last are full), so ranks stay in step.
    """
    if pool < 1:
        raise ValueError(f"pool must be >= 1 batch, got {pool}")
    if len(batches) <= 1:
        return batches
    size = len(batches[0])
    rows = torch.cat(batches)
    grouped: list[torch.Tensor] = []
    for start in range(0, len(rows), pool * size):
        chunk = rows[start : start + pool * size]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        grouped.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
    return [grouped[i] for i in torch.randperm(len(grouped), generator=generator).tolist()]


def _check_shard_arguments(n_rows: int, *, batch_size: int, world_size: int) -> None:
    if n_rows < 1:
        raise ValueError(f"nothing to shard: n_rows must be >= 1, got {n_rows}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if batch_size < world_size:
        raise ValueError(
            f"batch_size={batch_size} is smaller than the number of processes ({world_size}): batch_size is "
            "the global batch, split over the processes"
        )


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(batch)`` over ``module``'s parameters, so that DDP, which averages the
    gradients of whatever its forward touched, can wrap a loss written against the bare module."""

    def __init__(self, module: nn.Module, loss_fn: Callable[[Batch], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(batch)


def data_parallel_loss(
    module: nn.Module, loss_fn: Callable[[Batch], torch.Tensor]
) -> Callable[[Batch], torch.Tensor]:
    """``loss_fn`` wrapped in DistributedDataParallel over ``module``'s parameters (``loss_fn`` itself
    when the job is a single process).

    Construction broadcasts rank 0's parameters and buffers to every rank; each backward pass then
    all-reduces (averages) the gradients, overlapped with the computation. Every parameter that
    requires a gradient must take part in every loss (``find_unused_parameters=False``).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return loss_fn
    device = next(module.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_LossModule(module, loss_fn), device_ids=device_ids)
