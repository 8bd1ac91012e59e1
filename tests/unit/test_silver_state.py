"""The lakehouse query's per-symbol state step on tiny frames: silver's flags and gold's open bars.

The bars the state accumulates batch by batch must equal gold's Spark aggregation (the backfill's) over the
same on-time quotes at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from surveillance.transforms.arrivals import ArrivalLimits, SeenQuotes
from surveillance.transforms.gold import MINUTE_MICROS, empty_bar_state, one_minute_bars
from surveillance.transforms.silver_state import _decode, _encode, advance_silver

LIMITS = ArrivalLimits(
    late_after_micros=10 * MINUTE_MICROS, dedup_horizon_micros=7_200_000_000, dedup_max_ids=100
)


def _records(rows: list[tuple[str, int, float, int]], first_offset: int = 0) -> pd.DataFrame:
    """(event_id, event micros, price, volume) in arrival order, one Kafka partition."""
    return pd.DataFrame(
        {
            "_raw_event_id": [r[0] for r in rows],
            "event_micros": [r[1] for r in rows],
            "_raw_price": [r[2] for r in rows],
            "_raw_volume": [r[3] for r in rows],
            "kafka_micros": [1_000 + first_offset + n for n in range(len(rows))],
            "partition": 0,
            "offset": [first_offset + n for n in range(len(rows))],
        }
    )


def test_flags_and_bars_across_two_batches() -> None:
    m = MINUTE_MICROS
    first = _records([("a", 0, 10.0, 1), ("b", m // 2, 11.0, 2), ("c", m + 1, 12.0, 3), ("a", 0, 10.0, 1)])
    flagged, touched, seen, bars = advance_silver(SeenQuotes.empty(), empty_bar_state(), first, LIMITS)
    assert list(flagged.is_new) == [True, True, True, False]  # the re-sent "a" is not new
    assert not flagged.is_late.any() and not flagged.is_out_of_order.any()
    assert list(touched.minute_micros) == [0, m] and list(touched.volume_before) == [0, 0]
    assert (touched.open.iloc[0], touched.close.iloc[0], touched.trade_count.iloc[0]) == (10.0, 11.0, 2)

    # Through the state's binary form, as the state store keeps it.
    seen, bars = _decode(_encode(seen, bars))
    second = _records(
        [("d", m // 4, 9.0, 5), ("b", m // 2, 11.0, 2), ("late", -15 * m, 1.0, 1), ("far", 20 * m, 1.0, 1)],
        10,
    )
    flagged, touched, seen, bars = advance_silver(seen, bars, second, LIMITS)
    assert list(flagged.is_new) == [True, False, True, True]
    assert list(flagged.is_out_of_order) == [True, False, True, False]
    assert list(flagged.is_late) == [False, False, True, False]  # 15 minutes behind :01, over 10 minutes
    # Minute 0 gains "d" (out of order but on time) on top of what it held; the late quote is in no bar.
    minute0 = touched.set_index("minute_micros").loc[0]
    assert (minute0.open, minute0.low, minute0.volume, minute0.trade_count) == (10.0, 9.0, 8, 3)
    assert (minute0.volume_before, minute0.count_before) == (3, 2)
    assert -15 * m not in set(touched.minute_micros)
    # At 20:00 every earlier minute is more than 10 minutes past its end: only minute 20 stays open.
    assert seen.high_water == 20 * m and list(bars.minute_micros) == [20 * m]


def test_accumulated_bars_equal_gold_over_the_same_quotes(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    n = 600
    micros = np.sort(rng.integers(0, 6 * MINUTE_MICROS, n))
    arrival = rng.permutation(n)  # arrive shuffled, in four batches
    quotes = pd.DataFrame(
        {
            "_raw_event_id": [f"q{i:04d}" for i in range(n)],
            "event_micros": micros,
            "_raw_price": np.round(100 + rng.normal(0, 1, n).cumsum() * 0.1, 4),
            "_raw_volume": rng.integers(1, 1000, n),
        }
    ).iloc[arrival]
    seen, bars, final = SeenQuotes.empty(), empty_bar_state(), {}
    for start in range(0, n, n // 4):
        batch = _records(list(quotes.iloc[start : start + n // 4].itertuples(index=False, name=None)), start)
        _, touched, seen, bars = advance_silver(seen, bars, batch, LIMITS)
        final.update({row.minute_micros: row for row in touched.itertuples()})
    streamed = pd.DataFrame(final.values()).sort_values("minute_micros")

    frame = spark.createDataFrame(
        quotes.rename(columns={"_raw_event_id": "event_id", "_raw_price": "price", "_raw_volume": "volume"})
        .assign(symbol="ACME")
        .astype({"volume": "int64"})
    ).withColumn("event_time", F.timestamp_micros("event_micros"))
    gold = one_minute_bars(frame).orderBy("bar_start").toPandas()
    assert len(gold) == len(streamed)
    for name in ("open", "high", "low", "close", "volume", "trade_count"):
        assert list(gold[name]) == list(streamed[name]), name
    assert np.allclose(gold.vwap, streamed.notional / streamed.volume, rtol=1e-12, atol=0)


@pytest.mark.parametrize("late_minutes", [9, 11])
def test_a_quote_is_late_only_past_the_watermark(late_minutes: int) -> None:
    m = MINUTE_MICROS
    seen = advance_silver(SeenQuotes.empty(), empty_bar_state(), _records([("x", 30 * m, 1.0, 1)]), LIMITS)[2]
    behind = _records([("y", (30 - late_minutes) * m, 1.0, 1)], 5)
    flagged, touched, _, _ = advance_silver(seen, empty_bar_state(), behind, LIMITS)
    assert bool(flagged.is_late.iloc[0]) == (late_minutes > 10)
    assert len(touched) == (0 if late_minutes > 10 else 1)
