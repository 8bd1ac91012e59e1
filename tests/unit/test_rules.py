"""Detection rules on tiny DataFrames: jumps against history, z-scores, volume spikes, ids, severity."""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from surveillance.config import RuleSettings
from surveillance.detection.rules import alert_id, detect_alerts, price_jump_alerts, with_rule_features

SCHEMA = (
    "event_id string, symbol string, event_time timestamp, price double, volume long, is_late boolean, "
    "kafka_partition int, kafka_offset long, kafka_timestamp timestamp, stream_id string, batch_id long, "
    "is_new boolean"
)
T0 = dt.datetime(2026, 11, 20, 14, 30)


def _quotes(
    spark: SparkSession,
    prices: list[float],
    volumes: list[int] | None = None,
    new_from: int = 0,
    symbol: str = "ACME",
) -> DataFrame:
    volumes = volumes or [100] * len(prices)
    rows = [
        (
            f"{symbol}-{i:04d}",
            symbol,
            T0 + dt.timedelta(seconds=2 * i),
            p,
            v,
            False,
            0,
            i,
            T0,
            "s",
            1,
            i >= new_from,
        )
        for i, (p, v) in enumerate(zip(prices, volumes, strict=True))
    ]
    return spark.createDataFrame(rows, SCHEMA)


def _rules(**changes: object) -> RuleSettings:
    return RuleSettings().model_copy(update=changes)


def _wiggle(n: int, base: float = 100.0) -> list[float]:
    # Ordinary ticks: +/-0.1 % alternating, far below any threshold.
    return [base * (1 + 0.001 * (1 if i % 2 else -1)) for i in range(n)]


def test_price_jump_fires_on_its_own_event_with_evidence(spark: SparkSession) -> None:
    prices = [*_wiggle(10), 107.0, 107.1]
    alerts = detect_alerts(_quotes(spark, prices), _rules()).where(F.col("rule") == "price_jump").collect()
    assert [a.event_id for a in alerts] == ["ACME-0010"]
    details = json.loads(alerts[0].details)
    assert details["previous_event_id"] == "ACME-0009"
    assert abs(details["return"] - (107.0 / prices[9] - 1)) < 1e-12
    assert alerts[0].threshold == 0.05


def test_previous_price_comes_from_history_rows(spark: SparkSession) -> None:
    # The previous quote is history (already in silver); only the new row may alert.
    quotes = _quotes(spark, [100.0, 100.1, 94.0], new_from=2)
    alerts = detect_alerts(quotes, _rules()).where(F.col("rule") == "price_jump").collect()
    assert [a.event_id for a in alerts] == ["ACME-0002"]
    history_only = _quotes(spark, [100.0, 110.0, 110.1], new_from=3)
    assert detect_alerts(history_only, _rules()).count() == 0


def test_no_price_jump_on_ordinary_ticks_or_exactly_at_threshold(spark: SparkSession) -> None:
    assert detect_alerts(_quotes(spark, _wiggle(60)), _rules()).count() == 0
    at_threshold = _quotes(spark, [100.0, 105.0])
    assert (
        price_jump_alerts(with_rule_features(at_threshold, 5, 5), 0.05, RuleSettings().severity).count() == 0
    )


def test_out_of_order_arrival_uses_event_time_order(spark: SparkSession) -> None:
    rows = _quotes(spark, [100.0, 100.2, 100.1])
    # Arrival order is irrelevant: rows are ranked by event time per symbol.
    shuffled = rows.orderBy(F.col("event_time").desc())
    features = with_rule_features(shuffled, 5, 5).orderBy("event_time").select("prev_price").collect()
    assert [r.prev_price for r in features] == [None, 100.0, 100.2]


def test_symbols_do_not_share_history(spark: SparkSession) -> None:
    quotes = _quotes(spark, [100.0, 100.1], symbol="ACME").unionByName(
        _quotes(spark, [50.0, 50.1], symbol="BOLT")
    )
    assert detect_alerts(quotes, _rules()).count() == 0


def test_return_zscore_needs_history_and_fires_on_outlier(spark: SparkSession) -> None:
    rules = _rules(
        zscore=RuleSettings().zscore.model_copy(update={"window": 20, "min_periods": 10, "threshold": 4.0})
    )
    prices = [*_wiggle(30), _wiggle(30)[-1] * 1.02]
    alerts = detect_alerts(_quotes(spark, prices), rules).where(F.col("rule") == "return_zscore").collect()
    assert [a.event_id for a in alerts] == ["ACME-0030"]
    details = json.loads(alerts[0].details)
    assert details["window_returns"] == 20 and abs(details["zscore"]) > 4
    early = detect_alerts(_quotes(spark, [*_wiggle(5), 103.0]), rules).where(F.col("rule") == "return_zscore")
    assert early.count() == 0


def test_volume_spike(spark: SparkSession) -> None:
    volumes = [100] * 30 + [5000, 120]
    alerts = detect_alerts(_quotes(spark, _wiggle(32), volumes), _rules()).where(
        F.col("rule") == "volume_spike"
    )
    got = alerts.collect()
    assert [a.event_id for a in got] == ["ACME-0030"]
    assert got[0].score == 50.0 and got[0].severity == "high"


def test_alert_ids_are_deterministic_and_rule_specific(spark: SparkSession) -> None:
    quotes = _quotes(spark, [*_wiggle(30), 120.0], [100] * 30 + [90000])
    first = {(a.rule, a.alert_id) for a in detect_alerts(quotes, _rules()).collect()}
    second = {(a.rule, a.alert_id) for a in detect_alerts(quotes, _rules()).collect()}
    assert first == second and len({aid for _, aid in first}) == len(first) == 3
    row = spark.range(1).select(alert_id(F.lit("price_jump"), F.lit("x")).alias("id")).first()
    assert len(row.id) == 32


def test_severity_scales_with_score_over_threshold(spark: SparkSession) -> None:
    quotes = _quotes(spark, [100.0, 106.0, 106.0, 116.6, 116.6, 151.6])
    alerts = (
        detect_alerts(quotes, _rules()).where(F.col("rule") == "price_jump").orderBy("event_time").collect()
    )
    assert [a.severity for a in alerts] == ["low", "medium", "high"]


def test_disabled_rules_emit_nothing(spark: SparkSession) -> None:
    off = RuleSettings().model_copy(
        update={
            "price_jump": RuleSettings().price_jump.model_copy(update={"enabled": False}),
            "zscore": RuleSettings().zscore.model_copy(update={"enabled": False}),
            "volume_spike": RuleSettings().volume_spike.model_copy(update={"enabled": False}),
        }
    )
    assert detect_alerts(_quotes(spark, [100.0, 150.0]), off).count() == 0
