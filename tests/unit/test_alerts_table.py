"""The alerts table behind the topic: records read back from the topic, recovery of committed batches."""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from surveillance.lakehouse import ALERTS
from surveillance.sinks.alerts_table import (
    TopicAlert,
    _topic_alert,
    recover_alert_rows,
    rows_from_topic,
)
from surveillance.sinks.kafka_alerts import kafka_record_columns, with_episode


def _record(alert_id: str, stream: str | None, batch: int | None) -> TopicAlert:
    return TopicAlert(alert_id, stream, batch, json.dumps({"alert_id": alert_id}))


def test_recovery_takes_committed_batches_after_the_table_once_per_alert() -> None:
    records = [
        _record("a", "s1", 3),  # already in the table
        _record("b", "s1", 4),
        _record("c", "s1", 5),
        _record("b", "s1", 4),  # re-sent after a crash
        _record("x", "s0", 4),  # another stream (an earlier checkpoint)
        _record("d", "s1", 6),  # not committed: the query replays it itself
        _record("e", None, None),  # a record without our headers
    ]
    kept = recover_alert_rows(records, "s1", after_batch=3, up_to_batch=5)
    assert [r.alert_id for r in kept] == ["b", "c"]


def test_headers_name_the_stream_and_batch() -> None:
    record = _topic_alert([("alert_id", b"a1"), ("stream_id", b"s1"), ("batch_id", b"7")], b'{"x": 1}')
    assert record == TopicAlert("a1", "s1", 7, '{"x": 1}')
    assert _topic_alert([], b"{}").batch_id is None


def test_a_row_read_back_from_the_topic_equals_the_row_appended(spark: SparkSession) -> None:
    moment = dt.datetime(2026, 3, 2, 14, 30, 5, 123456, tzinfo=dt.UTC)
    row = {
        "alert_id": "a1",
        "symbol": "ACME",
        "event_time": moment,
        "event_id": "e1",
        "rule": "price_jump",
        "score": 0.071,
        "threshold": 0.05,
        "severity": "high",
        "confidence": "high",
        "details": json.dumps({"previous_price": 100.0}),
        "detected_at": moment + dt.timedelta(seconds=1, microseconds=7),
        "alert_date": moment.date(),
        "source_partition": 2,
        "source_offset": 12345,
        "source_kafka_timestamp": moment + dt.timedelta(microseconds=999),
        "stream_id": "s1",
        "batch_id": 4,
        "episode_id": "ep1",
    }
    appended = spark.createDataFrame([tuple(row[name] for name in ALERTS.schema.fieldNames())], ALERTS.schema)
    # The detection query builds the record before the batch's episodes are known, then adds its episode.
    computed = appended.withColumn("episode_id", F.lit(None).cast("string"))
    key, value = kafka_record_columns(computed)
    sent = with_episode(computed.select(value.alias("value")).first()["value"], "ep1")
    recovered = rows_from_topic(spark, [TopicAlert("a1", "s1", 4, sent)])
    assert recovered.schema == ALERTS.schema
    assert recovered.collect() == appended.collect()
    assert appended.select(key).first()[0] == "ACME"
    # Microseconds survive the JSON (Spark's default format would keep milliseconds only).
    assert recovered.select(F.unix_micros("event_time")).first()[0] % 1_000_000 == 123456
