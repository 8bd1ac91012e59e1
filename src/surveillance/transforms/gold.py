"""Gold: one-minute OHLCV bars per symbol, by event time."""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from surveillance.lakehouse import GOLD_BARS


def bar_keys(quotes: DataFrame) -> DataFrame:
    """The distinct (symbol, bar_start) minutes that ``quotes`` fall into."""
    return quotes.select("symbol", F.date_trunc("minute", "event_time").alias("bar_start")).distinct()


def one_minute_bars(quotes: DataFrame) -> DataFrame:
    """Silver quotes -> 1-minute bars: open/high/low/close, volume, VWAP and trade count."""
    # Ties in event time are broken by event_id so that open and close are deterministic.
    order = F.struct("event_time", "event_id")
    bars = (
        quotes.withColumn("bar_start", F.date_trunc("minute", "event_time"))
        .groupBy("symbol", "bar_start")
        .agg(
            F.min_by("price", order).alias("open"),
            F.max("price").alias("high"),
            F.min("price").alias("low"),
            F.max_by("price", order).alias("close"),
            F.sum("volume").cast("long").alias("volume"),
            # Summed in event-time order: a floating-point sum depends on the order of its terms, and a
            # minute's quotes reach the sum in one order in the stream and in another in a backfill.
            F.aggregate(
                F.array_sort(F.collect_list(F.struct(order, (F.col("price") * F.col("volume")).alias("n")))),
                F.lit(0.0),
                lambda total, quote: total + quote["n"],
            ).alias("_notional"),
            F.count("*").cast("long").alias("trade_count"),
            F.min("event_time").alias("first_event_time"),
            F.max("event_time").alias("last_event_time"),
        )
    )
    # With zero volume in a minute there is no traded notional to weigh: VWAP is undefined (NULL).
    vwap = F.when(F.col("volume") > 0, F.col("_notional") / F.col("volume"))
    return bars.withColumns(
        {"vwap": vwap, "bar_date": F.to_date("bar_start"), "updated_at": F.current_timestamp()}
    ).select(*GOLD_BARS.schema.fieldNames())


# --- The stream's bars, accumulated per symbol in the lakehouse query's state (pandas) ----------------------
# A minute's bar is kept open in the state until its symbol's high-water mark is ``late_after`` past the
# minute's end: every quote that is not late lands in an open bar (a quote for a closed minute is late by
# definition), so the stream's bar of a minute is that of its on-time quotes, as a backfill computes it with
# :func:`one_minute_bars` over silver's on-time quotes. Late quotes stay in silver, flagged.

MINUTE_MICROS = 60_000_000
BAR_STATE_COLUMNS = {
    "minute_micros": "int64",
    "open": "float64",
    "open_micros": "int64",
    "open_id": "object",
    "close": "float64",
    "close_micros": "int64",
    "close_id": "object",
    "high": "float64",
    "low": "float64",
    "volume": "int64",
    "notional": "float64",
    "trade_count": "int64",
    "first_micros": "int64",
    "last_micros": "int64",
}


def empty_bar_state() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in BAR_STATE_COLUMNS.items()})


def minute_partials(quotes: pd.DataFrame) -> pd.DataFrame:
    """One symbol's quotes (``event_micros``, ``event_id``, ``price``, ``volume``) -> one partial bar per
    minute, in :data:`BAR_STATE_COLUMNS`. Ties in event time are broken by event_id, as in gold."""
    ordered = quotes.sort_values(["event_micros", "event_id"], kind="mergesort")
    ordered = ordered.assign(
        minute_micros=ordered["event_micros"] // MINUTE_MICROS * MINUTE_MICROS,
        notional=ordered["price"] * ordered["volume"],
    )
    by_minute = ordered.groupby("minute_micros", sort=True)
    totals = by_minute.agg(
        high=("price", "max"),
        low=("price", "min"),
        volume=("volume", "sum"),
        notional=("notional", "sum"),
        trade_count=("price", "size"),
        first_micros=("event_micros", "min"),
        last_micros=("event_micros", "max"),
    )
    ends = {"first": "open", "last": "close"}
    for keep, name in ends.items():
        edge = ordered.drop_duplicates("minute_micros", keep=keep).set_index("minute_micros")
        totals[name] = edge["price"]
        totals[f"{name}_micros"] = edge["event_micros"]
        totals[f"{name}_id"] = edge["event_id"]
    return totals.reset_index().astype(BAR_STATE_COLUMNS)[list(BAR_STATE_COLUMNS)]


def merge_bars(open_bars: pd.DataFrame, partials: pd.DataFrame) -> pd.DataFrame:
    """Open bars + a batch's partial bars -> the touched minutes' whole bars, plus ``volume_before`` and
    ``count_before`` (what the bar held before the batch, 0 for a new minute)."""
    before = open_bars[open_bars["minute_micros"].isin(partials["minute_micros"])]
    both = pd.concat([before, partials], ignore_index=True)
    by_minute = both.groupby("minute_micros", sort=True)
    merged = by_minute.agg(
        high=("high", "max"),
        low=("low", "min"),
        volume=("volume", "sum"),
        notional=("notional", "sum"),
        trade_count=("trade_count", "sum"),
        first_micros=("first_micros", "min"),
        last_micros=("last_micros", "max"),
    )
    for name, keep in (("open", "first"), ("close", "last")):
        edge = (
            both.sort_values([f"{name}_micros", f"{name}_id"], kind="mergesort")
            .drop_duplicates("minute_micros", keep=keep)
            .set_index("minute_micros")
        )
        for suffix in ("", "_micros", "_id"):
            merged[f"{name}{suffix}"] = edge[f"{name}{suffix}"]
    merged = merged.reset_index().astype(BAR_STATE_COLUMNS)[list(BAR_STATE_COLUMNS)]
    prior = before.set_index("minute_micros")
    merged["volume_before"] = merged["minute_micros"].map(prior["volume"]).fillna(0).astype("int64")
    merged["count_before"] = merged["minute_micros"].map(prior["trade_count"]).fillna(0).astype("int64")
    return merged


def still_open(bars: pd.DataFrame, high_water: int, late_after_micros: int) -> pd.DataFrame:
    """The bars a quote that is not late may still reach: those whose minute ended less than
    ``late_after`` before the symbol's high-water mark."""
    return bars[bars["minute_micros"] + MINUTE_MICROS + late_after_micros > high_water]


def stream_bars(touched: DataFrame) -> DataFrame:
    """The state step's touched bars (see :mod:`surveillance.transforms.silver_state`) as gold rows."""
    bar_start = F.timestamp_micros("minute_micros")
    return touched.select(
        "symbol",
        bar_start.alias("bar_start"),
        F.to_date(bar_start).alias("bar_date"),
        "open",
        "high",
        "low",
        "close",
        "volume",
        F.when(F.col("volume") > 0, F.col("notional") / F.col("volume")).alias("vwap"),
        "trade_count",
        F.timestamp_micros("first_micros").alias("first_event_time"),
        F.timestamp_micros("last_micros").alias("last_event_time"),
        F.current_timestamp().alias("updated_at"),
    ).select(*GOLD_BARS.schema.fieldNames())


def on_time(quotes: DataFrame) -> DataFrame:
    """The quotes a bar counts: all but the late ones (those stay in silver, flagged)."""
    return quotes.where(~F.coalesce(F.col("is_late"), F.lit(False)))
