"""Gold bars on a tiny DataFrame, checked against values computed by hand."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from surveillance.transforms.gold import bar_keys, one_minute_bars

QUOTES = "event_id string, symbol string, event_time timestamp, price double, volume long"


def _t(minute: int, second: float) -> dt.datetime:
    return dt.datetime(2026, 11, 20, 14, minute) + dt.timedelta(seconds=second)


def test_one_minute_bars(spark: SparkSession) -> None:
    quotes = spark.createDataFrame(
        [
            ("b", "ACME", _t(30, 20), 11.0, 100),
            ("a", "ACME", _t(30, 5), 10.0, 300),  # earliest in the minute: the open, though it arrives second
            ("c", "ACME", _t(30, 59.9), 9.0, 0),
            ("d", "ACME", _t(31, 0), 12.0, 50),
            ("e", "BOLT", _t(30, 1), 5.0, 0),
        ],
        QUOTES,
    )
    bars = one_minute_bars(quotes).drop("updated_at")
    expected = spark.createDataFrame(
        [
            (
                "ACME",
                _t(30, 0),
                dt.date(2026, 11, 20),
                10.0,
                11.0,
                9.0,
                9.0,
                400,
                (10 * 300 + 11 * 100) / 400,
                3,
                _t(30, 5),
                _t(30, 59.9),
            ),
            (
                "ACME",
                _t(31, 0),
                dt.date(2026, 11, 20),
                12.0,
                12.0,
                12.0,
                12.0,
                50,
                12.0,
                1,
                _t(31, 0),
                _t(31, 0),
            ),
            ("BOLT", _t(30, 0), dt.date(2026, 11, 20), 5.0, 5.0, 5.0, 5.0, 0, None, 1, _t(30, 1), _t(30, 1)),
        ],
        "symbol string, bar_start timestamp, bar_date date, open double, high double, low double, "
        "close double, volume long, vwap double, trade_count long, first_event_time timestamp, "
        "last_event_time timestamp",
    )
    assertDataFrameEqual(bars, expected)


def test_ties_in_event_time_are_broken_by_event_id(spark: SparkSession) -> None:
    quotes = spark.createDataFrame(
        [("z", "ACME", _t(30, 1), 2.0, 1), ("y", "ACME", _t(30, 1), 1.0, 1)], QUOTES
    )
    bar = one_minute_bars(quotes).first()
    assert (bar.open, bar.close) == (1.0, 2.0)


def test_bar_keys(spark: SparkSession) -> None:
    quotes = spark.createDataFrame(
        [
            ("a", "ACME", _t(30, 1), 1.0, 1),
            ("b", "ACME", _t(30, 50), 1.0, 1),
            ("c", "ACME", _t(31, 1), 1.0, 1),
        ],
        QUOTES,
    )
    expected = spark.createDataFrame(
        [("ACME", _t(30, 0)), ("ACME", _t(31, 0))], "symbol string, bar_start timestamp"
    )
    assertDataFrameEqual(bar_keys(quotes), expected)
