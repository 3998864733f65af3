"""API keys with scopes (stored hashed) and a per-key rate limit.

A key is shown once, when it is created; the keys file keeps only its SHA-256, its name and its
scopes (``read``: recommendations and other GET endpoints; ``write``: posting events; ``admin``:
reloading the model). Keys are 32 random bytes, so a plain SHA-256 is enough (no password stretching
is needed for high-entropy secrets), and comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("read", "write", "admin")


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
    entries = json.loads(path.read_text()) if path.exists() else []
    if any(entry["name"] == name for entry in entries):
        raise ValueError(f"a key named {name!r} already exists in {path}")
    secret = "blm_" + secrets.token_urlsafe(32)
    entries.append({"name": name, "scopes": sorted(set(scopes)), "sha256": hash_key(secret)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return secret


class KeyRing:
    """The keys of a keys file, looked up by secret."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_hash = {key.sha256: key for key in keys}

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"keys file {path} does not exist; create a key with `behaviorlm keys create`"
            )
        try:
            entries = json.loads(path.read_text())
            keys = [ApiKey(name=e["name"], scopes=tuple(e["scopes"]), sha256=e["sha256"]) for e in entries]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"keys file {path} is not a list of {{name, scopes, sha256}} objects: {exc}"
            ) from None
        return cls(keys)

    def lookup(self, secret: str) -> ApiKey | None:
        digest = hash_key(secret)
        for stored, key in self._by_hash.items():
            if hmac.compare_digest(stored, digest):
                return key
        return None


class RateLimiter:
    """Token bucket per key: ``per_minute`` tokens refilled continuously, bursts up to ``per_minute``."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take a token for ``key``; returns 0 if allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
