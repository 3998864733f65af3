"""Request counters, latency histograms and event counters, exposed in the Prometheus text format by
``prometheus_client`` (one registry per service, so several apps in one process do not share series)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Latency bucket upper bounds in seconds (cumulative buckets, plus +Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RequestMetrics:
    """Request counts by (method, route, status), latency histograms by (method, route), and counts of
    posted events stored, quarantined and duplicate. Thread-safe (``prometheus_client``'s own locks)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "behaviorlm_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "behaviorlm_request_seconds",
            "Request latency.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._events = {
            name: Counter(f"behaviorlm_events_{name}", text, registry=self.registry)
            for name, text in (
                ("stored", "Posted events stored."),
                ("quarantined", "Posted events quarantined with a reason."),
                ("duplicate", "Posted events already stored (same event_id)."),
            )
        }

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method=method, route=route, status=str(status)).inc()
        self._seconds.labels(method=method, route=route).observe(seconds)

    def count_events(self, *, stored: int, quarantined: int, duplicates: int) -> None:
        for name, n in (("stored", stored), ("quarantined", quarantined), ("duplicate", duplicates)):
            if n:
                self._events[name].inc(n)

    def render(self) -> str:
        """The exposition text served at ``/metrics``."""
        return generate_latest(self.registry).decode("utf-8")
