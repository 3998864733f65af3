"""API keys with scopes (stored hashed), a per-key rate limit and a per-address throttle on failed
authentications.

A key is shown once, when it is created; the keys file keeps only its SHA-256, its name and its
scopes (``read``: recommendations and other GET endpoints; ``write``: posting events; ``admin``:
reloading the model). Keys are 32 random bytes, so a plain SHA-256 is enough (no password stretching
is needed for high-entropy secrets), and comparison is constant-time.

A running service sees changes to the keys file at the next request (:class:`KeyRing` compares the
file's modification time, size and inode on every lookup, a ``stat`` call): a key revoked with
``behaviorlm keys revoke`` is refused at once, without a restart. A keys file that disappears or no
longer parses revokes every key until it is fixed (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

SCOPES = ("read", "write", "admin")

AUTH_FAILURES_PER_WINDOW = 20
"""Failed authentications (missing or wrong key) one client address may make per window before its
requests are answered 429 until the oldest failure leaves the window."""
AUTH_FAILURE_WINDOW_SECONDS = 60.0

log = logging.getLogger("behaviorlm.serving")


@dataclass(frozen=True)
class ApiKey:
    """One stored key: its name (shown in logs), scopes and the hex SHA-256 of the secret."""

    name: str
    scopes: tuple[str, ...]
    sha256: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(path: str | Path, *, name: str, scopes: list[str]) -> str:
    """Add a new key to the keys file ``path`` (created if absent) and return the secret (shown once)."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}")
    path = Path(path)
    entries = [asdict(key) for key in _read_keys(path)] if path.exists() else []
    if any(entry["name"] == name for entry in entries):
        raise ValueError(f"a key named {name!r} already exists in {path}")
    secret = "blm_" + secrets.token_urlsafe(32)
    entries.append({"name": name, "scopes": sorted(set(scopes)), "sha256": hash_key(secret)})
    _write_keys(path, entries)
    return secret


def revoke_key(path: str | Path, *, name: str) -> ApiKey:
    """Remove the key ``name`` from the keys file ``path`` and return it; a running service refuses it
    from its next request on."""
    path = Path(path)
    keys = list_keys(path)
    revoked = next((key for key in keys if key.name == name), None)
    if revoked is None:
        raise ValueError(f"no key named {name!r} in {path}; keys: {[key.name for key in keys]}")
    _write_keys(path, [asdict(key) for key in keys if key.name != name])
    return revoked


def list_keys(path: str | Path) -> list[ApiKey]:
    """The keys of the keys file ``path`` (names, scopes and hashes; the keys themselves are never stored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"keys file {path} does not exist; create a key with `behaviorlm keys create`"
        )
    return _read_keys(path)


def _read_keys(path: Path) -> list[ApiKey]:
    try:
        entries = json.loads(path.read_text())
        return [ApiKey(name=e["name"], scopes=tuple(e["scopes"]), sha256=e["sha256"]) for e in entries]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"keys file {path} is not a list of {{name, scopes, sha256}} objects: {exc}"
        ) from None


def _write_keys(path: Path, entries: list[dict]) -> None:
    """Replace the keys file atomically (a service reading it never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


class KeyRing:
    """The keys of a keys file, looked up by secret; re-read when the file changes (see the module doc)."""

    def __init__(self, keys: list[ApiKey], *, path: Path | None = None) -> None:
        self._by_hash = {key.sha256: key for key in keys}
        self._path = path
        self._signature = _file_signature(path) if path is not None else None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        """The keys of ``path``, watched for changes."""
        return cls(list_keys(path), path=Path(path))

    def lookup(self, secret: str) -> ApiKey | None:
        self._refresh()
        digest = hash_key(secret)
        for stored, key in self._by_hash.items():
            if hmac.compare_digest(stored, digest):
                return key
        return None

    def _refresh(self) -> None:
        if self._path is None:
            return
        signature = _file_signature(self._path)
        if signature == self._signature:
            return
        with self._lock:
            if signature == self._signature:
                return
            try:
                keys = _read_keys(self._path) if signature is not None else []
            except (OSError, ValueError) as exc:
                log.error(
                    "keys file changed and cannot be read; every key is refused until it is fixed: %s", exc
                )
                keys = []
            else:
                if signature is None:
                    log.error("keys file %s is gone; every key is refused until it is back", self._path)
                else:
                    log.info("keys file %s changed: %d keys", self._path, len(keys))
            self._by_hash = {key.sha256: key for key in keys}
            self._signature = signature


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is edited or replaced: modification time, size, inode (None: absent)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class RateLimiter:
    """At most ``per_minute`` requests per key in any 60 s (bursts up to ``per_minute``), through the
    ``limits`` library: :class:`limits.strategies.MovingWindowRateLimiter` over its in-process
    :class:`limits.storage.MemoryStorage`.

    The moving window is the strategy that says exactly "N requests per minute": a request is refused
    while the key already has ``per_minute`` requests in the last 60 s, and the wait it is told is when
    the oldest of them leaves the window (exact, at most 60 s). This replaces a hand-written token
    bucket (capacity ``per_minute``, refilled at ``per_minute / 60`` per second) with the same sustained
    rate and the same burst, but stricter after a burst: the bucket let one request through every
    ``60 / per_minute`` s straight after a burst (up to twice ``per_minute`` in the first minute), the
    window lets the next one through when the burst is a minute old. Measured on a fake clock with a
    limit of 6 and a request every 5 s for 10 minutes: the bucket allowed 65 (11 in the first minute),
    the window allows 57 (6 in every minute; a request exactly 60 s after an allowed one is still
    refused, so each later burst starts 5 s later); tests/serving/test_rate_limit.py pins the window's
    numbers. ``limits``' fixed window allows twice the limit across a window boundary and its
    sliding-window counter approximates the previous window's count, so neither was chosen.

    Memory (limits 5.8, measured with tracemalloc): one entry per allowed request still in the window,
    so at most ``per_minute`` per key (0.9 MB for a key at the default 6,000 per minute), about 430 B
    for a key with one request. The storage's background sweep (a timer that runs 10 ms after any
    request) drops the entries that left the window, but keeps an empty list per key ever seen (about
    260 B each). Keys are API key names from the keys file, so that remainder is bounded by the number
    of keys the process has served. Timestamps come from the wall clock (``time.time``), as in
    ``limits``.
    """

    def __init__(self, per_minute: int) -> None:
        # Imported here: the key commands (`behaviorlm keys ...`) use this module without the serve extra.
        from limits import RateLimitItemPerMinute
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self.item = RateLimitItemPerMinute(per_minute)
        self._storage = MemoryStorage()
        self._window = MovingWindowRateLimiter(self._storage)

    def acquire(self, key: str) -> float:
        """Count a request of ``key``; returns 0 if allowed, else the seconds until one would be."""
        if self._window.hit(self.item, key):
            return 0.0
        reset, remaining = self._window.get_window_stats(self.item, key)
        if remaining > 0:  # an entry left the window between the two calls: retry straight away
            return _MIN_WAIT
        return max(reset - time.time(), _MIN_WAIT)


_MIN_WAIT = 1e-3
"""The shortest wait :meth:`RateLimiter.acquire` reports for a refused request (0 means allowed)."""


class AuthFailureThrottle:
    """Sliding window of failed authentications per client address.

    After ``max_failures`` failures within ``window_seconds``, :meth:`blocked_for` tells how long the
    address must wait (until its oldest failure leaves the window), whatever key it sends meanwhile.
    Keys are 256-bit, so guessing one is hopeless anyway; the throttle keeps scanners from flooding the
    service and its logs. Memory is bounded: at most ``max_addresses`` addresses are tracked (the
    longest-tracked are forgotten first).
    """

    def __init__(
        self,
        *,
        max_failures: int = AUTH_FAILURES_PER_WINDOW,
        window_seconds: float = AUTH_FAILURE_WINDOW_SECONDS,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, address: str) -> float:
        """Seconds ``address`` must wait before its next attempt (0: not blocked)."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return 0.0
            self._expire(times, now)
            if not times:
                del self._failures[address]
                return 0.0
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[0] + self.window_seconds - now)

    def failed(self, address: str) -> None:
        """Record a failed authentication from ``address``."""
        now = self._clock()
        with self._lock:
            times = self._failures.pop(address, None) or deque()
            self._expire(times, now)
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()
            self._failures[address] = times  # re-inserted: the dict stays ordered by last failure
            while len(self._failures) > self.max_addresses:
                del self._failures[next(iter(self._failures))]

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
