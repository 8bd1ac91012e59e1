"""The quote contract: one compact JSON object per Kafka message, keyed by ``symbol``.

A quote is ``{"event_id": str, "symbol": str, "event_time": "2026-11-20T14:30:00.123Z", "price": number > 0,
"volume": integer >= 0, "bid": number, "ask": number}``; unknown extra fields are allowed. Besides the
serialiser this module holds :func:`check_quote_line`, a pure-Python reference of the contract check that
silver applies in Spark (same rules, same order, same reason names), used by the generator's tests.
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
PRICE_FIELDS: tuple[str, ...] = ("price", "bid", "ask")
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


def _string_problem(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return f"missing_{name}"
    if not isinstance(value, str):
        return f"{name}_not_string"
    if not value.strip():
        return f"empty_{name}"
    return None


def _positive_number_problem(doc: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = doc.get(name)
    if value is None:
        return f"missing_{name}" if required else None
    if not _is_number(value):
        return f"{name}_not_number"
    if not math.isfinite(value):
        return f"{name}_not_finite"
    if value <= 0:
        return f"{name}_not_positive"
    return None


def check_quote_line(line: str | bytes) -> str | None:
    """The first contract rule a raw message breaks (silver's reason name), or None for a valid quote."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    if not text.strip():
        return "empty_value"
    try:
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        return "invalid_json"
    if not isinstance(doc, dict):
        return "not_an_object"
    for name in ("event_id", "symbol"):
        problem = _string_problem(doc, name)
        if problem:
            return problem
    event_time = doc.get("event_time")
    if event_time is None:
        return "missing_event_time"
    if not isinstance(event_time, str):
        return "event_time_not_string"
    try:
        parse_event_time(event_time)
    except ValueError:
        return "bad_event_time"
    problem = _positive_number_problem(doc, "price", required=True)
    if problem:
        return problem
    volume = doc.get("volume")
    if volume is None:
        return "missing_volume"
    if not isinstance(volume, int) or isinstance(volume, bool):
        return "volume_not_integer"
    if abs(volume) > _BIGINT_MAX:
        return "volume_out_of_range"
    if volume < 0:
        return "volume_negative"
    for name in ("bid", "ask"):
        problem = _positive_number_problem(doc, name, required=False)
        if problem:
            return problem
    return None
