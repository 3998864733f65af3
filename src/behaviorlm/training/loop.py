"""One training loop for every neural model: AdamW, warmup + cosine, clipping, early stopping, resume.

The loop knows nothing about recommendation: a caller hands it a module, a function yielding batches
for an epoch, a function turning a batch into a scalar loss, and optionally a validation function
returning a number to maximise (e.g. validation NDCG@10). It owns the optimiser and schedule, the
progress bar, early stopping, and checkpoints (safetensors for tensors, JSON for the rest) written
after every epoch so an interrupted run resumes where it stopped.

Under ``torchrun`` the same loop trains data-parallel (see :mod:`behaviorlm.training.distributed`): the
loss runs inside DistributedDataParallel, validation runs on rank 0 and its number is broadcast, so
early stopping and the time budget decide the same on every rank, and only rank 0 shows progress and
writes checkpoints.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch import nn

from behaviorlm.training import distributed
from behaviorlm.training.options import TrainingOptions
from behaviorlm.training.threads import AdaptiveThreads

Batch = dict[str, torch.Tensor]


@dataclass(kw_only=True)
class TrainerConfig:
    """Optimisation settings shared by all models.

    ``warmup_fraction`` of the total steps ramps the learning rate up linearly, then it follows a cosine
    down to ``min_lr_ratio * lr`` (Loshchilov & Hutter, SGDR, ICLR 2017). Early stopping stops after
    ``patience`` validations without improvement and restores the best weights.

    With ``max_seconds``, the total steps are those the time budget allows (when fewer than ``epochs``
    epochs): estimated from the first ``BUDGET_PROBE_STEPS`` steps, then after every epoch from the
    measured epoch time, validation included, so that the warmup is a share of the steps that will
    really run and the cosine reaches its floor in the last epoch instead of staying near the peak
    (budget-aware schedules: Li, Yumer & Ramanan, "Budgeted Training", ICLR 2020). Training stops at the
    first epoch end past the budget -- or inside an epoch, when one epoch alone would overrun it (a
    catalogue of millions of items on a CPU): the schedule is then planned in steps, the epoch ends at
    the step that crosses the budget, and that partial epoch is validated like any other.
    """

    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_fraction: float = 0.02
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    patience: int = 5
    eval_every: int = 1
    max_seconds: float | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    show_progress: bool = True
    compile: bool = False
    amp: bool = False
    anneal_epochs: int = 0
    """When early stopping would stop while the learning rate is still above twice its floor, restore the
    best weights and decay the rate to its floor over this many epochs instead (0: stop at once). Early
    stopping usually fires long before a cosine planned for ``epochs`` has decayed; the annealed
    weights are kept only if they validate better."""

    @classmethod
    def from_options(cls, options: TrainingOptions, **settings: Any) -> TrainerConfig:
        """The loop's settings for a model trained with ``options``, plus ``settings`` the model fixes itself
        (e.g. a constant learning rate). The one place a model's training options become the loop's."""
        held = {
            "epochs": options.epochs,
            "lr": options.lr,
            "weight_decay": options.weight_decay,
            "patience": options.patience,
            "eval_every": options.eval_every,
            "max_seconds": options.max_train_seconds,
            "seed": options.seed,
            "checkpoint_dir": options.checkpoint_dir,
            "show_progress": options.show_progress,
            "amp": options.amp,
            "compile": options.compile,
        }
        return cls(**{**held, **settings})

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.patience < 1 or self.eval_every < 1:
            raise ValueError("patience and eval_every must be >= 1")


@dataclass
class TrainingHistory:
    """What happened during training: per-epoch loss/metric/time and the best epoch."""

    epochs_run: int = 0
    best_epoch: int = -1
    best_metric: float = -math.inf
    losses: list[float] = field(default_factory=list)
    metrics: list[float | None] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    stopped_early: bool = False
    stopped_by_time: bool = False
    resumed_from_epoch: int | None = None
    annealed_after_epoch: int | None = None
    """The epoch after which validation stalled and the learning rate was annealed (``anneal_epochs``)."""
    planned_epochs: list[int] = field(default_factory=list)
    """With a time budget, the epochs the learning-rate schedule was planned for after each epoch."""
    partial_epoch_steps: int | None = None
    """Steps of the last epoch when the time budget ran out inside it (``None``: every epoch ran whole)."""
    thread_changes: list[tuple[float, int]] = field(default_factory=list)
    """(seconds into training, torch threads) each time the thread count followed the cores other
    processes left free (:class:`~behaviorlm.training.threads.AdaptiveThreads`)."""

    @property
    def total_seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_seconds"] = self.total_seconds
        return out

    def summary(self, *, metric: str = "ndcg@10") -> dict[str, Any]:
        """Epochs, best epoch and its validation ``metric`` (the one ``validate`` returned), time per
        epoch and total, and how training stopped."""
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            f"best_valid_{metric}": self.best_metric if self.best_epoch > 0 else None,
            "seconds_per_epoch": self.total_seconds / max(1, self.epochs_run),
            "train_seconds": self.total_seconds,
            "stopped_early": self.stopped_early,
            "stopped_by_time": self.stopped_by_time,
            "partial_epoch_steps": self.partial_epoch_steps,
        }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a CPU run is reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


BUDGET_PROBE_STEPS = 20
"""Steps timed before a time-budgeted run plans its schedule (see :class:`TrainerConfig`)."""


def budget_epochs(
    *, max_seconds: float, elapsed: float, epochs_done: int, epoch_seconds: float, epochs: int
) -> int:
    """The epochs a run stopping at the first epoch end past ``max_seconds`` will have run, at
    ``epoch_seconds`` per epoch from ``elapsed`` seconds and ``epochs_done`` epochs on (at most ``epochs``)."""
    if epoch_seconds <= 0:
        return epochs
    if elapsed > max_seconds and epochs_done:
        return epochs_done
    more = math.floor(max(0.0, max_seconds - elapsed) / epoch_seconds) + 1
    return max(1, min(epochs, epochs_done + more))


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    module: nn.Module,
    *,
    batches: Callable[[int], Iterable[Batch]],
    steps_per_epoch: int,
    loss_fn: Callable[[Batch], torch.Tensor],
    validate: Callable[[], float] | None,
    config: TrainerConfig,
    console: Console | None = None,
) -> TrainingHistory:
    """Train ``module`` in place and return its history (the best validated weights are loaded at the end).

    ``batches(epoch)`` yields the batches of one epoch (it should seed its own shuffling from ``epoch``
    so that a resumed run sees the same data); ``loss_fn(batch)`` returns the scalar loss;
    ``validate()`` returns the metric to maximise (the module is in eval mode during it).

    Under ``torchrun`` (``WORLD_SIZE > 1``) this process joins the group (gloo on CPU, NCCL on CUDA) and
    ``batches(epoch)`` must yield *this rank's* share, exactly ``steps_per_epoch`` batches on every rank
    (:func:`~behaviorlm.training.distributed.shard_rows` does both). Gradients are averaged over the
    ranks, so the learning rate is not scaled. ``validate`` is called on rank 0 only and its result is
    broadcast; the reported loss is the mean over ranks; dropout draws differ per rank (torch is seeded
    with ``seed + rank``). The returned weights and history are identical on every rank.
    """
    device = next(module.parameters()).device
    distributed.init_process_group(device)
    rank, is_main = distributed.rank(), distributed.is_main_process()
    seed_everything(config.seed + rank)
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name or name.endswith("bias") else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=config.betas,
    )
    steps = max(1, steps_per_epoch)
    # Read by the schedule at every step; a time budget re-plans it (see TrainerConfig).
    plan: dict[str, float] = {
        "total": config.epochs * steps,
        "warmup": int(config.warmup_fraction * config.epochs * steps),
    }

    def factor(step: int) -> float:
        if "anneal_start" in plan:  # cosine from the rate at the stall down to the floor
            progress = min(1.0, (step - plan["anneal_start"]) / max(1.0, plan["anneal_steps"]))
            top = plan["anneal_from"]
            return config.min_lr_ratio + (top - config.min_lr_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        return lr_factor(
            step,
            total_steps=int(plan["total"]),
            warmup_steps=int(plan["warmup"]),
            min_ratio=config.min_lr_ratio,
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def replan(*, elapsed: float, epochs_done: int, epoch_seconds: float, warmup: bool) -> None:
        if config.max_seconds is None or "anneal_start" in plan:
            return
        epochs = budget_epochs(
            max_seconds=config.max_seconds,
            elapsed=elapsed,
            epochs_done=epochs_done,
            epoch_seconds=epoch_seconds,
            epochs=config.epochs,
        )
        # Every rank plans from rank 0's clock, so the learning rates stay identical.
        epochs = int(distributed.broadcast_from_main(float(epochs)))
        plan["total"] = epochs * steps
        if warmup and epoch_seconds > config.max_seconds:
            # Not one epoch fits: plan the steps that do, so the cosine ends where the budget does.
            fit = int(distributed.broadcast_from_main(float(config.max_seconds / epoch_seconds * steps)))
            plan["total"] = max(1, fit)
        if warmup:
            plan["warmup"] = int(config.warmup_fraction * plan["total"])
        history.planned_epochs.append(epochs)

    step_module: Callable[[Batch], torch.Tensor] = loss_fn
    if config.compile and device.type == "cuda":
        step_module = torch.compile(loss_fn)
    step_module = distributed.data_parallel_loss(module, step_module)
    use_amp = config.amp and device.type == "cuda"

    history = TrainingHistory()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    start_epoch = 0
    ckpt = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if ckpt is not None and (ckpt / "trainer.json").exists():
        start_epoch, history, bad_epochs = _resume(ckpt, module, optimizer, scheduler, rank=rank, plan=plan)
        best_path = ckpt / "best.safetensors"
        best_state = load_file(str(best_path)) if best_path.exists() else None

    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("val {task.fields[metric]}"),
        TimeElapsedColumn(),
        console=console,
        # Off a terminal (a log file, CI) a bar only shows its last state: one line per epoch instead.
        disable=not (config.show_progress and is_main and console.is_terminal),
        transient=False,
    )
    log_epochs = config.show_progress and is_main and not console.is_terminal
    started = time.perf_counter() - history.total_seconds
    with progress, AdaptiveThreads() as threads:
        task = progress.add_task("train", total=steps_per_epoch, epoch=start_epoch, loss=0.0, metric="–")
        for epoch in range(start_epoch, config.epochs):
            epoch_started = time.perf_counter()
            module.train()
            # reset() replaces the task's fields, so every field the columns render is passed again.
            last_metric = next((f"{m:.4f}" for m in reversed(history.metrics) if m is not None), "–")
            progress.reset(task, total=steps_per_epoch, epoch=epoch + 1, loss=0.0, metric=last_metric)
            total_loss, n_batches = 0.0, 0
            probe_started = time.perf_counter()
            for batch in batches(epoch):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = step_module(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at epoch {epoch + 1}, batch {n_batches}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                total_loss += float(loss.detach())
                n_batches += 1
                progress.update(task, advance=1, loss=total_loss / n_batches)
                threads.step()
                if epoch == start_epoch == 0 and n_batches == min(BUDGET_PROBE_STEPS, steps):
                    step_seconds = (time.perf_counter() - probe_started) / n_batches
                    replan(elapsed=0.0, epochs_done=0, epoch_seconds=step_seconds * steps, warmup=True)
                if config.max_seconds is not None and n_batches < steps:
                    late = time.perf_counter() - started > config.max_seconds
                    if distributed.any_rank(late):  # every rank leaves the epoch at the same step
                        history.partial_epoch_steps = n_batches
                        break
            metric: float | None = None
            if validate is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
                module.eval()
                if is_main:
                    with torch.no_grad():
                        metric = float(validate())
                # Every rank takes rank 0's number, so early stopping decides the same everywhere.
                metric = distributed.broadcast_from_main(metric)
                progress.update(task, metric=f"{metric:.4f}")
            (epoch_loss,) = distributed.all_reduce_mean([total_loss / max(1, n_batches)])
            history.epochs_run = epoch + 1
            history.losses.append(epoch_loss)
            history.metrics.append(metric)
            history.epoch_seconds.append(time.perf_counter() - epoch_started)
            if log_epochs:
                console.print(
                    f"epoch {epoch + 1}/{config.epochs}: loss {epoch_loss:.4f}"
                    + (f", validation {metric:.4f}" if metric is not None else "")
                    + f", {history.epoch_seconds[-1]:.1f} s"
                    + (f", {torch.get_num_threads()} torch threads" if threads.changes else ""),
                    highlight=False,
                )
            if metric is not None:
                if metric > history.best_metric:
                    history.best_metric, history.best_epoch, bad_epochs = metric, epoch + 1, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad_epochs += 1
            if ckpt is not None:
                # Collective: every rank hands its random state to rank 0, which alone writes the files.
                rng_states = distributed.all_gather_objects(torch.get_rng_state().tolist())
                if is_main:
                    _save_checkpoint(
                        ckpt,
                        module,
                        optimizer,
                        scheduler,
                        history,
                        bad_epochs,
                        best_state,
                        metric,
                        rng_states,
                        plan,
                    )
            annealed = history.annealed_after_epoch is not None
            if annealed and epoch + 1 >= history.annealed_after_epoch + config.anneal_epochs:
                history.stopped_early = True
                break
            if bad_epochs >= config.patience:
                rate = factor(scheduler.last_epoch)
                if (
                    annealed
                    or not config.anneal_epochs
                    or best_state is None
                    or rate <= 2 * config.min_lr_ratio
                ):
                    history.stopped_early = True
                    break
                # Validation stalled at a high learning rate: back to the best weights, then decay.
                module.load_state_dict(best_state)
                plan.update(
                    anneal_start=scheduler.last_epoch,
                    anneal_steps=config.anneal_epochs * steps,
                    anneal_from=rate,
                )
                history.annealed_after_epoch = epoch + 1
                bad_epochs = 0
            out_of_time = (
                config.max_seconds is not None and time.perf_counter() - started > config.max_seconds
            )
            if distributed.any_rank(out_of_time):
                history.stopped_by_time = True
                break
            done = epoch + 1 - start_epoch
            replan(
                elapsed=time.perf_counter() - started,
                epochs_done=epoch + 1,
                epoch_seconds=sum(history.epoch_seconds[-done:]) / done,
                warmup=False,
            )
        history.thread_changes.extend(threads.changes)
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


def _save_checkpoint(
    directory: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: TrainingHistory,
    bad_epochs: int,
    best_state: dict[str, torch.Tensor] | None,
    metric: float | None,
    rng_states: list[list[int]],
    plan: dict[str, float],
) -> None:
    """Write the resumable state: weights, optimiser moments (safetensors) and counters (JSON).

    ``rng_states`` holds each rank's torch random state, in rank order (one entry for a single process).
    """
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in module.state_dict().items()}, str(directory / "last.safetensors")
    )
    if best_state is not None and metric is not None and history.best_epoch == history.epochs_run:
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(directory / "best.safetensors"))
    moments: dict[str, torch.Tensor] = {}
    steps: dict[str, float] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim > 0:
                moments[f"{index}.{key}"] = value.contiguous()
            else:
                steps[f"{index}.{key}"] = float(value)
    save_file(moments, str(directory / "optimizer.safetensors"))
    meta = {
        "epoch": history.epochs_run,
        "history": history.to_dict(),
        "bad_epochs": bad_epochs,
        "scheduler": scheduler.state_dict(),
        "lr_plan": plan,
        "optimizer_scalars": steps,
        "torch_rng_by_rank": rng_states,
    }
    tmp = directory / "trainer.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(directory / "trainer.json")


def _resume(
    directory: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    rank: int,
    plan: dict[str, float],
) -> tuple[int, TrainingHistory, int]:
    meta = json.loads((directory / "trainer.json").read_text())
    plan.update(meta.get("lr_plan", {}))
    module.load_state_dict(load_file(str(directory / "last.safetensors")))
    moments = load_file(str(directory / "optimizer.safetensors"))
    state = optimizer.state_dict()
    restored: dict[int, dict[str, Any]] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = torch.tensor(value)
    state["state"] = restored
    optimizer.load_state_dict(state)
    scheduler.load_state_dict(meta["scheduler"])
    # The scheduler only writes the learning rate into the optimiser when it steps: restore the rate of
    # the interrupted run now, or the first resumed step would use the initial (warmup) rate.
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr
    # Each rank restores the random state its own rank number saved; a rank the checkpoint has no state
    # for (a run resumed on more processes) continues from rank 0's.
    by_rank = meta.get("torch_rng_by_rank") or [meta["torch_rng"]]
    torch.set_rng_state(torch.tensor(by_rank[rank] if rank < len(by_rank) else by_rank[0], dtype=torch.uint8))
    saved = meta["history"]
    saved.pop("total_seconds", None)
    history = TrainingHistory(**saved)
    history.resumed_from_epoch = meta["epoch"]
    return meta["epoch"], history, meta["bad_epochs"]
