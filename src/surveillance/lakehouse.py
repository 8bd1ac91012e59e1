"""The lakehouse's tables: logical names, locations, schemas and partitioning, created before first use."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import types as T

from surveillance.locations import TABLE_NAMES, is_table_name, table_locations

if TYPE_CHECKING:
    from delta.tables import DeltaTable


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: T.StructType
    partition_by: tuple[str, ...]
    description: str


def _fields(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype, True) for name, dtype in fields])


S, TS, D, L, INT, DBL, B = (
    T.StringType(),
    T.TimestampType(),
    T.DateType(),
    T.LongType(),
    T.IntegerType(),
    T.DoubleType(),
    T.BooleanType(),
)
ARR = T.ArrayType(T.StringType())

BRONZE = TableSpec(
    "bronze_quotes",
    _fields(
        ("key", S),
        ("value", S),
        ("topic", S),
        ("partition", INT),
        ("offset", L),
        ("kafka_timestamp", TS),
        ("ingested_at", TS),
        ("ingest_date", D),
        ("stream_id", S),
        ("batch_id", L),
    ),
    ("ingest_date",),
    "Every Kafka record exactly as received; nothing filtered.",
)

SILVER = TableSpec(
    "silver_quotes",
    _fields(
        ("event_id", S),
        ("symbol", S),
        ("event_time", TS),
        ("price", DBL),
        ("volume", L),
        ("bid", DBL),
        ("ask", DBL),
        ("event_date", D),
        ("is_late", B),
        ("is_out_of_order", B),
        ("dq_warnings", ARR),
        ("kafka_partition", INT),
        ("kafka_offset", L),
        ("kafka_timestamp", TS),
        ("ingested_at", TS),
        ("stream_id", S),
        ("batch_id", L),
    ),
    ("event_date",),
    "Parsed, typed quotes that meet the contract and the error expectations, one row per (symbol, event_id); "
    "dq_warnings names the warn expectations a quote broke.",
)

QUARANTINE = TableSpec(
    "quarantine_quotes",
    _fields(
        ("reason", S),
        ("failed_expectations", ARR),
        ("raw_value", S),
        ("key", S),
        ("topic", S),
        ("kafka_partition", INT),
        ("kafka_offset", L),
        ("kafka_timestamp", TS),
        ("ingested_at", TS),
        ("ingest_date", D),
        ("stream_id", S),
        ("batch_id", L),
    ),
    ("ingest_date",),
    "Records that could not be parsed, break the quote contract or an error expectation, with the reason.",
)

GOLD_BARS = TableSpec(
    "gold_bars_1m",
    _fields(
        ("symbol", S),
        ("bar_start", TS),
        ("bar_date", D),
        ("open", DBL),
        ("high", DBL),
        ("low", DBL),
        ("close", DBL),
        ("volume", L),
        ("vwap", DBL),
        ("trade_count", L),
        ("first_event_time", TS),
        ("last_event_time", TS),
        ("updated_at", TS),
    ),
    ("bar_date",),
    # No deletion vectors, though the per-batch MERGE would rewrite less with them: delta-rs (1.6, the
    # independent audit's reader and many users' own) cannot read a table that has them.
    "One-minute OHLCV bars per symbol by event time, with VWAP and trade count.",
)

ALERTS = TableSpec(
    "alerts",
    _fields(
        ("alert_id", S),
        ("symbol", S),
        ("event_time", TS),
        ("event_id", S),
        ("rule", S),
        ("score", DBL),
        ("threshold", DBL),
        ("severity", S),
        ("confidence", S),
        ("details", S),
        ("detected_at", TS),
        ("alert_date", D),
        ("source_partition", INT),
        ("source_offset", L),
        ("source_kafka_timestamp", TS),
        ("stream_id", S),
        ("batch_id", L),
        ("episode_id", S),
    ),
    ("alert_date",),
    "Rule and model alerts with their evidence, keyed by a deterministic alert_id; alerts of one symbol "
    "close together in event time share an episode_id (the alert_episodes view).",
)

STREAM_PROGRESS = TableSpec(
    "stream_progress",
    _fields(
        ("stream_id", S),
        ("batch_id", L),
        ("records_in", L),
        ("silver_rows", L),
        ("duplicate_rows", L),
        ("quarantine_rows", L),
        ("late_rows", L),
        ("out_of_order_rows", L),
        ("dq_warning_rows", L),
        ("alert_rows", L),
        ("max_event_time", TS),
        ("watermark", TS),
        ("symbol_max_event_time", T.MapType(S, TS)),
        ("validation_seconds", DBL),
        ("model_version", S),
        ("model_alert_rows", L),
        ("started_at", TS),
        ("finished_at", TS),
        # Which query wrote the row (lakehouse or detection), where its batch spent its time
        # (seconds per step, plus "total") and how many Spark jobs it ran.
        ("query_name", S),
        ("step_seconds", T.MapType(S, DBL)),
        ("spark_jobs", L),
    ),
    (),
    "One row per micro-batch of each query: counts per layer, late and out-of-order quotes, event-time "
    "high-water marks, seconds per step and Spark jobs.",
)

DQ_RESULTS = TableSpec(
    "dq_results",
    _fields(
        ("suite", S),
        ("expectation", S),
        ("expectation_type", S),
        ("severity", S),
        ("success", B),
        ("element_count", L),
        ("unexpected_count", L),
        ("unexpected_percent", DBL),
        ("observed_value", S),
        ("kwargs", S),
        ("result", S),
        ("run_time", TS),
        ("run_date", D),
        ("stream_id", S),
        ("batch_id", L),
    ),
    ("run_date",),
    "One row per micro-batch, suite and expectation: Great Expectations' verdict and counts.",
)

BACKFILL_RUNS = TableSpec(
    "backfill_runs",
    _fields(
        ("run_id", S),
        ("range_start", TS),
        ("range_end", TS),
        ("bronze_from_date", D),
        ("quotes_in_range", L),
        ("silver_rows", L),
        ("quarantined_rows", L),
        ("bar_rows", L),
        ("alert_rows", L),
        ("model_version", S),
        ("changes", S),
        ("started_at", TS),
        ("finished_at", TS),
    ),
    (),
    "One row per backfill: the event-time range restated, what it found, and the rows it changed per table.",
)

ALERT_ACTIONS = TableSpec(
    "alert_actions",
    _fields(
        ("action_id", S),
        ("alert_id", S),
        ("action", S),
        ("status_before", S),
        ("status_after", S),
        ("assignee", S),
        ("note", S),
        ("actor", S),
        ("role", S),
        ("acted_at", TS),
        ("alert_symbol", S),
        ("alert_event_time", TS),
    ),
    (),
    # Written by the API (delta-rs), never updated: an alert's status is its last action's status_after.
    "What analysts did to alerts, append-only: who, when, which action, the note, the status before "
    "and after.",
)

DRIFT_RESULTS = TableSpec(
    "drift_results",
    _fields(
        ("run_id", S),
        ("run_at", TS),
        ("window_start", TS),
        ("window_end", TS),
        ("model_name", S),
        ("model_version", S),
        ("feature", S),
        ("method", S),
        ("score", DBL),
        ("threshold", DBL),
        ("drift_detected", B),
        ("reference_rows", L),
        ("current_rows", L),
        ("share_drifted", DBL),
        ("run_drift_detected", B),
    ),
    (),
    # Written by `surveil drift report` (delta-rs), appended to.
    "One row per drift check and feature: the window of silver compared with the champion's training "
    "reference, the test, its score, threshold and verdict.",
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        BRONZE,
        SILVER,
        QUARANTINE,
        GOLD_BARS,
        ALERTS,
        STREAM_PROGRESS,
        DQ_RESULTS,
        BACKFILL_RUNS,
        ALERT_ACTIONS,
        DRIFT_RESULTS,
    )
}
assert tuple(TABLES) == TABLE_NAMES, "surveillance.locations.TABLE_NAMES must list every TableSpec"
__all__ = ["is_table_name", "table_locations"]
PUBLIC_TABLES = (
    "bronze_quotes",
    "silver_quotes",
    "quarantine_quotes",
    "gold_bars_1m",
    "alerts",
    "dq_results",
    "alert_actions",
    "drift_results",
)


def table_sql(location: str) -> str:
    """The location as a SQL table reference: the name itself, or delta.`path`."""
    return location if is_table_name(location) else f"delta.`{location}`"


def read_table(spark: SparkSession, location: str) -> DataFrame:
    """A Delta table, by name or path, as a DataFrame."""
    if is_table_name(location):
        return spark.read.table(location)
    return spark.read.format("delta").load(location)


def lakehouse_progress(progress: DataFrame) -> DataFrame:
    """The ``stream_progress`` rows of the lakehouse query (the detection query's count no records in)."""
    from pyspark.sql import functions as F

    return progress.where(F.col("records_in").isNotNull())


def write_table(writer: DataFrameWriter, location: str) -> None:
    """Run a configured Delta writer against a table name or a path."""
    if is_table_name(location):
        writer.saveAsTable(location)
    else:
        writer.save(location)


def delta_table(spark: SparkSession, location: str) -> DeltaTable:
    """The DeltaTable handle (MERGE, history) for a table name or a path."""
    from delta.tables import DeltaTable

    if is_table_name(location):
        return DeltaTable.forName(spark, location)
    return DeltaTable.forPath(spark, location)


def table_exists(spark: SparkSession, location: str) -> bool:
    """Whether the Delta table exists (by name in the catalog, or as a Delta log at the path)."""
    from delta.tables import DeltaTable

    if is_table_name(location):
        return spark.catalog.tableExists(location)
    return DeltaTable.isDeltaTable(spark, location)


def _ensure_schema(spark: SparkSession, location: str) -> None:
    namespace = location.rsplit(".", 1)[0] if "." in location else None
    if namespace and not spark.catalog.databaseExists(namespace):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {namespace}")


def ensure_tables(spark: SparkSession, locations: dict[str, str], names: Iterable[str] | None = None) -> None:
    """Create the tables ``names`` (default: every one) if they do not exist yet: empty, with their schema
    and partitioning.

    A table created by an earlier version gets the columns added since (additive evolution only: the
    rows already written read NULL there). The tables are looked at side by side: each look loads a Delta
    snapshot, mostly driver-side waiting, and a streaming query's restart waits for all of them.
    """
    wanted = list(TABLES) if names is None else list(dict.fromkeys(names))
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="ensure-table") as pool:
        for done in [pool.submit(_ensure_table_retrying, spark, TABLES[n], locations[n]) for n in wanted]:
            done.result()


def _ensure_table_retrying(spark: SparkSession, spec: TableSpec, location: str) -> None:
    for attempt in range(5):
        try:
            _ensure_table(spark, spec, location)
            return
        except Exception:
            # Another process creating the same tables at the same moment (the other query's, with
            # stream.processes: 2) makes one of the two first commits fail, or finds the table half
            # made: look again once it is done.
            if attempt == 4:
                raise
            time.sleep(1)


def _ensure_table(spark: SparkSession, spec: TableSpec, location: str) -> None:
    from delta.tables import DeltaTable

    if table_exists(spark, location):
        present = set(read_table(spark, location).columns)
        missing = [field for field in spec.schema.fields if field.name not in present]
        if missing:
            columns = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in missing)
            spark.sql(f"ALTER TABLE {table_sql(location)} ADD COLUMNS ({columns})")
        return
    builder = DeltaTable.createIfNotExists(spark)
    if is_table_name(location):
        _ensure_schema(spark, location)
        builder = builder.tableName(location)
    else:
        builder = builder.location(location)
    builder = builder.addColumns(spec.schema)
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    builder.comment(spec.description).execute()
