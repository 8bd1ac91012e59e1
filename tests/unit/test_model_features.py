"""The one feature definition: known values on tiny inputs, and the same features from the batch path
(a whole day at once), the streaming path (micro-batches through the state operator's step) and the
backfill's context (per symbol through Spark)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from surveillance.detection.context import ContextWindows, with_quote_context
from surveillance.detection.symbol_state import (
    StateLimits,
    SymbolState,
    advance_symbol,
    new_quotes_in_context,
)
from surveillance.ingestion.generator import generate_quotes
from surveillance.models.features import (
    FEATURE_COLUMNS,
    HISTORY_TICKS,
    MIN_HISTORY,
    quote_features,
    symbol_features,
    with_event_micros,
)

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


def _as_operator_input(quotes: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            **{name: quotes[name].to_numpy() for name in ("symbol", "event_id", "event_micros", "price")},
            "volume": quotes["volume"].astype("int64").to_numpy(),
            "bid": quotes["bid"].to_numpy(float),
            "ask": quotes["ask"].to_numpy(float),
            "dq_warnings": [[] for _ in range(len(quotes))],
            "kafka_partition": 0,
            "kafka_offset": np.arange(len(quotes)),
            "kafka_micros": quotes["event_micros"].to_numpy(),
        }
    )


def _assert_features_equal(stream: pd.DataFrame, batch: pd.DataFrame) -> None:
    assert len(stream) == len(batch)
    np.testing.assert_array_equal(stream.scorable.to_numpy(bool), batch.scorable.to_numpy(bool))
    for name in FEATURE_COLUMNS:
        np.testing.assert_allclose(
            stream[name].astype(float), batch[name], rtol=1e-12, atol=0, equal_nan=True, err_msg=name
        )


def test_streaming_features_equal_batch_features(day: pd.DataFrame) -> None:
    """Micro-batches through the detection query's state step (each symbol's tail kept in its state, which
    goes through the state store's encoding between batches) equal one batch pass over the day."""
    batch = quote_features(day).set_index("event_id")
    ordered = day.sort_values("event_micros", kind="mergesort", ignore_index=True)
    cuts = [0, 400, 401, 1500, len(ordered)]  # a one-quote batch among them
    limits = StateLimits(HISTORY_TICKS, 600_000_000, 3_600_000_000, 10_000)
    windows = ContextWindows(zscore_window=20, volume_window=20, model_features=True)
    states: dict[str, SymbolState] = {}
    streamed = []
    for lo, hi in itertools.pairwise(cuts):
        for symbol, rows in _as_operator_input(ordered.iloc[lo:hi]).groupby("symbol"):
            state = states.get(symbol, SymbolState.empty())
            context, after = advance_symbol(state, rows.reset_index(drop=True), limits)
            states[symbol] = SymbolState.from_row(after.to_row())
            streamed.append(new_quotes_in_context(context, windows))
    _assert_features_equal(pd.concat(streamed).set_index("event_id").loc[batch.index], batch)


def test_backfill_context_features_equal_batch_features(spark: SparkSession, day: pd.DataFrame) -> None:
    """The backfill's form (per symbol through Spark, history rows not new) gives the same features."""
    batch = quote_features(day).set_index("event_id")
    quotes = day[["symbol", "event_id", "event_time", "price", "volume", "bid", "ask"]].assign(
        is_new=np.arange(len(day)) % 2 == 0
    )
    windows = ContextWindows(zscore_window=20, volume_window=20, model_features=True)
    context = with_quote_context(spark.createDataFrame(quotes), windows).toPandas().set_index("event_id")
    _assert_features_equal(context.loc[batch.index], batch)
