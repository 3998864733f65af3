"""The training loop: schedule, early stopping, resume after interruption, determinism."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from behaviorlm.training import loop
from behaviorlm.training.loop import TrainerConfig, budget_epochs, lr_factor, train


def test_lr_schedule_warmup_then_cosine() -> None:
    # 10 warmup steps of 100: step 0 -> 1/10, step 9 -> 1; then cosine from 1 (step 10) to 0.1 (step 100).
    kw = {"total_steps": 100, "warmup_steps": 10, "min_ratio": 0.1}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(55, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, **kw) == pytest.approx(0.1)


def _problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))

    def batches(epoch: int):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
        for start in range(0, 64, 16):
            rows = order[start : start + 16]
            yield {"x": x[rows], "y": y[rows]}

    def loss_fn(batch):
        return nn.functional.mse_loss(model(batch["x"]), batch["y"])

    def validate() -> float:
        return -float(nn.functional.mse_loss(model(x), y))

    return model, batches, loss_fn, validate


def _fit(config: TrainerConfig, *, fail_at_epoch: int | None = None):
    model, batches, loss_fn, validate = _problem()

    def maybe_failing(epoch: int):
        if epoch == fail_at_epoch:
            raise KeyboardInterrupt
        return batches(epoch)

    history = train(
        model, batches=maybe_failing, steps_per_epoch=4, loss_fn=loss_fn, validate=validate, config=config
    )
    return model, history


def test_training_reduces_loss_and_is_deterministic() -> None:
    config = TrainerConfig(epochs=30, lr=1e-2, patience=100, show_progress=False)
    model_a, history = _fit(config)
    model_b, _ = _fit(config)
    assert history.losses[-1] < 0.2 * history.losses[0]
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path) -> None:
    config = TrainerConfig(
        epochs=8, lr=1e-2, patience=100, show_progress=False, checkpoint_dir=str(tmp_path / "ck")
    )
    with pytest.raises(KeyboardInterrupt):
        _fit(config, fail_at_epoch=5)
    resumed, history = _fit(config)
    assert history.resumed_from_epoch == 5 and history.epochs_run == 8
    straight, _ = _fit(TrainerConfig(epochs=8, lr=1e-2, patience=100, show_progress=False))
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_early_stopping_restores_best_weights() -> None:
    model, batches, loss_fn, _ = _problem()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.0, 0.9])
    snapshots = []

    def validate() -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    config = TrainerConfig(epochs=7, lr=1e-2, patience=3, show_progress=False)
    history = train(
        model, batches=batches, steps_per_epoch=4, loss_fn=loss_fn, validate=validate, config=config
    )
    assert history.stopped_early and history.epochs_run == 5 and history.best_epoch == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[1][key])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainerConfig(epochs=0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainerConfig(warmup_fraction=1.5)


def _train_with_progress(*, terminal: bool) -> tuple[str, object]:
    """Three epochs with progress shown on a console that is (or is not) a terminal: its text, the history."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    model, batches, loss_fn, validate = _problem()
    config = TrainerConfig(epochs=3, lr=1e-2, patience=100, show_progress=True)
    history = train(
        model,
        batches=batches,
        steps_per_epoch=4,
        loss_fn=loss_fn,
        validate=validate,
        config=config,
        console=Console(file=buffer, force_terminal=terminal, width=120),
    )
    return buffer.getvalue(), history


def test_progress_bar_renders_epoch_loss_and_metric() -> None:
    text, _ = _train_with_progress(terminal=True)
    assert "epoch 3" in text and "loss" in text and "val -" in text
    assert "epoch 1/3:" not in text  # a terminal gets the bar, not the log lines


def test_progress_off_a_terminal_is_one_line_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a log file a bar would show only its final state after minutes of silence."""
    # Threads fixed: on a busy machine (a parallel test run) a thread change would add a note to the line.
    monkeypatch.setenv("BEHAVIORLM_TORCH_THREADS", str(torch.get_num_threads()))
    text, history = _train_with_progress(terminal=False)
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert f"loss {history.losses[-1]:.4f}" in lines[-1]
    assert f"validation {history.metrics[-1]:.4f}" in lines[-1] and lines[-1].endswith(" s")


def test_budget_epochs_counts_the_epoch_that_ends_past_the_budget() -> None:
    # 10 s epochs, 95 s budget: the run stops after the first epoch ending past 95 s, the 10th.
    assert budget_epochs(max_seconds=95, elapsed=0, epochs_done=0, epoch_seconds=10, epochs=200) == 10
    assert budget_epochs(max_seconds=95, elapsed=30, epochs_done=3, epoch_seconds=10, epochs=200) == 10
    assert budget_epochs(max_seconds=95, elapsed=30, epochs_done=3, epoch_seconds=10, epochs=6) == 6
    assert budget_epochs(max_seconds=95, elapsed=96, epochs_done=9, epoch_seconds=10, epochs=200) == 9
    assert budget_epochs(max_seconds=95, elapsed=0, epochs_done=0, epoch_seconds=0, epochs=50) == 50


def test_a_time_budget_plans_the_schedule_to_end_in_the_last_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batches, loss_fn, validate = _problem()
    calls: list[tuple[int, int, int]] = []
    real = loop.lr_factor

    def recording(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
        calls.append((step, total_steps, warmup_steps))
        return real(step, total_steps=total_steps, warmup_steps=warmup_steps, min_ratio=min_ratio)

    def slow_batches(epoch: int):
        for batch in batches(epoch):
            time.sleep(0.01)  # 4 steps: ~0.04 s per epoch
            yield batch

    monkeypatch.setattr(loop, "lr_factor", recording)
    config = TrainerConfig(epochs=1000, max_seconds=0.4, patience=1000, show_progress=False)
    history = train(
        model, batches=slow_batches, steps_per_epoch=4, loss_fn=loss_fn, validate=validate, config=config
    )
    assert history.stopped_by_time and 3 <= history.epochs_run <= 20, history.epochs_run
    # Planned for the budget, not for 1,000 epochs: the last plan is the run's length (within an epoch
    # of timing noise), and the warmup is 2% of the planned steps, not of 4,000.
    assert abs(history.planned_epochs[-1] - history.epochs_run) <= 1, (
        history.planned_epochs,
        history.epochs_run,
    )
    last_step, total, warmup = calls[-1]
    assert total <= 25 * 4 and warmup <= 2
    assert last_step >= total - 2 * 4  # the cosine had (nearly) reached its floor
    # Without a budget nothing is re-planned.
    model, batches, loss_fn, validate = _problem()
    plain = train(
        model,
        batches=batches,
        steps_per_epoch=4,
        loss_fn=loss_fn,
        validate=validate,
        config=TrainerConfig(epochs=3, show_progress=False),
    )
    assert plain.planned_epochs == [] and calls[-1][1] == 3 * 4


def test_a_budget_shorter_than_one_epoch_stops_inside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """One epoch of 400 steps at ~5 ms is 2 s; a 0.3 s budget ends the epoch after ~60 steps, plans the
    schedule for the steps that fit (not for the epoch), and validates the partial epoch."""
    model, batches, loss_fn, validate = _problem()
    calls: list[tuple[int, int]] = []
    real = loop.lr_factor

    def recording(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
        calls.append((step, total_steps))
        return real(step, total_steps=total_steps, warmup_steps=warmup_steps, min_ratio=min_ratio)

    def long_epoch(epoch: int):
        for repeat in range(100):
            for batch in batches(epoch * 100 + repeat):
                time.sleep(0.005)
                yield batch

    validated: list[int] = []

    def counting_validate() -> float:
        validated.append(1)
        return validate()

    monkeypatch.setattr(loop, "lr_factor", recording)
    config = TrainerConfig(epochs=5, max_seconds=0.3, patience=10, show_progress=False)
    history = train(
        model,
        batches=long_epoch,
        steps_per_epoch=400,
        loss_fn=loss_fn,
        validate=counting_validate,
        config=config,
    )
    assert history.stopped_by_time and history.epochs_run == 1
    assert history.partial_epoch_steps is not None and 20 <= history.partial_epoch_steps < 400
    assert len(validated) == 1 and history.best_epoch == 1
    assert history.summary()["partial_epoch_steps"] == history.partial_epoch_steps
    last_step, total = calls[-1]
    assert total < 400, "the schedule is planned for the steps the budget allows"
    assert last_step >= 0.5 * total  # most of the planned decay ran (timing noise allowed)
    # A budget that fits whole epochs leaves them whole.
    model, batches, loss_fn, validate = _problem()
    whole = train(
        model,
        batches=batches,
        steps_per_epoch=4,
        loss_fn=loss_fn,
        validate=validate,
        config=TrainerConfig(epochs=3, max_seconds=60, show_progress=False),
    )
    assert whole.partial_epoch_steps is None and whole.epochs_run == 3


def test_a_stall_at_a_high_rate_restores_the_best_weights_and_anneals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, batches, loss_fn, _ = _problem()
    scores = iter([0.1, 0.3, 0.2, 0.2, 0.25, 0.5, 0.4])  # best at epoch 2, stall for 2, anneal 2 epochs
    snapshots: list[torch.Tensor] = []

    def validate() -> float:
        snapshots.append(model[0].weight.detach().clone())
        return next(scores)

    rates: list[float] = []
    real = loop.lr_factor
    monkeypatch.setattr(
        loop, "lr_factor", lambda step, **kw: rates.append(real(step, **kw)) or real(step, **kw)
    )
    config = TrainerConfig(epochs=100, patience=2, anneal_epochs=3, min_lr_ratio=0.05, show_progress=False)
    history = train(
        model, batches=batches, steps_per_epoch=4, loss_fn=loss_fn, validate=validate, config=config
    )
    # Stalled after epoch 4 (2 epochs without beating epoch 2) with the cosine still near its peak:
    # annealed for 3 epochs (5, 6, 7), then stopped; epoch 6 is the best and its weights are kept.
    assert history.annealed_after_epoch == 4 and history.epochs_run == 7 and history.stopped_early
    assert history.best_epoch == 6
    assert torch.equal(model[0].weight, snapshots[5])
    # The cosine planned for 100 epochs had hardly decayed before the stall.
    assert rates[-1] > 0.9
    # Without annealing the same run stops at the stall.
    model, batches, loss_fn, _ = _problem()
    scores = iter([0.1, 0.3, 0.2, 0.2, 0.25, 0.5, 0.4])
    plain = train(
        model,
        batches=batches,
        steps_per_epoch=4,
        loss_fn=loss_fn,
        validate=lambda: next(scores),
        config=TrainerConfig(epochs=100, patience=2, show_progress=False),
    )
    assert plain.epochs_run == 4 and plain.annealed_after_epoch is None and plain.best_epoch == 2


def test_annealing_restarts_from_the_best_weights_and_ends_at_the_floor() -> None:
    model, batches, loss_fn, _ = _problem()
    scores = iter([0.5, 0.1, 0.1, 0.1, 0.1])
    config = TrainerConfig(epochs=100, patience=2, anneal_epochs=2, min_lr_ratio=0.05, show_progress=False)
    seen: list[float] = []

    def validate() -> float:
        seen.append(float(model[0].weight.sum()))
        return next(scores)

    lrs: list[float] = []
    original_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", step)
        history = train(
            model, batches=batches, steps_per_epoch=4, loss_fn=loss_fn, validate=validate, config=config
        )
    assert history.annealed_after_epoch == 3 and history.epochs_run == 5 and history.best_epoch == 1
    anneal = lrs[3 * 4 :]
    assert all(b <= a for a, b in itertools.pairwise(anneal))  # decays monotonically
    assert anneal[-1] < 0.2 * config.lr and anneal[0] > 0.9 * config.lr
