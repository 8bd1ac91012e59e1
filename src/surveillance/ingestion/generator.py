"""Synthetic, reproducible multi-symbol quotes with labelled anomalies and (optionally) dirty JSONL lines.

Model, per symbol: prices follow a geometric Brownian motion in *trade time* (constant volatility per tick,
shocks capped at 4 sigma, so ordinary ticks never look like z-score outliers); ticks arrive at irregular,
jittered times; bid/ask sit around the price with a per-symbol spread; volume follows a U-shaped intraday
profile with mean-one lognormal noise.

Anomalies, labelled one row each (first quote, last quote, type, magnitude): by default the sample's point
anomalies (price jumps of 6-12 %, volume spikes of 15-40x), placed after each symbol's first 60 ticks and
at least 80 ticks apart, so a detector's trailing window (50 quotes by default) never holds two of them.
Asking for any other type (:data:`ANOMALY_TYPES`: flash crashes, stale feeds, spread blowouts, quote
stuffing, momentum drifts) switches to span placement for every requested type: each appears
max(1, round(ticks / 1800)) times per symbol, after 150 ticks and at least 120 ticks apart.
``first_symbol`` shifts the tickers so train and test sets can have disjoint symbols.

Every random draw comes from a stream seeded by ``(seed, purpose, symbol)``: the same seed gives identical
output, and turning on ``dirty`` or ``inject_anomalies`` changes nothing else about the clean quotes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from surveillance.ingestion.contract import QUOTE_FIELDS, format_event_time, quote_to_json

# A fixed default start keeps the output deterministic: 09:30 New York on a Friday (14:30 UTC in November).
DEFAULT_START = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
TICKERS: tuple[str, ...] = (
    "ACME", "BOLT", "CRUX", "DYNE", "EMBR", "FLUX", "GLYF", "HALO",
    "IRIS", "JOLT", "KYTE", "LUMO", "MYRA", "NOVX", "ORBT", "PYXS",
    "QUIL", "RIVN", "SOLR", "TIDE", "UMBR", "VOLT", "WREN", "XENO",
)  # fmt: skip
VENUES: tuple[str, ...] = ("XNAS", "XNYS", "ARCX", "BATS", "IEXG")
# The point anomalies of the rules' sample (the default), and every labelled type the models learn from.
BASIC_ANOMALY_TYPES: tuple[str, ...] = ("price_jump", "volume_spike")
ANOMALY_TYPES: tuple[str, ...] = (
    *BASIC_ANOMALY_TYPES,
    "flash_crash",
    "stale_feed",
    "spread_blowout",
    "quote_stuffing",
    "momentum_drift",
)
DIRTY_KINDS: tuple[str, ...] = ("malformed", "duplicate", "extra_field", "late", "crossed", "wide_spread")
# Malformed variants: (detail, the quarantine reason silver gives it: a contract rule, or the default
# suite's error expectations from conf/base.yml).
MALFORMED_VARIANTS: tuple[tuple[str, str], ...] = (
    ("truncated_json", "invalid_json"),
    ("json_array", "not_an_object"),
    (
        "empty_object",
        "expectations: event_id_not_null, symbol_not_null, event_time_not_null, price_not_null, "
        "volume_not_null",
    ),
    ("price_text", "price_not_number"),
    ("price_negative", "expectations: price_positive_finite"),
    ("missing_event_id", "expectations: event_id_not_null"),
    ("bad_event_time", "bad_event_time"),
    ("volume_negative", "expectations: volume_non_negative"),
    # NaN is not JSON (RFC 8259): strict parsers, Spark's parse_json included, refuse the line.
    ("nan_literal", "invalid_json"),
    ("price_zero", "expectations: price_positive_finite"),
)
BAD_EVENT_TIMES: tuple[str, ...] = ("not-a-timestamp", "2026-99-99T99:99:99.999Z")

# One row per anomaly: its first quote (event_id, event_time) and the event time of its last (end_time).
LABEL_COLUMNS = ["event_id", "symbol", "event_time", "end_time", "anomaly_type", "magnitude"]
MANIFEST_COLUMNS = ["line_no", "kind", "event_id", "expected_reason", "detail"]

WARMUP_TICKS = 60  # no anomaly before a symbol's detectors have a full trailing window
ANOMALY_GAP = 80  # ticks between two anomalies of one symbol (> the default 50-quote windows)
JUMP_RANGE = (0.062, 0.118)  # inside 6-12 % with room for the 4-decimal rounding of prices
SPIKE_RANGE = (15.0, 40.0)
LATE_SHARE, DUPLICATE_SHARE, EXTRA_FIELD_SHARE, MALFORMED_SHARE = 0.003, 0.01, 0.02, 0.005
# Book faults: valid quotes with a crossed book (bid above ask) or a spread of 8 % of the price; they pass
# the contract and break the default suite's warn expectations (bid_not_above_ask, spread_within_bound).
CROSSED_SHARE, WIDE_SPREAD_SHARE, WIDE_SPREAD = 0.002, 0.001, 0.04
_YEAR_SECONDS = 252 * 6.5 * 3600  # trading seconds in a year, to scale annualised volatility
_VOLUME_NOISE = 0.45  # sigma of the lognormal volume noise
_SHOCK_CAP = 4.0  # largest ordinary price shock, in per-tick standard deviations
# Span anomalies (any type beyond the basic two): the first starts after SPAN_WARMUP ticks, so the models
# (scoring from 50 quotes of history on, most windows 50-100 quotes) see each with history; at least
# SPAN_GAP ticks separate one span's end from the next start; SPAN_END_MARGIN leaves room for a catch-up
# or stuffing's later tick.
SPAN_WARMUP, SPAN_GAP, SPAN_END_MARGIN = 150, 120, 10
CRASH_DEPTH, CRASH_FALL, CRASH_RECOVERY = (0.04, 0.09), (3, 8), (30, 90)
STALE_TICKS = (40, 90)
BLOWOUT_TICKS, BLOWOUT_MULTIPLE, BLOWOUT_MAX_BPS = (10, 40), (8.0, 20.0), 400.0
STUFFING_MESSAGES, STUFFING_TICKS = (60, 150), 5
DRIFT_TICKS, DRIFT_TOTAL = (120, 200), (0.03, 0.06)


@dataclass(frozen=True)
class MarketRanges:
    """Where each symbol's market parameters are drawn from (log-uniform: price, volume, tick rate).

    :data:`SAMPLE_MARKET` is the sample's market (every symbol at the configured tick rate, shocks capped
    at 4 sigma). :data:`RANDOMISED_MARKET` is for training detectors: price levels from cents to thousands,
    volatilities from sleepy to crypto, spreads from 1 to 60 bps, volumes from a handful to 200,000, tick
    rates from a seventh to six times the configured one, and fat-tailed (Student-t) shocks with no cap,
    so that no feature can stand for "came from this generator".
    """

    price: tuple[float, float] = (15.0, 450.0)
    annual_vol: tuple[float, float] = (0.20, 0.80)
    spread_bps: tuple[float, float] = (1.5, 12.0)
    base_volume: tuple[float, float] = (200.0, 3000.0)
    tick_rate_factor: tuple[float, float] = (1.0, 1.0)
    # Student-t degrees of freedom of the shocks (None: normal shocks capped at _SHOCK_CAP sigma).
    shock_dof: tuple[float, float] | None = None
    # The texture of ordinary trading, per symbol: the sigma of the lognormal volume noise, the share of
    # quotes with no volume, the sigma of the log-spread noise, how bursty arrivals are (the stationary sd
    # of a slowly varying log arrival rate; None: uniform arrivals) and volatility clustering (the same
    # for the log volatility).
    volume_noise: tuple[float, float] = (_VOLUME_NOISE, _VOLUME_NOISE)
    zero_volume_share: tuple[float, float] = (0.0, 0.0)
    spread_noise: tuple[float, float] = (0.2, 0.2)
    arrival_dispersion: tuple[float, float] | None = None
    volatility_clustering: tuple[float, float] = (0.0, 0.0)
    # Transient spread spikes (a thin book for one quote, 3-30x the spread): their share of quotes.
    spread_spike_share: tuple[float, float] = (0.0, 0.0)
    # Extended hours: the share of a symbol's quotes before the open and the share after the close, each
    # drawn from this range, quoted EXTENDED_HOURS_SLOWER times slower with EXTENDED_HOURS_WIDER spreads.
    extended_hours: tuple[float, float] = (0.0, 0.0)
    # Anomalies at least this many sigmas (jump, crash depth) / sigmas over the span (drift), and volume
    # spikes and spread blowouts at least this many sigmas of their own noise: a drawn size that a
    # symbol's ordinary variation would hide is scaled up, so every label stays an anomaly.
    min_jump_sigmas: float = 0.0
    min_drift_sigmas: float = 0.0
    min_noise_sigmas: float = 0.0
    blowout_max_bps: float = BLOWOUT_MAX_BPS
    # Prices, bids and asks on a tick grid (whole cents from a dollar up), not just 4 decimals.
    tick_grid: bool = False

    @property
    def randomised(self) -> bool:
        return self != SAMPLE_MARKET


SAMPLE_MARKET = MarketRanges()
RANDOMISED_MARKET = MarketRanges(
    price=(0.05, 5000.0),
    annual_vol=(0.10, 1.20),
    spread_bps=(1.0, 60.0),
    base_volume=(5.0, 200_000.0),
    tick_rate_factor=(1 / 7, 6.0),
    shock_dof=(3.0, 10.0),
    volume_noise=(0.3, 1.2),
    zero_volume_share=(0.0, 0.3),
    spread_noise=(0.05, 0.5),
    arrival_dispersion=(0.0, 1.2),
    volatility_clustering=(0.0, 0.6),
    spread_spike_share=(0.0, 0.03),
    min_jump_sigmas=15.0,
    min_drift_sigmas=8.0,
    min_noise_sigmas=6.0,
    blowout_max_bps=2000.0,
    tick_grid=True,
)


@dataclass(eq=False)
class GeneratedQuotes:
    """Quotes (event-time order), anomaly labels, JSONL lines in send order and the dirty-line manifest."""

    quotes: pd.DataFrame
    labels: pd.DataFrame
    raw_lines: list[str] = field(default_factory=list)
    manifest: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MANIFEST_COLUMNS))
    dirty: bool = False
    # What was asked for, so summary() reports a requested type even when none fitted (count 0).
    anomaly_types: tuple[str, ...] = BASIC_ANOMALY_TYPES

    def summary(self) -> dict[str, int]:
        """Counts of quotes, lines, anomalies by type and dirty lines by kind (and malformed by reason)."""
        counts = {"quotes": len(self.quotes), "lines": len(self.raw_lines)}
        counts["symbols"] = int(self.quotes.symbol.nunique())
        for kind in ANOMALY_TYPES:
            found = int((self.labels.anomaly_type == kind).sum())
            if found or kind in BASIC_ANOMALY_TYPES or kind in self.anomaly_types:
                counts[kind] = found
        for kind in DIRTY_KINDS:
            counts[kind] = int((self.manifest.kind == kind).sum())
        malformed = self.manifest[self.manifest.kind == "malformed"]
        for reason, count in sorted(malformed.expected_reason.value_counts().items()):
            counts[f"malformed:{reason}"] = int(count)
        return counts


def _rng(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, index])


def _tickers(count: int) -> list[str]:
    names = list(TICKERS[:count])
    round_ = 2
    while len(names) < count:  # more symbols than names: ACME2, BOLT2, ...
        names.extend(f"{name}{round_}" for name in TICKERS[: count - len(names)])
        round_ += 1
    return names


def _u_shape(fraction: np.ndarray) -> np.ndarray:
    # Busy open and close, quiet lunch: 2.35x at the edges, 0.55x at mid-session.
    return 0.55 + 1.8 * (2.0 * fraction - 1.0) ** 2


def _anomaly_positions(rng: np.random.Generator, ticks: int) -> list[tuple[int, str]]:
    """Tick indexes and types of one symbol's anomalies: past the warm-up, spaced apart, not at the end."""
    # Between 1 and 1 + ticks/900 of each type: 1-3 each for an hour at 30 ticks a minute.
    wanted = [kind for kind in BASIC_ANOMALY_TYPES for _ in range(1 + int(rng.integers(0, 1 + ticks // 900)))]
    candidates = rng.permutation(np.arange(WARMUP_TICKS, max(WARMUP_TICKS, ticks - 5)))
    chosen: list[int] = []
    for position in candidates:
        if len(chosen) == len(wanted):
            break
        if all(abs(int(position) - other) >= ANOMALY_GAP for other in chosen):
            chosen.append(int(position))
    types = [str(kind) for kind in rng.permutation(wanted)][: len(chosen)]
    return sorted(zip(chosen, types, strict=True))


@dataclass(frozen=True)
class _Span:
    """One anomaly of a symbol: where it starts (tick index), how many ticks it covers, its parameters."""

    start: int
    ticks: int
    kind: str
    params: dict[str, float]


def _draw_span(rng: np.random.Generator, kind: str) -> tuple[int, dict[str, float]]:
    """The tick length and parameters of one anomaly of ``kind``."""
    if kind == "price_jump":
        return 1, {"size": rng.uniform(*JUMP_RANGE) * rng.choice([-1.0, 1.0])}
    if kind == "volume_spike":
        return 1, {"multiple": rng.uniform(*SPIKE_RANGE)}
    if kind == "flash_crash":
        fall, recovery = (
            int(rng.integers(CRASH_FALL[0], CRASH_FALL[1] + 1)),
            int(rng.integers(CRASH_RECOVERY[0], CRASH_RECOVERY[1] + 1)),
        )
        depth = rng.uniform(*CRASH_DEPTH)
        return fall + recovery, {"fall": fall, "depth": depth, "volume": rng.uniform(3.0, 6.0)}
    if kind == "stale_feed":
        frozen = int(rng.integers(STALE_TICKS[0], STALE_TICKS[1] + 1))
        return frozen + 1, {"frozen": frozen}  # the catch-up quote after the freeze belongs to it
    if kind == "spread_blowout":
        length = int(rng.integers(BLOWOUT_TICKS[0], BLOWOUT_TICKS[1] + 1))
        return length, {"multiple": rng.uniform(*BLOWOUT_MULTIPLE)}
    if kind == "quote_stuffing":
        messages = int(rng.integers(STUFFING_MESSAGES[0], STUFFING_MESSAGES[1] + 1))
        return STUFFING_TICKS + 1, {"messages": messages}
    if kind == "momentum_drift":
        length = int(rng.integers(DRIFT_TICKS[0], DRIFT_TICKS[1] + 1))
        return length, {"total": rng.uniform(*DRIFT_TOTAL) * rng.choice([-1.0, 1.0])}
    raise ValueError(kind)


def _span_positions(rng: np.random.Generator, ticks: int, kinds: Sequence[str]) -> list[_Span]:
    """One symbol's anomalies of every requested type, spaced apart, after the warm-up.

    Each type appears max(1, round(ticks / 1800)) times (twice in two hours at 30 ticks a minute). When the
    symbol is too short for all of them, the last ones in the (random) order are dropped.
    """
    wanted = [
        str(kind) for kind in rng.permutation([k for k in kinds for _ in range(max(1, round(ticks / 1800)))])
    ]
    drawn = [(kind, *_draw_span(rng, kind)) for kind in wanted]
    room = ticks - SPAN_WARMUP - SPAN_END_MARGIN
    while drawn and sum(length for _, length, _ in drawn) + SPAN_GAP * (len(drawn) - 1) > room:
        drawn.pop()
    if not drawn:
        return []
    free = room - sum(length for _, length, _ in drawn) - SPAN_GAP * (len(drawn) - 1)
    # Spread the free ticks over the len + 1 gaps (before, between, after) at random.
    cuts = np.sort(rng.integers(0, free + 1, size=len(drawn)))
    extra = np.diff(np.r_[0, cuts])
    spans, position = [], SPAN_WARMUP
    for (kind, length, params), slack in zip(drawn, extra, strict=True):
        position += int(slack)
        spans.append(_Span(position, length, kind, params))
        position += length + SPAN_GAP
    return spans


@dataclass(frozen=True)
class _Texture:
    """One symbol's draw of the market's texture (see :class:`MarketRanges`)."""

    volume_noise: float
    zero_volume_share: float
    spread_noise: float
    arrival_dispersion: float | None
    volatility_clustering: float
    spread_spike_share: float
    pre_open_share: float
    after_close_share: float

    @classmethod
    def draw(cls, rng: np.random.Generator, market: MarketRanges) -> _Texture:
        return cls(
            rng.uniform(*market.volume_noise),
            rng.uniform(*market.zero_volume_share),
            rng.uniform(*market.spread_noise),
            None if market.arrival_dispersion is None else rng.uniform(*market.arrival_dispersion),
            rng.uniform(*market.volatility_clustering),
            rng.uniform(*market.spread_spike_share),
            rng.uniform(*market.extended_hours),
            rng.uniform(*market.extended_hours),
        )


EXTENDED_HOURS_SLOWER, EXTENDED_HOURS_WIDER = (5.0, 30.0), (3.0, 10.0)


def _extended_hours(
    rng: np.random.Generator, offsets: np.ndarray, duration_ms: int, texture: _Texture
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times with the first and last quotes in extended hours (slower), and each quote's spread
    multiplier (wider there): what a stock looks like before the open and after the close."""
    ticks = len(offsets)
    extended = np.zeros(ticks, dtype=bool)
    extended[: int(texture.pre_open_share * ticks)] = True
    extended[ticks - int(texture.after_close_share * ticks) :] = True
    slower = math.exp(rng.uniform(*np.log(EXTENDED_HOURS_SLOWER)))
    wider = math.exp(rng.uniform(*np.log(EXTENDED_HOURS_WIDER)))
    gaps = np.diff(offsets, prepend=0).astype(np.float64) + 1.0
    gaps[extended] *= slower
    times = np.cumsum(gaps)
    stretched = np.floor((times - times[0]) / times[-1] * (duration_ms - ticks)).astype(np.int64)
    return stretched + np.arange(ticks), np.where(extended, wider, 1.0)


def _slow_log_factor(
    rng: np.random.Generator, ticks: int, stationary_sd: float, phi: float = 0.99
) -> np.ndarray:
    """exp of an AR(1) with the given stationary sd, mean one; phi 0.99: regimes of some hundred ticks."""
    from scipy.signal import lfilter

    shocks = rng.normal(0.0, stationary_sd * math.sqrt(1 - phi**2), size=ticks)
    shocks[0] = rng.normal(0.0, stationary_sd)  # start in the stationary distribution
    return np.exp(lfilter([1.0], [1.0, -phi], shocks) - 0.5 * stationary_sd**2)


def _bursty_offsets(rng: np.random.Generator, ticks: int, duration_ms: int, dispersion: float) -> np.ndarray:
    """Arrival times (ms from the start) of a Poisson process whose rate wanders (a Cox process): busy
    and quiet stretches, bursts, never two quotes in one millisecond."""
    gaps = rng.exponential(1.0, size=ticks) / _slow_log_factor(rng, ticks, dispersion)
    times = np.cumsum(gaps)
    offsets = np.floor((times - times[0]) / times[-1] * (duration_ms - ticks)).astype(np.int64)
    return offsets + np.arange(ticks)


def _on_tick_grid(
    price: np.ndarray, bid: np.ndarray, ask: np.ndarray, tick: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prices on the venue's tick grid (a cent from a dollar up, 0.0001 below): spreads become whole
    ticks, and a cheap, calm stock's price sits still for long stretches, as real ones do."""
    on_grid = np.maximum(np.round(price / tick), 1.0)
    below = np.minimum(np.floor(bid / tick + 1e-9), on_grid - 1)
    above = np.maximum(np.ceil(ask / tick - 1e-9), on_grid + 1)
    return (
        np.round(on_grid * tick, 4),
        np.round(np.maximum(below, 0.0) * tick, 4),
        np.round(above * tick, 4),
    )


def _at_least_sigmas(span: _Span, tick_vol: float, texture: _Texture, market: MarketRanges) -> _Span:
    """The span with its size raised to the market's floor in sigmas, where the drawn size is below it."""
    params = dict(span.params)
    noise_floor = market.min_noise_sigmas
    if span.kind == "volume_spike" and noise_floor:
        params["multiple"] = max(params["multiple"], math.exp(noise_floor * texture.volume_noise))
    elif span.kind == "spread_blowout" and noise_floor:
        params["multiple"] = max(params["multiple"], math.exp(noise_floor * texture.spread_noise))
    if span.kind == "price_jump" and market.min_jump_sigmas:
        size = max(abs(params["size"]), math.expm1(market.min_jump_sigmas * tick_vol))
        params["size"] = math.copysign(size, params["size"])
    elif span.kind == "flash_crash" and market.min_jump_sigmas:
        params["depth"] = min(0.9, max(params["depth"], -math.expm1(-market.min_jump_sigmas * tick_vol)))
    elif span.kind == "momentum_drift" and market.min_drift_sigmas:
        floor = math.expm1(market.min_drift_sigmas * tick_vol * math.sqrt(span.ticks))
        params["total"] = math.copysign(max(abs(params["total"]), floor), params["total"])
    return _Span(span.start, span.ticks, span.kind, params)


def _symbol_quotes(
    seed: int,
    index: int,
    symbol: str,
    start_ms: int,
    duration_ms: int,
    ticks: int,
    anomaly_types: Sequence[str],
    market: MarketRanges = SAMPLE_MARKET,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    rng = _rng(seed, 1, index)
    start_price = max(0.01, round(math.exp(rng.uniform(*np.log(market.price))), 2))
    annual_vol = rng.uniform(*market.annual_vol)
    # The sample draws its spreads uniformly; a randomised market log-uniformly (1 to 60 bps).
    spread_bps = (
        math.exp(rng.uniform(*np.log(market.spread_bps)))
        if market.randomised
        else rng.uniform(*market.spread_bps)
    )
    base_volume = math.exp(rng.uniform(*np.log(market.base_volume)))
    # The texture comes from its own stream: the sample's draws stay exactly as they were.
    texture_rng = _rng(seed, 9, index)
    texture = _Texture.draw(texture_rng, market)

    # Irregular arrivals: sorted uniform times (a Poisson process given its count), then made strictly
    # increasing at millisecond precision so event-time order equals tick order within the symbol.
    offsets = np.sort(rng.integers(0, duration_ms, size=ticks))
    steps = np.arange(ticks)
    offsets = np.maximum.accumulate(offsets - steps) + steps
    if texture.arrival_dispersion is not None:
        offsets = _bursty_offsets(texture_rng, ticks, duration_ms, texture.arrival_dispersion)
    session_spread = np.ones(ticks)
    if texture.pre_open_share or texture.after_close_share:
        offsets, session_spread = _extended_hours(texture_rng, offsets, duration_ms, texture)
    tick_vol = annual_vol * math.sqrt(duration_ms / 1000 / ticks / _YEAR_SECONDS)
    tick = 0.01 if start_price >= 1 else 0.0001
    if market.shock_dof is None:
        # Capped at 4 sigma: a detector's 6-sigma z-score should fire on injected anomalies only.
        shocks = np.clip(rng.standard_normal(ticks), -_SHOCK_CAP, _SHOCK_CAP)
    else:  # fat tails, unit variance, from their own stream (the sample's draws stay as they were)
        tails = _rng(seed, 8, index)
        dof = tails.uniform(*market.shock_dof)
        shocks = tails.standard_t(dof, size=ticks) / math.sqrt(dof / (dof - 2))
    vols = tick_vol
    if texture.volatility_clustering:
        vols = tick_vol * _slow_log_factor(texture_rng, ticks, texture.volatility_clustering)
    log_returns = -0.5 * vols**2 + vols * shocks
    log_returns[0] = 0.0
    fraction = np.clip(offsets / duration_ms, 0.0, 1.0)
    expected_volume = base_volume * _u_shape(fraction)
    sd = texture.volume_noise
    noise = np.exp(rng.normal(-0.5 * sd**2, sd, size=ticks))  # mean one
    volume = np.maximum(1, np.rint(expected_volume * noise)).astype(np.int64)
    if texture.zero_volume_share:  # quotes that moved the book without a trade
        volume[texture_rng.random(ticks) < texture.zero_volume_share] = 0
    spread = start_price * spread_bps / 1e4 * np.exp(rng.normal(0.0, texture.spread_noise, size=ticks))
    if texture.spread_spike_share:  # one quote caught while the book was thin: gone by the next
        spiked = texture_rng.random(ticks) < texture.spread_spike_share
        spread[spiked] *= np.exp(texture_rng.uniform(math.log(3), math.log(30), size=int(spiked.sum())))
    bid_share = rng.uniform(0.2, 0.8, size=ticks)

    if not anomaly_types:
        spans = []
    elif set(anomaly_types) <= set(BASIC_ANOMALY_TYPES):
        # The sample's placement, drawn exactly as before span types existed (a subset keeps its own).
        spans = [s for s in _basic_spans(_rng(seed, 2, index), ticks) if s.kind in anomaly_types]
    else:
        spans = _span_positions(_rng(seed, 5, index), ticks, anomaly_types)
    spans = [_at_least_sigmas(span, tick_vol, texture, market) for span in spans]
    # Level changes (jumps, drifts) go into the returns; a crash is a temporary offset on top of the path.
    crash_offset = np.zeros(ticks)
    for span in spans:
        a, b = span.start, span.start + span.ticks
        if span.kind == "price_jump":
            log_returns[a] = math.log1p(span.params["size"])  # the level stays shifted afterwards
        elif span.kind == "volume_spike":
            volume[a] = round(expected_volume[a] * span.params["multiple"])
        elif span.kind == "momentum_drift":
            log_returns[a:b] += math.log1p(span.params["total"]) / span.ticks
        elif span.kind == "flash_crash":
            fall = int(span.params["fall"])
            trough = math.log1p(-span.params["depth"])
            down = np.linspace(trough / fall, trough, fall)
            up = np.linspace(trough, 0.0, span.ticks - fall + 1)[1:]
            crash_offset[a:b] = np.r_[down, up]
            volume[a : a + fall] = np.rint(expected_volume[a : a + fall] * span.params["volume"])

    price = np.round(start_price * np.exp(np.cumsum(log_returns) + crash_offset), 4)
    # Spread scales with the price level; the price sits strictly inside the quote.
    spread = spread * price / start_price * session_spread
    for span in spans:
        if span.kind == "spread_blowout":
            a, b = span.start, span.start + span.ticks
            # Capped under BLOWOUT_MAX_BPS even after bid and ask are rounded (each moves <= 0.00005).
            cap = price[a:b] * market.blowout_max_bps / 1e4 - 0.0002
            spread[a:b] = np.minimum(spread[a:b] * span.params["multiple"], cap)
    bid = np.minimum(np.round(price - spread * bid_share, 4), price - 0.0001)
    ask = np.maximum(np.round(price + spread * (1 - bid_share), 4), price + 0.0001)
    if market.tick_grid:
        price, bid, ask = _on_tick_grid(price, bid, ask, tick)
    for span in spans:
        if span.kind == "stale_feed":
            # A frozen feed repeats the last good quote; the quote after the freeze catches up.
            a, frozen = span.start, int(span.params["frozen"])
            price[a : a + frozen], bid[a : a + frozen], ask[a : a + frozen] = (
                price[a - 1],
                bid[a - 1],
                ask[a - 1],
            )
    frame = pd.DataFrame(
        {
            "event_id": [f"{symbol}-{n:08d}" for n in range(ticks)],
            "symbol": symbol,
            "event_time": pd.to_datetime(start_ms + offsets, unit="ms", utc=True),
            "price": price,
            "volume": volume,
            "bid": np.round(bid, 4),
            "ask": np.round(ask, 4),
            "_seq": steps,
        }
    )
    labels = []
    stuffing_rng = _rng(seed, 6, index)  # spans come in tick order, so the draws are deterministic
    for span in spans:
        a, last = span.start, span.start + span.ticks - 1
        first_id, first_time, end_time = frame.event_id[a], frame.event_time[a], frame.event_time[last]
        if span.kind == "price_jump":
            magnitude = round(float(price[a] / price[a - 1] - 1), 6)
        elif span.kind == "volume_spike":
            magnitude = round(float(volume[a] / expected_volume[a]), 2)
        elif span.kind == "flash_crash":
            magnitude = -round(span.params["depth"], 6)
        elif span.kind == "stale_feed":
            magnitude = float(span.params["frozen"])
        elif span.kind == "spread_blowout":
            magnitude = round(span.params["multiple"], 2)
        elif span.kind == "momentum_drift":
            magnitude = round(span.params["total"], 6)
        else:  # quote_stuffing: extra messages between this tick and STUFFING_TICKS later
            stuffed = _stuffed_messages(stuffing_rng, frame, a, int(span.params["messages"]))
            frame = pd.concat([frame, stuffed], ignore_index=True)
            first_id, first_time = stuffed.event_id.iloc[0], stuffed.event_time.iloc[0]
            end_time = stuffed.event_time.iloc[-1]
            magnitude = float(len(stuffed))
        labels.append(
            {
                "event_id": first_id,
                "symbol": symbol,
                "event_time": first_time,
                "end_time": end_time,
                "anomaly_type": span.kind,
                "magnitude": magnitude,
            }
        )
    return frame, labels


def _basic_spans(rng: np.random.Generator, ticks: int) -> list[_Span]:
    """The sample's point anomalies (jumps, volume spikes), drawn exactly as before span types existed."""
    spans = []
    for position, kind in _anomaly_positions(rng, ticks):
        if kind == "price_jump":
            params = {"size": rng.uniform(*JUMP_RANGE) * rng.choice([-1.0, 1.0])}
        else:
            params = {"multiple": rng.uniform(*SPIKE_RANGE)}
        spans.append(_Span(position, 1, kind, params))
    return spans


def _stuffed_messages(rng: np.random.Generator, frame: pd.DataFrame, tick: int, wanted: int) -> pd.DataFrame:
    """A burst of quote updates between ``tick`` and STUFFING_TICKS later: same price, bid/ask flickering.

    Times are distinct milliseconds, never one of the symbol's own ticks; ids extend the tick's id
    (``ACME-00000123.007``) so ordinary ids stay as they are.
    """
    millis = (frame.event_time.astype("int64") // 1_000_000).to_numpy()
    lo, hi = millis[tick], millis[min(tick + STUFFING_TICKS, len(millis) - 1)]
    free = np.setdiff1d(np.arange(lo + 1, hi), millis[tick : tick + STUFFING_TICKS + 1])
    count = min(wanted, len(free))
    times = np.sort(rng.choice(free, size=count, replace=False))
    flicker = np.arange(count) % 2
    base = frame.iloc[tick]
    return pd.DataFrame(
        {
            "event_id": [f"{base.event_id}.{k:03d}" for k in range(count)],
            "symbol": base.symbol,
            "event_time": pd.to_datetime(times, unit="ms", utc=True),
            "price": base.price,
            "volume": rng.integers(1, 21, size=count).astype(np.int64),
            "bid": np.round(base.bid - 0.0001 * flicker, 4),
            "ask": np.round(base.ask + 0.0001 * (1 - flicker), 4),
            "_seq": tick,
        }
    )


def checked_arguments(
    symbols: int, minutes: int, seed: int, first_symbol: int, anomaly_types: Sequence[str]
) -> tuple[str, ...]:
    """A generator's arguments checked, with clear messages; the anomaly types asked for, once each."""
    if symbols < 1 or minutes < 1:
        raise ValueError("symbols and minutes must both be at least 1")
    if seed < 0 or first_symbol < 0:
        raise ValueError("seed and first_symbol must be non-negative integers")
    if isinstance(anomaly_types, str):  # one name, not its letters
        anomaly_types = (anomaly_types,)
    unknown = sorted(set(anomaly_types) - set(ANOMALY_TYPES))
    if unknown:
        raise ValueError(f"unknown anomaly types {unknown}; known: {', '.join(ANOMALY_TYPES)}")
    return tuple(dict.fromkeys(anomaly_types))  # a type named twice is still placed once per slot


def in_event_time_order(
    frames: list[pd.DataFrame], label_rows: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The symbols' quotes and labels as one frame each, in event-time order (then symbol)."""
    quotes = pd.concat(frames, ignore_index=True)
    quotes = quotes.sort_values(["event_time", "symbol"], kind="mergesort", ignore_index=True)
    labels = pd.DataFrame(label_rows, columns=LABEL_COLUMNS)
    labels = labels.sort_values(["event_time", "symbol"], kind="mergesort", ignore_index=True)
    return quotes, labels


def start_millis(start: datetime | None) -> int:
    """Milliseconds since the epoch of ``start`` (naive: UTC; None: DEFAULT_START)."""
    start = start or DEFAULT_START
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    return round(start.timestamp() * 1000)


def generate_quotes(
    symbols: int = 8,
    minutes: int = 60,
    seed: int = 7,
    inject_anomalies: bool = False,
    start: datetime | None = None,
    ticks_per_minute: int = 30,
    dirty: bool = False,
    anomaly_types: Sequence[str] = BASIC_ANOMALY_TYPES,
    first_symbol: int = 0,
    market: MarketRanges = SAMPLE_MARKET,
) -> GeneratedQuotes:
    """Deterministic quotes for ``symbols`` symbols over ``minutes`` from ``start`` (or DEFAULT_START).

    ``inject_anomalies`` adds labelled anomalies of ``anomaly_types`` (default: the point jumps and volume
    spikes of the sample; :data:`ANOMALY_TYPES` for all). Basic types only keep the sample's placement;
    any other type places every requested type as a span (see :func:`_span_positions`; types that do not
    fit a short session are dropped). Labels have :data:`LABEL_COLUMNS`; a quote-stuffing burst adds rows
    with ids ``<id of its tick>.<nnn>``. ``first_symbol`` starts the tickers further down the list, so a
    train and a test set can have different symbols; a symbol's path depends only on the seed and its
    place in the list. ``market``: where each symbol's parameters are drawn from (:class:`MarketRanges`;
    with a tick-rate range, each symbol quotes at its own rate around ``ticks_per_minute``).
    """
    if ticks_per_minute < 1:
        raise ValueError("symbols, minutes and ticks_per_minute must all be at least 1")
    anomaly_types = checked_arguments(symbols, minutes, seed, first_symbol, anomaly_types)
    start_ms = start_millis(start)
    duration_ms = minutes * 60_000
    ticks = minutes * ticks_per_minute

    requested = anomaly_types
    frames, label_rows = [], []
    kinds = requested if inject_anomalies else ()
    for index, symbol in enumerate(_tickers(first_symbol + symbols)):
        if index < first_symbol:
            continue
        own_ticks = ticks
        if market.tick_rate_factor != (1.0, 1.0):
            factor = math.exp(_rng(seed, 7, index).uniform(*np.log(market.tick_rate_factor)))
            own_ticks = max(minutes, round(ticks * factor))
        frame, labels = _symbol_quotes(seed, index, symbol, start_ms, duration_ms, own_ticks, kinds, market)
        frames.append(frame)
        label_rows.extend(labels)
    quotes, labels = in_event_time_order(frames, label_rows)
    if dirty:
        quotes, faults = _book_faults(quotes, labels, seed)
        raw_lines, manifest = _dirty_lines(quotes, labels, seed, start_ms, duration_ms, faults)
    else:
        raw_lines = [quote_to_json(row) for row in _records(quotes)]
        manifest = pd.DataFrame(columns=MANIFEST_COLUMNS)
    return GeneratedQuotes(quotes.drop(columns="_seq"), labels, raw_lines, manifest, dirty, kinds)


def _records(quotes: pd.DataFrame) -> list[dict[str, Any]]:
    return quotes[list(QUOTE_FIELDS)].to_dict("records")


def _malformed_line(detail: str, template: dict[str, Any], rng: np.random.Generator, serial: int) -> str:
    doc = dict(template)
    if detail == "truncated_json":
        text = json.dumps(doc, separators=(",", ":"))
        # Any proper prefix of a compact object is invalid JSON: the closing brace is missing.
        return text[: int(rng.integers(len(text) // 3, len(text) - 1))]
    if detail == "json_array":
        return "[" + json.dumps(doc, separators=(",", ":")) + "]"
    if detail == "empty_object":
        return "{}"
    if detail == "missing_event_id":
        del doc["event_id"]
        return json.dumps(doc, separators=(",", ":"))
    replacements = {
        "price_text": ("price", "abc"),
        "price_negative": ("price", -abs(doc["price"])),
        "price_zero": ("price", 0),
        "bad_event_time": ("event_time", BAD_EVENT_TIMES[serial % len(BAD_EVENT_TIMES)]),
        "volume_negative": ("volume", -5),
        "nan_literal": ("price", float("nan")),
    }
    name, value = replacements[detail]
    doc[name] = value
    return json.dumps(doc, separators=(",", ":"))  # allow_nan=True (the default) writes the NaN literal


class _Line(NamedTuple):
    key: float  # position in the send order (ordinary quotes: their event-time rank)
    order: int  # creation order, to break ties deterministically
    line: str
    kind: str  # "" for an ordinary quote, else one of DIRTY_KINDS
    event_id: str | None
    reason: str
    detail: str


def _near_anomalies(quotes: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """Quotes within two ticks of an anomaly's span (never made dirty: detectors must see them)."""
    seq, symbol = quotes["_seq"].to_numpy(), quotes["symbol"].to_numpy()
    times = quotes["event_time"].to_numpy()
    near = np.zeros(len(quotes), dtype=bool)
    end = labels["end_time"] if "end_time" in labels else labels["event_time"]
    for sym, first, last in zip(labels.symbol, labels.event_time.to_numpy(), end.to_numpy(), strict=True):
        own = symbol == sym
        inside = seq[own & (times >= first) & (times <= last)]
        near |= own & (seq >= inside.min() - 2) & (seq <= inside.max() + 2)
    return near


def _book_faults(
    quotes: pd.DataFrame, labels: pd.DataFrame, seed: int
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Quotes with some books made crossed or very wide, and {row: "crossed" | "wide_spread"}."""
    rng = _rng(seed, 4)
    pool = np.flatnonzero(~_near_anomalies(quotes, labels) & quotes.bid.notna().to_numpy())
    count = min(len(pool), round((CROSSED_SHARE + WIDE_SPREAD_SHARE) * len(quotes)))
    chosen = rng.choice(pool, size=count, replace=False) if count else np.array([], dtype=np.int64)
    crossed_count = round(count * CROSSED_SHARE / (CROSSED_SHARE + WIDE_SPREAD_SHARE))
    faulty = quotes.copy()
    faults: dict[int, str] = {}
    for n, row in enumerate(sorted(chosen.tolist())):
        price = faulty.at[row, "price"]
        if n % 3 < 2 and crossed_count:
            crossed_count -= 1
            bid, ask = faulty.at[row, "ask"], faulty.at[row, "bid"]
            faults[row] = "crossed"
        else:
            bid, ask = round(price * (1 - WIDE_SPREAD), 4), round(price * (1 + WIDE_SPREAD), 4)
            faults[row] = "wide_spread"
        faulty.at[row, "bid"], faulty.at[row, "ask"] = bid, ask
    return faulty, faults


def _dirty_lines(
    quotes: pd.DataFrame,
    labels: pd.DataFrame,
    seed: int,
    start_ms: int,
    duration_ms: int,
    faults: dict[int, str] | None = None,
) -> tuple[list[str], pd.DataFrame]:
    """The send order with dirty lines interleaved, and one manifest row per dirty line."""
    rng = _rng(seed, 3)
    total = len(quotes)
    records = _records(quotes)
    seq = quotes["_seq"].to_numpy()
    offset_ms = (quotes["event_time"].astype("int64").to_numpy() // 1_000_000) - start_ms

    faults = faults or {}
    # Quotes near an anomaly (two ticks either side) are never moved or duplicated: the detectors must see
    # each anomaly and its neighbours in their normal place. Book faults stay in place too.
    near = _near_anomalies(quotes, labels)
    near[list(faults)] = True
    is_anomaly = quotes.event_id.isin(labels.event_id).to_numpy()

    # Late: from the first half of the session (far behind the send position near the end), never a
    # symbol's first tick nor near an anomaly.
    late_pool = np.flatnonzero((offset_ms < duration_ms // 2) & (seq > 0) & ~near)
    late_count = min(len(late_pool), max(1, round(LATE_SHARE * total)))
    late = set(rng.choice(late_pool, size=late_count, replace=False).tolist()) if late_count else set()
    others = np.array([i for i in range(total) if i not in late and i not in faults], dtype=np.int64)
    extra_count = min(len(others), max(1, round(EXTRA_FIELD_SHARE * total)))
    extra = set(rng.choice(others, size=extra_count, replace=False).tolist())

    # Every line gets a sort key; ordinary lines keep their event-time position.
    items: list[_Line] = []

    def add(
        key: float, line: str, kind: str = "", event_id: str | None = None, reason: str = "", detail: str = ""
    ) -> None:
        items.append(_Line(key, len(items), line, kind, event_id, reason, detail))

    lines: dict[int, str] = {}
    for i, record in enumerate(records):
        if i in extra:
            lines[i] = quote_to_json({**record, "venue": VENUES[int(rng.integers(len(VENUES)))]})
        else:
            lines[i] = quote_to_json(record)
    for i in range(total):
        event_id = records[i]["event_id"]
        if i in late:
            # Moved into the last 1.5 % of the send order: they arrive long after their event time.
            add(rng.uniform(0.985, 1.0) * total, lines[i], "late", event_id)
        else:
            add(float(i), lines[i], faults.get(i) or ("extra_field" if i in extra else ""), event_id)

    dup_pool = np.array([i for i in others if not is_anomaly[i] and not near[i]], dtype=np.int64)
    dup_count = min(len(dup_pool), max(1, round(DUPLICATE_SHARE * total)))
    for i in sorted(rng.choice(dup_pool, size=dup_count, replace=False).tolist()):
        # The same bytes again a little later (1-120 lines on), as a producer retry would send them.
        add(i + int(rng.integers(1, 121)) + 0.5, lines[i], "duplicate", records[i]["event_id"])

    bad_count = max(len(MALFORMED_VARIANTS), round(MALFORMED_SHARE * total))
    variants = [MALFORMED_VARIANTS[k % len(MALFORMED_VARIANTS)] for k in range(bad_count)]
    for serial, position in enumerate(rng.permutation(len(variants))):
        detail, reason = variants[position]
        key = rng.uniform(1.0, total)
        # A plausible quote near its send position (contract-typed), under an event_id of its own.
        template = json.loads(quote_to_json(records[min(int(key), total - 1)]))
        template["event_id"] = f"{template['symbol']}-BAD{serial:05d}"
        line = _malformed_line(detail, template, rng, serial)
        add(key + 0.25, line, "malformed", _event_id_of(line), reason, detail)

    items.sort(key=lambda item: (item.key, item.order))
    raw_lines = [item.line for item in items]
    manifest = pd.DataFrame(
        [
            {
                "line_no": n,
                "kind": it.kind,
                "event_id": it.event_id,
                "expected_reason": it.reason,
                "detail": it.detail,
            }
            for n, it in enumerate(items)
            if it.kind
        ],
        columns=MANIFEST_COLUMNS,
    )
    return raw_lines, manifest


def _event_id_of(line: str) -> str | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    value = doc.get("event_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _sibling(path: Path, suffix: str) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}{suffix}")


def labels_path(out: Path) -> Path:
    """Where the labels of the data file ``out`` go: ``<out stem>.labels.csv`` next to it."""
    return _sibling(out, ".labels.csv")


def manifest_path(out: Path) -> Path:
    """Where the dirty-line manifest of the data file ``out`` goes: ``<out stem>.manifest.csv``."""
    return _sibling(out, ".manifest.csv")


def _prepare(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _with_contract_times(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in ("event_time", "end_time"):
        if column in out:
            out[column] = [format_event_time(value) for value in out[column]]
    return out


def write_jsonl(gen: GeneratedQuotes, path: Path) -> Path:
    """Write the JSONL lines exactly as they are to be sent (dirty lines included)."""
    path = _prepare(path)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for line in gen.raw_lines:
            handle.write(line + "\n")
    return path


def write_csv(gen: GeneratedQuotes, path: Path) -> Path:
    """Write the clean quotes (event-time order) as CSV with the contract's columns."""
    path = _prepare(path)
    _with_contract_times(gen.quotes[list(QUOTE_FIELDS)]).to_csv(path, index=False)
    return path


def write_labels(gen: GeneratedQuotes, path: Path) -> list[Path]:
    """Write ``<stem>.labels.csv`` (and ``<stem>.manifest.csv`` when dirty) next to the data file ``path``."""
    written = [_prepare(labels_path(path))]
    _with_contract_times(gen.labels).to_csv(written[0], index=False)
    if gen.dirty:
        written.append(manifest_path(path))
        manifest = gen.manifest.astype({"line_no": "int64"})
        manifest.to_csv(written[1], index=False)
    return written
