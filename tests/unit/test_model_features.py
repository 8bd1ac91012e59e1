"""The one feature definition: known values on tiny inputs, and the same features from the batch path
(a whole day at once) and the streaming path (micro-batches plus silver history, through Spark)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from surveillance.ingestion.generator import generate_quotes
from surveillance.models.features import (
    FEATURE_COLUMNS,
    HISTORY_TICKS,
    MIN_HISTORY,
    quote_features,
    symbol_features,
    with_event_micros,
)
from surveillance.models.scoring import model_features

START = 1_790_000_000_000_000  # microseconds since the epoch


def ticks(prices: list[float], gaps_s: list[float] | None = None, symbol: str = "ACME") -> pd.DataFrame:
    n = len(prices)
    gaps = gaps_s if gaps_s is not None else [1.0] * n
    micros = START + np.cumsum(np.round(np.array(gaps) * 1e6)).astype(np.int64)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "event_id": [f"{symbol}-{i:05d}" for i in range(n)],
            "event_micros": micros,
            "price": prices,
            "volume": [100] * n,
            "bid": [p - 0.01 for p in prices],
            "ask": [p + 0.01 for p in prices],
        }
    )


def test_returns_and_scorable_rows() -> None:
    prices = [100.0 * 1.001**i for i in range(60)]
    features = symbol_features(ticks(prices))
    assert np.isnan(features.ret_1[0])
    assert features.ret_1[1:].to_numpy() == pytest.approx(np.log(1.001), rel=1e-9)
    assert features.ret_5[10] == pytest.approx(5 * np.log(1.001), rel=1e-9)
    assert features.ret_20[19] != features.ret_20[19]  # NaN: no quote 20 ticks back
    assert features.scorable.tolist() == [i >= MIN_HISTORY for i in range(60)]


def test_unchanged_run_counts_a_frozen_feed_and_resets() -> None:
    prices = [100 + 0.01 * i for i in range(10)] + [100.09] * 5 + [100.5, 100.6]
    run = symbol_features(ticks(prices)).unchanged_run.tolist()
    assert run[:10] == [0] * 10
    assert run[10:15] == [1, 2, 3, 4, 5]
    assert run[15:] == [0, 0]


def test_a_message_burst_lowers_the_arrival_ratio_and_a_jump_raises_the_return_zscore() -> None:
    rng = np.random.default_rng(1)
    prices = list(100 * np.exp(np.cumsum(rng.normal(0, 1e-4, 200))))
    prices[150] = prices[149] * 1.05
    gaps = [2.0] * 200
    gaps[120:140] = [0.01] * 20
    features = symbol_features(ticks(prices, gaps))
    assert features.log_arrival_ratio[135] < -3  # gaps 200x shorter than usual
    assert abs(features.log_arrival_ratio[110]) < 0.1
    assert features.ret_z[150] > 50
    assert features.drawdown_20[150] == 0 and features.drawdown_20[151] < 0


def test_no_infinities_and_nothing_from_other_symbols() -> None:
    one = ticks([50.0] * 80, symbol="AAA")  # constant price: stdev 0
    other = ticks([100.0 + i for i in range(80)], symbol="BBB")
    both = quote_features(pd.concat([other, one], ignore_index=True))
    assert not np.isinf(both[list(FEATURE_COLUMNS)].to_numpy()).any()
    alone = quote_features(one).drop(columns="symbol")
    together = both[both.symbol == "AAA"].reset_index(drop=True).drop(columns="symbol")
    pd.testing.assert_frame_equal(alone, together)


@pytest.fixture(scope="module")
def day() -> pd.DataFrame:
    quotes = generate_quotes(symbols=3, minutes=20, seed=5, inject_anomalies=True).quotes
    return with_event_micros(quotes)


def test_features_need_only_the_last_history_ticks(day: pd.DataFrame) -> None:
    """Recomputing from a slice that starts HISTORY_TICKS before a row gives that row's features exactly."""
    whole = quote_features(day)
    symbol = whole[whole.symbol == whole.symbol.iloc[0]].reset_index(drop=True)
    for row in (HISTORY_TICKS, 300, len(symbol) - 1):
        window = symbol.iloc[row - HISTORY_TICKS : row + 1][list(day.columns)].reset_index(drop=True)
        recomputed = symbol_features(window).iloc[-1]
        expected = symbol.iloc[row]
        for name in FEATURE_COLUMNS:
            assert recomputed[name] == pytest.approx(expected[name], rel=1e-12, nan_ok=True), name


def test_streaming_features_equal_batch_features(spark: SparkSession, day: pd.DataFrame) -> None:
    """Micro-batches through Spark (history from earlier batches, as silver gives it) equal one batch pass."""
    batch = quote_features(day).set_index("event_id")
    ordered = day.sort_values("event_micros", kind="mergesort", ignore_index=True)
    cuts = [0, 400, 401, 1500, len(ordered)]  # a one-quote batch among them
    streamed = []
    for lo, hi in itertools.pairwise(cuts):
        context = ordered.iloc[:hi].assign(is_new=[i >= lo for i in range(hi)])
        frame = spark.createDataFrame(context.drop(columns="event_micros"))
        streamed.append(model_features(frame).toPandas())
    stream = pd.concat(streamed).set_index("event_id").loc[batch.index]
    assert len(stream) == len(batch)
    np.testing.assert_array_equal(stream.scorable.to_numpy(), batch.scorable.to_numpy())
    for name in FEATURE_COLUMNS:
        np.testing.assert_allclose(
            stream[name], batch[name], rtol=1e-12, atol=0, equal_nan=True, err_msg=name
        )
