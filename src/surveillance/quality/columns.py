"""Pure transforms around validation: the derived columns the suites check, and routing rows by outcome."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from surveillance.transforms.silver import with_batch_state

# The columns that identify one record of a micro-batch (its Kafka coordinates), before and after the
# silver projection renames them.
BRONZE_ROW_KEY = ("partition", "offset")
SILVER_ROW_KEY = ("kafka_partition", "kafka_offset")
OUTCOME_SCHEMA = T.StructType(
    [
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("dq_errors", T.ArrayType(T.StringType())),
        T.StructField("dq_warnings", T.ArrayType(T.StringType())),
    ]
)


def _empty() -> Column:
    return F.array().cast("array<string>")


def with_quote_quality_columns(quotes: DataFrame) -> DataFrame:
    """Silver quotes + ``spread_bps`` ((ask - bid) / mid) and ``event_lag_seconds`` (ingested - event)."""
    mid = (F.col("ask") + F.col("bid")) / 2
    spread = F.when(
        F.col("bid").isNotNull() & F.col("ask").isNotNull() & (mid > 0),
        (F.col("ask") - F.col("bid")) / mid * 1e4,
    )
    lag = (F.unix_micros("ingested_at") - F.unix_micros("event_time")) / 1e6
    return quotes.withColumns({"spread_bps": spread, "event_lag_seconds": lag})


def with_quote_totals(bars: DataFrame, quotes: DataFrame) -> DataFrame:
    """Bars + ``quote_volume`` and ``quote_count`` recomputed from the quotes of each bar's minute."""
    totals = quotes.groupBy("symbol", F.date_trunc("minute", "event_time").alias("bar_start")).agg(
        F.sum("volume").cast("long").alias("quote_volume"), F.count("*").cast("long").alias("quote_count")
    )
    return bars.join(totals, ["symbol", "bar_start"], "left")


def expectation_reason(errors: Column) -> Column:
    """The quarantine reason of a row that broke the named error expectations (NULL when none)."""
    return F.when(F.size(errors) > 0, F.concat(F.lit("expectations: "), F.array_join(errors, ", ")))


def apply_expectation_outcomes(checked: DataFrame, outcomes: DataFrame | None) -> DataFrame:
    """Parsed rows + ``dq_errors``/``dq_warnings``; a valid row that broke an error expectation is rejected.

    ``outcomes`` has one row per record that broke something, keyed by its Kafka coordinates; a record's
    contract reason (if any) stays its reason, since the expectations only ever saw valid records.
    """
    if outcomes is None:
        return checked.withColumns({"dq_errors": _empty(), "dq_warnings": _empty()})
    joined = checked.join(F.broadcast(outcomes), list(BRONZE_ROW_KEY), "left")
    errors = F.coalesce("dq_errors", _empty())
    return joined.withColumns(
        {
            "dq_errors": errors,
            "dq_warnings": F.coalesce("dq_warnings", _empty()),
            "reject_reason": F.coalesce("reject_reason", expectation_reason(errors)),
        }
    ).select(*checked.columns, "dq_errors", "dq_warnings")


def flag_out_of_order(quotes: DataFrame, state: DataFrame | None) -> DataFrame:
    """Set ``is_out_of_order``: an earlier-arrived quote of the same symbol has a later event time.

    Earlier arrivals are those of the same micro-batch before it (by Kafka timestamp, partition, offset) and
    every quote of earlier batches, summarised by the batch's ``state`` (see
    :data:`surveillance.transforms.silver.BATCH_STATE_SCHEMA`).
    """
    arrived_before = (
        Window.partitionBy("stream_id", "batch_id", "symbol")
        .orderBy("kafka_timestamp", "kafka_partition", "kafka_offset")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    joined = with_batch_state(quotes, state)
    frontier = F.greatest(F.max("event_time").over(arrived_before), F.col("_symbol_max"))
    return joined.withColumn(
        "is_out_of_order", F.coalesce(F.col("event_time") < frontier, F.lit(False))
    ).select(*quotes.columns)
