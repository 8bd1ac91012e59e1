"""The API's Prometheus metrics: requests by route × method × status, latency histograms, served at its own
``/metrics`` with each query's Kafka backlog (from its checkpoint: known even while the stream is stopped)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

API_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiMetrics:
    """One registry per application (tests start several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "surveil_api_requests",
            "Requests answered, by route (its template, never the values in it), method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "surveil_api_request_duration_seconds",
            "Time to answer a request (to the first byte of a streamed answer)",
            ["route", "method"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def middleware(self, request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            # The route's template (/v1/alerts/{alert_id}): bounded, unlike the paths clients send.
            template = getattr(route, "path", None) or "unmatched"
            if template != "/metrics":
                self.requests.labels(template, request.method, str(status)).inc()
                self.seconds.labels(template, request.method).observe(time.perf_counter() - started)


class BacklogCollector(Collector):
    """``surveil_checkpoint_lag_records{query, topic, partition}``: the topic's end offsets minus each
    query's last committed offsets (its checkpoint), as the API sees them. Unlike the stream's own
    ``surveil_kafka_consumer_lag_records`` it is known while the stream is stopped."""

    def __init__(self, backlog: Callable[[], dict[str, dict[int, int]]], topic: str) -> None:
        self._backlog = backlog
        self._topic = topic

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "surveil_checkpoint_lag_records",
            "Records in the topic beyond a query's last committed batch (end offset - checkpoint offset)",
            labels=["query", "topic", "partition"],
        )
        try:
            lags = self._backlog()
        except Exception:  # Kafka unreachable: no figure rather than a failed scrape
            lags = {}
        for query, partitions in lags.items():
            for partition, lag in partitions.items():
                family.add_metric([query, self._topic, str(partition)], lag)
        return [family]


class DriftCollector(Collector):
    """The last drift check (``drift_results``, read with delta-rs at most every ``refresh_s``):
    ``surveil_drift_detected`` (1 when it found drift), ``surveil_feature_drift_score{feature}``, and when
    it ran. Nothing before the first check."""

    def __init__(self, location: str, refresh_s: float = 10.0) -> None:
        self._location = location
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict[str, Any]]] | None = None

    def _last_run(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._refresh_s:
                return self._cached[1]
            rows: list[dict[str, Any]] = []
            try:
                from deltalake import DeltaTable

                table = DeltaTable(self._location).to_pyarrow_table(
                    columns=["run_id", "run_at", "feature", "score", "run_drift_detected"]
                )
                if table.num_rows:
                    import pyarrow.compute as pc

                    last = table.filter(pc.equal(table["run_at"], pc.max(table["run_at"])))
                    rows = last.to_pylist()
            except Exception:  # no check yet (no table), or unreadable: no figures
                rows = []
            self._cached = (time.monotonic(), rows)
            return rows

    def collect(self) -> Iterable[GaugeMetricFamily]:
        rows = self._last_run()
        if not rows:
            return []
        detected = GaugeMetricFamily(
            "surveil_drift_detected",
            "1 when the last drift check found the market drifted from the training data",
        )
        detected.add_metric([], 1.0 if rows[0]["run_drift_detected"] else 0.0)
        when = GaugeMetricFamily("surveil_drift_last_run_timestamp_seconds", "When the last drift check ran")
        when.add_metric([], rows[0]["run_at"].timestamp())
        scores = GaugeMetricFamily(
            "surveil_feature_drift_score", "The last drift check's score per column", labels=["feature"]
        )
        for row in rows:
            scores.add_metric([row["feature"]], float(row["score"]))
        return [detected, when, scores]
