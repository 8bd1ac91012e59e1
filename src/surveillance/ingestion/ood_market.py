"""An independent synthetic market: an out-of-distribution (OOD) test set for the anomaly detectors.

The detectors are trained on :mod:`surveillance.ingestion.generator` (geometric Brownian motion in trade
time with per-symbol randomised levels, rates, spreads and volumes, a U-shaped volume profile). A test set
drawn from that same model only shows how well a detector learnt the generator; this module draws quotes
from a different market model, with its own code for every step, so a detector that merely memorised the
generator's quirks shows it. It imports only the shared vocabulary (anomaly type names, label columns, the
result container), the argument checks and final ordering every generator shares, and the contract
serialiser, never the generator's market or injection functions.

Model, per symbol (parameters drawn once from the symbol's own random streams):

* price level log-uniform in 0.05-5000 with a level-dependent tick size (0.0001 below 1, 0.01 up to 1000,
  0.05 / 0.25 above, like futures); prices, bids and asks are whole multiples of it;
* arrivals from a Hawkes (self-exciting) process, simulated by its cluster representation: Poisson
  immigrants at a base rate of 8-240 a minute, each event begetting Poisson(branching 0.2-0.6) children
  after exponential delays (mean 0.5-5 s); so quotes come in bursts, at rates that differ 30x across symbols;
* volatility: GARCH(1,1) per tick times a two-state (calm / turbulent, 2-4x) Markov regime; innovations are
  Student-t (4-8 degrees of freedom, unit variance) clipped at 5 standard deviations, plus rare ordinary
  jumps of 2-3 sigma; the calm level is set so the annualised volatility (252 days of 6.5 h at the symbol's
  mean tick rate, regimes included) is 10-120 %;
* spread: a base width (1-8 ticks, or 2-80 bps for sub-unit prices), wider in turbulence, with an AR(1)
  in log space; the price always sits at least one tick inside the quote;
* volume: a per-symbol scale (1-100000 shares, log-uniform) times a J-shaped intraday profile (quiet open,
  busiest close), more volume on bigger moves and in turbulence, and lognormal noise.

Anomalies, the same labelled types as the generator's :data:`ANOMALY_TYPES`, are injected by this module's
own code. Each type appears max(1, round(ticks / 2400)) times per symbol, after the first 300 ticks, at least
250 ticks apart and not in the last 30 ticks (what does not fit is dropped, whole rounds of types last).
Their sizes are anomalous both in percent and against the symbol's volatility at that moment (a jump is at
least 6 % and at least 15 sigma, a drift 8 sigma over its span, and so on), while an ordinary tick is at
most 5 sigma plus a 3-sigma jump.

Every draw comes from ``np.random.default_rng([seed, purpose, index])``: a symbol's quotes depend only on the
seed and its place in the name list, so ``first_symbol`` gives disjoint, reproducible symbol sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd

from surveillance.ingestion.contract import QUOTE_FIELDS, quote_to_json
from surveillance.ingestion.generator import (
    ANOMALY_TYPES,
    TICKERS,
    GeneratedQuotes,
    checked_arguments,
    in_event_time_order,
    start_millis,
)

# Names of their own (none is one of the generator's TICKERS), so OOD and training symbols never mix.
OOD_TICKERS: tuple[str, ...] = (
    "ZAPH", "QBIT", "YOKE", "VANT", "OPAL", "NEXA", "MOSS", "LYNX",
    "KILN", "JADE", "HUSK", "GRIT", "FERN", "ECHO", "DUNE", "CORA",
    "BRIO", "ARKO", "PLUM", "RUNE", "SAGE", "TORQ", "UVEA", "WISP",
    "XYLO", "ZEST",
)  # fmt: skip
if set(OOD_TICKERS) & set(TICKERS):  # pragma: no cover - a guard against a future edit of either list
    raise ImportError("OOD_TICKERS must not share names with the generator's TICKERS")

# Random-stream purposes: numbers the generator does not use, so no stream coincides with one of its own.
_PARAMS, _ARRIVALS, _VOLATILITY, _SPREAD, _VOLUME, _PLACEMENT, _SIZES, _STUFFING = range(101, 109)

# --- Market model ------------------------------------------------------------------------------------
PRICE_LEVEL = (0.05, 5000.0)  # log-uniform
BASE_RATE_PER_MINUTE = (8.0, 240.0)  # Hawkes immigrant rate, log-uniform
BRANCHING_RATIO = (0.2, 0.6)  # mean children per event; the mean rate is base / (1 - branching)
KERNEL_DECAY_SECONDS = (0.5, 5.0)  # mean delay of a child after its parent
ANNUAL_VOLATILITY = (0.10, 1.20)
_YEAR_SECONDS = 252 * 6.5 * 3600
TURBULENT_MULTIPLE = (2.0, 4.0)  # turbulent per-tick volatility / calm
CALM_RUN_TICKS = (600.0, 2000.0)  # mean length of a calm regime (geometric)
TURBULENT_RUN_TICKS = (150.0, 500.0)
GARCH_ALPHA = (0.03, 0.10)
GARCH_PERSISTENCE = (0.93, 0.985)  # alpha + beta
T_DEGREES = (4.0, 8.0)
SHOCK_CLIP = 5.0  # ordinary innovations in standard deviations: injected jumps are >= 15
ORDINARY_JUMP_RATE = 1 / 2000  # per tick
ORDINARY_JUMP_SIGMAS = (2.0, 3.0)
SPREAD_TICKS = (1.0, 8.0)  # base spread of symbols priced 1 and up, log-uniform
SUB_UNIT_SPREAD_BPS = (2.0, 80.0)  # base spread of symbols priced below 1, log-uniform
BASE_SPREAD_MAX_BPS = 80.0  # a cheap symbol's 8 ticks would be hundreds of bps: capped (never below a tick)
SPREAD_AR = (0.95, 0.995)  # AR(1) coefficient of the log spread
SPREAD_LOG_SD = 0.25  # stationary standard deviation of the log spread
SPREAD_REGIME_POWER = 0.5  # turbulent spread = base * multiple ** power
SPREAD_SHARE = (0.3, 0.7)  # where the price sits between bid and ask
VOLUME_SCALE = (1.0, 100_000.0)  # log-uniform
VOLUME_NOISE = (0.30, 0.50)  # sigma of the mean-one lognormal noise
VOLUME_MOVE_WEIGHT = 0.35  # share of expected volume that scales with |return| / sigma

# --- Anomalies ---------------------------------------------------------------------------------------
TICKS_PER_ANOMALY = 2400  # each type appears max(1, round(ticks / 2400)) times per symbol
WARMUP_TICKS, GAP_TICKS, TAIL_TICKS = 300, 250, 30
MAX_MOVE = 0.5  # no injected move beyond 50 %, however volatile the symbol
MIN_PRICE_TICKS = 4  # room for a bid of at least one tick below any price
JUMP_SIZE, JUMP_SIGMAS = (0.06, 0.12), 15.0
SPIKE_MULTIPLE = (15.0, 40.0)
CRASH_DEPTH, CRASH_SIGMAS = (0.04, 0.09), 15.0
CRASH_FALL, CRASH_RECOVERY, CRASH_VOLUME = (3, 8), (30, 90), (3.0, 6.0)
STALE_QUOTES = (40, 90)
BLOWOUT_QUOTES, BLOWOUT_MULTIPLE, BLOWOUT_MAX_BPS = (10, 40), (8.0, 20.0), 400.0
# A burst fits in the time of the next 5 ticks; when Hawkes clustering leaves too few free milliseconds
# there, the window grows, up to 30 ticks (the span reserves them, so the spacing still holds).
STUFFING_MESSAGES, STUFFING_TICKS, STUFFING_MAX_TICKS, STUFFING_VOLUME = (60, 150), 5, 30, (1, 20)
DRIFT_QUOTES, DRIFT_TOTAL, DRIFT_SIGMAS = (120, 200), (0.03, 0.06), 8.0


def _stream(seed: int, purpose: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, index])


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def tick_size(level: float) -> float:
    """The tick size of a symbol whose price level is ``level`` (fixed for its whole session)."""
    if level < 1.0:
        return 0.0001
    if level <= 1000.0:
        return 0.01
    return 0.05 if level <= 2500.0 else 0.25


def ood_symbols(count: int, first_symbol: int = 0) -> list[str]:
    """The names of symbols ``first_symbol`` .. ``first_symbol + count - 1`` (ZAPH2, ... past the list)."""
    names: list[str] = []
    for index in range(first_symbol, first_symbol + count):
        base, round_ = OOD_TICKERS[index % len(OOD_TICKERS)], index // len(OOD_TICKERS)
        names.append(base if round_ == 0 else f"{base}{round_ + 1}")
    return names


@dataclass(frozen=True)
class _Params:
    """One symbol's market parameters, drawn in a fixed order from its own stream."""

    level: float
    tick: float
    base_rate: float  # immigrants per second
    branching: float
    decay: float  # seconds
    annual_vol: float
    turbulent: float
    calm_run: float
    turbulent_run: float
    alpha: float
    persistence: float
    degrees: float
    spread_ticks: float
    spread_ar: float
    volume_scale: float
    volume_noise: float


def _params(seed: int, index: int) -> _Params:
    rng = _stream(seed, _PARAMS, index)
    level = _log_uniform(rng, *PRICE_LEVEL)
    tick = tick_size(level)
    base_rate = _log_uniform(rng, *BASE_RATE_PER_MINUTE) / 60.0
    branching, decay = rng.uniform(*BRANCHING_RATIO), rng.uniform(*KERNEL_DECAY_SECONDS)
    annual_vol, turbulent = rng.uniform(*ANNUAL_VOLATILITY), rng.uniform(*TURBULENT_MULTIPLE)
    calm_run, turbulent_run = rng.uniform(*CALM_RUN_TICKS), rng.uniform(*TURBULENT_RUN_TICKS)
    alpha, persistence = rng.uniform(*GARCH_ALPHA), rng.uniform(*GARCH_PERSISTENCE)
    degrees = rng.uniform(*T_DEGREES)
    ticks_wide, bps_wide = _log_uniform(rng, *SPREAD_TICKS), _log_uniform(rng, *SUB_UNIT_SPREAD_BPS)
    one_bp_in_ticks = level / 1e4 / tick
    if level < 1.0:  # a tick is 1-20 bps here: the width is set in bps
        spread_ticks = max(1.0, bps_wide * one_bp_in_ticks)
    else:
        spread_ticks = max(1.0, min(ticks_wide, BASE_SPREAD_MAX_BPS * one_bp_in_ticks))
    spread_ar = rng.uniform(*SPREAD_AR)
    volume_scale, volume_noise = _log_uniform(rng, *VOLUME_SCALE), rng.uniform(*VOLUME_NOISE)
    return _Params(
        level, tick, base_rate, branching, decay, annual_vol, turbulent, calm_run, turbulent_run,
        alpha, persistence, degrees, spread_ticks, spread_ar, volume_scale, volume_noise,
    )  # fmt: skip


def tick_sizes(symbols: int = 8, seed: int = 303, first_symbol: int = 0) -> dict[str, float]:
    """Each symbol's tick size in :func:`generate_ood_quotes` with the same arguments."""
    names = ood_symbols(symbols, first_symbol)
    return {name: _params(seed, first_symbol + k).tick for k, name in enumerate(names)}


def _hawkes_offsets(rng: np.random.Generator, p: _Params, duration_ms: int) -> np.ndarray:
    """Arrival offsets in ms, strictly increasing: a Hawkes process by its cluster representation."""
    horizon = duration_ms / 1000.0
    generation = rng.uniform(0.0, horizon, size=rng.poisson(p.base_rate * horizon))
    events = [generation]
    while generation.size:  # each generation is smaller by the branching ratio on average
        children = rng.poisson(p.branching, size=generation.size)
        generation = np.repeat(generation, children) + rng.exponential(p.decay, size=int(children.sum()))
        generation = generation[generation < horizon]
        events.append(generation)
    offsets = np.sort(np.floor(np.concatenate(events) * 1000.0).astype(np.int64))
    if offsets.size == 0:  # a one-minute session of a slow symbol can draw nothing: keep one quote
        offsets = np.zeros(1, dtype=np.int64)
    # Bursts put several events in one millisecond: push each to at least 1 ms after the previous one.
    steps = np.arange(offsets.size)
    return np.maximum.accumulate(offsets - steps) + steps


def _regimes(rng: np.random.Generator, ticks: int, p: _Params) -> np.ndarray:
    """True where the symbol is turbulent: alternating geometric runs (a two-state Markov chain)."""
    share = p.turbulent_run / (p.calm_run + p.turbulent_run)
    state = bool(rng.random() < share)  # start from the stationary distribution
    runs: list[np.ndarray] = []
    covered = 0
    while covered < ticks:
        pairs = rng.geometric([1 / p.calm_run, 1 / p.turbulent_run], size=(32, 2))
        if state:
            pairs = pairs[:, ::-1]
        runs.append(pairs.ravel())
        covered += int(pairs.sum())
    lengths = np.concatenate(runs)
    flags = (np.arange(lengths.size) + int(state)) % 2 == 1
    return np.repeat(flags, lengths)[:ticks]


def _garch_variance(z: np.ndarray, alpha: float, persistence: float) -> np.ndarray:
    """GARCH(1,1) variance in units of its unconditional level: h' = omega + (alpha z^2 + beta) h."""
    omega, beta = 1.0 - persistence, persistence - alpha
    coefficient = (alpha * z[:-1] ** 2 + beta).tolist()
    return np.fromiter(
        accumulate(coefficient, lambda h, c: omega + c * h, initial=1.0), dtype=float, count=z.size
    )


def _ar1(rng: np.random.Generator, ticks: int, phi: float, stationary_sd: float) -> np.ndarray:
    shocks = (rng.standard_normal(ticks) * stationary_sd * math.sqrt(1 - phi**2)).tolist()
    first = float(rng.standard_normal()) * stationary_sd
    return np.fromiter(accumulate(shocks[1:], lambda x, e: phi * x + e, initial=first), float, count=ticks)


def _j_shape(fraction: np.ndarray) -> np.ndarray:
    # Quiet open (0.4x), rising into the close (2.8x); mean one over the session.
    return 0.4 + 0.4 * fraction + 2.0 * fraction**4


@dataclass
class _Anomaly:
    """One planned anomaly: type, first tick, ticks reserved and the tick counts drawn for it."""

    kind: str
    length: int
    counts: dict[str, int]
    start: int = 0


def _draw_counts(rng: np.random.Generator, kind: str) -> tuple[int, dict[str, int]]:
    """Ticks reserved by an anomaly of ``kind`` and the counts it needs (sizes come later, with sigma)."""

    def between(bounds: tuple[int, int]) -> int:
        return int(rng.integers(bounds[0], bounds[1] + 1))

    if kind == "flash_crash":
        fall, recovery = between(CRASH_FALL), between(CRASH_RECOVERY)
        return fall + recovery, {"fall": fall, "recovery": recovery}
    if kind == "stale_feed":
        frozen = between(STALE_QUOTES)
        return frozen + 1, {"frozen": frozen}  # the catch-up quote belongs to the span
    if kind == "spread_blowout":
        quotes = between(BLOWOUT_QUOTES)
        return quotes, {"quotes": quotes}
    if kind == "quote_stuffing":
        return STUFFING_MAX_TICKS + 1, {"messages": between(STUFFING_MESSAGES)}
    if kind == "momentum_drift":
        quotes = between(DRIFT_QUOTES)
        return quotes, {"quotes": quotes}
    if kind in ("price_jump", "volume_spike"):
        return 1, {}
    raise ValueError(kind)


def _plan(seed: int, index: int, ticks: int, kinds: Sequence[str]) -> list[_Anomaly]:
    """Where one symbol's anomalies go, in tick order.

    Priority is by whole rounds of the requested types, each symbol's round starting one type further
    along (seed + index), so symbols too short for every type still cover all types between them.
    """
    if not kinds:
        return []
    rng = _stream(seed, _PLACEMENT, index)
    shift = (seed + index) % len(kinds)
    rotation = [kinds[(shift + k) % len(kinds)] for k in range(len(kinds))]
    wanted = rotation * max(1, round(ticks / TICKS_PER_ANOMALY))
    plan = [_Anomaly(kind, *_draw_counts(rng, kind)) for kind in wanted]
    room = ticks - WARMUP_TICKS - TAIL_TICKS

    def needed(items: list[_Anomaly]) -> int:
        return sum(item.length for item in items) + GAP_TICKS * (len(items) - 1)

    while plan and needed(plan) > room:
        plan.pop()
    if not plan:
        return []
    plan = [plan[k] for k in rng.permutation(len(plan))]
    # The free ticks are shared out at random between the n + 1 slots around the anomalies.
    slack = rng.multinomial(room - needed(plan), rng.dirichlet(np.ones(len(plan) + 1)))
    position = WARMUP_TICKS
    for item, extra in zip(plan, slack[:-1], strict=True):
        item.start = position + int(extra)
        position = item.start + item.length + GAP_TICKS
    return plan


def _signed(rng: np.random.Generator, size: float) -> float:
    return min(size, MAX_MOVE) * float(rng.choice([-1.0, 1.0]))


def _draw_sizes(rng: np.random.Generator, item: _Anomaly, sigma: float) -> dict[str, float]:
    """An anomaly's sizes, at least the percent floor and the multiple of the symbol's current sigma."""
    if item.kind == "price_jump":
        return {"move": _signed(rng, max(rng.uniform(*JUMP_SIZE), JUMP_SIGMAS * sigma))}
    if item.kind == "volume_spike":
        return {"multiple": rng.uniform(*SPIKE_MULTIPLE)}
    if item.kind == "flash_crash":
        depth = min(MAX_MOVE, max(rng.uniform(*CRASH_DEPTH), CRASH_SIGMAS * sigma))
        return {"depth": depth, "volume": rng.uniform(*CRASH_VOLUME)}
    if item.kind == "spread_blowout":
        return {"multiple": rng.uniform(*BLOWOUT_MULTIPLE)}
    if item.kind == "momentum_drift":
        floor = DRIFT_SIGMAS * sigma * math.sqrt(item.counts["quotes"])
        return {"total": _signed(rng, max(rng.uniform(*DRIFT_TOTAL), floor))}
    return {}


@dataclass
class _Market:
    """One symbol's ordinary market, tick by tick, before any anomaly is injected."""

    offsets: np.ndarray  # ms after the start, strictly increasing
    sigma: np.ndarray  # per-tick volatility (GARCH x regime)
    returns: np.ndarray  # log-returns
    regime: np.ndarray  # volatility multiple: 1 when calm
    spread: np.ndarray  # target spread in ticks (float)
    bid_share: np.ndarray  # where the price sits between bid and ask
    expected: np.ndarray  # expected volume
    noise: np.ndarray  # mean-one volume noise
    volume: np.ndarray


def _market(seed: int, index: int, p: _Params, duration_ms: int) -> _Market:
    offsets = _hawkes_offsets(_stream(seed, _ARRIVALS, index), p, duration_ms)
    ticks = offsets.size

    # GARCH on standardised shocks, times the regime; the calm level is set so that the stationary mix of
    # regimes gives the drawn annual volatility at the symbol's mean tick rate.
    rng = _stream(seed, _VOLATILITY, index)
    turbulent = _regimes(rng, ticks, p)
    t_scale = math.sqrt((p.degrees - 2) / p.degrees)  # a Student-t of unit variance
    z = np.clip(rng.standard_t(p.degrees, ticks) * t_scale, -SHOCK_CLIP, SHOCK_CLIP)
    jump_at = rng.random(ticks) < ORDINARY_JUMP_RATE
    jump_sigmas = rng.uniform(*ORDINARY_JUMP_SIGMAS, size=ticks) * rng.choice([-1.0, 1.0], size=ticks)
    ticks_per_second = p.base_rate / (1 - p.branching)
    share = p.turbulent_run / (p.calm_run + p.turbulent_run)
    mix = 1 - share + share * p.turbulent**2
    calm = p.annual_vol / math.sqrt(_YEAR_SECONDS * ticks_per_second * mix)
    regime = np.where(turbulent, p.turbulent, 1.0)
    sigma = calm * regime * np.sqrt(_garch_variance(z, p.alpha, p.persistence))
    move = z + np.where(jump_at, jump_sigmas, 0.0)  # each tick's ordinary move, in its own sigmas
    returns = sigma * move - 0.5 * sigma**2
    returns[0] = 0.0

    rng = _stream(seed, _SPREAD, index)
    log_spread = _ar1(rng, ticks, p.spread_ar, SPREAD_LOG_SD)
    spread = p.spread_ticks * regime**SPREAD_REGIME_POWER * np.exp(log_spread)
    bid_share = rng.uniform(*SPREAD_SHARE, size=ticks)

    # Volume: J-shaped in the session, larger on big moves and in turbulence, lognormal noise (mean one).
    rng = _stream(seed, _VOLUME, index)
    activity = np.abs(move)
    response = (1 - VOLUME_MOVE_WEIGHT) + VOLUME_MOVE_WEIGHT * activity / max(activity.mean(), 1e-9)
    expected = p.volume_scale * _j_shape(offsets / duration_ms) * np.sqrt(regime) * response
    noise = np.exp(rng.normal(-0.5 * p.volume_noise**2, p.volume_noise, size=ticks))
    volume = np.maximum(1, np.rint(expected * noise)).astype(np.int64)
    return _Market(offsets, sigma, returns, regime, spread, bid_share, expected, noise, volume)


def _prices(p: _Params, m: _Market, plan: list[_Anomaly], sizes: list[dict[str, float]]) -> np.ndarray:
    """The price path in ticks, with the level changes (jumps, drifts) and the crashes injected."""
    returns = m.returns.copy()
    for item, size in zip(plan, sizes, strict=True):
        a = item.start
        if item.kind == "price_jump":
            returns[a] = math.log1p(size["move"])  # replaces the ordinary move: a clean, permanent shift
        elif item.kind == "momentum_drift":
            returns[a : a + item.length] += math.log1p(size["total"]) / item.length
    log_price = math.log(p.level) + np.cumsum(returns)
    for item, size in zip(plan, sizes, strict=True):
        if item.kind == "flash_crash":
            # A straight fall to depth below the last price before it, then a linear rejoining of the path.
            a, fall, recovery = item.start, item.counts["fall"], item.counts["recovery"]
            drop = math.log1p(-size["depth"])
            gap = log_price[a - 1] + drop - log_price[a + fall - 1]
            log_price[a : a + fall] = log_price[a - 1] + drop * np.arange(1, fall + 1) / fall
            log_price[a + fall : a + fall + recovery] += gap * (1 - np.arange(1, recovery + 1) / recovery)
    price = np.maximum(np.rint(np.exp(log_price) / p.tick).astype(np.int64), MIN_PRICE_TICKS)
    for item, size in zip(plan, sizes, strict=True):
        if item.kind == "price_jump":
            # Rounded away from the previous price, so the realised move is at least the drawn one.
            target = price[item.start - 1] * (1 + size["move"])
            price[item.start] = math.ceil(target) if size["move"] > 0 else math.floor(target)
    return price


def _volumes(m: _Market, plan: list[_Anomaly], sizes: list[dict[str, float]]) -> np.ndarray:
    volume = m.volume.copy()
    for item, size in zip(plan, sizes, strict=True):
        a = item.start
        if item.kind == "volume_spike":
            volume[a] = max(1, round(m.expected[a] * size["multiple"]))
        elif item.kind == "flash_crash":
            fall = slice(a, a + item.counts["fall"])
            volume[fall] = np.maximum(1, np.rint(m.expected[fall] * size["volume"] * m.noise[fall]))
    return volume


def _book(
    m: _Market, plan: list[_Anomaly], sizes: list[dict[str, float]], price: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Price, bid and ask in ticks (blowouts widened, stale feeds frozen), each tick's spread multiple."""
    price = price.copy()
    width = np.maximum(2, np.rint(m.spread)).astype(np.int64)  # at least one tick on either side
    multiple = np.ones(width.size)
    for item, size in zip(plan, sizes, strict=True):
        if item.kind == "spread_blowout":
            span = slice(item.start, item.start + item.length)
            # (ask - bid) / mid < 400 bps: mid >= price - width / 2, so width < 0.0392 * price will do.
            cap = np.floor(BLOWOUT_MAX_BPS / 1e4 / 1.02 * price[span] - 1e-9).astype(np.int64)
            blown = np.maximum(
                np.minimum(np.rint(width[span] * size["multiple"]).astype(np.int64), cap), width[span]
            )
            multiple[span] = blown / width[span]
            width[span] = blown
    below = np.clip(np.rint(width * m.bid_share).astype(np.int64), 1, width - 1)
    below = np.minimum(below, price - 1)  # a positive bid
    bid, ask = price - below, price - below + width
    for item in plan:
        if item.kind == "stale_feed":
            # The feed repeats its last quote; the next one after the freeze catches up (path price).
            frozen = slice(item.start, item.start + item.counts["frozen"])
            for column in (price, bid, ask):
                column[frozen] = column[item.start - 1]
    return price, bid, ask, multiple


def _stuffing(
    rng: np.random.Generator, offsets: np.ndarray, tick: int, wanted: int, book: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """A burst of messages at free milliseconds before the 5th tick after ``tick`` (prices in ticks).

    The price stays the tick's; bid and ask flicker one tick wider, by turns. The window grows past 5 ticks
    (up to STUFFING_MAX_TICKS) only when the ticks are too tightly packed to hold ``wanted`` messages.
    """
    last = offsets.size - 1
    reach = STUFFING_TICKS
    while True:
        end = min(tick + reach, last)
        free = np.setdiff1d(np.arange(offsets[tick] + 1, offsets[end]), offsets[tick : end + 1])
        if free.size >= wanted or reach >= STUFFING_MAX_TICKS or end == last:
            break
        reach += 1
    count = min(wanted, free.size)
    price, bid, ask = book
    wider = np.arange(count) % 2  # 0: the bid one tick lower, 1: the ask one tick higher
    return {
        "offset": np.sort(rng.choice(free, size=count, replace=False)),
        "price": np.full(count, price),
        "volume": rng.integers(STUFFING_VOLUME[0], STUFFING_VOLUME[1] + 1, size=count).astype(np.int64),
        "bid": np.maximum(1, bid - (1 - wider)),
        "ask": ask + wider,
    }


def _simulate_symbol(
    seed: int, index: int, symbol: str, start_ms: int, duration_ms: int, kinds: Sequence[str]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    p = _params(seed, index)
    m = _market(seed, index, p, duration_ms)
    plan = _plan(seed, index, m.offsets.size, kinds)
    size_rng = _stream(seed, _SIZES, index)
    sizes = [_draw_sizes(size_rng, item, float(m.sigma[item.start])) for item in plan]
    price = _prices(p, m, plan, sizes)
    volume = _volumes(m, plan, sizes)
    price, bid, ask, multiple = _book(m, plan, sizes, price)

    ids = [f"{symbol}-{n:08d}" for n in range(m.offsets.size)]
    rows: list[pd.DataFrame] = [
        pd.DataFrame(
            {"event_id": ids, "offset": m.offsets, "price": price, "volume": volume, "bid": bid, "ask": ask}
        )
    ]
    labels: list[dict[str, Any]] = []
    stuffing_rng = _stream(seed, _STUFFING, index)
    for item, size in zip(plan, sizes, strict=True):
        a, last = item.start, item.start + item.length - 1
        first_id, first_ms, last_ms = ids[a], int(m.offsets[a]), int(m.offsets[last])
        if item.kind == "price_jump":
            magnitude = round(float(price[a] / price[a - 1] - 1), 6)
        elif item.kind == "volume_spike":
            magnitude = round(float(volume[a] / m.expected[a]), 2)
        elif item.kind == "flash_crash":
            magnitude = -round(size["depth"], 6)
        elif item.kind == "stale_feed":
            magnitude = float(item.counts["frozen"])
        elif item.kind == "spread_blowout":
            # The multiple actually applied: the 400 bps cap can bind for cheap, coarse-tick symbols.
            magnitude = round(float(multiple[a : last + 1].mean()), 2)
        elif item.kind == "momentum_drift":
            magnitude = round(size["total"], 6)
        else:  # quote_stuffing: rows of its own; the label runs from the first to the last of them
            burst = _stuffing(stuffing_rng, m.offsets, a, item.counts["messages"], (price[a], bid[a], ask[a]))
            count = burst["offset"].size
            if count == 0:  # no free millisecond at all (never seen): nothing to label
                continue
            burst_ids = [f"{ids[a]}.{k:03d}" for k in range(count)]
            rows.append(pd.DataFrame({"event_id": burst_ids, **burst}))
            first_id, first_ms, last_ms = burst_ids[0], int(burst["offset"][0]), int(burst["offset"][-1])
            magnitude = float(count)
        labels.append(
            {
                "event_id": first_id,
                "symbol": symbol,
                "event_time": pd.Timestamp(start_ms + first_ms, unit="ms", tz="UTC"),
                "end_time": pd.Timestamp(start_ms + last_ms, unit="ms", tz="UTC"),
                "anomaly_type": item.kind,
                "magnitude": magnitude,
            }
        )
    frame = pd.concat(rows, ignore_index=True).sort_values("offset", kind="mergesort", ignore_index=True)
    quotes = pd.DataFrame(
        {
            "event_id": frame["event_id"],
            "symbol": symbol,
            "event_time": pd.to_datetime(start_ms + frame["offset"].to_numpy(), unit="ms", utc=True),
            # Whole ticks times the tick size, rounded to the contract's 4 decimals (exact multiples).
            "price": np.round(frame["price"].to_numpy() * p.tick, 4),
            "volume": frame["volume"].astype(np.int64),
            "bid": np.round(frame["bid"].to_numpy() * p.tick, 4),
            "ask": np.round(frame["ask"].to_numpy() * p.tick, 4),
        }
    )
    return quotes, labels


def generate_ood_quotes(
    symbols: int = 8,
    minutes: int = 120,
    seed: int = 303,
    first_symbol: int = 0,
    anomaly_types: Sequence[str] = ANOMALY_TYPES,
    start: datetime | None = None,
) -> GeneratedQuotes:
    """Deterministic OOD quotes for ``symbols`` symbols over ``minutes`` from ``start`` (or DEFAULT_START).

    Returns :class:`GeneratedQuotes` with the quotes (event-time order, then symbol), one label row per
    injected anomaly of ``anomaly_types`` (:data:`LABEL_COLUMNS`; empty for no types), the contract JSON
    lines, no dirty lines. Symbols are :data:`OOD_TICKERS` from ``first_symbol`` on.
    """
    requested = checked_arguments(symbols, minutes, seed, first_symbol, anomaly_types)
    start_ms = start_millis(start)

    frames, label_rows = [], []
    for index, symbol in enumerate(ood_symbols(symbols, first_symbol), start=first_symbol):
        frame, labels = _simulate_symbol(seed, index, symbol, start_ms, minutes * 60_000, requested)
        frames.append(frame)
        label_rows.extend(labels)
    quotes, labels = in_event_time_order(frames, label_rows)
    raw_lines = [quote_to_json(record) for record in quotes[list(QUOTE_FIELDS)].to_dict("records")]
    return GeneratedQuotes(quotes, labels, raw_lines, dirty=False, anomaly_types=requested)
