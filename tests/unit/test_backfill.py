"""Backfill building blocks on tiny inputs: ranges, micro-batch states, range replacement, bronze dedup."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from surveillance.lakehouse import delta_table, read_table, write_table
from surveillance.pipeline.backfill import EventRange, batch_states, event_range
from surveillance.sinks.delta import RangeChange, insert_missing, replace_range
from surveillance.transforms.bronze import first_ingestion

UTC = dt.UTC
ROWS = "id string, day date, value double, written timestamp"
TODAY = dt.date(2026, 12, 1)


def _at(hour: int, minute: int = 0, day: int = 20) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-20", "2026-11-20", (_at(0), _at(0, day=21))),
        ("2026-11-20", "2026-11-22", (_at(0), _at(0, day=23))),
        ("yesterday", "yesterday", (_at(0, day=30), dt.datetime(2026, 12, 1, tzinfo=UTC))),
        ("today-2", "today", (_at(0, day=29), dt.datetime(2026, 12, 2, tzinfo=UTC))),
        ("2026-11-20T14:30Z", "2026-11-20T15:00Z", (_at(14, 30), _at(15))),
        ("2026-11-20T15:30+01:00", "2026-11-20T16:00+01:00", (_at(14, 30), _at(15))),
    ],
)
def test_event_range_from_days_and_minutes(start: str, end: str, expected: tuple) -> None:
    """Days include --to; timestamps end before it; relative days count back from today (UTC)."""
    got = event_range(start, end, today=TODAY)
    assert (got.start, got.end) == expected


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-21", "2026-11-20", "empty range"),
        ("2026-11-20T14:30:15Z", "2026-11-20T15:00Z", "minute"),
        ("2026-11-20T14:30", "2026-11-20T15:00Z", "time zone"),
        ("last week", "today", "expected YYYY-MM-DD"),
    ],
)
def test_event_range_refuses_what_it_cannot_replace_exactly(start: str, end: str, message: str) -> None:
    """An empty range, a range off the minute (bars are whole minutes), a naive time, or nonsense."""
    with pytest.raises(ValueError, match=message):
        event_range(start, end, today=TODAY)


def test_range_scope_prunes_by_date_and_bounds_by_time() -> None:
    """The SQL predicate names every date partition the range touches and the half-open time bounds."""
    scope = EventRange(_at(23, 30, day=20), _at(0, 30, day=21)).scope("event_time", "event_date")
    assert "event_date IN (DATE'2026-11-20', DATE'2026-11-21')" in scope
    assert "event_time >= TIMESTAMP'2026-11-20 23:30:00'" in scope
    assert "event_time < TIMESTAMP'2026-11-21 00:30:00'" in scope


def test_batch_states_are_the_marks_of_the_last_batch_finished_before(spark: SparkSession) -> None:
    """Each micro-batch gets the high-water marks it ran with: those after the batch before it."""
    progress = spark.createDataFrame(
        [
            (_at(15, 1), _at(14, 50), {"ACME": _at(14, 50)}),
            (_at(15, 2), _at(14, 55), {"ACME": _at(14, 50), "BOLT": _at(14, 55)}),
        ],
        "finished_at timestamp, max_event_time timestamp, symbol_max_event_time map<string,timestamp>",
    )
    batches = spark.createDataFrame(
        [("s", 0, _at(15, 0)), ("s", 1, _at(15, 1, day=20) + dt.timedelta(seconds=5)), ("s", 2, _at(15, 3))],
        "stream_id string, batch_id long, ingested_at timestamp",
    )
    states = batch_states(progress, batches, dt.timedelta(minutes=10))
    expected = spark.createDataFrame(
        [
            ("s", 0, None, {}),
            ("s", 1, _at(14, 40), {"ACME": _at(14, 50)}),
            ("s", 2, _at(14, 45), {"ACME": _at(14, 50), "BOLT": _at(14, 55)}),
        ],
        "stream_id string, batch_id long, watermark timestamp, symbol_max_event_time map<string,timestamp>",
    )
    assertDataFrameEqual(states, expected)


def _table(spark: SparkSession, path: Path, rows: list[tuple]) -> str:
    frame = spark.createDataFrame(rows, ROWS)
    write_table(frame.write.format("delta").partitionBy("day"), str(path))
    return str(path)


def test_replace_range_changes_only_the_range_and_writes_nothing_when_equal(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Inside the scope the table becomes the rows (kept rows keep their write time); outside, untouched."""
    d1, d2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
    then, now = _at(1), _at(2)
    location = _table(
        spark,
        tmp_path / "t",
        [("a", d1, 1.0, then), ("b", d1, 2.0, then), ("c", d1, 3.0, then), ("z", d2, 9.0, then)],
    )
    rows = spark.createDataFrame(
        [("a", d1, 1.0, now), ("b", d1, 2.5, now), ("d", d1, 4.0, now)],
        ROWS,
    )
    scope = "day = DATE'2026-11-20'"
    change = replace_range(rows, location, ["id"], scope, volatile=["written"])
    assert change == RangeChange(inserted=1, updated=1, deleted=1, unchanged=1)
    expected = spark.createDataFrame(
        [("a", d1, 1.0, then), ("b", d1, 2.5, now), ("d", d1, 4.0, now), ("z", d2, 9.0, then)],
        ROWS,
    )
    assertDataFrameEqual(read_table(spark, location), expected)
    versions = delta_table(spark, location).history().count()
    again = replace_range(rows, location, ["id"], scope, volatile=["written"])
    assert again == RangeChange(unchanged=3)
    assert delta_table(spark, location).history().count() == versions


def test_insert_missing_appends_each_key_once(spark: SparkSession, tmp_path: Path) -> None:
    """Rows already present (by key, within the scope) are not appended again."""
    d1 = dt.date(2026, 11, 20)
    location = _table(spark, tmp_path / "q", [("a", d1, 1.0, _at(1))])
    rows = spark.createDataFrame([("a", d1, 1.0, _at(2)), ("b", d1, 2.0, _at(2))], ROWS)
    assert insert_missing(rows, location, ["id"], "day >= DATE'2026-11-19'") == 1
    assert insert_missing(rows, location, ["id"], "day >= DATE'2026-11-19'") == 0
    assert sorted(r.id for r in read_table(spark, location).collect()) == ["a", "b"]


def test_first_ingestion_keeps_each_kafka_record_once(spark: SparkSession) -> None:
    """A topic read again by a new checkpoint is in bronze twice: the first ingestion is the one kept."""
    bronze = spark.createDataFrame(
        [
            ("quotes", 0, 5, _at(15), "old", 3),
            ("quotes", 0, 5, _at(16), "new", 0),
            ("quotes", 1, 5, _at(16), "new", 0),
        ],
        "topic string, partition int, offset long, ingested_at timestamp, stream_id string, batch_id long",
    )
    kept = first_ingestion(bronze).select("partition", "stream_id")
    expected = spark.createDataFrame([(0, "old"), (1, "new")], "partition int, stream_id string")
    assertDataFrameEqual(kept, expected)


def test_tables_by_name_in_the_session_catalog(spark: SparkSession) -> None:
    """lakehouse.schema switches every table to a metastore name; reads, appends and MERGE work by name."""
    from surveillance.config import load_settings
    from surveillance.lakehouse import ensure_tables, table_locations

    settings = load_settings(env="local", overrides=["lakehouse.schema=surveillance_unit"])
    locations = table_locations(settings)
    assert locations["alerts"] == "surveillance_unit.alerts"
    try:
        ensure_tables(spark, locations)
        assert spark.catalog.tableExists("surveillance_unit.gold_bars_1m")
        rows = spark.createDataFrame([("a", dt.date(2026, 11, 20), 1.0, _at(1))], ROWS)
        write_table(rows.write.format("delta").mode("overwrite"), "surveillance_unit.scratch")
        change = replace_range(rows, "surveillance_unit.scratch", ["id"], "day = DATE'2026-11-20'")
        assert change == RangeChange(unchanged=1)
        assert read_table(spark, "surveillance_unit.scratch").count() == 1
    finally:
        spark.sql("DROP SCHEMA IF EXISTS surveillance_unit CASCADE")
