"""Silver: parse bronze values against the quote contract, route rejects to quarantine, deduplicate.

Parsing uses Spark's VARIANT (``try_parse_json``), which keeps each JSON value's own type: a price sent as
the text "101.5" is told apart from the number 101.5 without a per-row Python parser.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from surveillance.lakehouse import QUARANTINE, SILVER

# ISO-8601 with a date, a 'T', seconds, optional fraction and an explicit UTC designator or offset.
ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$"
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT")


def _field(doc: Column, name: str) -> Column:
    return F.try_variant_get(doc, f"$.{name}", "variant")


def _json_type(value: Column) -> Column:
    """The JSON value's type as Spark names it ('STRING', 'BIGINT', 'DECIMAL(4,1)', 'DOUBLE', 'VOID'...)."""
    return F.schema_of_variant(value)


def _is_missing(value: Column) -> Column:
    # An absent key gives SQL NULL, an explicit JSON null gives a VOID variant: both count as missing.
    return value.isNull() | (_json_type(value) == "VOID")


def _is_number(value: Column) -> Column:
    kind = _json_type(value)
    return kind.isin(*_INTEGER_TYPES, "FLOAT", "DOUBLE") | kind.startswith("DECIMAL")


def _is_integer(value: Column) -> Column:
    kind = _json_type(value)
    return kind.isin(*_INTEGER_TYPES) | kind.rlike(r"^DECIMAL\(\d+,0\)$")


def _is_finite(number: Column) -> Column:
    return ~F.isnan(number) & (F.abs(number) != F.lit(float("inf")))


def _string_checks(doc: Column, name: str) -> list[tuple[Column, str]]:
    value = _field(doc, name)
    text = F.try_variant_get(doc, f"$.{name}", "string")
    return [
        (_is_missing(value), f"missing_{name}"),
        (_json_type(value) != "STRING", f"{name}_not_string"),
        (F.length(F.trim(text)) == 0, f"empty_{name}"),
    ]


def _positive_number_checks(doc: Column, name: str, required: bool) -> list[tuple[Column, str]]:
    value = _field(doc, name)
    number = F.try_variant_get(doc, f"$.{name}", "double")
    present = ~_is_missing(value)
    checks = [(~present, f"missing_{name}")] if required else []
    return [
        *checks,
        (present & ~_is_number(value), f"{name}_not_number"),
        (present & ~_is_finite(number), f"{name}_not_finite"),
        (present & (number <= 0), f"{name}_not_positive"),
    ]


def reject_reason(value: Column) -> Column:
    """The first contract rule the raw JSON text breaks, or NULL when the quote is valid."""
    doc = F.try_parse_json(value)
    event_time = F.try_variant_get(doc, "$.event_time", "string")
    volume = _field(doc, "volume")
    checks: list[tuple[Column, str]] = [
        (value.isNull() | (F.length(F.trim(value)) == 0), "empty_value"),
        (doc.isNull(), "invalid_json"),
        (~_json_type(doc).startswith("OBJECT<"), "not_an_object"),
        *_string_checks(doc, "event_id"),
        *_string_checks(doc, "symbol"),
        (_is_missing(_field(doc, "event_time")), "missing_event_time"),
        (_json_type(_field(doc, "event_time")) != "STRING", "event_time_not_string"),
        (~event_time.rlike(ISO_UTC) | event_time.try_cast("timestamp").isNull(), "bad_event_time"),
        *_positive_number_checks(doc, "price", required=True),
        (_is_missing(volume), "missing_volume"),
        (~_is_integer(volume), "volume_not_integer"),
        (F.try_variant_get(doc, "$.volume", "bigint").isNull(), "volume_out_of_range"),
        (F.try_variant_get(doc, "$.volume", "bigint") < 0, "volume_negative"),
        *_positive_number_checks(doc, "bid", required=False),
        *_positive_number_checks(doc, "ask", required=False),
    ]
    reason = F.lit(None).cast("string")
    # Build the CASE from the last check to the first so that the first failing rule wins.
    for failed, name in reversed(checks):
        reason = F.when(F.coalesce(failed, F.lit(False)), F.lit(name)).otherwise(reason)
    return reason


def with_reject_reason(bronze: DataFrame) -> DataFrame:
    """Bronze rows with a ``reject_reason`` column (NULL for quotes that meet the contract)."""
    return bronze.withColumn("reject_reason", reject_reason(F.col("value")))


def to_quarantine(checked: DataFrame) -> DataFrame:
    """Rejected bronze rows -> quarantine rows carrying the raw value, Kafka coordinates and reason."""
    rejected = checked.where(F.col("reject_reason").isNotNull())
    return rejected.select(
        F.col("reject_reason").alias("reason"),
        F.col("value").alias("raw_value"),
        "key",
        "topic",
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        "kafka_timestamp",
        "ingested_at",
        "ingest_date",
        "batch_id",
    ).select(*QUARANTINE.schema.fieldNames())


def to_silver(checked: DataFrame) -> DataFrame:
    """Valid bronze rows -> typed quotes (is_late still unknown: see :func:`flag_late`)."""
    valid = checked.where(F.col("reject_reason").isNull())
    doc = F.parse_json("value")
    event_time = F.try_variant_get(doc, "$.event_time", "string").try_cast("timestamp")
    typed = valid.select(
        F.variant_get(doc, "$.event_id", "string").alias("event_id"),
        F.variant_get(doc, "$.symbol", "string").alias("symbol"),
        event_time.alias("event_time"),
        F.variant_get(doc, "$.price", "double").alias("price"),
        F.variant_get(doc, "$.volume", "bigint").alias("volume"),
        F.try_variant_get(doc, "$.bid", "double").alias("bid"),
        F.try_variant_get(doc, "$.ask", "double").alias("ask"),
        F.to_date(event_time).alias("event_date"),
        F.lit(None).cast("boolean").alias("is_late"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        "kafka_timestamp",
        "ingested_at",
        "batch_id",
    )
    return typed.select(*SILVER.schema.fieldNames())


def first_per_event_id(quotes: DataFrame) -> DataFrame:
    """One row per event_id: the first to arrive (lowest partition, offset) wins."""
    first = Window.partitionBy("event_id").orderBy("kafka_partition", "kafka_offset")
    return quotes.withColumn("_arrival", F.row_number().over(first)).where("_arrival = 1").drop("_arrival")


def not_seen_before(quotes: DataFrame, seen_event_ids: DataFrame) -> DataFrame:
    """Quotes whose event_id is not in ``seen_event_ids`` (the event_ids already in silver)."""
    return quotes.join(seen_event_ids.select("event_id").distinct(), "event_id", "left_anti").select(
        *quotes.columns
    )


def flag_late(quotes: DataFrame, watermark: dt.datetime | None) -> DataFrame:
    """Set ``is_late`` for quotes older than the event-time watermark (none are late before the first one)."""
    late = F.lit(False) if watermark is None else F.col("event_time") < F.lit(watermark).cast("timestamp")
    return quotes.withColumn("is_late", late)
