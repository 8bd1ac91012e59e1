"""Gold: one-minute OHLCV bars per symbol, by event time."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from surveillance.lakehouse import GOLD_BARS


def bar_keys(quotes: DataFrame) -> DataFrame:
    """The distinct (symbol, bar_start) minutes that ``quotes`` fall into."""
    return quotes.select("symbol", F.date_trunc("minute", "event_time").alias("bar_start")).distinct()


def one_minute_bars(quotes: DataFrame) -> DataFrame:
    """Silver quotes -> 1-minute bars: open/high/low/close, volume, VWAP and trade count."""
    # Ties in event time are broken by event_id so that open and close are deterministic.
    order = F.struct("event_time", "event_id")
    bars = (
        quotes.withColumn("bar_start", F.date_trunc("minute", "event_time"))
        .groupBy("symbol", "bar_start")
        .agg(
            F.min_by("price", order).alias("open"),
            F.max("price").alias("high"),
            F.min("price").alias("low"),
            F.max_by("price", order).alias("close"),
            F.sum("volume").cast("long").alias("volume"),
            # Summed in event-time order: a floating-point sum depends on the order of its terms, and a
            # minute's quotes reach the sum in one order in the stream and in another in a backfill.
            F.aggregate(
                F.array_sort(F.collect_list(F.struct(order, (F.col("price") * F.col("volume")).alias("n")))),
                F.lit(0.0),
                lambda total, quote: total + quote["n"],
            ).alias("_notional"),
            F.count("*").cast("long").alias("trade_count"),
            F.min("event_time").alias("first_event_time"),
            F.max("event_time").alias("last_event_time"),
        )
    )
    # With zero volume in a minute there is no traded notional to weigh: VWAP is undefined (NULL).
    vwap = F.when(F.col("volume") > 0, F.col("_notional") / F.col("volume"))
    return bars.withColumns(
        {"vwap": vwap, "bar_date": F.to_date("bar_start"), "updated_at": F.current_timestamp()}
    ).select(*GOLD_BARS.schema.fieldNames())
