"""Request counters and latency histograms in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Latency bucket upper bounds in seconds (Prometheus convention: cumulative, plus +Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RequestMetrics:
    """Thread-safe request counts by (method, route, status) and latency histograms by route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self.events_stored = 0
        self.events_quarantined = 0
        self.events_duplicate = 0

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[(method, route, status)] += 1
            self._buckets[(method, route)][bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sums[(method, route)] += seconds

    def count_events(self, *, stored: int, quarantined: int, duplicates: int) -> None:
        with self._lock:
            self.events_stored += stored
            self.events_quarantined += quarantined
            self.events_duplicate += duplicates

    def render(self) -> str:
        """The exposition text served at ``/metrics``."""
        lines = [
            "# HELP behaviorlm_requests_total HTTP requests by method, route and status.",
            "# TYPE behaviorlm_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._counts.items()):
                lines.append(
                    f'behaviorlm_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP behaviorlm_request_seconds Request latency.",
                "# TYPE behaviorlm_request_seconds histogram",
            ]
            for (method, route), counts in sorted(self._buckets.items()):
                labels = f'method="{method}",route="{route}"'
                cumulative = 0
                for bound, n in zip((*BUCKETS, "+Inf"), counts, strict=True):
                    cumulative += n
                    lines.append(f'behaviorlm_request_seconds_bucket{{{labels},le="{bound}"}} {cumulative}')
                lines.append(f"behaviorlm_request_seconds_sum{{{labels}}} {self._sums[(method, route)]:.6f}")
                lines.append(f"behaviorlm_request_seconds_count{{{labels}}} {cumulative}")
            for name, value, help_text in (
                ("events_stored", self.events_stored, "Posted events stored."),
                ("events_quarantined", self.events_quarantined, "Posted events quarantined with a reason."),
                ("events_duplicate", self.events_duplicate, "Posted events already stored (same event_id)."),
            ):
                lines += [
                    f"# HELP behaviorlm_{name}_total {help_text}",
                    f"# TYPE behaviorlm_{name}_total counter",
                    f"behaviorlm_{name}_total {value}",
                ]
        return "\n".join(lines) + "\n"
