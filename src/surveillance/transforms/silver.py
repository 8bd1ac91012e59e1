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


_TYPED_FIELDS = {
    "event_id": "string",
    "symbol": "string",
    "event_time": "string",
    "price": "double",
    "volume": "bigint",
    "bid": "double",
    "ask": "double",
}


def _kind(name: str) -> Column:
    return F.col(f"_kind_{name}")


def _raw(name: str) -> Column:
    return F.col(f"_raw_{name}")


def _is_missing(name: str) -> Column:
    # An absent key gives SQL NULL, an explicit JSON null a VOID variant: both count as missing.
    return _kind(name).isNull() | (_kind(name) == "VOID")


def _is_number(name: str) -> Column:
    return _kind(name).isin(*_INTEGER_TYPES, "FLOAT", "DOUBLE") | _kind(name).startswith("DECIMAL")


def _is_finite(number: Column) -> Column:
    return ~F.isnan(number) & (F.abs(number) != F.lit(float("inf")))


def _string_checks(name: str) -> list[tuple[Column, str]]:
    return [
        (_is_missing(name), f"missing_{name}"),
        (_kind(name) != "STRING", f"{name}_not_string"),
        (F.length(F.trim(_raw(name))) == 0, f"empty_{name}"),
    ]


def _positive_number_checks(name: str, required: bool) -> list[tuple[Column, str]]:
    present = ~_is_missing(name)
    checks = [(~present, f"missing_{name}")] if required else []
    return [
        *checks,
        (present & ~_is_number(name), f"{name}_not_number"),
        (present & ~_is_finite(_raw(name)), f"{name}_not_finite"),
        (present & (_raw(name) <= 0), f"{name}_not_positive"),
    ]


def _reject_reason() -> Column:
    """The first contract rule a parsed record breaks, or NULL (columns from :func:`parse_quotes`)."""
    volume_kind = _kind("volume")
    checks: list[tuple[Column, str]] = [
        (F.col("value").isNull() | (F.length(F.trim("value")) == 0), "empty_value"),
        (F.col("_doc").isNull(), "invalid_json"),
        (~F.col("_doc_kind").startswith("OBJECT<"), "not_an_object"),
        *_string_checks("event_id"),
        *_string_checks("symbol"),
        (_is_missing("event_time"), "missing_event_time"),
        (_kind("event_time") != "STRING", "event_time_not_string"),
        (~_raw("event_time").rlike(ISO_UTC) | F.col("_event_time").isNull(), "bad_event_time"),
        *_positive_number_checks("price", required=True),
        (_is_missing("volume"), "missing_volume"),
        (
            ~(volume_kind.isin(*_INTEGER_TYPES) | volume_kind.rlike(r"^DECIMAL\(\d+,0\)$")),
            "volume_not_integer",
        ),
        (_raw("volume").isNull(), "volume_out_of_range"),
        (_raw("volume") < 0, "volume_negative"),
        *_positive_number_checks("bid", required=False),
        *_positive_number_checks("ask", required=False),
    ]
    reason = F.lit(None).cast("string")
    # Build the CASE from the last check to the first so that the first failing rule wins.
    for failed, name in reversed(checks):
        reason = F.when(F.coalesce(failed, F.lit(False)), F.lit(name)).otherwise(reason)
    return reason


def parse_quotes(bronze: DataFrame) -> DataFrame:
    """Bronze rows + the quote's typed fields and a ``reject_reason`` (NULL when the quote is valid).

    The JSON is parsed once per row into a VARIANT; each field's JSON type and typed value are computed
    once and the checks refer to those columns, which keeps the plan small and the work per row low.
    """
    doc = bronze.withColumn("_doc", F.try_parse_json("value"))
    fields = {"_doc_kind": F.schema_of_variant("_doc")}
    for name, spark_type in _TYPED_FIELDS.items():
        fields[f"_kind_{name}"] = F.schema_of_variant(F.try_variant_get("_doc", f"$.{name}", "variant"))
        fields[f"_raw_{name}"] = F.try_variant_get("_doc", f"$.{name}", spark_type)
    typed = doc.withColumns(fields).withColumn("_event_time", _raw("event_time").try_cast("timestamp"))
    checked = typed.withColumn("reject_reason", _reject_reason())
    return checked.drop("_doc", "_doc_kind", *[f"_kind_{name}" for name in _TYPED_FIELDS])


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
        "stream_id",
        "batch_id",
    ).select(*QUARANTINE.schema.fieldNames())


def to_silver(checked: DataFrame) -> DataFrame:
    """Valid parsed rows -> typed silver quotes (``is_late`` is set later by :func:`flag_late`)."""
    valid = checked.where(F.col("reject_reason").isNull())
    typed = valid.select(
        _raw("event_id").alias("event_id"),
        _raw("symbol").alias("symbol"),
        F.col("_event_time").alias("event_time"),
        _raw("price").alias("price"),
        _raw("volume").alias("volume"),
        _raw("bid").alias("bid"),
        _raw("ask").alias("ask"),
        F.to_date("_event_time").alias("event_date"),
        F.lit(None).cast("boolean").alias("is_late"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        "kafka_timestamp",
        "ingested_at",
        "stream_id",
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
