"""The latest events of one user as a model reads them: the one place that decides the window.

Every interface that answers for a single user from the event store — ``behaviorlm explain``, the REST
service's recommendations and explanations, the language model's facts and tools, profiles — reads the
user's history through these functions, so that all of them see the same events:

* :func:`read_window`: how many of the latest stored events are read, ``max_len + 1``. A sequence model
  reads its last ``max_len`` events; one more is read so that deleting an event of the window lets the
  older one in, as it would for the model (what :func:`behaviorlm.causal.influence.deletion_influence`
  expects). Models given more than ``max_len`` events read the last ``max_len`` (``SequenceTensors``).
* :func:`latest_events`: those events from the store, oldest first.
* :func:`model_history`: those events in the model's index space; events on items or event types the model
  has never seen are left out (and listed), never an error, so a store that has grown new event types
  since training still gets answers.

Full-population paths (training, evaluation, the anomaly detector's surprisal) read windows of the same
length through :class:`behaviorlm.data.sequences.SequenceTensors` and do not go through this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from behaviorlm.data.store import EventStore
    from behaviorlm.models.sequential import EventHistory

Events = dict[str, list[Any]]
"""What :meth:`EventStore.user_events` returns: ``item_id``, ``event_type``, ``timestamp`` lists (and with
``details`` ``event_id``, ``value``, ``text``), oldest first."""


class ReadsHistory(Protocol):
    """A model that reads a user's latest events: sequence recommenders and the task heads."""

    max_len: int

    def history_from_events(
        self,
        item_ids: Sequence[str],
        *,
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[int] | None = None,
        unknown_event_types: str = "error",
    ) -> EventHistory: ...


def read_window(model: ReadsHistory) -> int:
    """How many of a user's latest events are read for ``model``: its ``max_len`` plus one."""
    return int(model.max_len) + 1


def last_events(events: Events, n: int) -> Events:
    """The last ``n`` events of ``events`` (every list cut alike)."""
    return {key: values[max(len(values) - n, 0) :] for key, values in events.items()}


def latest_events(
    store: EventStore,
    user_id: str,
    *models: ReadsHistory | None,
    at_least: int = 0,
    details: bool = False,
) -> Events:
    """User ``user_id``'s latest events, oldest first, in one store query: as many as the longest
    :func:`read_window` of ``models`` (``None`` entries are skipped), and at least ``at_least``."""
    n = max([at_least] + [read_window(model) for model in models if model is not None])
    return store.user_events(user_id, limit=n, details=details)


def model_history(model: ReadsHistory, events: Events) -> EventHistory:
    """The last :func:`read_window` of ``events`` in ``model``'s index space, as user 0; events on unknown
    items or event types are left out and listed in the result."""
    window = last_events(events, read_window(model))
    return model.history_from_events(
        window["item_id"],
        event_types=window["event_type"],
        timestamps=window["timestamp"],
        unknown_event_types="skip",
    )
