"""Population reports served as they are: the JSON files the library and the CLI write (causal effects,
the bias audit, targeting with Qini curves), named in the service config's ``[reports]`` table.

The service computes none of them: they take minutes over the whole store and answer questions that do
not change per request, so they are produced offline (``behaviorlm effects --json``, ``behaviorlm audit
--json``, :meth:`behaviorlm.marketing.audience.TargetingComparison.to_dict`) and read here again whenever
the file changes. The schemas below declare the fields the dashboard draws; a report's other fields pass
through untouched. A file that is missing, not JSON, or lacks a declared field is answered 503 with a
message naming the config field and the report field, never served half.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_REPORT_BYTES = 8 * 2**20
"""Largest report file served (the reports the library writes are a few kilobytes)."""


class ReportUnavailable(Exception):
    """A configured report cannot be served; the message names the config field and the reason."""


class _Open(BaseModel):
    """A report part: the declared fields are checked, any others pass through."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------- effects
class RefutationOut(_Open):
    name: str
    passed: bool
    detail: str = ""


class EffectEstimateOut(_Open):
    method: str
    effect: float
    std_error: float | None = None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_treated: int
    refutations: list[RefutationOut] = []


class SegmentEffectOut(_Open):
    segment: str
    method: str
    effect: float
    ci_low: float | None
    ci_high: float | None
    n: int
    n_treated: int


class EffectsReport(_Open):
    """:meth:`behaviorlm.causal.effects.EffectReport.to_dict` (``behaviorlm effects --json``)."""

    treatment: str
    outcome: str
    n_users: int
    n_treated: int
    outcome_rate_treated: float | None
    outcome_rate_untreated: float | None
    estimates: list[EffectEstimateOut] = Field(min_length=1)
    segments: list[SegmentEffectOut] = []
    warnings: list[str] = []
    protocol: dict[str, Any] = {}


# ---------------------------------------------------------------------------------------------- audit
class IntervalOut(_Open):
    estimate: float | None
    low: float | None
    high: float | None


class GroupQualityOut(_Open):
    group: str
    n_users: int
    metrics: dict[str, IntervalOut]
    vs_rest: dict[str, IntervalOut] = {}
    popularity_lift: float | None = None


class GroupGapOut(_Open):
    attribute: str
    groups: list[GroupQualityOut]
    gap: dict[str, IntervalOut] = {}
    best: dict[str, str] = {}
    worst: dict[str, str] = {}
    p_value: dict[str, float | None] = {}
    small_groups: list[str] = []


class PopularityOut(_Open):
    popularity_ratio: float | None
    gini_exposure: float | None
    longtail_share: float | None
    n_head_items: int
    coverage: float | None


class AuditReport(_Open):
    """:meth:`behaviorlm.evaluation.audit.AuditReport.to_dict` (``behaviorlm audit --json``)."""

    model: str
    protocol: dict[str, Any]
    attributes_used: list[str] = []
    metrics: dict[str, float | None]
    groups: dict[str, GroupGapOut]
    popularity: PopularityOut
    mitigation: list[dict[str, Any]] = []


# ---------------------------------------------------------------------------------------------- targeting
class BudgetOut(_Open):
    budget: float
    incremental_per_1000: float | None
    true_incremental_per_1000: float | None = None


class CurveOut(_Open):
    fraction: list[float] = Field(min_length=2)
    uplift_per_1000: list[float | None]
    qini_per_1000: list[float | None]

    @model_validator(mode="after")
    def _aligned(self) -> CurveOut:
        n = len(self.fraction)
        if len(self.uplift_per_1000) != n or len(self.qini_per_1000) != n:
            raise ValueError(
                f"fraction, uplift_per_1000 and qini_per_1000 need one value per point; got {n}, "
                f"{len(self.uplift_per_1000)} and {len(self.qini_per_1000)}"
            )
        return self


class TargetingResultOut(_Open):
    name: str
    auuc: float | None
    qini: float | None
    budgets: list[BudgetOut] = []
    curve: CurveOut


class TargetingReport(_Open):
    """:meth:`behaviorlm.marketing.audience.TargetingComparison.to_dict`."""

    n_train: int
    n_test: int
    protocol: dict[str, Any] = {}
    results: list[TargetingResultOut] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------- envelopes
class _Envelope(BaseModel):
    name: str
    """The report's name in the service config (``reports.<name>``)."""
    file: str
    """The report file's name (without its folder)."""
    modified: datetime
    """When the file was last written (UTC)."""


class EffectsReportOut(_Envelope):
    report: EffectsReport


class AuditReportOut(_Envelope):
    report: AuditReport


class TargetingReportOut(_Envelope):
    report: TargetingReport


REPORTS: dict[str, tuple[type[_Open], type[_Envelope]]] = {
    "effects": (EffectsReport, EffectsReportOut),
    "audit": (AuditReport, AuditReportOut),
    "targeting": (TargetingReport, TargetingReportOut),
}
"""Report name (the ``[reports]`` key and the path under ``/v1/reports/``) -> its schema and answer."""


class ReportFile:
    """One configured report file, parsed and checked again whenever its modification time, size or inode
    changes (a report rewritten in place is picked up at the next request)."""

    def __init__(self, name: str, path: str | Path) -> None:
        if name not in REPORTS:
            raise ValueError(f"unknown report {name!r}; reports are {list(REPORTS)}")
        self.name = name
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], _Envelope] | None = None

    def load(self) -> _Envelope:
        """The report with its file name and modification time; :class:`ReportUnavailable` naming
        ``reports.<name>`` and the reason when it cannot be served."""
        where = f"reports.{self.name} ({self.path.name})"
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise ReportUnavailable(f"{where}: cannot read the file: {exc.strerror or exc}") from None
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if self._cached is not None and self._cached[0] == signature:
                return self._cached[1]
            if stat.st_size > MAX_REPORT_BYTES:
                raise ReportUnavailable(
                    f"{where}: the file has {stat.st_size:,} bytes, over the limit of {MAX_REPORT_BYTES:,}"
                )
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ReportUnavailable(f"{where}: cannot read the file: {exc}") from None
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ReportUnavailable(f"{where}: not valid JSON: {exc}") from None
            schema, envelope = REPORTS[self.name]
            try:
                report = schema.model_validate(_finite(data))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(report)'}: {err['msg']}"
                    for err in exc.errors()[:5]
                )
                raise ReportUnavailable(f"{where}: not a {self.name} report: {problems}") from None
            answer = envelope(
                name=self.name,
                file=self.path.name,
                modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                report=report,
            )
            self._cached = (signature, answer)
            return answer


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (which Python's JSON reader accepts and the library's reports can
    hold, e.g. an undefined interval) made null: strict JSON cannot carry them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
