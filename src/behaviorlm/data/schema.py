"""The canonical schema of behaviorlm's event store.

Three tables hold what a platform knows about behaviour:

* ``events(event_id, user_id, item_id, event_type, timestamp, session_id, value, text, source, source_row)``
  -- one row per behaviour; ``timestamp`` is UTC. ``source``/``source_row`` keep lineage so that any
  stored event can be traced back to the file and row it came from.
* ``items(item_id, title, category, brand, attributes, text)`` -- ``attributes`` is a JSON object.
* ``users(user_id, attributes)`` -- ``attributes`` is a JSON object.

Bad rows are never dropped: they go to ``quarantine(source, source_row, reason, raw)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "cart",
    "fav",
    "purchase",
    "search",
    "review",
    "rate",
)
"""The default event-type vocabulary. Sources map their own names onto these (e.g. Taobao ``pv`` -> ``view``)."""

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "timestamp",
    "session_id",
    "value",
    "text",
)
"""Columns a source may supply for an event (lineage columns are added by ingest)."""

REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_type", "timestamp")

ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "category", "brand", "attributes", "text")
USER_COLUMNS: tuple[str, ...] = ("user_id", "attributes")


@dataclass(frozen=True, kw_only=True)
class EventVocabulary:
    """The configurable set of event types, plus aliases that map source names onto them.

    ``aliases`` maps a source's spelling (case-insensitive) to a canonical type, e.g. ``{"pv": "view",
    "buy": "purchase"}``. An event whose type is neither a type nor an alias is quarantined.
    """

    types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    aliases: dict[str, str] = field(
        default_factory=lambda: {
            "pv": "view",
            "buy": "purchase",
            "order": "purchase",
            "add_to_cart": "cart",
            "addtocart": "cart",
            "favorite": "fav",
            "favourite": "fav",
            "like": "fav",
            "rating": "rate",
            "transaction": "purchase",
        }
    )

    def __post_init__(self) -> None:
        if not self.types:
            raise ValueError("event vocabulary needs at least one event type")
        if len(set(self.types)) != len(self.types):
            raise ValueError(f"event vocabulary has duplicate types: {list(self.types)}")
        for alias, target in self.aliases.items():
            if target not in self.types:
                raise ValueError(
                    f"event-type alias {alias!r} points to {target!r}, which is not in the vocabulary "
                    f"{list(self.types)}"
                )

    def mapping(self) -> dict[str, str]:
        """Lower-cased source spelling -> canonical type, covering the types themselves and the aliases."""
        out = {t.lower(): t for t in self.types}
        out.update({a.lower(): t for a, t in self.aliases.items() if t in self.types})
        return out
