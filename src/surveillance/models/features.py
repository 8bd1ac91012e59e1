"""The one feature definition of the anomaly models: training, stream scoring and batch jobs all call it.

Features describe each quote against its own symbol's recent past, in tick order (event time, then
event_id). Every feature of a row reads at most :data:`HISTORY_TICKS` rows before it, and each window is
computed exactly over its own rows (NumPy sliding windows, not running sums): the features of a quote are the
same whether its symbol's whole day is at hand (training, backfill) or only this micro-batch plus the last
``HISTORY_TICKS`` quotes from silver (the stream). That is the per-symbol state carried across batches.

A quote is ``scorable`` once its symbol has :data:`MIN_HISTORY` earlier quotes; earlier features are
partial (windows of what exists) and the models neither learn from nor score them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

# The longest look-back of any feature below: the EWMA (50 ticks) of the spread against its 100-tick
# median, plus the quote before each window.
HISTORY_TICKS = 160
MIN_HISTORY = 50
RETURN_WINDOW = 50  # trailing returns for the return z-score (as the rolling z-score rule)
BASELINE_WINDOW = 100  # trailing ticks for volatility, arrival-rate and spread baselines
EWMA_LAMBDA, EWMA_SPAN = 0.2, 50  # exponentially weighted means over the last 50 ticks (0.8^50 ~ 1e-5)
RUN_CAP = 100  # unchanged-quote run lengths are counted up to this

# Columns the feature function needs (one row per quote).
INPUT_COLUMNS = ("symbol", "event_id", "event_micros", "price", "volume", "bid", "ask")
FEATURE_COLUMNS: tuple[str, ...] = (
    "ret_1",  # log return from the previous quote
    "ret_5",  # log return over 5 quotes
    "ret_20",  # log return over 20 quotes
    "ret_z",  # (ret_1 - mean) / stdev of the previous 50 returns
    "ret_5_z",  # ret_5 against the 100-quote volatility scaled to 5 quotes
    "ret_20_z",  # ret_20 against the 100-quote volatility scaled to 20 quotes (drifts, crashes)
    "ewma_ret_z",  # EWMA of returns in units of the 100-quote volatility (momentum)
    "log_volume_ratio",  # log volume against the mean of the previous 50
    "volume_z",  # log volume z-score against the previous 50
    "spread_bps",  # (ask - bid) / mid in basis points
    "log_spread_ratio",  # log spread against the median spread of the previous 100
    "ewma_log_spread_ratio",
    "inter_arrival_s",  # seconds since the previous quote
    "log_arrival_ratio",  # median gap of the last 10 quotes against that of the previous 100 (bursts)
    "unchanged_run",  # consecutive quotes with price, bid and ask all unchanged (a frozen feed)
    "drawdown_20",  # log price below the 20-quote high
    "range_20",  # log range of the last 20 prices
)


def _trailing(values: np.ndarray, window: int, include_current: bool) -> np.ndarray:
    """(rows, window) views of each row's trailing values, NaN-padded before the first row."""
    pad = np.full(window if not include_current else window - 1, np.nan)
    padded = np.concatenate([pad, values.astype(np.float64)])
    views = sliding_window_view(padded, window)
    return views[: len(values)] if not include_current else views


def _stat(windows: np.ndarray, how: str, min_count: int) -> np.ndarray:
    """A per-row statistic over its window's non-NaN values; NaN with fewer than ``min_count`` of them."""
    counts = np.sum(~np.isnan(windows), axis=1)
    out = np.full(len(windows), np.nan)
    enough = counts >= min_count
    if not enough.any():
        return out
    chosen = windows[enough]
    with np.errstate(invalid="ignore", divide="ignore"):
        if how == "mean":
            out[enough] = np.nanmean(chosen, axis=1)
        elif how == "std":
            out[enough] = np.nanstd(chosen, axis=1, ddof=1)
        elif how == "median":
            out[enough] = np.nanmedian(chosen, axis=1)
        elif how == "max":
            out[enough] = np.nanmax(chosen, axis=1)
        elif how == "min":
            out[enough] = np.nanmin(chosen, axis=1)
        else:
            raise ValueError(how)
    return out


def _shift(values: np.ndarray, lag: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    if lag < len(values):
        out[lag:] = values[: len(values) - lag]
    return out


def _ewma(values: np.ndarray) -> np.ndarray:
    """Exponentially weighted mean of each row's last EWMA_SPAN values (NaNs skipped, weights rescaled)."""
    weights = EWMA_LAMBDA * (1 - EWMA_LAMBDA) ** np.arange(EWMA_SPAN - 1, -1, -1)  # oldest first
    windows = _trailing(values, EWMA_SPAN, include_current=True)
    present = ~np.isnan(windows)
    total = (np.where(present, windows, 0.0) * weights).sum(axis=1)
    weight = (present * weights).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.sum(axis=1) >= 10, total / weight, np.nan)


def _unchanged_run(price: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """How many quotes in a row, up to this one, repeat the previous quote's price, bid and ask exactly."""

    def same(series: np.ndarray) -> np.ndarray:
        previous = _shift(series, 1)
        return (series == previous) | (np.isnan(series) & np.isnan(previous) & ~np.isnan(price))

    repeated = same(price) & same(bid) & same(ask)
    repeated[0] = False
    # Capped at RUN_CAP: the run ending at a row is read from its last RUN_CAP flags only.
    flags = _trailing(repeated.astype(np.float64), RUN_CAP, include_current=True)
    flags = np.nan_to_num(flags, nan=0.0)
    # Length of the trailing block of ones: position of the last zero counted from the end.
    zeros_from_end = np.argmax(flags[:, ::-1] == 0, axis=1)
    all_ones = flags.all(axis=1)
    return np.where(all_ones, RUN_CAP, zeros_from_end).astype(np.float64)


def symbol_features(quotes: pd.DataFrame) -> pd.DataFrame:
    """Features of one symbol's quotes, which must be in tick order; one row per quote, same index."""
    price = quotes["price"].to_numpy(np.float64)
    volume = quotes["volume"].to_numpy(np.float64)
    bid = quotes["bid"].to_numpy(np.float64)
    ask = quotes["ask"].to_numpy(np.float64)
    micros = quotes["event_micros"].to_numpy(np.int64)
    n = len(quotes)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_price = np.log(price)
        ret_1 = log_price - _shift(log_price, 1)
        ret_5 = log_price - _shift(log_price, 5)
        ret_20 = log_price - _shift(log_price, 20)
        previous_returns = _trailing(ret_1, RETURN_WINDOW, include_current=False)
        ret_mean = _stat(previous_returns, "mean", 20)
        ret_std = _stat(previous_returns, "std", 20)
        sigma = _stat(_trailing(ret_1, BASELINE_WINDOW, include_current=False), "std", 20)
        log_volume = np.log1p(volume)
        previous_log_volume = _trailing(log_volume, RETURN_WINDOW, include_current=False)
        volume_mean = _stat(_trailing(volume, RETURN_WINDOW, include_current=False), "mean", 10)
        spread = (ask - bid) / ((ask + bid) / 2) * 1e4
        spread_base = _stat(_trailing(spread, BASELINE_WINDOW, include_current=False), "median", 10)
        log_spread_ratio = np.log(np.maximum(spread, 1e-3) / np.maximum(spread_base, 1e-3))
        gaps = np.concatenate([[np.nan], np.diff(micros) / 1e6]) if n else np.array([])
        recent_gap = _stat(_trailing(gaps, 10, include_current=True), "median", 5)
        usual_gap = _stat(_trailing(gaps, BASELINE_WINDOW, include_current=False), "median", 20)
        last_20 = _trailing(log_price, 20, include_current=True)
        features = {
            "ret_1": ret_1,
            "ret_5": ret_5,
            "ret_20": ret_20,
            "ret_z": (ret_1 - ret_mean) / ret_std,
            "ret_5_z": ret_5 / (sigma * np.sqrt(5)),
            "ret_20_z": ret_20 / (sigma * np.sqrt(20)),
            "ewma_ret_z": _ewma(ret_1) / sigma,
            "log_volume_ratio": log_volume - np.log1p(volume_mean),
            "volume_z": (log_volume - _stat(previous_log_volume, "mean", 10))
            / _stat(previous_log_volume, "std", 10),
            "spread_bps": spread,
            "log_spread_ratio": log_spread_ratio,
            "ewma_log_spread_ratio": _ewma(log_spread_ratio),
            "inter_arrival_s": gaps,
            "log_arrival_ratio": np.log((recent_gap + 1e-3) / (usual_gap + 1e-3)),
            "unchanged_run": _unchanged_run(price, bid, ask) if n else np.array([]),
            "drawdown_20": log_price - _stat(last_20, "max", 1),
            "range_20": _stat(last_20, "max", 1) - _stat(last_20, "min", 1),
        }
    out = pd.DataFrame(features, index=quotes.index)
    # Infinities (a zero stdev, a zero price) carry no information a model can use: make them missing.
    out = out.replace([np.inf, -np.inf], np.nan)
    out["scorable"] = np.arange(n) >= MIN_HISTORY
    return out


def sort_ticks(quotes: pd.DataFrame) -> pd.DataFrame:
    """Quotes in tick order: by symbol, event time, event_id (the order every rule and feature uses)."""
    return quotes.sort_values(["symbol", "event_micros", "event_id"], kind="mergesort", ignore_index=True)


def quote_features(quotes: pd.DataFrame) -> pd.DataFrame:
    """Features of quotes of any symbols: the input's columns plus FEATURE_COLUMNS and ``scorable``.

    ``quotes`` needs INPUT_COLUMNS (``event_micros``: event time in microseconds since the epoch, see
    :func:`with_event_micros`); rows come back in tick order.
    """
    missing = [name for name in INPUT_COLUMNS if name not in quotes.columns]
    if missing:
        raise ValueError(f"quote_features needs columns {missing}")
    ordered = sort_ticks(quotes)
    parts = [symbol_features(group) for _, group in ordered.groupby("symbol", sort=False)]
    if not parts:
        empty = pd.DataFrame({name: pd.Series(dtype="float64") for name in FEATURE_COLUMNS})
        return pd.concat([ordered, empty.assign(scorable=pd.Series(dtype=bool))], axis=1)
    return pd.concat([ordered, pd.concat(parts)], axis=1)


def with_event_micros(quotes: pd.DataFrame) -> pd.DataFrame:
    """Add ``event_micros`` from a timezone-aware ``event_time`` column."""
    times = pd.to_datetime(quotes["event_time"], utc=True)
    micros = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    return quotes.assign(event_micros=micros.astype("int64"))
