"""The one feature definition of the anomaly models: training, stream scoring and batch jobs all call it.

Features describe each quote against its own symbol's recent past, in tick order (event time, then
event_id), and in the symbol's own units, so that they mean the same for every symbol and every source: a
return is measured in the symbol's recent volatility, a volume against its recent median volume, a spread
against its recent median spread, a gap between quotes against its recent median gap, a run of frozen
quotes against how often its quotes usually repeat. A symbol at 5 cents or at 5,000, quoting twice a
minute or twice a second, with a 1 bps or a 50 bps spread, gets comparable values; nothing in a model
reads a price level, a tick rate, a spread or a volume scale. The one exception, ``ret_1`` (the plain log
return), is kept for the fixed 5 % jump baseline, which is a percentage by definition; no learned detector
reads it.

Every feature of a row reads at most :data:`HISTORY_TICKS` rows before it, and each window is computed
exactly over its own rows (NumPy sliding windows, not running sums): the features of a quote are the same
whether its symbol's whole day is at hand (training, backfill) or only this micro-batch plus the last
``HISTORY_TICKS`` quotes from silver (the stream). That is the per-symbol state carried across batches.

A quote is ``scorable`` once its symbol has :data:`MIN_HISTORY` earlier quotes; earlier features are
partial (windows of what exists) and the models neither learn from nor score them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

MIN_HISTORY = 50
RETURN_WINDOW = 50  # trailing returns of the rolling z-score (as the return z-score rule)
BASELINE_WINDOW = 100  # trailing quotes for the volatility, volume, spread, gap and repeat baselines
EWMA_LAMBDA, EWMA_SPAN = 0.2, 50  # exponentially weighted means over the last 50 ticks (0.8^50 ~ 1e-5)
# The smallest dispersion of log volumes or log spreads a z-score divides by: a spread that sits at one
# tick has no dispersion, yet widening to two ticks (log 2) is ordinary; here it is 2 units.
MIN_LOG_DISPERSION = 0.35
RUN_CAP = 60  # frozen-quote runs are counted up to this (a frozen feed is obvious long before)
# The volatility leaves out the largest TRIM_SHARE of a window's returns; for normal returns the root mean
# square of the rest is the standard deviation divided by this (1 - 2 z f(z) / 0.95 at z = 1.96).
TRIM_SHARE, TRIMMED_RMS_TO_SD = 0.05, 1.148
# A gap this many times the usual one scales the expected return by at most sqrt(MAX_GAP_SCALE): a market
# that was shut overnight opens where it opens.
MAX_GAP_SCALE = 10_000.0
# The longest look-back of any feature below: the repeat baseline of a frozen run, read over the
# BASELINE_WINDOW quotes before the run (up to RUN_CAP long) started, each compared with the quote before.
HISTORY_TICKS = RUN_CAP + BASELINE_WINDOW + 10

# Columns the feature function needs (one row per quote).
INPUT_COLUMNS = ("symbol", "event_id", "event_micros", "price", "volume", "bid", "ask")
# What the learned detectors read: every one relative to the symbol's own recent behaviour.
MODEL_FEATURES: tuple[str, ...] = (
    "ret_sigma",  # log return in units of the (trimmed) volatility of the previous 100 returns, time-scaled
    "ret_z",  # (log return - mean) / stdev of the previous 50 returns (the return z-score rule's measure)
    "ret_5_z",  # log return over 5 quotes against the robust volatility scaled to 5 quotes
    "ret_20_z",  # over 20 quotes (drifts, crashes)
    "ewma_ret_z",  # EWMA of returns in volatility units (momentum)
    "drawdown_20_z",  # log price below the 20-quote high, in units of the volatility over 20 quotes
    "range_20_z",  # log range of the last 20 prices, same units
    "volume_z",  # log volume against the median of the previous 100 non-zero, in their robust dispersion
    "spread_z",  # log spread against the median of the previous 100, in their robust dispersion
    "ewma_spread_z",  # its EWMA (a spread that stays wide)
    "log_gap_ratio",  # log of the gap since the previous quote against the median gap of the previous 100
    "log_arrival_ratio",  # median gap of the last 10 quotes against that of the previous 100 (bursts)
    "frozen_run_ratio",  # log (1 + frozen run) against log (1 + the run usual before this one began)
)
FEATURE_COLUMNS: tuple[str, ...] = ("ret_1", *MODEL_FEATURES)  # ret_1: the fixed-jump baseline's input


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
            # np.nanmedian goes through masked arrays (slow): a sort puts NaNs last, and the middle of
            # each row's present values is then at a known place.
            ordered = np.sort(chosen, axis=1)
            present = counts[enough]
            rows = np.arange(len(chosen))
            out[enough] = (ordered[rows, (present - 1) // 2] + ordered[rows, present // 2]) / 2
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


def _robust_sigma(windows: np.ndarray, min_count: int) -> np.ndarray:
    """Per row, a volatility that one outlier in the window does not inflate and a mass of zero returns
    (a coarse tick, quiet minute bars) does not shrink to nothing: the root mean square of the window's
    returns without its largest 5 % (at least one), scaled to be the standard deviation for normal
    returns. NaN with fewer than ``min_count`` returns, or where every kept return is zero."""
    present = ~np.isnan(windows)
    counts = present.sum(axis=1)
    squares = np.where(present, windows * windows, 0.0)
    dropped = np.maximum(1, np.ceil(TRIM_SHARE * counts).astype(np.int64))
    most = int(dropped.max()) if len(dropped) else 1
    width = squares.shape[1] if squares.ndim == 2 else 0
    if width <= most:
        return np.full(len(windows), np.nan)
    # The largest ``most`` squares of each row (a partition, not a sort), largest first.
    largest = -np.sort(-np.partition(squares, width - most, axis=1)[:, width - most :], axis=1)
    trimmed = squares.sum(axis=1) - np.cumsum(largest, axis=1)[np.arange(len(windows)), dropped - 1]
    kept = counts - dropped
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = TRIMMED_RMS_TO_SD * np.sqrt(np.maximum(trimmed, 0.0) / kept)
    return np.where((counts >= min_count) & (kept > 0) & (sigma > 0), sigma, np.nan)


def _robust_z(values: np.ndarray) -> np.ndarray:
    """Each value against the median of the previous BASELINE_WINDOW, in their dispersion around it (the
    trimmed root mean square of :func:`_robust_sigma`, at least MIN_LOG_DISPERSION): comparable between
    a symbol whose volumes vary tenfold minute to minute and one whose volumes barely move, and not
    fooled by a book that sits at one tick half the time and at twenty the other half."""
    previous = _trailing(values, BASELINE_WINDOW, include_current=False)
    median = _stat(previous, "median", 10)
    with np.errstate(invalid="ignore"):
        dispersion = _robust_sigma(previous - median[:, None], 10)
    return (values - median) / np.maximum(np.nan_to_num(dispersion, nan=0.0), MIN_LOG_DISPERSION)


def _repeats(price: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Whether each quote repeats the previous one's price, bid and ask exactly (missing = missing)."""

    def same(series: np.ndarray) -> np.ndarray:
        previous = _shift(series, 1)
        return (series == previous) | (np.isnan(series) & np.isnan(previous) & ~np.isnan(price))

    repeated = same(price) & same(bid) & same(ask)
    if len(repeated):
        repeated[0] = False
    return repeated


def _frozen_run(repeated: np.ndarray) -> np.ndarray:
    """How many quotes in a row, up to this one, repeat the previous quote (counted up to RUN_CAP)."""
    # Read from each row's last RUN_CAP flags only: the length of their trailing block of ones.
    flags = np.nan_to_num(_trailing(repeated.astype(np.float64), RUN_CAP, include_current=True), nan=0.0)
    zeros_from_end = np.argmax(flags[:, ::-1] == 0, axis=1)
    return np.where(flags.all(axis=1), RUN_CAP, zeros_from_end).astype(np.float64)


def _frozen_run_ratio(repeated: np.ndarray) -> np.ndarray:
    """log(1 + run) - log(1 + usual run), the usual run being what the repeat rate of the BASELINE_WINDOW
    quotes before this run began implies (a geometric run: p / (1 - p)). A thin market that often repeats
    its last quote has long usual runs; a liquid one freezing for 40 quotes stands out."""
    run = _frozen_run(repeated)
    rate = _stat(_trailing(repeated.astype(np.float64), BASELINE_WINDOW, include_current=False), "mean", 20)
    run_start = np.arange(len(run)) - run.astype(np.int64)
    rate_before = rate[np.maximum(run_start, 0)]
    rate_before = np.where(run_start >= 0, rate_before, np.nan)
    usual = np.minimum(rate_before, 0.99) / (1 - np.minimum(rate_before, 0.99))
    return np.log1p(run) - np.log1p(usual)


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
        previous_returns = _trailing(ret_1, RETURN_WINDOW, include_current=False)
        sigma = _robust_sigma(_trailing(ret_1, BASELINE_WINDOW, include_current=False), 20)
        gaps = np.concatenate([[np.nan], np.diff(micros) / 1e6]) if n else np.array([])
        usual_gap = _stat(_trailing(gaps, BASELINE_WINDOW, include_current=False), "median", 20)
        recent_gap = _stat(_trailing(gaps, 10, include_current=True), "median", 5)
        # A return over a longer wait than usual may be larger: volatility grows with the square root of time.
        gap_scale = np.sqrt(np.clip(gaps / np.maximum(usual_gap, 1e-3), 1.0, MAX_GAP_SCALE))
        spread = (ask - bid) / ((ask + bid) / 2)
        spread = np.where(spread > 0, spread, np.nan)  # a locked or crossed book has no spread to compare
        spread_z = _robust_z(np.log(spread))
        last_20 = _trailing(log_price, 20, include_current=True)
        sigma_20 = sigma * np.sqrt(20)
        features = {
            "ret_1": ret_1,
            "ret_sigma": ret_1 / (sigma * gap_scale),
            "ret_z": (ret_1 - _stat(previous_returns, "mean", 20)) / _stat(previous_returns, "std", 20),
            "ret_5_z": (log_price - _shift(log_price, 5)) / (sigma * np.sqrt(5)),
            "ret_20_z": (log_price - _shift(log_price, 20)) / sigma_20,
            "ewma_ret_z": _ewma(ret_1) / sigma,
            "drawdown_20_z": (log_price - _stat(last_20, "max", 1)) / sigma_20,
            "range_20_z": (_stat(last_20, "max", 1) - _stat(last_20, "min", 1)) / sigma_20,
            # A quote without a trade (volume 0) has no volume to compare, and is left out of the
            # baseline: a thin market's many empty minutes would otherwise swamp its dispersion.
            "volume_z": _robust_z(np.log(np.where(volume > 0, volume, np.nan))),
            "spread_z": spread_z,
            "ewma_spread_z": _ewma(spread_z),
            "log_gap_ratio": np.log(np.maximum(gaps, 1e-3) / np.maximum(usual_gap, 1e-3)),
            "log_arrival_ratio": np.log(np.maximum(recent_gap, 1e-3) / np.maximum(usual_gap, 1e-3)),
            "frozen_run_ratio": _frozen_run_ratio(_repeats(price, bid, ask)) if n else np.array([]),
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
