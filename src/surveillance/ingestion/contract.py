"""The quote contract: one compact JSON object per Kafka message, keyed by ``symbol``.

A quote is ``{"event_id": str, "symbol": str, "event_time": "2026-11-20T14:30:00.123Z", "price": number > 0,
"volume": integer >= 0, "bid": number, "ask": number}``; unknown extra fields are allowed. Besides the
serialiser this module holds :func:`check_quote_line`, a pure-Python reference of what silver decides in
Spark (the contract's reason names, then the expectation suite's verdict), used as the tests' oracle.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

QUOTE_FIELDS: tuple[str, ...] = ("event_id", "symbol", "event_time", "price", "volume", "bid", "ask")
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "symbol", "event_time", "price", "volume")
PRICE_DECIMALS = 4
# Same pattern as silver: a date, a 'T', seconds, optional fraction and an explicit UTC designator/offset.
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$")
_BIGINT_MAX = 2**63 - 1


def format_event_time(value: datetime | str | Any) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (naive datetimes are taken as UTC; sub-ms digits are dropped)."""
    if isinstance(value, str):
        moment = parse_event_time(value)
    elif isinstance(value, datetime):
        moment = value
    else:  # numpy datetime64 and the like
        moment = pd.Timestamp(value).to_pydatetime()
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_event_time(text: str) -> datetime:
    """The UTC datetime of a contract timestamp; ValueError when the text is not one."""
    match = ISO_UTC.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an ISO-8601 timestamp with a UTC designator or offset")
    fraction, offset = match.group(1) or "", match.group(2)
    body = text[: len(text) - len(offset) - len(fraction)]
    micros = (fraction[1:] + "000000")[:6]
    if offset == "Z":
        offset = "+00:00"
    elif ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    return datetime.fromisoformat(f"{body}.{micros}{offset}").astimezone(UTC)


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _price(name: str, value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return round(number, PRICE_DECIMALS)


def _volume(value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"volume must be a whole number, got {value!r}")
    return int(number)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, datetime):
        return format_event_time(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a quote")


def quote_to_json(record: Mapping[str, Any]) -> str:
    """One quote as compact contract JSON: contract fields first (typed, prices to 4 dp), then extras."""
    doc: dict[str, Any] = {}
    for name in REQUIRED_FIELDS:
        if _is_absent(record.get(name)):
            raise ValueError(f"a quote needs {name!r}")
    doc["event_id"] = str(record["event_id"])
    doc["symbol"] = str(record["symbol"])
    doc["event_time"] = format_event_time(record["event_time"])
    doc["price"] = _price("price", record["price"])
    doc["volume"] = _volume(record["volume"])
    for name in ("bid", "ask"):
        if not _is_absent(record.get(name)):
            doc[name] = _price(name, record[name])
    for name, value in record.items():
        # Extra fields ride along (the contract allows them); empty ones are left out.
        if name not in doc and name not in QUOTE_FIELDS and not _is_absent(value):
            doc[str(name)] = value
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)


def _reject_constant(name: str) -> Any:
    # NaN / Infinity are not JSON (RFC 8259); Spark's parse_json rejects them too.
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key given twice is ambiguous; Spark's parse_json refuses such a document, and so do we.
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_problem(doc: Mapping[str, Any]) -> str | None:
    """The first field present with the wrong JSON type (silver's parser order), or None."""
    for name in ("event_id", "symbol", "event_time"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            return f"{name}_not_string"
        if name == "event_time" and doc.get(name) is not None:
            try:
                parse_event_time(doc[name])
            except ValueError:
                return "bad_event_time"
    price = doc.get("price")
    if price is not None and not _is_number(price):
        return "price_not_number"
    volume = doc.get("volume")
    if volume is not None and (not isinstance(volume, int) or isinstance(volume, bool)):
        return "volume_not_integer"
    if volume is not None and abs(volume) > _BIGINT_MAX:
        return "volume_out_of_range"
    for name in ("bid", "ask"):
        if doc.get(name) is not None and not _is_number(doc[name]):
            return f"{name}_not_number"
    return None


def _between(value: Any, kwargs: Mapping[str, Any]) -> bool:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if math.isnan(value):
        return False
    if low is not None and (value <= low if kwargs.get("strict_min") else value < low):
        return False
    return not (high is not None and (value >= high if kwargs.get("strict_max") else value > high))


# Expectations about the whole batch's schema: they never route a single row.
_TABLE_LEVEL = ("expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list")


def _meets(value: Any, expectation: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether one field's value meets a row-level expectation, with GX's semantics (NULL is ignored)."""
    if expectation == "expect_column_values_to_not_be_null":
        return value is not None
    if value is None:
        return True
    if expectation == "expect_column_values_to_match_regex":
        return re.search(kwargs["regex"], value) is not None
    if expectation == "expect_column_values_to_be_between":
        return _between(float(value), kwargs)
    raise NotImplementedError(f"the reference check does not model {expectation}")


def check_quote_line(
    line: str | bytes,
    value_rules: Mapping[str, Any] | None = None,
    kafka_timestamp: datetime | None = None,
) -> str | None:
    """Silver's verdict on a raw message, computed in pure Python: the reason it is quarantined, or None.

    The contract (shape and types) gives the first broken rule's name. ``value_rules`` are the silver
    suite's expectations ({name: spec with expectation, kwargs, severity}); a message that breaks ``error``
    ones gets ``"expectations: <names in suite order>"``, as the stream writes it. Only the row-level
    expectations on contract fields are modelled (not-null, regex, between), and, given the record's
    ``kafka_timestamp``, those on ``event_lag_seconds`` (Kafka timestamp - event time, as silver derives it).
    """
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    if not text.strip():
        return "empty_value"
    try:
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        return "invalid_json"
    if not isinstance(doc, dict):
        return "not_an_object"
    problem = _type_problem(doc)
    if problem or not value_rules:
        return problem
    values = {name: doc.get(name) for name in QUOTE_FIELDS}  # the columns modelled
    if kafka_timestamp is not None:
        values["event_lag_seconds"] = _event_lag_seconds(doc.get("event_time"), kafka_timestamp)
    failed = []
    for name, spec in value_rules.items():
        column = spec["kwargs"].get("column")
        table_level = spec["expectation"] in _TABLE_LEVEL or spec["expectation"].startswith("expect_table_")
        if spec["severity"] != "error" or column not in values or table_level:
            continue
        if not _meets(values[column], spec["expectation"], spec["kwargs"]):
            failed.append(name)
    return expectation_reason(failed) if failed else None


def _event_lag_seconds(event_time: str | None, kafka_timestamp: datetime) -> float | None:
    """Silver's ``event_lag_seconds``: whole microseconds between the two, in seconds (None if no time)."""
    if event_time is None:
        return None
    received = kafka_timestamp if kafka_timestamp.tzinfo else kafka_timestamp.replace(tzinfo=UTC)
    lag = received - parse_event_time(event_time)
    return (lag.days * 86_400_000_000 + lag.seconds * 1_000_000 + lag.microseconds) / 1e6


def expectation_reason(names: list[str]) -> str:
    """The quarantine reason of a row that broke the named error expectations."""
    return "expectations: " + ", ".join(names)
