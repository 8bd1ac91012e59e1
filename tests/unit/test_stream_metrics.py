"""The stream's metrics from what a micro-batch already holds: counters, histograms and labels, with no
Spark: the progress row, quarantine reasons, DQ verdicts and alerts of a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from surveillance.observability.metrics import (
    processed_offsets_by_topic,
    reason_label,
    record_detection_batch,
    record_lakehouse_batch,
    record_model,
)


def value(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_a_lakehouse_batch() -> None:
    query = "unit_lakehouse"
    before = {
        "in": value("surveil_stream_input_records_total", query=query),
        "silver": value("surveil_silver_quotes_total"),
        "json": value("surveil_quarantined_records_total", reason="invalid_json"),
        "exp": value("surveil_quarantined_records_total", reason="expectations"),
        "fail": value(
            "surveil_dq_expectation_failures_total",
            suite="silver_quotes",
            expectation="price_positive",
            severity="error",
        ),
    }
    finished = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    progress = {
        "batch_id": 7,
        "records_in": 120,
        "silver_rows": 100,
        "duplicate_rows": 5,
        "late_rows": 2,
        "out_of_order_rows": 1,
        "dq_warning_rows": 3,
        "finished_at": finished,
        "step_seconds": {"total": 0.8, "bars": 0.3},
        "spark_jobs": 9,
    }
    quarantined = {"invalid_json": 10, "expectations: price_positive": 4, "expectations: a, b": 1}
    dq = [
        {"suite": "silver_quotes", "expectation": "price_positive", "severity": "error", "success": False},
        {"suite": "silver_quotes", "expectation": "spread", "severity": "warn", "success": True},
    ]
    record_lakehouse_batch(query, progress, quarantined, dq)
    assert value("surveil_stream_input_records_total", query=query) - before["in"] == 120
    assert value("surveil_silver_quotes_total") - before["silver"] == 100
    assert value("surveil_quarantined_records_total", reason="invalid_json") - before["json"] == 10
    assert value("surveil_quarantined_records_total", reason="expectations") - before["exp"] == 5
    failures = value(
        "surveil_dq_expectation_failures_total",
        suite="silver_quotes",
        expectation="price_positive",
        severity="error",
    )
    assert failures - before["fail"] == 1
    assert value("surveil_stream_last_batch_timestamp_seconds", query=query) == finished.timestamp()
    assert value("surveil_stream_last_batch_spark_jobs", query=query) == 9
    assert value("surveil_stream_last_batch_id", query=query) == 7
    assert value("surveil_stream_batch_duration_seconds_count", query=query, step="bars") >= 1
    assert value("surveil_late_quotes_total", query=query) >= 2


def test_a_detection_batch_and_the_model() -> None:
    query = "unit_detection"
    detected = datetime(2026, 12, 7, 10, 0, 1, tzinfo=UTC)
    alerts = [
        {
            "rule": "price_jump",
            "severity": "high",
            "confidence": "high",
            "detected_at": detected,
            "source_kafka_timestamp": detected - timedelta(milliseconds=700),
        },
        {
            "rule": "model",
            "severity": "low",
            "confidence": "low",
            "detected_at": detected,
            "source_kafka_timestamp": detected - timedelta(seconds=3),
        },
    ]
    before = value("surveil_alerts_total", rule="price_jump", severity="high", confidence="high")
    count_before = value("surveil_quote_to_alert_latency_seconds_count", rule="model")
    record_detection_batch(query, {"batch_id": 3, "step_seconds": {"total": 0.2}, "spark_jobs": 4}, alerts)
    assert value("surveil_alerts_total", rule="price_jump", severity="high", confidence="high") - before == 1
    assert value("surveil_quote_to_alert_latency_seconds_count", rule="model") - count_before == 1
    assert value("surveil_quote_to_alert_latency_seconds_bucket", rule="price_jump", le="0.75") >= 1
    failures = value("surveil_model_reload_failures_total")
    record_model("market_anomaly", "4", loaded=True)
    record_model("market_anomaly", "4", loaded=False)
    assert value("surveil_model_info", name="market_anomaly", version="4") == 1
    assert value("surveil_model_reload_failures_total") - failures == 1


def test_reason_labels_are_bounded() -> None:
    assert reason_label("invalid_json") == "invalid_json"
    assert reason_label("expectations: event_id_not_null, symbol_not_null") == "expectations"


def test_processed_offsets_from_a_query_progress() -> None:
    progress = {
        "sources": [
            {"description": "KafkaV2[Subscribe[quotes]]", "endOffset": {"quotes": {"0": 120, "1": 98}}},
            {"description": "other", "endOffset": '{"alerts": {"0": 7}}'},
            {"description": "not kafka", "endOffset": "12"},
        ]
    }
    assert processed_offsets_by_topic(progress) == {"quotes": {0: 120, 1: 98}, "alerts": {0: 7}}
    assert processed_offsets_by_topic({}) == {}


def test_processed_offsets_from_spark_progress_objects() -> None:
    """PySpark 4 keeps a source's offsets as str() of a Python dict; the progress's JVM JSON is read."""
    from pyspark.sql.streaming.listener import StreamingQueryProgress

    progress = StreamingQueryProgress.fromJson(
        {
            "id": "00000000-0000-0000-0000-000000000001",
            "runId": "00000000-0000-0000-0000-000000000002",
            "name": "q",
            "timestamp": "2026-12-07T10:00:00.000Z",
            "batchId": 3,
            "batchDuration": 10,
            "durationMs": {},
            "eventTime": {},
            "stateOperators": [],
            "sources": [
                {
                    "description": "KafkaV2[Subscribe[quotes]]",
                    "startOffset": {"quotes": {"0": 1}},
                    "endOffset": {"quotes": {"0": 5, "1": 7}},
                    "latestOffset": {"quotes": {"0": 9, "1": 7}},
                    "numInputRows": 10,
                    "inputRowsPerSecond": 1.0,
                    "processedRowsPerSecond": 2.0,
                    "metrics": {},
                }
            ],
            "sink": {"description": "noop", "numOutputRows": 0},
            "numInputRows": 10,
            "inputRowsPerSecond": 1.0,
            "processedRowsPerSecond": 2.0,
        }
    )
    assert processed_offsets_by_topic(progress) == {"quotes": {0: 5, 1: 7}}
