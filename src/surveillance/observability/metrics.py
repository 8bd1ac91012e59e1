"""The stream's Prometheus metrics: what each micro-batch of each query did, and the Kafka lag at scrape time.

Every figure comes from what a batch already has on the driver (its progress row, its data-quality verdicts,
the alerts it collected to publish): recording them costs no Spark job. Labels are bounded: the query, the
step, the rule, severity and confidence, the quarantine reason's contract name, the suite and expectation,
the topic partition. Never a symbol, never an event.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)
JOB_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

INPUT_RECORDS = Counter("surveil_stream_input_records", "Kafka records a query read", ["query"])
BATCHES = Counter("surveil_stream_batches", "Micro-batches a query committed", ["query"])
BATCH_SECONDS = Histogram(
    "surveil_stream_batch_duration_seconds",
    "Wall seconds of a micro-batch by step (step=total: the whole batch)",
    ["query", "step"],
    buckets=STEP_BUCKETS,
)
SPARK_JOBS = Histogram(
    "surveil_stream_batch_spark_jobs", "Spark jobs one micro-batch ran", ["query"], buckets=JOB_BUCKETS
)
LAST_BATCH_JOBS = Gauge(
    "surveil_stream_last_batch_spark_jobs", "Spark jobs of the last micro-batch", ["query"]
)
LAST_BATCH_TIME = Gauge(
    "surveil_stream_last_batch_timestamp_seconds", "When the last micro-batch finished (Unix time)", ["query"]
)
LAST_BATCH_ID = Gauge("surveil_stream_last_batch_id", "The last micro-batch's id", ["query"])

SILVER_QUOTES = Counter("surveil_silver_quotes", "New quotes written to silver")
DUPLICATE_QUOTES = Counter("surveil_duplicate_quotes", "Valid quotes dropped as duplicates of earlier ones")
QUARANTINED = Counter("surveil_quarantined_records", "Records set aside in quarantine, by reason", ["reason"])
LATE_QUOTES = Counter("surveil_late_quotes", "Quotes later than the watermark", ["query"])
OUT_OF_ORDER_QUOTES = Counter(
    "surveil_out_of_order_quotes", "Quotes older than their symbol's newest one", ["query"]
)
WARNED_QUOTES = Counter("surveil_dq_warning_quotes", "Quotes that broke a warning expectation", ["query"])
DQ_EVALUATIONS = Counter(
    "surveil_dq_expectation_evaluations",
    "Expectation runs (one per micro-batch and expectation)",
    ["suite", "expectation", "severity"],
)
DQ_FAILURES = Counter(
    "surveil_dq_expectation_failures",
    "Expectation runs that failed",
    ["suite", "expectation", "severity"],
)

ALERTS = Counter("surveil_alerts", "Alerts raised", ["rule", "severity", "confidence"])
QUOTE_TO_ALERT = Histogram(
    "surveil_quote_to_alert_latency_seconds",
    "From a quote's Kafka timestamp to its alert's detection",
    ["rule"],
    buckets=LATENCY_BUCKETS,
)
MODEL = Info("surveil_model", "The champion model the detection query scores with")
MODEL_RELOADS = Counter("surveil_model_reloads", "Champion model versions loaded")
MODEL_RELOAD_FAILURES = Counter(
    "surveil_model_reload_failures", "Failed attempts to look up or load the champion model"
)

# The reasons a record breaks the quote contract are named (silver's contract checks); one that broke
# error expectations is "expectations" here: DQ_FAILURES names them.
EXPECTATIONS_REASON = "expectations"


def reason_label(reason: str) -> str:
    return EXPECTATIONS_REASON if reason.startswith("expectations") else reason


def record_lakehouse_batch(
    query: str,
    progress: Mapping[str, Any],
    quarantined: Mapping[str, int],
    dq_rows: Iterable[Mapping[str, Any]],
) -> None:
    """A committed micro-batch of the lakehouse query: its progress row, quarantine reasons, DQ verdicts."""
    _record_batch(query, progress)
    INPUT_RECORDS.labels(query).inc(progress.get("records_in") or 0)
    SILVER_QUOTES.inc(progress.get("silver_rows") or 0)
    DUPLICATE_QUOTES.inc(progress.get("duplicate_rows") or 0)
    for reason, count in quarantined.items():
        if count:
            QUARANTINED.labels(reason_label(reason)).inc(count)
    for row in dq_rows:
        labels = (row["suite"], row["expectation"], row["severity"])
        DQ_EVALUATIONS.labels(*labels).inc()
        if not row["success"]:
            DQ_FAILURES.labels(*labels).inc()


# What the metrics read of an alert.
ALERT_METRIC_FIELDS = ("rule", "severity", "confidence", "detected_at", "source_kafka_timestamp")


def record_detection_batch(
    query: str, progress: Mapping[str, Any], alerts: Iterable[Mapping[str, Any]]
) -> None:
    """A committed micro-batch of the detection query: its progress row and the alerts it raised."""
    _record_batch(query, progress)
    for alert in alerts:
        ALERTS.labels(alert["rule"], alert["severity"], alert["confidence"]).inc()
        detected, quoted = alert.get("detected_at"), alert.get("source_kafka_timestamp")
        if isinstance(detected, datetime) and isinstance(quoted, datetime):
            QUOTE_TO_ALERT.labels(alert["rule"]).observe(max(0.0, (detected - quoted).total_seconds()))


def _record_batch(query: str, progress: Mapping[str, Any]) -> None:
    BATCHES.labels(query).inc()
    LATE_QUOTES.labels(query).inc(progress.get("late_rows") or 0)
    OUT_OF_ORDER_QUOTES.labels(query).inc(progress.get("out_of_order_rows") or 0)
    WARNED_QUOTES.labels(query).inc(progress.get("dq_warning_rows") or 0)
    for step, seconds in (progress.get("step_seconds") or {}).items():
        BATCH_SECONDS.labels(query, step).observe(seconds)
    jobs = progress.get("spark_jobs")
    if jobs is not None:
        SPARK_JOBS.labels(query).observe(jobs)
        LAST_BATCH_JOBS.labels(query).set(jobs)
    finished = progress.get("finished_at")
    if isinstance(finished, datetime):
        LAST_BATCH_TIME.labels(query).set(finished.timestamp())
    LAST_BATCH_ID.labels(query).set(progress["batch_id"])


def record_model(name: str, version: str, loaded: bool) -> None:
    """A champion lookup: a version loaded (or kept), or a failure."""
    if loaded:
        MODEL.info({"name": name, "version": str(version)})
        MODEL_RELOADS.inc()
    else:
        MODEL_RELOAD_FAILURES.inc()


class QueryRates(Collector):
    """Spark's own rates, ``surveil_stream_{input,processed}_rows_per_second{query}``, read from each
    query's last progress at scrape time."""

    def __init__(self, queries: Callable[[], Iterable[Any]]) -> None:
        self._queries = queries

    def collect(self) -> Iterable[GaugeMetricFamily]:
        rates = {
            "inputRowsPerSecond": GaugeMetricFamily(
                "surveil_stream_input_rows_per_second",
                "Spark's input rate over the last trigger",
                labels=["query"],
            ),
            "processedRowsPerSecond": GaugeMetricFamily(
                "surveil_stream_processed_rows_per_second",
                "Spark's processing rate over the last trigger",
                labels=["query"],
            ),
        }
        for query in self._queries():
            last = query.lastProgress or {}
            for key, family in rates.items():
                if last:
                    family.add_metric([query.name], float(last.get(key) or 0.0))
        return list(rates.values())


class KafkaLag(Collector):
    """``surveil_kafka_consumer_lag_records{query, topic, partition}``: the topic's end offset now minus
    the offset the query has processed (its last progress's end offset), at most every ``refresh_s``."""

    def __init__(
        self,
        queries: Callable[[], Iterable[Any]],
        end_offsets: Callable[[str], Mapping[int, int]],
        refresh_s: float = 5.0,
    ) -> None:
        self._queries = queries
        self._end_offsets = end_offsets
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[tuple[str, str, int, int]]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "surveil_kafka_consumer_lag_records",
            "Records in the topic a query has not processed yet (end offset - processed offset)",
            labels=["query", "topic", "partition"],
        )
        for query, topic, partition, lag in self._lags():
            family.add_metric([query, topic, str(partition)], lag)
        return [family]

    def _lags(self) -> list[tuple[str, str, int, int]]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._refresh_s:
                return self._cached[1]
            lags: list[tuple[str, str, int, int]] = []
            try:
                for query in self._queries():
                    for topic, processed in processed_offsets_by_topic(query.lastProgress or {}).items():
                        ends = self._end_offsets(topic)
                        for partition, end in ends.items():
                            lags.append(
                                (query.name, topic, partition, max(0, end - processed.get(partition, 0)))
                            )
            except Exception as exc:  # a broker outage: no lag figure rather than a failed scrape
                log.warning("Kafka lag unavailable: %s", exc)
            self._cached = (time.monotonic(), lags)
            return lags


def processed_offsets_by_topic(progress: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """{topic: {partition: next offset}} a query's progress (``query.lastProgress``) says it has processed."""
    import json

    compact = getattr(progress, "json", None)
    if isinstance(compact, str):
        # A StreamingQueryProgress: PySpark's own fields hold offsets as str() of a Python dict; the JVM's
        # JSON of the progress holds them as JSON objects.
        progress = json.loads(compact)
    found: dict[str, dict[int, int]] = {}
    for source in progress.get("sources", []):
        end = source.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except ValueError:
                continue
        if not isinstance(end, dict):
            continue
        for topic, partitions in end.items():
            if isinstance(partitions, dict):
                found[topic] = {int(p): int(o) for p, o in partitions.items()}
    return found


_servers: dict[int, Any] = {}
_lock = threading.Lock()


def serve_metrics(host: str, port: int) -> bool:
    """Serve the process's metrics at http://host:port/metrics (once per port); False if the port is taken."""
    from prometheus_client import start_http_server

    with _lock:
        if port in _servers:
            return True
        try:
            _servers[port] = start_http_server(port, addr=host)
        except OSError as exc:
            log.warning("metrics not served on %s:%s: %s", host, port, exc)
            return False
        return True


def register_collector(collector: Collector) -> None:
    REGISTRY.register(collector)


def unregister_collector(collector: Collector) -> None:
    with contextlib.suppress(KeyError):
        REGISTRY.unregister(collector)


def watch_queries(settings: Any, queries: Callable[[], Iterable[Any]]) -> Callable[[], None]:
    """Serve this process's metrics (``metrics.host:metrics.port``/metrics) with the Spark rates and the
    Kafka lag of ``queries``; returns what stops watching them. Off when ``metrics.enabled`` is false, and
    on a cluster unless ``metrics.on_cluster``."""
    from surveillance.config import interval_seconds
    from surveillance.kafka.admin import topic_end_offsets
    from surveillance.spark import running_on_cluster

    metrics = settings.metrics
    if not metrics.enabled or (running_on_cluster() and not metrics.on_cluster):
        return lambda: None
    collectors: list[Collector] = [
        QueryRates(queries),
        KafkaLag(
            queries,
            lambda topic: topic_end_offsets(settings.kafka, topic),
            interval_seconds(metrics.lag_refresh),
        ),
    ]
    for collector in collectors:
        register_collector(collector)
    serve_metrics(metrics.host, metrics.port)

    def stop() -> None:
        for collector in collectors:
            unregister_collector(collector)

    return stop
