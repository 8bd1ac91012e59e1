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
    MODEL_FEATURES,
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
    assert features.scorable.tolist() == [i >= MIN_HISTORY for i in range(60)]


def test_a_frozen_feed_stands_out_against_how_often_the_symbol_repeats_its_quote() -> None:
    rng = np.random.default_rng(3)
    moving = list(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 150))))
    frozen = moving + [moving[-1]] * 30 + [moving[-1] * 1.001]
    ratio = symbol_features(ticks(frozen)).frozen_run_ratio
    assert ratio[150:180].is_monotonic_increasing and ratio[179] > 3  # log(31) against a run of ~0
    assert ratio[180] < 0.1  # the catch-up quote ends the run
    # A thin market repeating every other quote: the same 30-quote run is far less unusual.
    thin = [p for p in moving[:75] for _ in range(2)] + [moving[74]] * 30
    assert symbol_features(ticks(thin)).frozen_run_ratio.iloc[-1] < ratio[179] - 0.5


def test_a_message_burst_lowers_the_arrival_ratio_and_a_jump_raises_the_return_in_sigmas() -> None:
    rng = np.random.default_rng(1)
    prices = list(100 * np.exp(np.cumsum(rng.normal(0, 1e-4, 200))))
    prices[150] = prices[149] * 1.05
    gaps = [2.0] * 200
    gaps[120:140] = [0.01] * 20
    features = symbol_features(ticks(prices, gaps))
    assert features.log_arrival_ratio[135] < -3  # gaps 200x shorter than usual
    assert abs(features.log_arrival_ratio[110]) < 0.1
    assert features.ret_sigma[150] > 50 and features.ret_z[150] > 50
    assert features.drawdown_20_z[150] == 0 and features.drawdown_20_z[151] < 0


def test_a_return_after_a_long_pause_is_measured_against_the_time_that_passed() -> None:
    rng = np.random.default_rng(2)
    prices = list(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 120))))
    prices[110] = prices[109] * 1.01  # a 10-sigma move...
    gaps = [60.0] * 120
    after_pause = symbol_features(ticks(prices, [*gaps[:110], 60.0 * 100, *gaps[111:]]))
    on_time = symbol_features(ticks(prices, gaps))
    # ... over a pause 100x the usual gap is a 1-sigma move of 10x the time's volatility.
    assert on_time.ret_sigma[110] == pytest.approx(10 * after_pause.ret_sigma[110], rel=1e-9)
    assert after_pause.log_gap_ratio[110] == pytest.approx(np.log(100), rel=1e-9)


def test_features_do_not_depend_on_price_level_volume_scale_spread_or_tick_rate() -> None:
    """The same market at 5 cents or 5,000, trading 10 or 100,000 shares, with any spread, quoting every
    10 ms or every minute: identical model features."""
    rng = np.random.default_rng(4)
    n = 400
    returns = rng.standard_t(4, n) * 1e-3
    returns[300] = 0.08
    base = pd.DataFrame(
        {
            "symbol": "AAA",
            "event_id": [f"AAA-{i:05d}" for i in range(n)],
            "gap": 0.02 + rng.exponential(1.0, n),  # at 0.2 s a tick, gaps above the 1 ms resolution
            "path": np.exp(np.cumsum(returns)),
            "volume": np.exp(rng.normal(0, 1, n)),
            "spread": np.exp(rng.normal(0, 0.3, n)),
        }
    )

    def market(level: float, shares: float, spread_bps: float, seconds: float) -> pd.DataFrame:
        price = level * base.path
        half = price * spread_bps / 2e4 * base.spread
        return pd.DataFrame(
            {
                "symbol": base.symbol,
                "event_id": base.event_id,
                "event_micros": START + np.cumsum(np.round(base.gap * seconds * 1e6)).astype(np.int64),
                "price": price,
                "volume": base.volume * shares,
                "bid": price - half,
                "ask": price + half,
            }
        )

    cheap = symbol_features(market(0.05, 1_000, 40.0, 0.2))
    dear = symbol_features(market(5000.0, 1_000_000, 1.0, 60.0))
    # Times are whole microseconds: equal up to that rounding.
    for name in MODEL_FEATURES:
        atol = 2e-3
        np.testing.assert_allclose(
            cheap[name], dear[name], rtol=1e-3, atol=atol, equal_nan=True, err_msg=name
        )
    assert cheap.ret_sigma[300] > 20 and dear.ret_sigma[300] > 20


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
