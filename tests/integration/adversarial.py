"""Adversarial quote messages for the property-based suites (hypothesis strategies): broken JSON, wrong
types, NaN/Infinity, huge numbers, control characters, empty objects, arrays, nested junk, very long
strings, duplicate keys and outlier event times, mixed with valid quotes."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
from hypothesis import strategies as st

from surveillance.ingestion.contract import check_quote_line

VALID = {
    "symbol": "ACME",
    "event_time": "2026-11-20T14:30:00.123Z",
    "price": 101.5,
    "volume": 300,
    "bid": 101.4,
    "ask": 101.6,
}
FIELDS = ["event_id", *VALID]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
junk = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
odd_values = st.one_of(
    junk,
    st.sampled_from([0, -1, 1e308, -0.0, "NaN", "1e999", "2026-11-20 14:30:00", "", " "]),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "L"]), max_size=30),
    st.text(min_size=2000, max_size=5000),
)


# Event times a broken clock or feed sends: epochs, other centuries, the range's ends, odd offsets and
# precision, and plain historical or future moments (silver quarantines those over a day ahead of their
# Kafka timestamp or over 20 years behind it).
outlier_times = st.one_of(
    st.sampled_from(
        [
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2038-01-19T03:14:08Z",
            "2000-02-29T12:00:00+14:00",
            "2026-11-20T14:30:00.123456789Z",
            "2026-11-20T14:30:00-0530",
            "2026-11-20T24:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-20T14:30:00",
        ]
    ),
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
        lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ),
)


@st.composite
def messages(draw: st.DrawFn, prefix: str = "e") -> str:
    """One message: a valid quote, a quote with a field broken or missing, an outlier event time, or
    outright junk. Its event_id (when it has one) is ``<prefix>-<n>``."""
    event_id = f"{prefix}-{draw(st.integers(0, 300))}"
    doc = {"event_id": event_id, **VALID}
    kind = draw(
        st.sampled_from(["valid", "mutate", "drop", "junk", "text", "truncate", "literal", "dupkey", "time"])
    )
    if kind == "time":
        doc["event_time"] = draw(outlier_times)
    elif kind == "mutate":
        doc[draw(st.sampled_from(FIELDS))] = draw(odd_values)
    elif kind == "drop":
        del doc[draw(st.sampled_from(FIELDS))]
    elif kind == "junk":
        return json.dumps(draw(junk))
    elif kind == "text":
        return draw(st.text(max_size=200)).replace("\n", " ").replace("\r", " ")
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "literal":
        field = draw(st.sampled_from(["price", "volume", "bid"]))
        return text.replace(
            f'"{field}": {json.dumps(doc[field])}',
            f'"{field}": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))}',
        )
    if kind == "dupkey":
        return text[:-1] + ', "price": 5}'
    return text


def expected_outcomes(bronze: pd.DataFrame, suite: dict) -> tuple[dict[tuple[int, int], str], set[str]]:
    """What silver must make of the records bronze holds, by the pure-Python reference check (each with
    its own Kafka timestamp, which the event-time rules measure against): the quarantine reason of each
    rejected record by (partition, offset), and the event_ids silver must hold."""
    rejected: dict[tuple[int, int], str] = {}
    valid_ids: set[str] = set()
    for row in bronze.itertuples(index=False):
        reason = check_quote_line(row.value, suite, pd.Timestamp(row.kafka_timestamp).to_pydatetime())
        if reason:
            rejected[(int(row.partition), int(row.offset))] = reason
        else:
            valid_ids.add(json.loads(row.value)["event_id"])
    return rejected, valid_ids


def quarantined(quarantine: pd.DataFrame) -> dict[tuple[int, int], str]:
    """The quarantine table's reason for each record, by (partition, offset)."""
    return {
        (int(p), int(o)): reason
        for p, o, reason in zip(
            quarantine.kafka_partition, quarantine.kafka_offset, quarantine.reason, strict=True
        )
    }
