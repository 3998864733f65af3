"""Torch threads follow the cores other processes leave free (training/threads.py)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from behaviorlm.config import CpuShare, default_torch_threads
from behaviorlm.training import threads as threads_module
from behaviorlm.training.threads import AdaptiveThreads


def test_the_rule_leaves_the_busy_cores_to_their_owners(monkeypatch):
    monkeypatch.delenv("BEHAVIORLM_TORCH_THREADS", raising=False)
    assert default_torch_threads(cores=2, busy=0.0) == 2
    assert default_torch_threads(cores=2, busy=0.4) == 2  # background noise keeps both threads
    # Another CPU-bound process beside our two threads gets ~2/3 of a core: that already takes one.
    assert default_torch_threads(cores=2, busy=0.65) == 1
    assert default_torch_threads(cores=2, busy=3.0) == 1  # never fewer than one
    assert default_torch_threads(cores=8, busy=2.0) == 6
    monkeypatch.setenv("BEHAVIORLM_TORCH_THREADS", "3")
    assert default_torch_threads(cores=2, busy=1.0) == 3


def test_cpu_share_reads_this_machine():
    share = CpuShare()
    sum(i * i for i in range(200_000))  # some work of our own, which must not count as others'
    busy = share.others_busy()
    assert busy is None or busy >= 0.0


class _Busy:
    """Stands in for CpuShare: other processes keep ``level[0]`` cores busy."""

    level: ClassVar[list[float]] = [0.0]

    def others_busy(self):
        return self.level[0]


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv("BEHAVIORLM_TORCH_THREADS", raising=False)
    monkeypatch.setattr(threads_module, "CpuShare", _Busy)
    monkeypatch.setattr(threads_module, "_usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "_recent", None)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threads_drop_when_another_process_is_busy_and_come_back(two_threads):
    with AdaptiveThreads(every=0.0) as threads:
        _Busy.level[0] = 1.0
        threads.step()
        assert torch.get_num_threads() == 1
        _Busy.level[0] = 0.0
        threads.step()
        assert torch.get_num_threads() == 2
        _Busy.level[0] = 1.0
        threads.step()
    assert [n for _, n in threads.changes] == [1, 2, 1]
    assert torch.get_num_threads() == 2  # restored on exit


def test_a_ranking_right_after_training_starts_on_what_training_found(two_threads):
    _Busy.level[0] = 1.0
    with AdaptiveThreads(every=0.0) as training:
        training.step()
    assert torch.get_num_threads() == 2
    with AdaptiveThreads() as ranking:  # no look of its own yet
        assert torch.get_num_threads() == 1
    assert [n for _, n in ranking.changes] == [1] and torch.get_num_threads() == 2


def test_a_callers_thread_limit_is_a_ceiling(two_threads):
    torch.set_num_threads(1)
    with AdaptiveThreads(every=0.0) as threads:
        _Busy.level[0] = 0.0
        threads.step()
        assert torch.get_num_threads() == 1 and threads.changes == []


def test_training_follows_the_free_cores_and_records_it(two_threads, monkeypatch):
    from behaviorlm.training import loop

    monkeypatch.setattr(loop, "AdaptiveThreads", lambda: AdaptiveThreads(every=0.0))
    _Busy.level[0] = 1.0
    module = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    seen = []

    def loss(batch):
        seen.append(torch.get_num_threads())
        return module(batch["x"]).pow(2).mean()

    history = loop.train(
        module,
        batches=lambda epoch: [{"x": x}, {"x": x}],
        steps_per_epoch=2,
        loss_fn=loss,
        validate=None,
        config=loop.TrainerConfig(epochs=2, show_progress=False),
    )
    # The first batch runs on the threads it found; from the first look on, one thread.
    assert seen == [2, 1, 1, 1]
    assert [n for _, n in history.thread_changes] == [1]
    assert torch.get_num_threads() == 2  # the caller's count is back
