"""Keyed pseudonyms for user ids: the raw id is never stored.

A pseudonym is ``u_`` + HMAC-SHA256(key, raw id) truncated to 80 bits, with the key read from the
environment variable :class:`~behaviorlm.config.IngestConfig` names. Used by ingest (the events and the
RecBole users table), the Spark engine (same key, same pseudonyms) and the service (looking a user up by
the id its caller knows).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pyarrow as pa

from behaviorlm.config import IngestConfig
from behaviorlm.data.ingest_run import IngestError, IngestRun


def pseudonymize_user_id(raw_id: str, *, config: IngestConfig) -> str:
    """The id under which ``raw_id`` is stored: its keyed pseudonym when ``config.pseudonymize_users``,
    else ``raw_id`` itself. Lets a service look up a user by the id its caller knows."""
    if not config.pseudonymize_users:
        return raw_id
    return pseudonym(pseudonym_key_from(config), raw_id)


def pseudonym_key_from(config: IngestConfig) -> bytes:
    """The pseudonym key from the environment variable ``config`` names (the Spark engine reads it too)."""
    key = os.environ.get(config.pseudonym_key_env)
    if not key:
        raise IngestError(
            f"pseudonymize_users is on but the environment variable {config.pseudonym_key_env} is not set; "
            "set it to a secret key (keep it: the same key gives the same pseudonyms)"
        )
    return key.encode("utf-8")


def pseudonym(key: bytes, raw_id: str) -> str:
    """Keyed pseudonym: ``u_`` + the first 20 hex digits (80 bits) of HMAC-SHA256(key, raw id)."""
    return "u_" + hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


def pseudonymize_checked(run: IngestRun, checked: str) -> None:
    """Replace raw user ids by keyed pseudonyms (computed once per distinct id), then derive event ids."""
    store = run.store
    key = pseudonym_key_from(run.config)
    raw_users = (
        store.arrow(f"SELECT DISTINCT user_id FROM {checked} WHERE user_id IS NOT NULL").column(0).to_pylist()
    )
    mapping = run.register(
        "pseudo",
        pa.table(
            {
                "raw": pa.array(raw_users, type=pa.string()),
                "pseudo": pa.array([pseudonym(key, u) for u in raw_users], type=pa.string()),
            }
        ),
    )
    store.execute(f"UPDATE {checked} SET user_id = m.pseudo FROM {mapping} m WHERE {checked}.user_id = m.raw")
    key_sql = (
        "md5(concat_ws(chr(31), user_id, item_id, event_type, epoch_us(timestamp)::VARCHAR, "
        "coalesce(value::VARCHAR, ''), coalesce(text, '')))"
    )
    store.execute(f"UPDATE {checked} SET event_id = coalesce(event_id, {key_sql}) WHERE reason IS NULL")
