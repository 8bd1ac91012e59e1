"""The opaque page cursor: it round-trips, belongs to its filters, and anything else is a 400 naming it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from fastapi import HTTPException

from surveillance.serving.app import _decode_cursor, _encode_cursor
from surveillance.serving.lakehouse_reader import Position

ALERT_ID = "0123456789abcdef0123456789abcdef"


def forged(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def test_round_trip() -> None:
    moment = datetime(2026, 12, 7, 9, 30, 0, 123456, tzinfo=UTC)
    cursor = _encode_cursor({"event_time": moment, "alert_id": ALERT_ID}, "f1")
    micros = int(moment.timestamp()) * 1_000_000 + 123456
    assert _decode_cursor(cursor, "f1") == Position(micros, ALERT_ID)


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        (forged(1, ALERT_ID, "f2"), "other filters"),
        ("not-a-cursor", "not a cursor"),
        (forged(10**30, ALERT_ID, "f1"), "not a cursor"),
        (forged(-(10**18), ALERT_ID, "f1"), "not a cursor"),
        (forged(True, ALERT_ID, "f1"), "not a cursor"),
        (forged(1, "x" * 10_000, "f1"), "not a cursor"),
        (forged(1.5, ALERT_ID, "f1"), "not a cursor"),
        (forged(1, ALERT_ID), "not a cursor"),
    ],
)
def test_anything_else_is_a_400_naming_the_parameter(cursor: str, reason: str) -> None:
    with pytest.raises(HTTPException) as caught:
        _decode_cursor(cursor, "f1")
    assert caught.value.status_code == 400
    assert reason in caught.value.detail and "parameter cursor" in caught.value.detail
