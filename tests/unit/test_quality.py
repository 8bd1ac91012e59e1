"""Data quality on tiny DataFrames: suites from config, GX validation and row outcomes, DQ-aware rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from surveillance.config import ConfigError, ExpectationSpec, Settings, load_settings
from surveillance.detection.rules import detect_alerts
from surveillance.ingestion.contract import check_quote_line
from surveillance.pipeline.layers import route_quotes, silver_row_checks, suite_frame
from surveillance.quality.columns import with_quote_quality_columns, with_quote_totals
from surveillance.quality.report import write_data_docs
from surveillance.quality.results import SUITE_COLUMNS, dq_result_rows
from surveillance.quality.validation import SuiteValidator, check_quality_config
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.silver import (
    batch_state,
    flag_out_of_order,
    new_fields,
    object_fields,
    parse_quotes,
    silver_type,
    to_quarantine,
    to_silver,
)

KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
T0 = dt.datetime(2026, 11, 20, 15, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(env="local")


@pytest.fixture(scope="module")
def silver_validator(settings: Settings) -> SuiteValidator:
    return SuiteValidator("silver_quotes", settings.quality.suites.silver_quotes)


def _quote(event_id: str | None, **fields: object) -> str:
    doc = {"event_id": event_id, "symbol": "ACME", "event_time": "2026-11-20T14:59:00Z", "price": 100.0}
    doc.update({"volume": 10, "bid": 99.99, "ask": 100.01})
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None})


LINES = [
    _quote("ok"),
    _quote("neg", price=-1.0),
    _quote("zero_vol_neg", volume=-3),
    _quote("lower", symbol="acme"),
    _quote("crossed", bid=100.02, ask=99.98),
    _quote("wide", bid=95.0, ask=105.0),
    _quote("huge", price=1.5).replace("1.5", "1e400"),  # a JSON number too large for a double: +infinity
    _quote("dup"),
    _quote("dup"),
    _quote(None, symbol=None),
    _quote("text", price="100"),  # a contract (type) failure: never reaches the suite
]


def _checked(spark: SparkSession, lines: list[str]):
    rows = [(None, line.encode(), "quotes", 0, offset, T0) for offset, line in enumerate(lines)]
    return parse_quotes(to_bronze(spark.createDataFrame(rows, KAFKA_SCHEMA), "s", 1, T0)).cache()


def test_default_suites_build_and_name_their_columns(settings: Settings) -> None:
    check_quality_config(settings.quality, SUITE_COLUMNS)
    silver = settings.quality.suites.silver_quotes
    assert (
        silver["bid_not_above_ask"].severity == "warn" and silver["price_positive_finite"].severity == "error"
    )
    assert silver["event_lag_within_bounds"].severity == "off"  # local overlay: samples are historical


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "quality.suites.silver_quotes.price_positive_finite.expectation=expect_column_values_to_be_betwen",
            "did you mean 'expect_column_values_to_be_between'",
        ),
        ("quality.suites.silver_quotes.price_positive_finite.kwargs.column=prise", "no column 'prise'"),
        ("quality.suites.silver_quotes.price_positive_finite.kwargs.strict_min=maybe", "invalid arguments"),
        ("quality.suites.silver_quotes.price_positive_finite.severity=fatal", "severity"),
        ("quality.suites.silver_quotes.Bad-Name.expectation=expect_column_to_exist", "lower_snake_case"),
    ],
)
def test_config_mistakes_fail_at_start_with_a_clear_message(
    settings: Settings, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_quality_config(settings.with_overrides(override).quality, SUITE_COLUMNS)


def test_unreliable_names_must_be_silver_expectations(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="did you mean 'spread_within_bound'"):
        settings.with_overrides("quality.price_jump_unreliable_when=[spread_within_bond]")


def test_one_run_routes_rows_by_severity(
    spark: SparkSession, silver_validator: SuiteValidator, settings: Settings
) -> None:
    checked = _checked(spark, LINES)
    run = silver_validator.validate(suite_frame(checked).cache())
    results = {r.expectation: r for r in run.results}
    assert list(results) == [
        n for n, s in settings.quality.suites.silver_quotes.items() if s.severity != "off"
    ]
    assert results["price_positive_finite"].unexpected_count == 2  # -1 and 1e400 (infinite)
    assert results["bid_not_above_ask"].unexpected_count == 1 and not results["bid_not_above_ask"].success
    assert results["price_is_double"].success and results["price_is_double"].observed_value == '"DoubleType"'
    assert results["event_id_unique_in_batch"].unexpected_count == 2
    assert run.seconds > 0

    checks = silver_row_checks(settings)
    routed = route_quotes(checked, checks).cache()
    # The predicates that route rows count exactly what GX counts, expectation by expectation.
    judged = with_quote_quality_columns(to_silver(route_quotes(checked, checks)))
    breaks = {
        check.name: suite_frame(checked).withColumn("_b", check.breaks).where("_b").count()
        for check in checks
        if check.name in run.unexpected_counts()
    }
    assert breaks == {name: n for name, n in run.unexpected_counts().items() if name in breaks}
    assert judged.count() == 5
    quarantine = {
        json.loads(row.raw_value).get("event_id"): (row.reason, row.failed_expectations)
        for row in to_quarantine(routed).collect()
    }
    assert quarantine == {
        "neg": ("expectations: price_positive_finite", ["price_positive_finite"]),
        "zero_vol_neg": ("expectations: volume_non_negative", ["volume_non_negative"]),
        "lower": ("expectations: symbol_in_universe", ["symbol_in_universe"]),
        "huge": ("expectations: price_positive_finite", ["price_positive_finite"]),
        None: ("expectations: event_id_not_null, symbol_not_null", ["event_id_not_null", "symbol_not_null"]),
        "text": ("price_not_number", []),
    }
    silver = {row.event_id: row.dq_warnings for row in to_silver(routed).collect()}
    assert to_silver(routed).count() == 5  # both copies of "dup" flow on; dedup keeps the first later
    assert silver == {
        "ok": [],
        "crossed": ["bid_not_above_ask"],
        "wide": ["spread_within_bound"],
        "dup": ["event_id_unique_in_batch"],
    }
    # The pure-Python reference agrees with GX on every line.
    suite = {name: spec.model_dump() for name, spec in settings.quality.suites.silver_quotes.items()}
    reference = {json.loads(line).get("event_id"): check_quote_line(line, suite) for line in LINES}
    assert {k: v[0] for k, v in quarantine.items()} == {k: v for k, v in reference.items() if v}


def test_a_clean_batch_passes_and_routes_nothing(
    spark: SparkSession, silver_validator: SuiteValidator, settings: Settings
) -> None:
    checked = _checked(spark, [_quote("a"), _quote("b")])
    run = silver_validator.validate(suite_frame(checked).cache())
    assert all(r.success for r in run.results)
    routed = route_quotes(checked, silver_row_checks(settings)).collect()
    assert all(r.dq_errors == [] and r.dq_warnings == [] and r.reject_reason is None for r in routed)


def test_an_absurd_event_time_is_quarantined(spark: SparkSession, settings: Settings) -> None:
    lines = [
        _quote("ok"),
        _quote("future", event_time="2126-11-20T14:59:00Z"),
        _quote("epoch", event_time="1970-01-01T00:00:00Z"),
    ]
    routed = route_quotes(_checked(spark, lines), silver_row_checks(settings))
    reasons = {json.loads(r.raw_value)["event_id"]: r.reason for r in to_quarantine(routed).collect()}
    assert reasons == {
        "future": "expectations: event_time_plausible",
        "epoch": "expectations: event_time_plausible",
    }
    # The pure-Python reference, given each record's Kafka timestamp, agrees.
    suite = {name: spec.model_dump() for name, spec in settings.quality.suites.silver_quotes.items()}
    reference = {json.loads(line)["event_id"]: check_quote_line(line, suite, T0) for line in lines}
    assert reference == {"ok": None, **reasons}
    assert check_quote_line(lines[1], suite) is None  # without the timestamp the lag is not modelled


def test_an_expectation_without_a_row_predicate_fails_at_start(settings: Settings) -> None:
    odd = settings.with_overrides(
        "quality.suites.silver_quotes.price_positive_finite.expectation=expect_column_values_to_be_increasing"
    )
    with pytest.raises(ConfigError, match="has no row predicate"):
        silver_row_checks(odd)


def test_quality_columns(spark: SparkSession) -> None:
    quotes = to_silver(_checked(spark, [_quote("a", bid=99.0, ask=101.0), _quote("b", bid=None)]))
    rows = {r.event_id: r for r in with_quote_quality_columns(quotes).collect()}
    assert rows["a"].spread_bps == pytest.approx(200.0) and rows["b"].spread_bps is None
    assert rows["a"].event_lag_seconds == pytest.approx(60.0)  # Kafka timestamp 15:00, event at 14:59


def test_out_of_order_against_earlier_arrivals_and_batches(spark: SparkSession) -> None:
    lines = [
        _quote("a1", event_time="2026-11-20T14:00:03Z"),
        _quote("a2", event_time="2026-11-20T14:00:01Z"),  # earlier than a1, which arrived before it
        _quote("a3", event_time="2026-11-20T14:00:05Z"),
        _quote("b1", symbol="BOLT", event_time="2026-11-20T13:00:00Z"),  # behind BOLT's previous batches
        _quote("c1", symbol="CRUX", event_time="2026-11-20T13:00:00Z"),  # a symbol never seen
    ]
    state = batch_state(spark, "s", 1, None, {"BOLT": dt.datetime(2026, 11, 20, 13, 30, tzinfo=dt.UTC)})
    flagged = flag_out_of_order(to_silver(_checked(spark, lines)), state)
    got = flagged.select("event_id", "is_out_of_order")
    expected = spark.createDataFrame(
        [("a1", False), ("a2", True), ("a3", False), ("b1", True), ("c1", False)],
        "event_id string, is_out_of_order boolean",
    )
    assertDataFrameEqual(got, expected)
    assert flagged.columns == to_silver(_checked(spark, lines)).columns


def test_price_jump_confidence_follows_the_quotes_warnings(spark: SparkSession, settings: Settings) -> None:
    base = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
    rows = [
        ("ACME", "a0", base, 100.0, [], False),
        ("ACME", "a1", base + dt.timedelta(seconds=1), 110.0, ["bid_not_above_ask"], True),  # own warning
        ("ACME", "a2", base + dt.timedelta(seconds=2), 100.0, [], True),  # measured from a crossed quote
        ("BOLT", "b0", base, 50.0, [], False),
        (
            "BOLT",
            "b1",
            base + dt.timedelta(seconds=1),
            55.0,
            ["event_id_unique_in_batch"],
            True,
        ),  # irrelevant
    ]
    quotes = spark.createDataFrame(
        [(s, e, t, p, 10, w, n, False, 0, i, t, "s", 1) for i, (s, e, t, p, w, n) in enumerate(rows)],
        "symbol string, event_id string, event_time timestamp, price double, volume long, dq_warnings array<string>, "
        "is_new boolean, is_late boolean, kafka_partition int, kafka_offset long, kafka_timestamp timestamp, "
        "stream_id string, batch_id long",
    )
    unreliable = settings.quality.price_jump_unreliable_when
    alerts = detect_alerts(quotes, settings.rules, unreliable).where("rule = 'price_jump'").collect()
    got = {a.event_id: (a.confidence, json.loads(a.details)) for a in alerts}
    assert got["a1"][0] == "low" and got["a1"][1]["dq_warnings"] == ["bid_not_above_ask"]
    assert got["a2"][0] == "low" and got["a2"][1]["previous_dq_warnings"] == ["bid_not_above_ask"]
    assert got["b1"][0] == "high" and got["b1"][1]["dq_warnings"] == []
    # Without quality feeding detection every alert keeps full confidence.
    assert {a.confidence for a in detect_alerts(quotes, settings.rules).collect()} == {"high"}


def test_bars_suite_checks_gold_against_its_quotes(spark: SparkSession, settings: Settings) -> None:
    t = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
    quotes = spark.createDataFrame(
        [("ACME", t, 10), ("ACME", t + dt.timedelta(seconds=5), 20), ("BOLT", t, 7)],
        "symbol string, event_time timestamp, volume long",
    )
    bars = spark.createDataFrame(
        [
            ("ACME", t, 1.0, 2.0, 1.0, 2.0, 30, 2),
            ("BOLT", t, 5.0, 4.0, 3.0, 3.5, 9, 1),
        ],  # BOLT: high < open, volume off
        "symbol string, bar_start timestamp, open double, high double, low double, close double, volume long, "
        "trade_count long",
    )
    validator = SuiteValidator("gold_bars_1m", settings.quality.suites.gold_bars_1m)
    run = validator.validate(with_quote_totals(bars, quotes).cache())
    failed = {r.expectation: r.unexpected_count for r in run.results if not r.success}
    assert failed == {"high_not_below_open": 1, "volume_equals_quote_volume": 1}


def test_schema_of_new_fields() -> None:
    schema = "OBJECT<ask: DOUBLE, `b c`: BOOLEAN, event_id: STRING, n: OBJECT<x: ARRAY<BIGINT>>, Price: DOUBLE, qty: DECIMAL(3,0), venue: VARIANT, z: VOID>"
    assert object_fields(schema)["b c"] == "BOOLEAN" and object_fields("VARIANT") == {}
    addable, refused = new_fields(schema, ["event_id", "ask"])
    assert addable == {"n": "string", "qty": "bigint", "venue": "string"}
    assert sorted(refused) == ["Price", "b c"]  # a space; a case-insensitive clash with price
    assert silver_type("DECIMAL(10,2)") == "double" and silver_type("VOID") is None


def test_silver_with_extra_fields(spark: SparkSession) -> None:
    checked = _checked(spark, [_quote("a", venue="XNAS", qty=5), _quote("b", venue=7)])
    silver = to_silver(checked, {"venue": "string", "qty": "bigint"})
    assert silver.columns[-2:] == ["venue", "qty"]
    assert {(r.event_id, r.venue, r.qty) for r in silver.collect()} == {("a", "XNAS", 5), ("b", "7", None)}


def test_data_docs_from_dq_results(
    spark: SparkSession, silver_validator: SuiteValidator, tmp_path: Path
) -> None:
    quotes = suite_frame(_checked(spark, LINES)).cache()
    rows = []
    for batch_id in (0, 1):
        run = silver_validator.validate(quotes)
        rows += [{**row, "stream_id": "stream-a", "batch_id": batch_id} for row in dq_result_rows([run])]
    index = write_data_docs(pd.DataFrame(rows), tmp_path / "gx")
    pages = list((tmp_path / "gx" / "validations").rglob("*.html"))
    assert index.exists() and len(pages) == 2
    text = pages[0].read_text()
    assert "silver_quotes" in text and "Failed" in text


def test_expectation_spec_defaults() -> None:
    spec = ExpectationSpec(expectation="expect_column_to_exist", kwargs={"column": "price"})
    assert spec.severity == "error"
    with pytest.raises(ValueError):
        ExpectationSpec(expectation="column_to_exist")
