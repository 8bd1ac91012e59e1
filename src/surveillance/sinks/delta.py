"""Idempotent Delta writes for foreachBatch: a replayed micro-batch neither loses nor duplicates a row."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from pyspark.sql import DataFrame, SparkSession


def append_once(rows: DataFrame, location: str, app_id: str, batch_id: int) -> None:
    """Append ``rows`` unless this (app_id, batch_id) was already committed to the table.

    Delta records ``txnAppId``/``txnVersion`` in the same commit as the data, so a batch replayed after a
    crash is skipped exactly when its earlier attempt committed.
    """
    (
        rows.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", batch_id)
        .save(location)
    )


def date_list_sql(dates: Iterable[date]) -> str:
    """A SQL IN-list of DATE literals (for partition pruning in MERGE conditions)."""
    literals = sorted({f"DATE'{day.isoformat()}'" for day in dates})
    return ", ".join(literals) if literals else "NULL"


def upsert_bars(spark: SparkSession, location: str, bars: DataFrame, bar_dates: Iterable[date]) -> None:
    """MERGE recomputed bars on (symbol, bar_start), touching only the given date partitions."""
    from delta.tables import DeltaTable

    condition = (
        f"t.bar_date IN ({date_list_sql(bar_dates)}) AND t.symbol = s.symbol AND t.bar_start = s.bar_start"
    )
    (
        DeltaTable.forPath(spark, location)
        .alias("t")
        .merge(bars.alias("s"), condition)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
