"""The ``dq_results`` table: one row per micro-batch, suite and expectation (plus the schema-drift check)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from surveillance.lakehouse import DQ_RESULTS, GOLD_BARS, SILVER
from surveillance.quality.validation import SuiteRun

# The columns each suite's DataFrame has (config is checked against them at start).
SUITE_COLUMNS: dict[str, tuple[str, ...]] = {
    # Arrival flags and dq_warnings are set after validation: expectations cannot name them.
    "silver_quotes": (
        *[n for n in SILVER.schema.fieldNames() if n not in ("is_late", "is_out_of_order", "dq_warnings")],
        "spread_bps",
        "event_lag_seconds",
    ),
    "gold_bars_1m": (*GOLD_BARS.schema.fieldNames(), "quote_volume", "quote_count"),
}
# Not a GX expectation: the pipeline's own check that producers send only the contract's fields.
CONTRACT_SUITE = "contract"
DRIFT_CHECK = "no_unknown_fields"


def dq_result_rows(runs: Iterable[SuiteRun]) -> list[dict[str, Any]]:
    """dq_results rows (without stream_id/batch_id) for validation runs."""
    rows = []
    for run in runs:
        for result in run.results:
            rows.append(
                {
                    "suite": result.suite,
                    "expectation": result.expectation,
                    "expectation_type": result.expectation_type,
                    "severity": result.severity,
                    "success": result.success,
                    "element_count": result.element_count,
                    "unexpected_count": result.unexpected_count,
                    "unexpected_percent": result.unexpected_percent,
                    "observed_value": result.observed_value,
                    "kwargs": result.kwargs,
                    "result": result.result
                    if result.error is None
                    else json.dumps({"exception": result.error}),
                    "run_time": run.run_time,
                    "run_date": run.run_time.date(),
                }
            )
    return rows


def drift_row(drift: dict[str, Any], valid_rows: int, run_time: dt.datetime) -> dict[str, Any]:
    """The schema-drift record of a batch: fields producers sent beyond the contract and silver's columns."""
    unknown = drift.get("unknown_fields", {})
    return {
        "suite": CONTRACT_SUITE,
        "expectation": DRIFT_CHECK,
        "expectation_type": "pipeline_schema_drift",
        "severity": "warn",
        "success": not unknown,
        "element_count": valid_rows,
        "unexpected_count": None,
        "unexpected_percent": None,
        "observed_value": json.dumps(unknown, sort_keys=True),
        "kwargs": json.dumps({"evolve": drift.get("evolve", False)}),
        "result": json.dumps(drift, sort_keys=True),
        "run_time": run_time,
        "run_date": run_time.date(),
    }


def dq_results_frame(
    spark: SparkSession, rows: list[dict[str, Any]], stream_id: str, batch_id: int
) -> DataFrame:
    """The dq_results rows of one micro-batch as a DataFrame with the table's schema."""
    stamped = [{**row, "stream_id": stream_id, "batch_id": batch_id} for row in rows]
    return spark.createDataFrame(stamped, DQ_RESULTS.schema)
