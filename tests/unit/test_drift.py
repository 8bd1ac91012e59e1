"""Drift checks with Evidently on generated markets: a window from the training distribution is not drift,
one with a shifted volatility is; the drift columns; what the table stores."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from surveillance.config import load_settings
from surveillance.ingestion.generator import SAMPLE_MARKET, generate_quotes
from surveillance.observability.drift import (
    DRIFT_COLUMNS,
    VERDICT_COLUMNS,
    measure_drift,
    quotes_drift_frame,
)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return quotes_drift_frame(generate_quotes(symbols=12, minutes=60, seed=1).quotes)


def test_the_training_distribution_is_not_drift(reference: pd.DataFrame) -> None:
    # Other symbols and another seed of the same market.
    window = quotes_drift_frame(generate_quotes(symbols=12, minutes=60, seed=2, first_symbol=20).quotes)
    outcome = measure_drift(reference, window, load_settings().drift)
    assert not outcome.drift_detected
    assert not [c.feature for c in outcome.columns if c.drift_detected and c.feature in VERDICT_COLUMNS]
    assert {c.feature for c in outcome.columns} == set(DRIFT_COLUMNS)
    assert all(c.method.startswith("Wasserstein") and c.threshold == 0.1 for c in outcome.columns)


def test_a_shifted_volatility_is_drift(reference: pd.DataFrame) -> None:
    volatile = dataclasses.replace(SAMPLE_MARKET, annual_vol=(0.8, 3.2))  # four times the volatility
    window = quotes_drift_frame(
        generate_quotes(symbols=12, minutes=60, seed=3, first_symbol=40, market=volatile).quotes
    )
    outcome = measure_drift(reference, window, load_settings().drift)
    assert outcome.drift_detected
    drifted = {c.feature: c.score for c in outcome.columns if c.drift_detected}
    assert "ret_1" in drifted and drifted["ret_1"] > 0.3
    assert outcome.reference_rows == len(reference) and outcome.current_rows == len(window)


def test_drift_columns_of_a_quote_window() -> None:
    frame = quotes_drift_frame(generate_quotes(symbols=2, minutes=10, seed=4).quotes)
    assert list(frame.columns) == list(DRIFT_COLUMNS)
    assert (frame.spread_bps.dropna() > 0).all() and (frame.gap_seconds.dropna() >= 0).all()


def test_drift_results_schema_matches_the_table() -> None:
    from pyspark.sql import types as T

    from surveillance.lakehouse import DRIFT_RESULTS
    from surveillance.observability.drift import DRIFT_SCHEMA

    arrow = {
        T.StringType(): "string",
        T.TimestampType(): "timestamp[us, tz=UTC]",
        T.DoubleType(): "double",
        T.BooleanType(): "bool",
        T.LongType(): "int64",
    }
    assert [(f.name, arrow[f.dataType]) for f in DRIFT_RESULTS.schema.fields] == [
        (f.name, str(f.type)) for f in DRIFT_SCHEMA
    ]
