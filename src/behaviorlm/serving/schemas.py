"""The REST service's request and response bodies (pydantic): what each endpoint accepts and returns, with
the limits a request is checked against before any handler runs. The OpenAPI schema at ``/openapi.json`` is
generated from these classes."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ID = 256


# ---------------------------------------------------------------------------------------------- schemas
class EventIn(BaseModel):
    """One behaviour event. ``timestamp``: ISO-8601 (naive = UTC) or unix seconds."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=MAX_ID)
    item_id: str = Field(min_length=1, max_length=MAX_ID)
    event_type: str = Field(min_length=1, max_length=64, examples=["view"])
    timestamp: datetime | float
    event_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    """Makes re-sending safe: an event whose id is already stored is counted as a duplicate."""
    session_id: str | None = Field(default=None, max_length=MAX_ID)
    value: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    text: str | None = Field(default=None, max_length=65_536)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # JSON true would otherwise pass as 1.0 seconds after the epoch.
        if isinstance(value, bool):
            raise ValueError("must be an ISO-8601 time or unix seconds, not a boolean")
        return value

    @field_validator("timestamp")
    @classmethod
    def _in_utc(cls, value: datetime | float) -> datetime | float:
        """A time in UTC (naive = UTC): its offset may push it outside Python's years 1-9999."""
        if isinstance(value, datetime):
            try:
                return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
            except OverflowError:
                raise ValueError(f"{value.isoformat()} is out of range in UTC (years 1-9999)") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number of unix seconds")
        return value

    def record(self) -> dict[str, Any]:
        data = self.model_dump()
        ts = self.timestamp
        data["timestamp"] = ts.isoformat() if isinstance(ts, datetime) else repr(float(ts))
        return data


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class QuarantinedEvent(BaseModel):
    index: int
    """0-based position in the posted batch."""
    reason: str


class IngestResult(BaseModel):
    received: int
    stored: int
    duplicates: int
    quarantined: int
    quarantine: list[QuarantinedEvent]


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None = None
    """The item's title in the store's catalogue (``items``); None when it has none."""
    category: str | None = None
    brand: str | None = None
    score: float


class Recommendations(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    history_events: int
    """Events of the user the model read (its most recent ones, up to the model's window)."""
    skipped_events: int
    """History events the model cannot read (items or event types it was not trained on)."""
    model: str


class StoredEvent(BaseModel):
    item_id: str
    title: str | None = None
    """The item's title in the store's catalogue (``items``); None when it has none."""
    category: str | None = None
    brand: str | None = None
    event_type: str
    timestamp: datetime


class UserEvents(BaseModel):
    user_id: str
    events: list[StoredEvent]
    """Oldest first; the user's last ``limit`` events."""


class SupportingEvent(BaseModel):
    item_id: str
    title: str | None = None
    """The item's title in the store's catalogue (``items``); None when it has none."""
    category: str | None = None
    brand: str | None = None
    event_type: str
    time: datetime
    events_ago: int
    """1 = the user's latest event."""
    effect: float
    """How much the recommended item's log-probability falls without this event (nats)."""


class Explanation(BaseModel):
    user_id: str
    item_id: str
    """The user's top recommendation, which the events below explain."""
    title: str | None = None
    """The item's title in the store's catalogue (``items``); None when it has none."""
    category: str | None = None
    brand: str | None = None
    log_probability: float
    because: list[SupportingEvent]
    method: str


class ClaimVerdict(BaseModel):
    fact: str
    field: str
    value: str
    status: str
    reason: str = ""


class CitedFact(BaseModel):
    id: str
    text: str


class IntentInWords(BaseModel):
    user_id: str
    intent: str
    confidence: float
    text: str
    """Sentences rendered from the model's claims after each was checked against its fact (a wrong value
    is corrected from the fact, an invented one dropped; ``source = "fallback"`` when none held)."""
    evidence: list[CitedFact]
    claims: list[ClaimVerdict] = []
    """Every claim the model made, with its verdict: ``verified``, ``corrected`` or ``dropped``."""
    grounded: bool
    first_try_grounded: bool
    """Whether every claim the model made was true as made."""
    source: str
    latency_s: float
    llm: str


class QuestionIn(BaseModel):
    question: str = Field(min_length=1, max_length=500)


class ToolCallOut(BaseModel):
    tool: str
    arguments: dict[str, Any] = {}
    result: Any = None
    error: str | None = None


class AnswerOut(BaseModel):
    user_id: str
    question: str
    answer: str
    """Written from the results of the tools the model called (never the model's own words)."""
    source: str
    """``tools``, ``refused`` (no tool answers it) or ``personal`` (refused before any model saw it)."""
    calls: list[ToolCallOut]
    latency_s: float
    llm: str


class IntentReason(BaseModel):
    feature: str
    label: str
    """The feature in words, e.g. ``cart events in the last 3 h``."""
    value: float
    log_odds: float
    """This feature's share of the purchase log-odds against the average training user (positive: more
    likely to buy)."""


class Intent(BaseModel):
    user_id: str
    model: str
    """``next_event_type`` (what the user does next: view, cart, purchase, ...), ``sequence_classifier`` or
    ``purchase_propensity`` (will the user buy within a day)."""
    probabilities: dict[str, float]
    """Class -> probability, most likely first."""
    history_events: int
    reasons: list[IntentReason] = []
    """``purchase_propensity``: the features that move its answer most, strongest first (empty otherwise)."""


class AnomalyReasonOut(BaseModel):
    feature: str
    value: float
    typical: float
    """The feature's median over all users."""
    iqr_units: float
    typical_low: float
    """The feature's 25th percentile over all users: with ``typical_high``, the middle half of users."""
    typical_high: float
    """The feature's 75th percentile over all users."""


class AnomalousUser(BaseModel):
    user_id: str
    """As stored (a pseudonym when the store pseudonymizes users)."""
    score: float
    events: int
    reasons: list[AnomalyReasonOut]


class Anomalies(BaseModel):
    users: list[AnomalousUser]
    scored_users: int
    computed_at: datetime


class SegmentOut(BaseModel):
    segment: int
    users: int
    share: float
    median_recency_days: float
    median_events: float
    conversion_rate: float | None
    top_attributes: list[tuple[str, float]]
    """Item attributes over-represented in the segment's events, with their lift."""


class Segments(BaseModel):
    method: str
    silhouette: float
    segments: list[SegmentOut]
    computed_at: datetime


class ProfileEvent(BaseModel):
    item_id: str
    title: str
    """Empty when the store has no title for the item."""
    event_type: str
    time: datetime


class Interest(BaseModel):
    topic: int
    keywords: str
    """The topic's most distinctive words (c-TF-IDF over the item texts)."""
    share: float
    """The user's share of interest in the topic (over all topics: 1)."""


class ProfileNextItem(BaseModel):
    item_id: str
    title: str
    score: float


class Profile(BaseModel):
    user_id: str
    events: int
    events_by_type: dict[str, int]
    first_event: datetime
    last_event: datetime
    active_days: int
    """Distinct UTC days with an event."""
    recent_items: list[ProfileEvent]
    """The latest events, newest first."""
    interests: list[Interest]
    """The top interest topics; empty when the store's items have no texts."""
    anomaly_percentile: float | None
    """Share of users whose behaviour is less anomalous (0.99: more than 99% of users); None for a user
    who arrived after the anomaly scores were computed."""
    anomaly_reasons: list[AnomalyReasonOut]
    segment: int | None
    """The behaviour segment of ``/v1/segments``; None without a model or for a user who arrived after the
    segments were computed."""
    next_items: list[ProfileNextItem]
    """The model's likely next items (none without a model)."""


class ActivityDay(BaseModel):
    day: date
    """A UTC day with events of the user."""
    events: int
    by_type: dict[str, int]
    """Events of the day per event type."""


class UserActivity(BaseModel):
    user_id: str
    events: int
    """All the user's stored events."""
    event_types: dict[str, int]
    """Events per type over all days, most frequent first."""
    days: list[ActivityDay]
    """Days with events, oldest first (days without events are not listed)."""


class Health(BaseModel):
    status: str
    version: str
    model_loaded: bool
    explanations_in_words: bool = False
    """Whether ``/v1/users/{id}/explanation/words`` is served (a language model is configured)."""
    reports: list[str] = []
    """The population reports served under ``/v1/reports/`` (``effects``, ``audit``, ``targeting``)."""
    intent_model: str | None = None
    """The intent model's name (``purchase_propensity``, ...) when ``/v1/users/{id}/intent`` is served."""
    serving_copy: dict[str, Any] | None = None
    """Which copy of the model is served (``quantized``) and why, with the start-up timings when
    ``quantize = "auto"`` (``float_ms``, ``quantized_ms``: median ms per call; ``top10_agreement``)."""


# ---------------------------------------------------------------------------------------------- state
