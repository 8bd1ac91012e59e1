"""Silver transforms on tiny DataFrames: contract checks, typing, quarantine rows, dedup, late flag."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.silver import (
    batch_state,
    first_per_event_id,
    flag_late,
    not_seen_before,
    parse_quotes,
    to_quarantine,
    to_silver,
)

KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
T0 = dt.datetime(2026, 11, 20, 15, 0, 0)
GOOD = (
    '{"event_id":"e1","symbol":"ACME","event_time":"2026-11-20T14:30:00.123Z","price":101.5,"volume":300,'
    '"bid":101.4,"ask":101.6}'
)

CASES = [
    (GOOD, None),
    (
        '{"event_id":"e2","symbol":"ACME","event_time":"2026-11-20T14:30:00Z","price":101,"volume":0,"venue":"XNAS"}',
        None,
    ),
    (
        '{"event_id":"e3","symbol":"ACME","event_time":"2026-11-20T15:30:00+01:00","price":1.5,"volume":1}',
        None,
    ),
    ("", "empty_value"),
    ("not json", "invalid_json"),
    ('{"event_id":"x","price":NaN}', "invalid_json"),
    ('{"event_id":"a","event_id":"b"}', "invalid_json"),
    # Trailing content after a complete value (Spark's parser would stop at the value and accept it).
    ('{"event_id":"e9","symbol":"ACME"} x', "invalid_json"),
    ('{"event_id":"e9","symbol":"ACME"}}', "invalid_json"),
    ('{"event_id":"e9","symbol":"ACME"}, 5', "invalid_json"),
    ('{"event_id":"e9","symbol":"ACME"}],[0', "invalid_json"),
    ('{"event_id":"e9","symbol":"ACME"},0],[0', "invalid_json"),
    ("0 P\x10", "invalid_json"),
    ("1 2", "invalid_json"),
    ('{"event_id":"e9","symbol":"ACME"}  \n', None),  # trailing whitespace is JSON
    ("[1, 2]", "not_an_object"),
    # Absent fields and out-of-range values pass the contract: the expectation suite judges them (see
    # test_quality.py), so a rule lives in one place with its name and severity.
    ("{}", None),
    ('{"event_id":null,"symbol":"A"}', None),
    ('{"event_id":7,"symbol":"A"}', "event_id_not_string"),
    ('{"event_id":"  ","symbol":"A"}', None),
    ('{"event_id":"a"}', None),
    ('{"event_id":"a","symbol":"A"}', None),
    ('{"event_id":"a","symbol":"A","event_time":1763649000}', "event_time_not_string"),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20 14:30:00"}', "bad_event_time"),
    ('{"event_id":"a","symbol":"A","event_time":"2026-13-45T14:30:00Z"}', "bad_event_time"),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z"}', None),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":"101.5"}', "price_not_number"),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1e400}', None),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":0}', None),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":-3.2}', None),
    ('{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1}', None),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":2.5}',
        "volume_not_integer",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":"2"}',
        "volume_not_integer",
    ),
    # Written as decimals: the variant keeps 1.0 and -0.0 as DECIMAL(1,0), yet they are not integers.
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":1.0}',
        "volume_not_integer",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":-0.0}',
        "volume_not_integer",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":3e2}',
        "volume_not_integer",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":9223372036854775808}',
        "volume_out_of_range",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":99999999999999999999999}',
        "volume_out_of_range",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":-5}',
        None,
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":5,"bid":"x"}',
        "bid_not_number",
    ),
    (
        '{"event_id":"a","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":5,"ask":-1}',
        None,
    ),
]


def _kafka_rows(spark: SparkSession, values: list[str | None]):
    rows = [(None, None if v is None else v.encode(), "quotes", 0, i, T0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def _checked(spark: SparkSession, values: list[str | None]):
    return parse_quotes(to_bronze(_kafka_rows(spark, values), "stream-1", 1, T0))


def test_bronze_keeps_every_record_as_received(spark: SparkSession) -> None:
    values = [GOOD, "not json", None]
    bronze = to_bronze(_kafka_rows(spark, values), "stream-1", 4, T0)
    expected = spark.createDataFrame(
        [(None, v, "quotes", 0, i, T0, T0, T0.date(), "stream-1", 4) for i, v in enumerate(values)],
        "key string, value string, topic string, partition int, offset long, kafka_timestamp timestamp, "
        "ingested_at timestamp, ingest_date date, stream_id string, batch_id long",
    )
    assertDataFrameEqual(bronze, expected)


@pytest.mark.parametrize(("value", "reason"), CASES)
def test_reject_reason_names_the_broken_rule(spark: SparkSession, value: str, reason: str | None) -> None:
    got = _checked(spark, [value]).select("reject_reason").first()[0]
    assert got == reason


def test_reject_reasons_in_one_pass(spark: SparkSession) -> None:
    checked = _checked(spark, [value for value, _ in CASES] + [None])
    got = checked.select("offset", "reject_reason")
    expected = spark.createDataFrame(
        [(i, reason) for i, (_, reason) in enumerate(CASES)] + [(len(CASES), "empty_value")],
        "offset long, reject_reason string",
    )
    assertDataFrameEqual(got, expected)


def test_silver_rows_are_typed_and_extra_fields_accepted(spark: SparkSession) -> None:
    checked = _checked(spark, [CASES[0][0], CASES[1][0], CASES[2][0], "garbage"])
    silver = to_silver(checked).select(
        "event_id", "symbol", "event_time", "price", "volume", "bid", "ask", "event_date", "kafka_offset"
    )
    expected = spark.createDataFrame(
        [
            (
                "e1",
                "ACME",
                dt.datetime(2026, 11, 20, 14, 30, 0, 123000),
                101.5,
                300,
                101.4,
                101.6,
                dt.date(2026, 11, 20),
                0,
            ),
            ("e2", "ACME", dt.datetime(2026, 11, 20, 14, 30), 101.0, 0, None, None, dt.date(2026, 11, 20), 1),
            ("e3", "ACME", dt.datetime(2026, 11, 20, 14, 30), 1.5, 1, None, None, dt.date(2026, 11, 20), 2),
        ],
        "event_id string, symbol string, event_time timestamp, price double, volume long, bid double, "
        "ask double, event_date date, kafka_offset long",
    )
    assertDataFrameEqual(silver, expected)


def test_quarantine_rows_keep_raw_value_coordinates_and_reason(spark: SparkSession) -> None:
    checked = _checked(spark, [GOOD, "not json", "[]"])
    quarantine = to_quarantine(checked).select(
        "reason", "raw_value", "kafka_partition", "kafka_offset", "batch_id"
    )
    expected = spark.createDataFrame(
        [("invalid_json", "not json", 0, 1, 1), ("not_an_object", "[]", 0, 2, 1)],
        "reason string, raw_value string, kafka_partition int, kafka_offset long, batch_id long",
    )
    assertDataFrameEqual(quarantine, expected)


def test_first_arrival_wins_per_event_id(spark: SparkSession) -> None:
    resent = GOOD.replace("101.5", "101.7")
    silver = to_silver(_checked(spark, [GOOD, GOOD, resent]))
    deduped = first_per_event_id(silver).select("event_id", "price", "kafka_offset")
    assertDataFrameEqual(
        deduped, spark.createDataFrame([("e1", 101.5, 0)], "event_id string, price double, kafka_offset long")
    )


def test_not_seen_before_drops_event_ids_already_in_silver(spark: SparkSession) -> None:
    silver = to_silver(_checked(spark, [CASES[0][0], CASES[1][0]]))
    seen = spark.createDataFrame([("ACME", "e1")], "symbol string, event_id string")
    assert [r.event_id for r in not_seen_before(silver, seen).collect()] == ["e2"]


def test_flag_late_against_the_symbols_own_progress(spark: SparkSession) -> None:
    silver = to_silver(_checked(spark, [CASES[0][0], CASES[2][0]]))
    none_late = flag_late(silver, None, 600).select("event_id", "is_late")
    assertDataFrameEqual(
        none_late, spark.createDataFrame([("e1", False), ("e3", False)], "event_id string, is_late boolean")
    )
    acme_high = dt.datetime(2026, 11, 20, 14, 40, 0, 100000, tzinfo=dt.UTC)  # 10 minutes after 14:30:00.1
    far_ahead = {"ACME": acme_high, "OTHER": acme_high + dt.timedelta(days=1)}
    state = batch_state(spark, "stream-1", 1, acme_high + dt.timedelta(days=1), far_ahead)
    late = flag_late(silver, state, 600).select("event_id", "is_late")
    assertDataFrameEqual(
        late, spark.createDataFrame([("e1", False), ("e3", True)], "event_id string, is_late boolean")
    )
    # Another symbol far ahead (or the global watermark) makes no ACME quote late.
    behind = batch_state(spark, "stream-1", 1, None, {"OTHER": acme_high + dt.timedelta(days=1)})
    assert flag_late(silver, behind, 600).where("is_late").count() == 0
    # The state belongs to its micro-batch: quotes of another batch are judged by theirs.
    other_batch = flag_late(silver, batch_state(spark, "stream-1", 2, None, far_ahead), 600)
    assert other_batch.where("is_late").count() == 0
    assert silver.where(F.col("is_late").isNotNull()).count() == 0
