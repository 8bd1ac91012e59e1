"""Windowed detection rules over silver quotes: price jump, rolling return z-score, volume spike.

Every rule reads a symbol's quotes in event-time order (ties broken by event_id), through the quote's
context (:mod:`surveillance.detection.context`: the previous price, the rolling windows), so each rule
itself is a filter on one row. The stream's state operator attaches that context from the symbol's tail in
the state store; a backfill computes it over silver history plus the recomputed quotes (``is_new``).

Data quality feeds detection: a return-based alert (price jump, return z-score) on a quote that broke one
of the ``unreliable_when`` warn expectations (crossed, extreme spread, stale), or measured from a previous
quote that did, is kept with ``confidence = "low"`` and those expectations named in its evidence. Kept, not
suppressed: a crossed or blown-out book is itself what some manipulation looks like, and a surveillance
team must be able to see, and filter, an alert rather than never learn it was raised.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from surveillance.config import RuleSettings, SeveritySettings
from surveillance.detection.context import ContextWindows, with_quote_context
from surveillance.lakehouse import ALERTS

PRICE_JUMP = "price_jump"
RETURN_ZSCORE = "return_zscore"
VOLUME_SPIKE = "volume_spike"


def rule_windows(rules: RuleSettings, model_features: bool = False) -> ContextWindows:
    """The context windows the rules read (and the model's features, when a model scores)."""
    return ContextWindows(rules.zscore.window, rules.volume_spike.window, model_features)


def with_rule_features(quotes: DataFrame, zscore_window: int, volume_window: int) -> DataFrame:
    """Add previous price, return, and trailing return/volume statistics per symbol (current row excluded).

    The batch form of the context the stream's state operator attaches (see
    :mod:`surveillance.detection.context`).
    """
    return with_quote_context(quotes, ContextWindows(zscore_window, volume_window, model_features=False))


def severity(score: Column, threshold: Column, levels: SeveritySettings) -> Column:
    """'high', 'medium' or 'low' by how far the score exceeds its threshold."""
    ratio = score / threshold
    return (
        F.when(ratio >= levels.high_ratio, "high")
        .when(ratio >= levels.medium_ratio, "medium")
        .otherwise("low")
    )


def alert_id(rule: Column, event_id: Column) -> Column:
    """A deterministic id: the same rule firing on the same event always gets the same id."""
    return F.sha2(F.concat_ws("|", rule, event_id), 256).substr(1, 32)


def _warnings_among(column: str, names: Sequence[str]) -> Column:
    wanted = F.array(*[F.lit(name) for name in names]) if names else F.array().cast("array<string>")
    return F.array_intersect(F.coalesce(F.col(column), F.array().cast("array<string>")), wanted)


def price_quality(unreliable_when: Sequence[str]) -> tuple[Column, Column, Column]:
    """(confidence, the quote's unreliable warnings, the previous quote's) for a return-based alert."""
    own, previous = (
        _warnings_among("dq_warnings", unreliable_when),
        _warnings_among("prev_dq_warnings", unreliable_when),
    )
    confidence = F.when((F.size(own) > 0) | (F.size(previous) > 0), "low").otherwise("high")
    return confidence, own, previous


def alert_rows(
    candidates: DataFrame,
    rule: str,
    score: Column,
    threshold: float,
    details: Column,
    levels: SeveritySettings,
    confidence: Column | None = None,
    severity_level: Column | None = None,
) -> DataFrame:
    """Rows of the alerts table for ``candidates`` (quotes with their Kafka and batch columns).

    Severity comes from score / threshold unless ``severity_level`` gives it.
    """
    threshold_col = F.lit(float(threshold))
    return candidates.select(
        alert_id(F.lit(rule), F.col("event_id")).alias("alert_id"),
        "symbol",
        "event_time",
        "event_id",
        F.lit(rule).alias("rule"),
        score.alias("score"),
        threshold_col.alias("threshold"),
        (severity(score, threshold_col, levels) if severity_level is None else severity_level).alias(
            "severity"
        ),
        (F.lit("high") if confidence is None else confidence).alias("confidence"),
        F.to_json(details).alias("details"),
        F.current_timestamp().alias("detected_at"),
        F.to_date("event_time").alias("alert_date"),
        F.col("kafka_partition").alias("source_partition"),
        F.col("kafka_offset").alias("source_offset"),
        F.col("kafka_timestamp").alias("source_kafka_timestamp"),
        "stream_id",
        "batch_id",
        # Set once the alerts of a batch are known (detection/episodes.py): it depends on earlier alerts.
        F.lit(None).cast("string").alias("episode_id"),
    )


def price_jump_alerts(
    features: DataFrame, threshold: float, levels: SeveritySettings, unreliable_when: Sequence[str] = ()
) -> DataFrame:
    """New quotes whose price moved more than ``threshold`` from the symbol's previous price."""
    score = F.abs(F.col("ret"))
    hits = features.where(F.col("is_new") & F.col("prev_price").isNotNull() & (score > threshold))
    confidence, own, previous = price_quality(unreliable_when)
    details = F.struct(
        F.col("prev_price").alias("previous_price"),
        F.col("prev_event_id").alias("previous_event_id"),
        F.col("prev_event_time").alias("previous_event_time"),
        "price",
        F.col("ret").alias("return"),
        "is_late",
        own.alias("dq_warnings"),
        previous.alias("previous_dq_warnings"),
    )
    return alert_rows(hits, PRICE_JUMP, score, threshold, details, levels, confidence)


def return_zscore_alerts(
    features: DataFrame,
    threshold: float,
    min_periods: int,
    levels: SeveritySettings,
    unreliable_when: Sequence[str] = (),
) -> DataFrame:
    """New quotes whose return lies more than ``threshold`` trailing standard deviations from the mean."""
    zscore = (F.col("ret") - F.col("ret_mean")) / F.col("ret_std")
    score = F.abs(zscore)
    enough_history = (F.col("ret_n") >= min_periods) & (F.col("ret_std") > 0)
    hits = features.where(F.col("is_new") & enough_history & (score > threshold))
    confidence, own, previous = price_quality(unreliable_when)
    details = F.struct(
        F.col("ret").alias("return"),
        F.col("ret_mean").alias("mean_return"),
        F.col("ret_std").alias("stdev_return"),
        F.col("ret_n").alias("window_returns"),
        zscore.alias("zscore"),
        F.col("prev_price").alias("previous_price"),
        "price",
        own.alias("dq_warnings"),
        previous.alias("previous_dq_warnings"),
    )
    return alert_rows(hits, RETURN_ZSCORE, score, threshold, details, levels, confidence)


def volume_spike_alerts(
    features: DataFrame, ratio: float, min_periods: int, min_volume: int, levels: SeveritySettings
) -> DataFrame:
    """New quotes whose volume is more than ``ratio`` times the trailing average volume."""
    volume_ratio = F.col("volume") / F.col("volume_mean")
    enough_history = (F.col("volume_n") >= min_periods) & (F.col("volume_mean") > 0)
    hits = features.where(
        F.col("is_new") & enough_history & (F.col("volume") >= min_volume) & (volume_ratio > ratio)
    )
    details = F.struct(
        "volume",
        F.col("volume_mean").alias("mean_volume"),
        F.col("volume_n").alias("window_quotes"),
        volume_ratio.alias("volume_ratio"),
    )
    return alert_rows(hits, VOLUME_SPIKE, volume_ratio, ratio, details, levels)


def detect_alerts(quotes: DataFrame, rules: RuleSettings, unreliable_when: Sequence[str] = ()) -> DataFrame:
    """All enabled rules' alerts for the rows of ``quotes`` marked ``is_new`` (history rows give context).

    ``unreliable_when``: warn expectations (names in ``dq_warnings``) that lower a return-based alert's
    confidence.
    """
    return alerts_in_context(with_quote_context(quotes, rule_windows(rules)), rules, unreliable_when)


def alerts_in_context(
    features: DataFrame, rules: RuleSettings, unreliable_when: Sequence[str] = ()
) -> DataFrame:
    """All enabled rules' alerts for the ``is_new`` rows of quotes that carry their context: row filters."""
    levels = rules.severity
    found: list[DataFrame] = []
    if rules.price_jump.enabled:
        found.append(price_jump_alerts(features, rules.price_jump.threshold, levels, unreliable_when))
    if rules.zscore.enabled:
        zscore = rules.zscore
        found.append(
            return_zscore_alerts(features, zscore.threshold, zscore.min_periods, levels, unreliable_when)
        )
    if rules.volume_spike.enabled:
        spike = rules.volume_spike
        found.append(volume_spike_alerts(features, spike.ratio, spike.min_periods, spike.min_volume, levels))
    if not found:
        return features.sparkSession.createDataFrame([], ALERTS.schema)
    alerts = found[0]
    for more in found[1:]:
        alerts = alerts.unionByName(more)
    return alerts.select(*ALERTS.schema.fieldNames())
