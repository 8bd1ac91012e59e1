"""Property-based: adversarial messages through the real broker and pipeline never stop it or vanish.

Hypothesis builds batches of broken JSON, wrong types, NaN/Infinity, huge numbers, control characters,
empty objects, arrays, nested junk, very long strings and duplicate keys, mixed with valid quotes. After
``stream --once``: bronze holds every message, every rejected one is in quarantine with the reason the
pure-Python reference check (``check_quote_line``, given the silver suite) gives, and silver holds exactly
the valid ones.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surveillance.ingestion.contract import check_quote_line

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration

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


@st.composite
def messages(draw: st.DrawFn) -> str:
    """One message: a valid quote, a quote with a field broken or missing, or outright junk."""
    event_id = f"e-{draw(st.integers(0, 300))}"
    doc = {"event_id": event_id, **VALID}
    kind = draw(st.sampled_from(["valid", "mutate", "drop", "junk", "text", "truncate", "literal", "dupkey"]))
    if kind == "mutate":
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


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(batch=st.lists(messages(), min_size=500, max_size=900))
def test_adversarial_messages_are_kept_or_quarantined(
    new_pipeline: Callable[[Path], Pipeline], batch: list[str]
) -> None:
    # A fixed valid quote and a fixed reject in every example, so no example is all-valid or all-junk.
    anchors = [json.dumps({"event_id": "anchor", **VALID}), '{"event_id": "bad", "price": NaN}']
    lines = [line for line in [*anchors, *batch] if line.strip()]  # replay skips blank lines by design
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = new_pipeline(Path(tmp))
        assert pipeline.send_lines(lines, "adversarial.jsonl") == len(lines)
        pipeline.run_once()  # raises if the query fails
        bronze = pipeline.pandas("bronze_quotes")
        silver = pipeline.pandas("silver_quotes")
        quarantine = pipeline.pandas("quarantine_quotes")

    assert sorted(bronze.value) == sorted(lines)
    suite = {name: spec.model_dump() for name, spec in pipeline.settings.quality.suites.silver_quotes.items()}
    expected = [(line, check_quote_line(line, suite)) for line in lines]
    rejected = sorted((line, reason) for line, reason in expected if reason)
    assert sorted(zip(quarantine.raw_value, quarantine.reason, strict=True)) == rejected
    valid_ids = {json.loads(line)["event_id"] for line, reason in expected if reason is None}
    assert set(silver.event_id) == valid_ids and not silver.event_id.duplicated().any()
