"""Silver: parse bronze values against the quote contract, route rejects to quarantine, deduplicate.

Parsing uses Spark's VARIANT (``try_parse_json``), which keeps each JSON value's own type: a price sent as
the text "101.5" is told apart from the number 101.5 without a per-row Python parser.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, SparkSession, Window
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


def _present(name: str) -> Column:
    return ~_is_missing(name)


def _string_checks(name: str) -> list[tuple[Column, str]]:
    return [(_present(name) & (_kind(name) != "STRING"), f"{name}_not_string")]


def _number_checks(name: str) -> list[tuple[Column, str]]:
    present = _present(name)
    return [
        (present & ~_is_number(name), f"{name}_not_number"),
        # A number too large for a double cannot be represented: refuse it rather than store NULL.
        (present & _raw(name).isNull(), f"{name}_out_of_range"),
    ]


def _contract_checks() -> list[tuple[Column, str]]:
    """The quote contract's rules, in the order they are checked: (broken when true, the rule's name).

    The contract is the message's shape: JSON, an object, and each known field of its JSON type. Values
    (present, positive, within bounds, a known symbol...) are the expectation suite's job (see
    :mod:`surveillance.quality`), so every such rule has one home, a name and a severity.
    """
    volume_kind = _kind("volume")
    checks: list[tuple[Column, str]] = [
        (F.col("value").isNull() | (F.length(F.trim("value")) == 0), "empty_value"),
        (F.col("_doc").isNull(), "invalid_json"),
        (~F.col("_doc_kind").startswith("OBJECT<"), "not_an_object"),
        *_string_checks("event_id"),
        *_string_checks("symbol"),
        *_string_checks("event_time"),
        (
            _present("event_time") & (~_raw("event_time").rlike(ISO_UTC) | F.col("_event_time").isNull()),
            "bad_event_time",
        ),
        *_number_checks("price"),
        (
            # An integer literal beyond BIGINT is a DECIMAL(19..38, 0) variant: an integer, out of range.
            # A short DECIMAL(n, 0) is a decimal written with zeros after its point (1.0, -0.0): the
            # variant drops them, but the message sent a decimal, and the contract asks for an integer.
            _present("volume")
            & ~(volume_kind.isin(*_INTEGER_TYPES) | volume_kind.rlike(r"^DECIMAL\((19|[23][0-9]),0\)$")),
            "volume_not_integer",
        ),
        (_present("volume") & _raw("volume").isNull(), "volume_out_of_range"),
        *_number_checks("bid"),
        *_number_checks("ask"),
    ]
    return checks


def contract_reasons() -> list[str]:
    """The names a record breaking the contract is quarantined with (the rules' names, in order)."""
    return [name for _, name in _contract_checks()]


def _reject_reason() -> Column:
    """The first contract rule a parsed record breaks, or NULL (columns from :func:`parse_quotes`)."""
    checks = _contract_checks()
    reason = F.lit(None).cast("string")
    # Build the CASE from the last check to the first so that the first failing rule wins.
    for failed, name in reversed(checks):
        reason = F.when(F.coalesce(failed, F.lit(False)), F.lit(name)).otherwise(reason)
    return reason


_END_MARK = "\u0000surveillance:end-of-message"
_END_MARK_JSON = "\\u0000surveillance:end-of-message"  # as written inside a JSON string


def parse_quotes(bronze: DataFrame) -> DataFrame:
    """Bronze rows + the quote's typed fields and a ``reject_reason`` (NULL when the quote is valid).

    The JSON is parsed once per row into a VARIANT; each field's JSON type and typed value are computed
    once and the checks refer to those columns, which keeps the plan small and the work per row low.
    """
    # Spark's JSON parser stops after the first complete value and ignores what follows ('{"a":1} x' and
    # '{"a":1}}' parse as {"a":1}); RFC 8259, and so the contract, do not. The message is parsed once, as the
    # first of two elements of '[<message>,<end mark>]': only whole JSON gives exactly that array, since a
    # message that closes the array early leaves the mark (a string no producer sends) out of it.
    wrapped = F.try_parse_json(F.concat(F.lit("["), F.col("value"), F.lit(f',"{_END_MARK_JSON}"]')))
    elements = F.array_size(F.try_variant_get(wrapped, "$", "array<variant>"))
    whole = (elements == 2) & (F.try_variant_get(wrapped, "$[1]", "string") == F.lit(_END_MARK))
    doc = bronze.withColumn("_doc", F.when(whole, F.try_variant_get(wrapped, "$[0]", "variant")))
    fields = {"_doc_kind": F.schema_of_variant("_doc")}
    for name, spark_type in _TYPED_FIELDS.items():
        fields[f"_kind_{name}"] = F.schema_of_variant(F.try_variant_get("_doc", f"$.{name}", "variant"))
        fields[f"_raw_{name}"] = F.try_variant_get("_doc", f"$.{name}", spark_type)
    typed = doc.withColumns(fields).withColumn("_event_time", _raw("event_time").try_cast("timestamp"))
    checked = typed.withColumn("reject_reason", _reject_reason())
    # _doc stays: schema evolution reads producers' new fields from it.
    return checked.drop("_doc_kind", *[f"_kind_{name}" for name in _TYPED_FIELDS])


# A producer's new field becomes a silver column only under a plain name (Delta without column mapping
# refuses spaces and punctuation; Spark matches names case-insensitively).
_EVOLVABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DECIMAL = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif not quoted and char in "<(":
            depth += 1
        elif not quoted and char in ">)":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    return [*parts, tail] if tail else parts


def object_fields(variant_schema: str | None) -> dict[str, str]:
    """{field: VARIANT type} of an ``OBJECT<...>`` schema from ``schema_of_variant(_agg)``; {} otherwise."""
    if not variant_schema or not variant_schema.startswith("OBJECT<"):
        return {}
    fields = {}
    for part in _split_top_level(variant_schema[len("OBJECT<") : -1]):
        name, _, kind = part.partition(": ")
        fields[name[1:-1].replace("``", "`") if name.startswith("`") else name] = kind
    return fields


def silver_type(variant_type: str) -> str | None:
    """The silver column type for a new field's VARIANT type (nested or mixed values kept as JSON text).

    None for VOID: only nulls seen so far, so no type to choose yet.
    """
    if variant_type == "VOID":
        return None
    if variant_type in _INTEGER_TYPES:
        return "bigint"
    if variant_type in ("FLOAT", "DOUBLE"):
        return "double"
    if variant_type in ("BOOLEAN", "STRING", "DATE"):
        return variant_type.lower()
    decimal = _DECIMAL.match(variant_type)
    if decimal:
        return "bigint" if decimal.group(2) == "0" and int(decimal.group(1)) <= 18 else "double"
    return "string"


def new_fields(variant_schema: str | None, existing_columns: list[str]) -> tuple[dict[str, str], list[str]]:
    """Fields of the batch's messages beyond the contract and the existing columns.

    Returns ({name: silver type} for those that can become columns, [names that cannot]): a field whose
    name is not a plain identifier or clashes (ignoring case) with an existing column stays in bronze only.
    """
    taken = {name.lower() for name in (*existing_columns, *_TYPED_FIELDS)}
    addable, refused = {}, []
    for name, kind in object_fields(variant_schema).items():
        if name in _TYPED_FIELDS or name in existing_columns:
            continue
        spark_type = silver_type(kind)
        if not _EVOLVABLE_NAME.match(name) or name.lower() in taken:
            refused.append(name)
        elif spark_type is not None:
            addable[name] = spark_type
    return addable, refused


def _array_or_empty(rows: DataFrame, name: str) -> Column:
    # Parsed rows carry expectation outcomes once validated (see surveillance.quality.columns).
    return F.col(name) if name in rows.columns else F.array().cast("array<string>")


def to_quarantine(checked: DataFrame) -> DataFrame:
    """Rejected bronze rows -> quarantine rows carrying the raw value, Kafka coordinates and reason."""
    rejected = checked.where(F.col("reject_reason").isNotNull())
    return rejected.select(
        F.col("reject_reason").alias("reason"),
        _array_or_empty(checked, "dq_errors").alias("failed_expectations"),
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


def _typed_fields(extra_fields: Mapping[str, str] | None) -> dict[str, Column]:
    # The quote's fields under their silver names, from the parser's typed columns.
    return {
        "event_id": _raw("event_id"),
        "symbol": _raw("symbol"),
        "event_time": F.col("_event_time"),
        "price": _raw("price"),
        "volume": _raw("volume"),
        "bid": _raw("bid"),
        "ask": _raw("ask"),
        "event_date": F.to_date("_event_time"),
        "kafka_partition": F.col("partition"),
        "kafka_offset": F.col("offset"),
        **{name: F.try_variant_get("_doc", f"$.{name}", kind) for name, kind in (extra_fields or {}).items()},
    }


def with_silver_fields(checked: DataFrame, extra_fields: Mapping[str, str] | None = None) -> DataFrame:
    """Parsed rows (valid or not) + the quote's fields under their silver names (NULL where unparsed)."""
    return checked.withColumns(_typed_fields(extra_fields))


def to_silver(checked: DataFrame, extra_fields: Mapping[str, str] | None = None) -> DataFrame:
    """Valid parsed rows -> typed silver quotes (``is_late``/``is_out_of_order`` are set later).

    ``extra_fields`` ({name: type}) are message fields beyond the contract kept as extra columns after the
    silver ones (schema evolution); a value that does not convert to the column's type reads NULL (the
    message itself stays in bronze).
    """
    valid = checked.where(F.col("reject_reason").isNull())
    fields = _typed_fields(extra_fields)
    # Flags the lakehouse query's state step set (see silver_state) are kept; otherwise set later.
    flags = {
        **{
            name: F.col(name) if name in checked.columns else F.lit(None).cast("boolean")
            for name in ("is_late", "is_out_of_order")
        },
        "dq_warnings": _array_or_empty(checked, "dq_warnings"),
    }
    columns = {**fields, **flags}
    names = (*SILVER.schema.fieldNames(), *(extra_fields or {}))
    return valid.select(*[columns.get(name, F.col(name)).alias(name) for name in names])


def first_per_event_id(quotes: DataFrame) -> DataFrame:
    """One row per (symbol, event_id): the first to arrive (earliest micro-batch, then Kafka timestamp,
    partition, offset: the order of :data:`surveillance.transforms.arrivals.ARRIVAL_ORDER`) wins.

    Per symbol, as the stream's state step deduplicates (its state is per symbol)."""
    first = Window.partitionBy("symbol", "event_id").orderBy(
        "ingested_at", "kafka_timestamp", "kafka_partition", "kafka_offset"
    )
    return quotes.withColumn("_arrival", F.row_number().over(first)).where("_arrival = 1").drop("_arrival")


def not_seen_before(quotes: DataFrame, seen_event_ids: DataFrame) -> DataFrame:
    """Quotes whose (symbol, event_id) is not in ``seen_event_ids`` (those already in silver)."""
    seen = seen_event_ids.select("symbol", "event_id").distinct()
    return quotes.join(seen, ["symbol", "event_id"], "left_anti").select(*quotes.columns)


# What a micro-batch knew of earlier ones when it ran: the event-time watermark and each symbol's latest
# event time. The stream has one row (its current batch); a backfill one per micro-batch it restates.
BATCH_STATE_SCHEMA = (
    "stream_id string, batch_id bigint, watermark timestamp, symbol_max_event_time map<string, timestamp>"
)


def batch_state(
    spark: SparkSession,
    stream_id: str,
    batch_id: int,
    watermark: dt.datetime | None,
    symbol_max_event_time: Mapping[str, dt.datetime],
) -> DataFrame:
    """The one-row state of a micro-batch (see ``BATCH_STATE_SCHEMA``)."""
    row = (stream_id, batch_id, watermark, dict(symbol_max_event_time))
    return spark.createDataFrame([row], BATCH_STATE_SCHEMA)


def with_batch_state(quotes: DataFrame, state: DataFrame | None) -> DataFrame:
    """Quotes + ``_watermark`` and ``_symbol_max`` of the micro-batch each arrived in (NULL when unknown)."""
    if state is None:
        return quotes.withColumns(
            {"_watermark": F.lit(None).cast("timestamp"), "_symbol_max": F.lit(None).cast("timestamp")}
        )
    known = F.broadcast(
        state.select(
            "stream_id",
            "batch_id",
            F.col("watermark").alias("_watermark"),
            F.col("symbol_max_event_time").alias("_symbol_max_map"),
        )
    )
    joined = quotes.join(known, ["stream_id", "batch_id"], "left")
    return joined.withColumn("_symbol_max", F.try_element_at("_symbol_max_map", F.col("symbol"))).drop(
        "_symbol_max_map"
    )


def flag_late(quotes: DataFrame, state: DataFrame | None, delay_seconds: float) -> DataFrame:
    """Set ``is_late``: the quote is more than ``delay_seconds`` older than its own symbol's latest event
    time when its micro-batch started (per symbol: partitions and symbols advance at their own pace, so an
    ordered replay of a symbol is never late; a symbol's first quotes never are)."""
    joined = with_batch_state(quotes, state)
    bound = F.unix_micros("_symbol_max") - F.lit(int(delay_seconds * 1e6))
    late = F.coalesce(F.unix_micros("event_time") < bound, F.lit(False))
    return joined.withColumn("is_late", late).select(*quotes.columns)


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
