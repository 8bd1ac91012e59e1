"""A quote's per-symbol context: what every detector reads about the quotes before it, in one pandas pass.

One definition, used by both paths:

* the detection query computes it inside its stateful operator, on each symbol's tail (from the state
  store) followed by the batch's new quotes, and emits only the new quotes with their context;
* a backfill (and the unit tests) compute it with :func:`with_quote_context`, per symbol over silver history
  plus the recomputed quotes.

The context of a quote is (tick order: event time, then event_id):

* for the rules: the previous quote's price, id, time and warn expectations, the return from it, and the
  trailing statistics of the previous ``zscore_window`` returns and ``volume_window`` volumes (the current
  quote excluded; missing values skipped, as SQL aggregates skip nulls);
* for the model: :data:`~surveillance.models.features.FEATURE_COLUMNS` and ``scorable``, from the one
  feature definition of :func:`~surveillance.models.features.symbol_features`.

With the context attached, each detector is a row-level expression: no window, no shuffle, no join.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from surveillance.models.features import FEATURE_COLUMNS, _stat, _trailing, symbol_features

RULE_CONTEXT_FIELDS = (
    T.StructField("prev_price", T.DoubleType()),
    T.StructField("prev_event_id", T.StringType()),
    T.StructField("prev_event_micros", T.LongType()),
    T.StructField("prev_dq_warnings", T.ArrayType(T.StringType())),
    T.StructField("ret", T.DoubleType()),
    T.StructField("ret_mean", T.DoubleType()),
    T.StructField("ret_std", T.DoubleType()),
    T.StructField("ret_n", T.LongType()),
    T.StructField("volume_mean", T.DoubleType()),
    T.StructField("volume_n", T.LongType()),
)
MODEL_CONTEXT_FIELDS = (
    *[T.StructField(name, T.DoubleType()) for name in FEATURE_COLUMNS],
    T.StructField("scorable", T.BooleanType()),
)
CONTEXT_FIELDS = (*RULE_CONTEXT_FIELDS, *MODEL_CONTEXT_FIELDS)
CONTEXT_COLUMNS = tuple(field.name for field in CONTEXT_FIELDS)
# What the context reads of each quote.
TICK_COLUMNS = ("symbol", "event_id", "event_micros", "price", "volume", "bid", "ask", "dq_warnings")


@dataclass(frozen=True)
class ContextWindows:
    zscore_window: int  # trailing returns of the return z-score
    volume_window: int  # trailing volumes of the volume spike
    model_features: bool = True  # compute the model's features (off when no model scores)


def _previous(values: np.ndarray) -> np.ndarray:
    out = np.empty(len(values), dtype=values.dtype)
    if len(values):
        out[0] = None if values.dtype == object else np.nan
        out[1:] = values[:-1]
    return out


def _trailing_count_and_mean(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    views = _trailing(values, window, include_current=False)
    counts = np.sum(~np.isnan(views), axis=1)
    return counts, _stat(views, "mean", 1)


def rule_context(ticks: pd.DataFrame, windows: ContextWindows) -> pd.DataFrame:
    """The rules' context of one symbol's quotes, which must be in tick order (same index)."""
    price = ticks["price"].to_numpy(np.float64)
    volume = ticks["volume"].to_numpy(np.float64)
    prev_price = _previous(price)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = (price - prev_price) / prev_price
    returns = _trailing(ret, windows.zscore_window, include_current=False)
    ret_n = np.sum(~np.isnan(returns), axis=1)
    volume_n, volume_mean = _trailing_count_and_mean(volume, windows.volume_window)
    previous_micros = _previous(ticks["event_micros"].to_numpy(np.float64))
    return pd.DataFrame(
        {
            "prev_price": prev_price,
            "prev_event_id": _previous(ticks["event_id"].to_numpy(object)),
            "prev_event_micros": pd.array(previous_micros, dtype="Int64")
            if len(ticks)
            else pd.array([], "Int64"),
            "prev_dq_warnings": _previous(ticks["dq_warnings"].to_numpy(object)),
            "ret": ret,
            "ret_mean": _stat(returns, "mean", 1),
            "ret_std": _stat(returns, "std", 2),
            "ret_n": ret_n.astype(np.int64),
            "volume_mean": volume_mean,
            "volume_n": volume_n.astype(np.int64),
        },
        index=ticks.index,
    )


def tick_context(ticks: pd.DataFrame, windows: ContextWindows) -> pd.DataFrame:
    """``ticks`` (one symbol, tick order) with :data:`CONTEXT_COLUMNS` added. Pure: no I/O, no Spark."""
    parts = [ticks, rule_context(ticks, windows)]
    if windows.model_features and len(ticks):
        parts.append(symbol_features(ticks))
    else:
        parts.append(
            pd.DataFrame({**{name: np.nan for name in FEATURE_COLUMNS}, "scorable": False}, index=ticks.index)
        )
    return pd.concat(parts, axis=1)


def sort_symbol_ticks(quotes: pd.DataFrame) -> pd.DataFrame:
    """One symbol's quotes in tick order (event time, then event_id)."""
    return quotes.sort_values(["event_micros", "event_id"], kind="mergesort", ignore_index=True)


def with_quote_context(quotes: DataFrame, windows: ContextWindows) -> DataFrame:
    """Spark batch form: ``quotes`` (silver columns, any symbols) with their context, per symbol.

    Adds :data:`CONTEXT_COLUMNS` and ``prev_event_time``; used where a whole range is at hand (backfill,
    tests). The stream computes the same context in its state operator instead.
    """
    if "dq_warnings" not in quotes.columns:
        quotes = quotes.withColumn("dq_warnings", F.array().cast("array<string>"))
    with_micros = quotes.withColumn("event_micros", F.unix_micros("event_time"))
    schema = T.StructType([*with_micros.schema.fields, *CONTEXT_FIELDS])
    names = with_micros.columns

    def per_symbol(rows: pd.DataFrame) -> pd.DataFrame:
        return tick_context(sort_symbol_ticks(rows), windows).reindex(columns=[*names, *CONTEXT_COLUMNS])

    return (
        with_micros.groupBy("symbol")
        .applyInPandas(per_symbol, schema)
        .withColumn("prev_event_time", F.timestamp_micros("prev_event_micros"))
        .drop("event_micros")
    )
