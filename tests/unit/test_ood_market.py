"""The independent OOD market (pure pandas/numpy, no Spark): contract, heterogeneity and its anomalies."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest

from surveillance.ingestion import generator, ood_market
from surveillance.ingestion.contract import QUOTE_FIELDS, check_quote_line
from surveillance.ingestion.generator import ANOMALY_TYPES, LABEL_COLUMNS, TICKERS, GeneratedQuotes
from surveillance.ingestion.ood_market import OOD_TICKERS, generate_ood_quotes, ood_symbols, tick_sizes

SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
# What the OOD module may take from the training generator: shared vocabulary, never its market model.
# The anomaly definitions, the result container and the argument checks; nothing of the market model.
ALLOWED_FROM_GENERATOR = {
    "ANOMALY_TYPES",
    "LABEL_COLUMNS",
    "GeneratedQuotes",
    "TICKERS",
    "checked_arguments",
    "in_event_time_order",
    "start_millis",
}


@pytest.fixture(scope="module")
def gen() -> GeneratedQuotes:
    return generate_ood_quotes()  # 8 symbols, 120 minutes, seed 303, every type


@pytest.fixture(scope="module")
def ticks(gen: GeneratedQuotes) -> dict[str, float]:
    return tick_sizes(symbols=8, seed=303)


@pytest.fixture(scope="module")
def by_symbol(gen: GeneratedQuotes) -> dict[str, pd.DataFrame]:
    """Each symbol's quotes in event-time order, stuffed messages included."""
    return {s: f.reset_index(drop=True) for s, f in gen.quotes.groupby("symbol")}


@pytest.fixture(scope="module")
def ordinary(by_symbol: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each symbol's own ticks (no stuffed messages), in order, with a position column."""
    out = {}
    for symbol, frame in by_symbol.items():
        own = frame[~frame.event_id.str.contains(".", regex=False)].reset_index(drop=True)
        out[symbol] = own.assign(position=np.arange(len(own)))
    return out


def _within(frame: pd.DataFrame, label: pd.Series) -> pd.DataFrame:
    return frame[(frame.event_time >= label.event_time) & (frame.event_time <= label.end_time)]


def _position(ordinary: dict[str, pd.DataFrame], label: pd.Series) -> int:
    """The tick index where a label starts (a stuffing burst's: the tick its ids extend)."""
    own = ordinary[label.symbol]
    return int(own.index[own.event_id == label.event_id.split(".")[0]][0])


def _labels(gen: GeneratedQuotes, kind: str) -> list[pd.Series]:
    rows = [row for _, row in gen.labels[gen.labels.anomaly_type == kind].iterrows()]
    assert rows, f"no {kind} labelled"
    return rows


def test_names_are_their_own_and_valid() -> None:
    assert len(OOD_TICKERS) >= 24 and len(set(OOD_TICKERS)) == len(OOD_TICKERS)
    assert all(len(name) == 4 for name in OOD_TICKERS)
    assert not set(OOD_TICKERS) & set(TICKERS)
    names = ood_symbols(3 * len(OOD_TICKERS))
    training = {f"{name}{suffix}" for name in TICKERS for suffix in ("", "2", "3", "4")}
    assert len(set(names)) == len(names) and not set(names) & training
    assert all(SYMBOL.match(name) for name in names)
    assert names[len(OOD_TICKERS)] == f"{OOD_TICKERS[0]}2"
    assert ood_symbols(2, first_symbol=5) == list(OOD_TICKERS[5:7])


def test_same_seed_same_output_and_other_seeds_differ() -> None:
    first = generate_ood_quotes(symbols=3, minutes=30, seed=11)
    again = generate_ood_quotes(symbols=3, minutes=30, seed=11)
    pd.testing.assert_frame_equal(first.quotes, again.quotes)
    pd.testing.assert_frame_equal(first.labels, again.labels)
    assert first.raw_lines == again.raw_lines
    other = generate_ood_quotes(symbols=3, minutes=30, seed=12)
    assert not first.quotes.equals(other.quotes)
    assert first.quotes.groupby("symbol").price.first().to_dict() != (
        other.quotes.groupby("symbol").price.first().to_dict()
    )


def test_a_symbol_depends_only_on_the_seed_and_its_index() -> None:
    full = generate_ood_quotes(symbols=3, minutes=30, seed=11)
    shifted = generate_ood_quotes(symbols=2, minutes=30, seed=11, first_symbol=1)
    assert sorted(shifted.quotes.symbol.unique()) == sorted(OOD_TICKERS[1:3])
    for symbol in OOD_TICKERS[1:3]:
        for frame in ("quotes", "labels"):
            a, b = getattr(full, frame), getattr(shifted, frame)
            pd.testing.assert_frame_equal(
                a[a.symbol == symbol].reset_index(drop=True), b[b.symbol == symbol].reset_index(drop=True)
            )


def test_quotes_meet_the_contract(gen: GeneratedQuotes, ticks: dict[str, float]) -> None:
    quotes = gen.quotes
    assert list(quotes.columns) == list(QUOTE_FIELDS)
    assert str(quotes.event_time.dt.tz) == "UTC"
    assert (quotes.event_time.astype("int64") % 1_000_000 == 0).all()  # whole milliseconds
    assert quotes.event_id.is_unique
    assert quotes.volume.dtype == np.int64 and (quotes.volume >= 1).all()
    assert quotes.symbol.map(lambda s: bool(SYMBOL.match(s))).all()
    assert not set(quotes.symbol) & set(TICKERS)
    keys = list(zip(quotes.event_time.astype("int64"), quotes.symbol, strict=True))
    assert keys == sorted(keys)
    for symbol, frame in quotes.groupby("symbol"):
        assert (np.diff(frame.event_time.astype("int64").to_numpy()) > 0).all(), symbol
        tick = ticks[symbol]
        assert (frame.price > 0).all() and (frame.bid > 0).all()
        # Strictly inside, by at least one tick either side.
        assert (frame.price - frame.bid >= tick - 1e-9).all(), symbol
        assert (frame.ask - frame.price >= tick - 1e-9).all(), symbol
        for column in ("price", "bid", "ask"):
            in_ticks = frame[column].to_numpy() / tick
            assert np.allclose(in_ticks, np.round(in_ticks), rtol=0, atol=1e-6), (symbol, column)
    assert len(gen.raw_lines) == len(quotes)
    assert not gen.dirty and gen.manifest.empty
    for n in range(0, len(quotes), 97):
        line = gen.raw_lines[n]
        assert check_quote_line(line) is None
        doc = json.loads(line)
        assert doc["event_id"] == quotes.event_id.iloc[n] and doc["price"] == quotes.price.iloc[n]


def test_every_requested_type_is_labelled(gen: GeneratedQuotes) -> None:
    labels = gen.labels
    assert list(labels.columns) == LABEL_COLUMNS
    assert set(labels.anomaly_type) == set(ANOMALY_TYPES)
    assert gen.anomaly_types == tuple(ANOMALY_TYPES)
    assert all(gen.summary()[kind] >= 1 for kind in ANOMALY_TYPES)
    keys = list(zip(labels.event_time.astype("int64"), labels.symbol, strict=True))
    assert keys == sorted(keys)
    assert labels.event_id.isin(gen.quotes.event_id).all()


def test_symbols_differ_in_level_and_pace(ordinary: dict[str, pd.DataFrame], ticks: dict[str, float]) -> None:
    first_prices = [frame.price.iloc[0] for frame in ordinary.values()]
    counts = [len(frame) for frame in ordinary.values()]
    assert max(first_prices) / min(first_prices) >= 100  # at least two orders of magnitude
    assert max(counts) / min(counts) >= 3
    assert len(set(ticks.values())) >= 2


def test_spans_cover_quotes_and_are_placed_apart(
    gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame], ordinary: dict[str, pd.DataFrame]
) -> None:
    for symbol, labels in gen.labels.groupby("symbol"):
        own = ordinary[symbol]
        spans = []
        for _, label in labels.iterrows():
            covered = _within(by_symbol[symbol], label)
            assert len(covered), label.event_id
            assert covered.event_id.iloc[0] == label.event_id
            assert covered.event_time.iloc[-1] == label.end_time
            first = _position(ordinary, label)
            last = (
                int(_within(own, label).position.max()) if label.anomaly_type != "quote_stuffing" else first
            )
            last = max(last, int(own.position[own.event_time <= label.end_time].max()))
            spans.append((first, last))
        spans.sort()
        assert spans[0][0] >= 300 and spans[-1][1] <= len(own) - 31
        assert all(nxt[0] - prev[1] > 250 for prev, nxt in itertools.pairwise(spans))
        per_type = max(1, round(len(own) / 2400))
        assert labels.anomaly_type.value_counts().max() <= per_type


def test_price_jumps_are_large_in_percent_and_against_recent_moves(
    gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame]
) -> None:
    for label in _labels(gen, "price_jump"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        realised = own.price[k] / own.price[k - 1] - 1
        assert realised == pytest.approx(label.magnitude, abs=1e-6)
        assert abs(realised) >= 0.06
        recent = np.abs(np.diff(np.log(own.price[k - 250 : k].to_numpy())))
        assert abs(np.log1p(realised)) >= 2 * recent.max()


def test_volume_spikes_dwarf_recent_volume(gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame]) -> None:
    for label in _labels(gen, "volume_spike"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        assert 10 <= label.magnitude <= 45
        assert own.volume[k] >= 5 * own.volume[k - 100 : k].median()


def test_flash_crashes_fall_to_their_depth_and_recover(
    gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame], ticks: dict[str, float]
) -> None:
    for label in _labels(gen, "flash_crash"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        span = _within(own, label)
        assert 33 <= len(span) <= 98
        before = own.price[k - 1]
        assert -0.5 <= label.magnitude <= -0.04
        assert span.price.min() == pytest.approx(before * (1 + label.magnitude), abs=ticks[label.symbol])
        # Back on the path: the recovery ends nowhere near the trough.
        assert span.price.iloc[-1] > span.price.min() * (1 - label.magnitude / 2)


def test_stale_feeds_repeat_the_last_quote(gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame]) -> None:
    for label in _labels(gen, "stale_feed"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        span = _within(own, label)
        frozen = span.iloc[:-1]
        assert len(frozen) == label.magnitude and 40 <= label.magnitude <= 90
        for column in ("price", "bid", "ask"):
            assert (frozen[column] == own[column][k - 1]).all(), (label.event_id, column)


def test_spread_blowouts_widen_under_400_bps(gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame]) -> None:
    for label in _labels(gen, "spread_blowout"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        span = _within(own, label)
        assert 10 <= len(span) <= 40
        spread = span.ask - span.bid
        assert (spread / ((span.ask + span.bid) / 2) < 0.04).all()
        assert ((span.bid < span.price) & (span.price < span.ask)).all()
        before = (own.ask - own.bid)[k - 100 : k].median()
        assert label.magnitude >= 2 and spread.median() >= 2 * before


def test_quote_stuffing_bursts(
    gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame], ticks: dict[str, float]
) -> None:
    for label in _labels(gen, "quote_stuffing"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        base = own.iloc[k]
        stuffed = gen.quotes[gen.quotes.event_id.str.startswith(f"{base.event_id}.")]
        assert len(stuffed) == label.magnitude and 60 <= len(stuffed) <= 150
        assert stuffed.event_id.iloc[0] == label.event_id
        assert stuffed.event_time.iloc[-1] == label.end_time
        assert not stuffed.event_time.isin(own.event_time).any()
        assert (stuffed.event_time > base.event_time).all()
        assert (stuffed.event_time < own.event_time.iloc[k + 30]).all()
        assert (stuffed.price == base.price).all() and stuffed.volume.between(1, 20).all()
        flicker = np.maximum(base.bid - stuffed.bid, stuffed.ask - base.ask)
        assert np.allclose(flicker, ticks[label.symbol])


def test_momentum_drifts_move_the_price_their_way(
    gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame]
) -> None:
    for label in _labels(gen, "momentum_drift"):
        own, k = ordinary[label.symbol], _position(ordinary, label)
        span = _within(own, label)
        assert 120 <= len(span) <= 200 and 0.03 <= abs(label.magnitude) <= 0.5
        realised = span.price.iloc[-1] / own.price[k - 1] - 1
        assert np.sign(realised) == np.sign(label.magnitude)
        assert 0.5 <= realised / label.magnitude <= 1.5


def test_ordinary_ticks_do_not_look_like_jumps(
    gen: GeneratedQuotes, ordinary: dict[str, pd.DataFrame]
) -> None:
    for symbol, own in ordinary.items():
        inside = np.zeros(len(own), dtype=bool)
        for _, label in gen.labels[gen.labels.symbol == symbol].iterrows():
            inside[_within(own, label).position.to_numpy()] = True
            inside[_position(ordinary, label)] = True
        touched = inside | np.r_[False, inside[:-1]]  # the tick after a span moves back or on
        moves = np.abs(own.price.pct_change().to_numpy())[1:][~touched[1:]]
        assert moves.max() < 0.03, symbol


def test_only_requested_types_are_injected() -> None:
    one = generate_ood_quotes(symbols=2, minutes=30, seed=5, anomaly_types="stale_feed")
    assert set(one.labels.anomaly_type) == {"stale_feed"} and one.anomaly_types == ("stale_feed",)
    none = generate_ood_quotes(symbols=2, minutes=30, seed=5, anomaly_types=())
    assert none.labels.empty and list(none.labels.columns) == LABEL_COLUMNS
    # The market itself does not depend on what is injected: away from the anomalies it is the same.
    assert len(none.quotes) == len(one.quotes)
    short = generate_ood_quotes(symbols=2, minutes=1, seed=5)  # too short for any anomaly
    assert short.labels.empty and len(short.quotes) >= 2


@pytest.mark.parametrize(
    "kwargs",
    [{"symbols": 0}, {"minutes": 0}, {"seed": -1}, {"first_symbol": -1}, {"anomaly_types": ["price_jmp"]}],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate_ood_quotes(**kwargs)  # type: ignore[arg-type]


def test_shares_no_code_with_the_training_market() -> None:
    source = inspect.getsource(ood_market)
    tree = ast.parse(source)
    private = {
        name
        for name, value in vars(generator).items()
        if name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
    }
    assert {"_symbol_quotes", "_span_positions", "_draw_span", "_stuffed_messages", "_u_shape"} <= private
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "surveillance.ingestion.generator":
            imported |= {alias.name for alias in node.names}
        if isinstance(node, ast.Import):
            assert all(alias.name != "surveillance.ingestion.generator" for alias in node.names)
    assert imported <= ALLOWED_FROM_GENERATOR
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not used & private
    assert not any(re.search(rf"\b{re.escape(name)}\b", source) for name in private)
    # The only functions of the generator's it holds are the argument checks and the final ordering.
    assert not any(
        getattr(value, "__module__", None) == generator.__name__
        and inspect.isfunction(value)
        and name not in ALLOWED_FROM_GENERATOR
        for name, value in vars(ood_market).items()
    )
