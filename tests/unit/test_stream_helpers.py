"""Helpers of the streaming job that cross between Python and Spark time."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from surveillance.pipeline.stream import batch_stats, dates_between, utc_from_micros
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.silver import parse_quotes

KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
UTC = dt.UTC


@pytest.fixture
def new_york_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend the driver's clock is set to New York (PySpark uses it for naive datetimes)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_utc_from_micros() -> None:
    assert utc_from_micros(None) is None
    assert utc_from_micros(1_763_649_000_123_000) == dt.datetime(2025, 11, 20, 14, 30, 0, 123000, tzinfo=UTC)


def testdates_between_crosses_midnight() -> None:
    start = dt.datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    assert dates_between(start, start + dt.timedelta(hours=1)) == [
        dt.date(2026, 11, 20),
        dt.date(2026, 11, 21),
    ]


def test_batch_stats_are_utc_whatever_the_host_clock(spark: SparkSession, new_york_host: None) -> None:
    value = b'{"event_id":"e","symbol":"A","event_time":"2026-11-20T23:59:59.500Z","price":1,"volume":1}'
    records = spark.createDataFrame(
        [(None, value, "q", 0, 0, dt.datetime(2026, 11, 21, tzinfo=UTC)), (None, b"x", "q", 0, 1, None)],
        KAFKA_SCHEMA,
    )
    ingested = dt.datetime(2026, 11, 21, 0, 0, 1, tzinfo=UTC)
    checked = parse_quotes(to_bronze(records, "s", 0, ingested))
    stats = batch_stats(checked)
    assert stats.records_in == 2 and stats.valid_rows == 1
    assert (
        stats.min_event_time
        == stats.max_event_time
        == dt.datetime(2026, 11, 20, 23, 59, 59, 500000, tzinfo=UTC)
    )
    assert stats.event_dates == [dt.date(2026, 11, 20)]
    assert checked.select("ingest_date").first()[0] == dt.date(2026, 11, 21)
