"""Typed configuration. Every config rejects unknown keys with an error that names the key.

Configs are pydantic models with defaults that work; load them from JSON/TOML dictionaries with
:func:`load_config`, which turns pydantic's errors into one readable message per bad field.
"""

from __future__ import annotations

import json
import math
import os
import time
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from behaviorlm.data.schema import DEFAULT_EVENT_TYPES, EVENT_COLUMNS, REQUIRED_EVENT_COLUMNS, EventVocabulary


class ConfigError(ValueError):
    """A configuration is invalid; the message names every offending key."""


class StrictConfig(BaseModel):
    """Base of all configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


MissingPolicy = Literal["quarantine", "null"] | str
"""Per-field missing-value policy: ``"quarantine"`` the row, keep ``"null"`` (optional fields only), or
``"fill:<value>"`` to substitute a constant."""

SourceFormat = Literal["csv", "tsv", "parquet", "jsonl", "recbole", "sequence", "taobao", "reviews"]


class IngestConfig(StrictConfig):
    """How to read one source into the event store.

    ``columns`` maps canonical event fields (``user_id``, ``item_id``, ``event_type``, ``timestamp``,
    ``event_id``, ``session_id``, ``value``, ``text``) to source column names. For headerless CSV the
    source columns are named ``column0``, ``column1``, ... .
    """

    format: SourceFormat = "csv"
    columns: dict[str, str] = Field(default_factory=dict)
    header: bool = True
    delimiter: str | None = None
    event_type: str | None = None
    """Constant event type for sources without an event-type column (e.g. ``"rate"`` for ratings)."""
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    event_type_aliases: dict[str, str] | None = None
    """Source spelling -> canonical type; ``None`` uses the built-in aliases (pv -> view, buy -> purchase, ...)."""
    missing: dict[str, MissingPolicy] = Field(default_factory=dict)
    timestamp_unit: Literal["s", "ms", "us"] = "s"
    min_timestamp: str = "1970-01-01"
    max_timestamp: str = "2100-01-01"
    max_text_bytes: int = Field(default=65_536, gt=0)
    max_id_bytes: int = Field(default=256, gt=0)
    pseudonymize_users: bool = False
    pseudonym_key_env: str = "BEHAVIORLM_PSEUDONYM_KEY"
    session_gap_seconds: int | None = Field(default=1800, ge=0)
    source_name: str | None = None
    """Lineage name stored with every row; defaults to the file's resolved path."""

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(EVENT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown event field(s) {unknown} in columns; fields are {list(EVENT_COLUMNS)}")
        return value

    @field_validator("missing")
    @classmethod
    def _known_policies(cls, value: dict[str, str]) -> dict[str, str]:
        for field, policy in value.items():
            if field not in EVENT_COLUMNS:
                raise ValueError(
                    f"missing-value policy for unknown field {field!r}; fields are {list(EVENT_COLUMNS)}"
                )
            if policy not in ("quarantine", "null") and not policy.startswith("fill:"):
                raise ValueError(
                    f"missing-value policy {policy!r} for {field!r} must be 'quarantine', 'null' or 'fill:<value>'"
                )
            if policy == "null" and field in REQUIRED_EVENT_COLUMNS:
                raise ValueError(f"{field!r} is required: its missing-value policy cannot be 'null'")
        return value

    @model_validator(mode="after")
    def _vocabulary_is_consistent(self) -> IngestConfig:
        vocab = self.vocabulary()
        if self.event_type is not None and self.event_type.lower() not in vocab.mapping():
            raise ValueError(
                f"event_type {self.event_type!r} is not in the event-type vocabulary {list(vocab.types)}"
            )
        return self

    def vocabulary(self) -> EventVocabulary:
        if self.event_type_aliases is None:
            base = EventVocabulary()
            aliases = {a: t for a, t in base.aliases.items() if t in self.event_types}
            return EventVocabulary(types=tuple(self.event_types), aliases=aliases)
        return EventVocabulary(types=tuple(self.event_types), aliases=dict(self.event_type_aliases))

    def missing_policy(self, field: str) -> str:
        """The explicit policy for ``field``: required fields default to quarantine, optional ones to null."""
        default = "quarantine" if field in REQUIRED_EVENT_COLUMNS else "null"
        return self.missing.get(field, default)


class LLMConfig(StrictConfig):
    """Which language model verbalizes facts, and how behaviorlm talks to it (:mod:`behaviorlm.llm.client`).

    With no ``base_url`` the embedded model runs in-process (no server, no network); with one, any
    OpenAI-compatible server (vLLM, Ollama, llama.cpp server, a hosted API) is used. The API key is read
    from the environment variable named by ``api_key_env``, never stored in a config file.
    """

    base_url: str | None = None
    """OpenAI-compatible endpoint root, e.g. ``http://localhost:8000/v1``; ``None`` = embedded model."""
    model: str = "qwen2.5-coder-0.5b-instruct"
    """Model name sent to the server, or the embedded model's name."""
    api_key_env: str = "BEHAVIORLM_LLM_API_KEY"
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    backoff_seconds: float = Field(default=0.5, ge=0)
    """First retry delay; doubled on each retry, with jitter."""
    max_concurrency: int = Field(default=4, gt=0)
    cache_dir: str | None = None
    """On-disk response cache keyed by the request's hash; ``None`` = the user cache dir, ``""`` = off."""
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=512, gt=0)
    threads: int = Field(default_factory=lambda: default_llm_threads(), gt=0)
    """Embedded model: CPU threads (default ``$BEHAVIORLM_LLM_THREADS``, else :func:`default_llm_threads`:
    2, or 1 when the machine is already busy). llama.cpp's threads wait on each other, so on an
    oversubscribed machine fewer threads are faster: a request took 18-33 s with 2 threads against
    0.2 s with 1 (SmolLM2, 16 tokens, 2 cores); an explanation 14.6 s with 2 against 12.0 s with 1
    (Qwen2.5-0.5B, 5 users, two training processes on the 2 cores)."""
    context_tokens: int = Field(default=4096, ge=4096)
    """Embedded model: context window."""
    scrub_remote: bool = True
    """Run the PII scrubber over every message sent to a remote server (defence in depth)."""


class ServiceReports(StrictConfig):
    """Population reports the service serves as they are (``/v1/reports/...``) and the dashboard draws:
    JSON files written by the library or the CLI, read again whenever the file changes. Each is optional;
    without one, its endpoint is absent."""

    effects: str | None = None
    """Causal effects of one behaviour on another, overall and by segment: ``behaviorlm effects --json``
    (:meth:`behaviorlm.causal.effects.EffectReport.to_dict`)."""
    audit: str | None = None
    """Recommendation quality by user group and popularity bias: ``behaviorlm audit --json``
    (:meth:`behaviorlm.evaluation.audit.AuditReport.to_dict`)."""
    targeting: str | None = None
    """Uplift vs propensity vs random targeting with Qini curves on held-out users
    (:meth:`behaviorlm.marketing.audience.TargetingComparison.to_dict`)."""


class ServiceConfig(StrictConfig):
    """The REST service (``behaviorlm serve``): where its data, model and keys are, and its limits."""

    store: str
    """Event store (DuckDB file) the service reads histories from and writes posted events to."""
    model: str | None = None
    """Saved sequence model (``Recommender.save`` folder) for recommendations; none: the endpoint is absent."""
    intent_model: str | None = None
    """Saved next-event-type model or sequence classifier (``behaviorlm.models.heads``) behind ``/intent``."""
    keys_file: str
    """API keys (``behaviorlm keys create``): names, scopes and SHA-256 hashes, never the keys themselves."""
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig(format="jsonl"))
    """Validation, vocabulary and pseudonymization of posted events (and of user ids in requests)."""
    max_batch_events: int = Field(default=10_000, gt=0)
    max_body_bytes: int = Field(default=16 * 2**20, gt=0)
    rate_limit_per_minute: int = Field(default=6_000, gt=0)
    """Requests per API key per minute (token bucket; bursts up to one minute's worth)."""
    max_k: int = Field(default=100, gt=0)
    quantize: bool | Literal["auto"] = "auto"
    """Serve the model's int8 / bfloat16 copy (``quantized()``): ``true`` always, ``false`` never, ``"auto"``
    when, timed at start on the store's latest users, it is at least 1.1x faster and keeps 80% of the float
    model's top 10 (:mod:`behaviorlm.serving.model_copy`; the choice is in ``/v1/health``)."""
    history_cache_users: int = Field(default=1_000_000, ge=0)
    """Users whose latest events are kept in memory (loaded at start when the store has no more users)."""
    torch_threads: int = Field(default=1, gt=0)
    """Threads per model call. Requests already run in parallel, so one thread each avoids oversubscribing
    the cores (measured on 2 cores: see docs/benchmarks.md, service section)."""
    anomaly_refresh_seconds: float = Field(default=300.0, ge=0)
    """How long ``/v1/anomalies`` and the profiles reuse the anomaly scores before scoring the store's
    users again."""
    segment_refresh_seconds: float = Field(default=3600.0, ge=0)
    """How long ``/v1/segments``, the segment map and the profiles reuse the clustering (and the profiles
    the item texts' interest topics) before segmenting the store's users (and finding the topics) again."""
    utc_offset_hours: float = 0.0
    """The users' time zone, for the night-activity feature of anomaly detection."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser; empty (the default) turns CORS off."""
    llm: LLMConfig | None = None
    """The language model for ``/v1/users/{id}/explanation/words``; ``None`` (the default) leaves that
    endpoint out. An empty ``[llm]`` table uses the embedded model."""
    reports: ServiceReports = Field(default_factory=ServiceReports)
    """Report files for ``/v1/reports/effects``, ``/audit`` and ``/targeting`` (a ``[reports]`` table)."""


ConfigT = TypeVar("ConfigT", bound=StrictConfig)


def default_llm_threads(*, cores: int | None = None, load: float | None = None) -> int:
    """Threads for the embedded language model: ``$BEHAVIORLM_LLM_THREADS`` when set; else 2 (at most the
    cores), or 1 when other processes already keep the other cores busy (``load``, in cores; default
    :func:`other_processes_busy_cores`, and ``cores`` this machine's)."""
    if os.environ.get("BEHAVIORLM_LLM_THREADS"):
        return int(os.environ["BEHAVIORLM_LLM_THREADS"])
    cores = cores or os.cpu_count() or 1
    if load is None:
        load = other_processes_busy_cores()
    wanted = min(2, cores)
    # Another core's worth of running work on top of the cores left free means the threads would share.
    return 1 if load >= cores - wanted + 1.0 else wanted


def default_torch_threads(*, cores: int | None = None, busy: float = 0.0) -> int:
    """Threads for torch training and ranking when ``busy`` cores are kept busy by other processes:
    ``$BEHAVIORLM_TORCH_THREADS`` when set; else the cores the others leave free, at least 1 (a core
    counts as taken from half a core's work: a CPU-bound process sharing 2 cores with our 2 threads
    gets only ~2/3 of one). On 2 cores with one other CPU-bound process, 2 torch threads ran an
    elementwise op 17x slower than 1 (15.5 vs 0.9 ms): each thread waits for the other."""
    if os.environ.get("BEHAVIORLM_TORCH_THREADS"):
        return int(os.environ["BEHAVIORLM_TORCH_THREADS"])
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, cores - math.floor(busy + 0.5)))


class CpuShare:
    """How many cores other processes kept busy since the last look (``/proc/stat`` less this process's
    own CPU time), measured over the work this process did in between: no sleeping sample. ``None`` where
    ``/proc/stat`` cannot be read."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        own = os.times()
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0.0), own.user + own.system

    def others_busy(self) -> float | None:
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        total, idle, own = (b - a for a, b in zip(last, now, strict=True))
        if total <= 0:
            return None
        cores = os.cpu_count() or 1
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        elapsed = total / ticks / cores
        return max(0.0, (total - idle) / total * cores - own / max(elapsed, 1e-9))


def other_processes_busy_cores(interval: float = 0.1) -> float:
    """How many cores other processes keep busy now: :class:`CpuShare` over ``interval`` seconds of sleep.
    Elsewhere (no ``/proc/stat``), the 1-minute load average.

    Not the load average alone: it trails by a minute and counts this process, so right after the demo
    trained its Transformer on both cores it said "busy" and the language model ran on one thread, at
    half speed, on an idle machine."""
    share = CpuShare()
    time.sleep(interval)
    busy = share.others_busy()
    if busy is not None:
        return busy
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 0.0


def load_config(cls: type[ConfigT], source: dict | str | Path) -> ConfigT:
    """Validate a dict (or a .json/.toml file) as ``cls``; errors name each bad key and why."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            kind = "TOML" if path.suffix == ".toml" else "JSON"
            raise ConfigError(f"config file {path} is not valid {kind}: {exc}") from None
    else:
        data = source
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(config)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {msg}")
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(problems)) from None
