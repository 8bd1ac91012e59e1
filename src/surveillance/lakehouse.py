"""The lakehouse's tables: logical names, locations, schemas and partitioning, created before first use."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from surveillance.config import ConfigError, Settings, resolve_local_path


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
    "Parsed, typed quotes that meet the contract and the error expectations, one row per event_id; "
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
    ),
    ("alert_date",),
    "Rule and model alerts with their evidence, keyed by a deterministic alert_id.",
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
    ),
    (),
    "One row per micro-batch: counts per layer, late and out-of-order quotes, event-time high-water marks.",
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

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (BRONZE, SILVER, QUARANTINE, GOLD_BARS, ALERTS, STREAM_PROGRESS, DQ_RESULTS)
}
PUBLIC_TABLES = (
    "bronze_quotes",
    "silver_quotes",
    "quarantine_quotes",
    "gold_bars_1m",
    "alerts",
    "dq_results",
)


def table_locations(settings: Settings) -> dict[str, str]:
    """{logical name: location} for every table, honouring per-table overrides."""
    root = resolve_local_path(settings.lakehouse.root).rstrip("/")
    unknown = set(settings.lakehouse.tables) - set(TABLES)
    if unknown:
        raise ConfigError(f"lakehouse.tables names unknown tables {sorted(unknown)}; known: {sorted(TABLES)}")
    return {
        name: resolve_local_path(settings.lakehouse.tables.get(name, f"{root}/{name}")) for name in TABLES
    }


def read_table(spark: SparkSession, location: str) -> DataFrame:
    """A Delta table as a DataFrame."""
    return spark.read.format("delta").load(location)


def ensure_tables(spark: SparkSession, locations: dict[str, str]) -> None:
    """Create every table (empty, with its schema and partitioning) if it does not exist yet.

    A table created by an earlier version gets the columns added since (additive evolution only: the
    rows already written read NULL there).
    """
    from delta.tables import DeltaTable

    for name, spec in TABLES.items():
        location = locations[name]
        if DeltaTable.isDeltaTable(spark, location):
            present = set(read_table(spark, location).columns)
            missing = [field for field in spec.schema.fields if field.name not in present]
            if missing:
                columns = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in missing)
                spark.sql(f"ALTER TABLE delta.`{location}` ADD COLUMNS ({columns})")
            continue
        builder = DeltaTable.createIfNotExists(spark).location(location).addColumns(spec.schema)
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        builder.comment(spec.description).execute()
