"""Pure transforms around validation: the derived columns the suites check, the quarantine reason."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def with_quote_quality_columns(quotes: DataFrame) -> DataFrame:
    """Silver quotes + ``spread_bps`` ((ask - bid) / mid) and ``event_lag_seconds`` (Kafka timestamp - event).

    The lag is measured against the record's Kafka timestamp, not the time a query ingested it: the
    detection and lakehouse queries (and a replayed batch) then judge a quote alike.
    """
    mid = (F.col("ask") + F.col("bid")) / 2
    spread = F.when(
        F.col("bid").isNotNull() & F.col("ask").isNotNull() & (mid > 0),
        (F.col("ask") - F.col("bid")) / mid * 1e4,
    )
    lag = (F.unix_micros("kafka_timestamp") - F.unix_micros("event_time")) / 1e6
    return quotes.withColumns({"spread_bps": spread, "event_lag_seconds": lag})


def with_quote_totals(bars: DataFrame, quotes: DataFrame, before: DataFrame | None = None) -> DataFrame:
    """Bars + ``quote_volume`` and ``quote_count`` recomputed from the quotes of each bar's minute.

    ``before`` (symbol, bar_start, volume_before, count_before): what each bar held before ``quotes``
    (a stream's micro-batch adds its quotes to bars of earlier batches).
    """
    key = ["symbol", "bar_start"]
    totals = quotes.groupBy("symbol", F.date_trunc("minute", "event_time").alias("bar_start")).agg(
        F.sum("volume").cast("long").alias("quote_volume"), F.count("*").cast("long").alias("quote_count")
    )
    joined = bars.join(totals, key, "left")
    if before is None:
        return joined
    return (
        joined.join(before, key, "left")
        .withColumns(
            {
                "quote_volume": F.coalesce("volume_before", F.lit(0)) + F.coalesce("quote_volume", F.lit(0)),
                "quote_count": F.coalesce("count_before", F.lit(0)) + F.coalesce("quote_count", F.lit(0)),
            }
        )
        .drop("volume_before", "count_before")
    )


def expectation_reason(errors: Column) -> Column:
    """The quarantine reason of a row that broke the named error expectations (NULL when none)."""
    return F.when(F.size(errors) > 0, F.concat(F.lit("expectations: "), F.array_join(errors, ", ")))
