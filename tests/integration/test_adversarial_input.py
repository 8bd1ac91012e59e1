"""Property-based: adversarial messages through the real broker and pipeline never stop it or vanish.

Hypothesis builds batches of broken JSON, wrong types, NaN/Infinity, huge numbers, control characters,
empty objects, arrays, nested junk, very long strings and duplicate keys, mixed with valid quotes. After
``stream --once``: bronze holds every message, every rejected one is in quarantine with the reason the
pure-Python reference check (``check_quote_line``, given the silver suite and the record's Kafka timestamp)
gives, and silver holds exactly the valid ones. The strategies are in :mod:`adversarial`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from adversarial import VALID, expected_outcomes, messages, quarantined
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration


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
    assert not bronze.duplicated(["partition", "offset"]).any()
    suite = {name: spec.model_dump() for name, spec in pipeline.settings.quality.suites.silver_quotes.items()}
    rejected, valid_ids = expected_outcomes(bronze, suite)
    assert quarantined(quarantine) == rejected and len(quarantine) == len(rejected)
    assert set(silver.event_id) == valid_ids and not silver.event_id.duplicated().any()
