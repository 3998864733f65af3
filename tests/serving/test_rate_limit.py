"""The per-key rate limit (``behaviorlm.serving.security.RateLimiter``, a moving window of the ``limits``
library) on a fake wall clock: bursts, the wait it reports, keys kept apart, the sustained rate and
entries expiring."""

from __future__ import annotations

import time

import pytest

from behaviorlm.serving.security import RateLimiter

START = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """``time.time`` (read by ``limits``' memory storage and by the limiter) under the test's control."""
    fake = FakeClock()
    monkeypatch.setattr(time, "time", fake)
    return fake


def test_burst_then_refused_until_the_window_passes(clock) -> None:
    limiter = RateLimiter(5)
    assert [limiter.acquire("a") for _ in range(5)] == [0.0] * 5
    wait = limiter.acquire("a")
    assert wait == pytest.approx(60.0)
    # Unlike the token bucket this replaced (one request every 60 / 5 = 12 s after a burst), the window
    # stays shut until the burst is a minute old, and the wait counts down to that moment.
    clock.now += 12.5
    assert limiter.acquire("a") == pytest.approx(47.5)
    clock.now += 47.0
    assert 0.0 < limiter.acquire("a") <= 0.5 + 1e-9
    clock.now += 0.6
    assert [limiter.acquire("a") for _ in range(5)] == [0.0] * 5
    assert 0.0 < limiter.acquire("a") <= 60.0


def test_the_wait_is_when_the_oldest_request_leaves_the_window(clock) -> None:
    limiter = RateLimiter(3)
    for step in (0.0, 10.0, 20.0):
        clock.now = START + step
        assert limiter.acquire("a") == 0.0
    clock.now = START + 30.0
    assert limiter.acquire("a") == pytest.approx(30.0)  # the request of t=0 leaves at t=60
    # At t=60 exactly the window still holds it (it is closed at its start), but it is leaving: a
    # positive wait of a millisecond, not a minute.
    clock.now = START + 60.0
    assert 0.0 < limiter.acquire("a") <= 1e-3
    clock.now = START + 60.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(9.5)  # next: the one of t=10 leaves at t=70


def test_keys_are_independent(clock) -> None:
    limiter = RateLimiter(2)
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") > 0.0
    assert [limiter.acquire("b") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("b") > 0.0
    clock.now += 61.0
    assert limiter.acquire("b") == 0.0 and limiter.acquire("a") == 0.0


def test_never_more_than_the_limit_in_any_minute(clock) -> None:
    limiter = RateLimiter(6)
    allowed = []
    for i in range(120):  # one request every 5 s for 10 minutes: twice the limit
        clock.now = START + 5.0 * i
        if limiter.acquire("a") == 0.0:
            allowed.append(clock.now)
    # 6 in each minute, but a request exactly 60 s after an allowed one is refused (the window includes
    # its start), so each later burst starts 5 s later: 57 in 10 minutes, not 60.
    assert len(allowed) == 57
    assert allowed[6] - allowed[0] == 65.0
    assert all(sum(t <= s < t + 60.0 for s in allowed) <= 6 for t in allowed)


def test_entries_leave_memory_with_the_window(clock) -> None:
    limiter = RateLimiter(100)
    for i in range(50 * 120):  # 120 requests per key, 100 allowed
        limiter.acquire(f"key{i % 50}")
    stored = limiter._storage.events
    assert sum(map(len, stored.values())) == 50 * 100
    clock.now += 61.0
    limiter.acquire("other")  # schedules the storage's sweep (a timer 10 ms later)
    deadline = time.monotonic() + 1.5
    while sum(map(len, stored.values())) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(map(len, stored.values())) == 1  # only the request of "other" is left
