"""Torch threads that follow the cores other processes leave free, during training and ranking.

On a 2-core machine, two torch threads beside one other CPU-bound process ran ~4x slower than one
thread alone (each parallel op waits for the thread that lost its core; measured in issue 24:
421 vs 115 s per epoch). :class:`AdaptiveThreads` looks every ``every`` seconds at how busy the
other processes kept the cores (:class:`behaviorlm.config.CpuShare`, measured over the work just
done, no sleeping sample) and sets ``torch.set_num_threads`` to the cores left free
(:func:`behaviorlm.config.default_torch_threads`), never above the thread count it started with, so a
caller's ``torch.set_num_threads(1)`` or ``OMP_NUM_THREADS`` still bounds it. The count it started with
is restored on exit.
"""

from __future__ import annotations

import os
import time

import torch

from behaviorlm.config import CpuShare, default_torch_threads

_RECENT_SECONDS = 10.0
_recent: tuple[float, int] | None = None
"""(when, threads) of the latest look by any :class:`AdaptiveThreads`: a ranking right after training
starts on the count training found instead of waiting for its own first look (a short ranking may end
before it)."""


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class AdaptiveThreads:
    """``with AdaptiveThreads() as threads:`` ... ``threads.step()`` between batches."""

    def __init__(self, *, every: float = 0.5) -> None:
        self.every = every
        self.changes: list[tuple[float, int]] = []
        """(seconds since start, threads) at every change, for logs and benchmarks."""

    def __enter__(self) -> AdaptiveThreads:
        self._before = torch.get_num_threads()
        self._started = self._last = time.perf_counter()
        self._share = CpuShare()
        if _recent is not None and self._started - _recent[0] < _RECENT_SECONDS:
            self._set(min(self._before, _recent[1]))
        return self

    def _set(self, wanted: int) -> None:
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
            self.changes.append((time.perf_counter() - self._started, wanted))

    def step(self) -> None:
        """Look again if ``every`` seconds have passed since the last look; cheap otherwise."""
        now = time.perf_counter()
        if now - self._last < self.every:
            return
        self._last = now
        busy = self._share.others_busy()
        if busy is None:
            return
        global _recent
        wanted = default_torch_threads(cores=_usable_cores(), busy=busy)
        _recent = (now, wanted)
        self._set(min(self._before, wanted))

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self._before:
            torch.set_num_threads(self._before)
