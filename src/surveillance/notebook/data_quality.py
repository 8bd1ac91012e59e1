"""The data-quality history a notebook charts, read from the lakehouse (as ``surveil dq report`` reads it)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from surveillance.lakehouse import lakehouse_progress, read_table


@dataclass(frozen=True)
class QualityHistory:
    """The last micro-batches, their expectation results and every quarantine reason with its count."""

    batches: pd.DataFrame
    results: pd.DataFrame
    reasons: pd.DataFrame


def load_quality_history(spark: SparkSession, locations: dict[str, str], last: int = 200) -> QualityHistory:
    """stream_progress of the last ``last`` micro-batches, their dq_results rows, quarantine by reason."""
    latest = (
        lakehouse_progress(read_table(spark, locations["stream_progress"]))
        .orderBy(F.desc("finished_at"))
        .limit(last)
    )
    # Every count the figures use; the per-symbol high-water map is bookkeeping, not for charts.
    batches = latest.drop("symbol_max_event_time").toPandas()
    results = (
        read_table(spark, locations["dq_results"])
        .join(latest.select("stream_id", "batch_id"), ["stream_id", "batch_id"], "left_semi")
        .toPandas()
    )
    reasons = (
        read_table(spark, locations["quarantine_quotes"])
        .groupBy("reason")
        .agg(F.count("*").alias("records"))
        .toPandas()
    )
    return QualityHistory(batches, results, reasons)
