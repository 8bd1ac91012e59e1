"""The synthetic quote generator, the contract serialiser and the writers (pure Python, no Spark)."""

from __future__ import annotations

import itertools
import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from surveillance import cli
from surveillance.config import RuleSettings, load_settings
from surveillance.ingestion.contract import (
    QUOTE_FIELDS,
    check_quote_line,
    format_event_time,
    parse_event_time,
    quote_to_json,
)
from surveillance.ingestion.generator import (
    ANOMALY_TYPES,
    BASIC_ANOMALY_TYPES,
    DEFAULT_START,
    LABEL_COLUMNS,
    MALFORMED_VARIANTS,
    GeneratedQuotes,
    generate_quotes,
    labels_path,
    manifest_path,
    write_csv,
    write_jsonl,
    write_labels,
)

CONTRACT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RULES = RuleSettings()
# The default silver suite (conf/base.yml), as the reference check models it.
SUITE = {
    name: spec.model_dump() for name, spec in load_settings(env="local").quality.suites.silver_quotes.items()
}


@pytest.fixture(scope="module")
def gen() -> GeneratedQuotes:
    return generate_quotes(symbols=8, minutes=60, seed=7, inject_anomalies=True, dirty=True)


@pytest.fixture(scope="module")
def by_symbol(gen: GeneratedQuotes) -> dict[str, pd.DataFrame]:
    """Each symbol's quotes in event-time order with the return against the previous quote."""
    out = {}
    for symbol, frame in gen.quotes.groupby("symbol"):
        frame = frame.sort_values(["event_time", "event_id"]).reset_index(drop=True)
        frame["ret"] = frame.price / frame.price.shift() - 1
        frame["volume_mean"] = frame.volume.shift().rolling(RULES.volume_spike.window, min_periods=1).mean()
        out[symbol] = frame
    return out


def _dirty(gen: GeneratedQuotes, kind: str) -> pd.DataFrame:
    return gen.manifest[gen.manifest.kind == kind]


# --- determinism and shape ------------------------------------------------------------------------


def test_same_seed_gives_identical_output(gen: GeneratedQuotes) -> None:
    again = generate_quotes(symbols=8, minutes=60, seed=7, inject_anomalies=True, dirty=True)
    pd.testing.assert_frame_equal(gen.quotes, again.quotes)
    pd.testing.assert_frame_equal(gen.labels, again.labels)
    pd.testing.assert_frame_equal(gen.manifest, again.manifest)
    assert gen.raw_lines == again.raw_lines


def test_other_seed_gives_other_output(gen: GeneratedQuotes) -> None:
    other = generate_quotes(symbols=8, minutes=60, seed=8, inject_anomalies=True, dirty=True)
    assert not np.allclose(gen.quotes.price.to_numpy(), other.quotes.price.to_numpy())
    assert gen.raw_lines != other.raw_lines


def test_dirty_mode_leaves_clean_quotes_and_labels_alone(gen: GeneratedQuotes) -> None:
    clean = generate_quotes(symbols=8, minutes=60, seed=7, inject_anomalies=True)
    faulty = gen.quotes.event_id.isin(
        gen.manifest.event_id[gen.manifest.kind.isin(["crossed", "wide_spread"])]
    )
    assert faulty.sum() == 29 + 14
    pd.testing.assert_frame_equal(gen.quotes[~faulty], clean.quotes[~faulty])
    pd.testing.assert_frame_equal(
        gen.quotes[faulty].drop(columns=["bid", "ask"]), clean.quotes[faulty].drop(columns=["bid", "ask"])
    )
    pd.testing.assert_frame_equal(gen.labels, clean.labels)
    assert clean.manifest.empty and not clean.dirty
    assert clean.raw_lines == [quote_to_json(row) for row in clean.quotes.to_dict("records")]


def test_shape_columns_and_default_start(gen: GeneratedQuotes) -> None:
    assert list(gen.quotes.columns) == list(QUOTE_FIELDS)
    assert len(gen.quotes) == 8 * 60 * 30
    assert gen.quotes.symbol.nunique() == 8
    assert gen.quotes.event_time.is_monotonic_increasing
    assert gen.quotes.event_time.min() >= pd.Timestamp(DEFAULT_START)
    assert gen.quotes.event_time.max() <= pd.Timestamp(DEFAULT_START + timedelta(minutes=60, seconds=1))
    assert datetime(2026, 11, 20, 14, 30, tzinfo=UTC) == DEFAULT_START


def test_explicit_start_and_naive_start_are_utc() -> None:
    aware = generate_quotes(symbols=2, minutes=3, start=datetime(2025, 1, 2, 9, 0, tzinfo=UTC))
    naive = generate_quotes(symbols=2, minutes=3, start=datetime(2025, 1, 2, 9, 0))
    pd.testing.assert_frame_equal(aware.quotes, naive.quotes)
    assert aware.quotes.event_time.min() >= pd.Timestamp("2025-01-02T09:00:00Z")


def test_unique_event_ids(gen: GeneratedQuotes) -> None:
    assert gen.quotes.event_id.is_unique
    malformed_ids = _dirty(gen, "malformed").event_id.dropna()
    assert malformed_ids.is_unique
    assert not set(malformed_ids) & set(gen.quotes.event_id)


def test_symbol_paths_do_not_depend_on_the_number_of_symbols() -> None:
    two = generate_quotes(symbols=2, minutes=5)
    four = generate_quotes(symbols=4, minutes=5)
    shared = four.quotes[four.quotes.symbol.isin(two.quotes.symbol)].reset_index(drop=True)
    pd.testing.assert_frame_equal(two.quotes, shared)


def test_many_symbols_get_unique_names() -> None:
    gen = generate_quotes(symbols=30, minutes=1, ticks_per_minute=2)
    assert gen.quotes.symbol.nunique() == 30


@pytest.mark.parametrize("kwargs", [{"symbols": 0}, {"minutes": 0}, {"ticks_per_minute": 0}, {"seed": -1}])
def test_rejects_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate_quotes(**kwargs)


# --- realism --------------------------------------------------------------------------------------


def test_prices_positive_and_inside_the_quote(gen: GeneratedQuotes) -> None:
    faulty = gen.manifest.event_id[gen.manifest.kind.isin(["crossed", "wide_spread"])]
    q = gen.quotes[~gen.quotes.event_id.isin(faulty)]  # book faults are deliberate
    assert (q.price > 0).all() and (q.bid > 0).all()
    assert (q.bid < q.price).all() and (q.price < q.ask).all()
    spread_bps = (q.ask - q.bid) / q.price * 1e4
    assert spread_bps.between(0.5, 50).all()
    assert (q.volume >= 1).all() and q.volume.dtype == np.int64


def test_ordinary_tick_returns_are_small(gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]) -> None:
    jumps = set(gen.labels.event_id[gen.labels.anomaly_type == "price_jump"])
    for frame in by_symbol.values():
        ordinary = frame[~frame.event_id.isin(jumps)].ret.dropna().abs()
        assert ordinary.max() < 0.02
        assert ordinary.quantile(0.99) < 0.01
        # Below every rule threshold: no ordinary quote should look like a price jump.
        assert ordinary.max() < RULES.price_jump.threshold / 2


def test_ordinary_returns_stay_under_the_zscore_threshold(
    gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]
) -> None:
    window, threshold = RULES.zscore.window, RULES.zscore.threshold
    anomalies = set(gen.labels.event_id)
    for frame in by_symbol.values():
        trailing = frame.ret.shift().rolling(window, min_periods=RULES.zscore.min_periods)
        zscore = ((frame.ret - trailing.mean()) / trailing.std()).abs()
        flagged = frame.event_id[zscore > threshold]
        assert set(flagged) <= anomalies


def test_inter_arrival_times_are_irregular(by_symbol: dict[str, pd.DataFrame]) -> None:
    for frame in by_symbol.values():
        gaps = frame.event_time.diff().dt.total_seconds().dropna()
        assert (gaps > 0).all()
        assert gaps.nunique() > 100
        assert 1.5 < gaps.mean() < 2.5  # 30 ticks a minute on average
        assert gaps.std() > 0.5


def test_intraday_volume_is_u_shaped(gen: GeneratedQuotes) -> None:
    ordinary = gen.quotes[~gen.quotes.event_id.isin(gen.labels.event_id)]
    minute = (ordinary.event_time - ordinary.event_time.min()).dt.total_seconds() // 60
    open_ = ordinary.volume[minute < 6].mean()
    midday = ordinary.volume[minute.between(27, 32)].mean()
    close = ordinary.volume[minute >= 54].mean()
    assert open_ > 2 * midday and close > 2 * midday


def test_symbols_differ_in_price_and_volatility(by_symbol: dict[str, pd.DataFrame]) -> None:
    starts = [frame.price.iloc[0] for frame in by_symbol.values()]
    vols = [frame.ret.iloc[1:60].std() for frame in by_symbol.values()]
    assert len({round(p) for p in starts}) == len(starts)
    assert max(vols) > 1.5 * min(vols)


# --- anomalies ------------------------------------------------------------------------------------


def test_labels_columns_and_both_types(gen: GeneratedQuotes) -> None:
    assert list(gen.labels.columns) == [
        "event_id",
        "symbol",
        "event_time",
        "end_time",
        "anomaly_type",
        "magnitude",
    ]
    assert (gen.labels.end_time == gen.labels.event_time).all()  # point anomalies
    assert set(gen.labels.anomaly_type) == {"price_jump", "volume_spike"}
    assert gen.labels.event_id.isin(gen.quotes.event_id).all()
    assert generate_quotes(symbols=2, minutes=10).labels.empty  # none unless asked for


def test_every_price_jump_is_6_to_12_percent_at_its_own_event(
    gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]
) -> None:
    jumps = gen.labels[gen.labels.anomaly_type == "price_jump"]
    assert len(jumps) >= 8
    assert (jumps.magnitude > 0).any() and (jumps.magnitude < 0).any()  # up and down
    for label in jumps.itertuples():
        frame = by_symbol[label.symbol]
        at = frame.index[frame.event_id == label.event_id][0]
        ret = frame.ret[at]
        assert 0.06 <= abs(ret) <= 0.12, (label.event_id, ret)
        assert ret == pytest.approx(label.magnitude, abs=1e-6)
        assert abs(frame.ret[at + 1]) < 0.01  # the level stays shifted: no snap back
        assert frame.event_time[at] == label.event_time


def test_volume_spikes_clear_the_default_rule(
    gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]
) -> None:
    spikes = gen.labels[gen.labels.anomaly_type == "volume_spike"]
    assert len(spikes) >= 8
    assert spikes.magnitude.between(15, 40).all()
    for label in spikes.itertuples():
        frame = by_symbol[label.symbol]
        row = frame[frame.event_id == label.event_id].iloc[0]
        assert row.volume / row.volume_mean > RULES.volume_spike.ratio
        assert row.volume >= RULES.volume_spike.min_volume


def test_no_ordinary_quote_looks_like_a_volume_spike(
    gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]
) -> None:
    for frame in by_symbol.values():
        ratio = frame.volume / frame.volume_mean
        flagged = frame.event_id[(ratio > RULES.volume_spike.ratio) & (frame.index >= 20)]
        assert set(flagged) <= set(gen.labels.event_id)


def test_anomalies_skip_the_warm_up_and_are_spaced_apart(gen: GeneratedQuotes) -> None:
    for _, group in gen.labels.groupby("symbol"):
        ticks = sorted(int(event_id.split("-")[1]) for event_id in group.event_id)
        assert ticks[0] >= 60
        assert all(b - a >= 60 for a, b in itertools.pairwise(ticks))


# --- dirty lines ----------------------------------------------------------------------------------


def test_manifest_has_every_kind_in_about_the_requested_share(gen: GeneratedQuotes) -> None:
    counts = gen.manifest.kind.value_counts()
    quotes, lines = len(gen.quotes), len(gen.raw_lines)
    assert lines == quotes + counts["malformed"] + counts["duplicate"]
    assert 0.003 * lines < counts["malformed"] < 0.008 * lines
    assert 0.007 * lines < counts["duplicate"] < 0.013 * lines
    assert 0.015 * quotes < counts["extra_field"] < 0.025 * quotes
    assert 0.002 * quotes < counts["late"] < 0.004 * quotes
    assert gen.manifest.line_no.is_unique and gen.manifest.line_no.is_monotonic_increasing
    assert set(_dirty(gen, "malformed").detail) == {detail for detail, _ in MALFORMED_VARIANTS}


def test_each_malformed_line_fails_for_its_expected_reason(gen: GeneratedQuotes) -> None:
    malformed = _dirty(gen, "malformed")
    for row in malformed.itertuples():
        assert check_quote_line(gen.raw_lines[row.line_no], SUITE) == row.expected_reason, row
    assert {
        "invalid_json",
        "not_an_object",
        "expectations: event_id_not_null",
        "price_not_number",
        "expectations: price_positive_finite",
        "bad_event_time",
        "expectations: volume_non_negative",
    } <= set(malformed.expected_reason)


def test_every_other_line_is_a_valid_quote(gen: GeneratedQuotes) -> None:
    malformed = set(_dirty(gen, "malformed").line_no)
    for n, line in enumerate(gen.raw_lines):
        if n not in malformed:
            assert check_quote_line(line, SUITE) is None, (n, line)


def test_valid_lines_carry_exactly_the_quotes(gen: GeneratedQuotes) -> None:
    skip = set(gen.manifest.line_no[gen.manifest.kind.isin(["malformed", "duplicate"])])
    sent = [json.loads(line) for n, line in enumerate(gen.raw_lines) if n not in skip]
    assert len(sent) == len(gen.quotes)
    expected = {row["event_id"]: json.loads(quote_to_json(row)) for row in gen.quotes.to_dict("records")}
    for doc in sent:
        doc.pop("venue", None)
        assert doc == expected[doc["event_id"]]


def test_duplicates_repeat_an_earlier_line_a_little_later(gen: GeneratedQuotes) -> None:
    first_seen: dict[str, int] = {}
    for n, line in enumerate(gen.raw_lines):
        first_seen.setdefault(line, n)
    for row in _dirty(gen, "duplicate").itertuples():
        line = gen.raw_lines[row.line_no]
        earlier = first_seen[line]
        assert earlier < row.line_no <= earlier + 200
        assert json.loads(line)["event_id"] == row.event_id
    assert not _dirty(gen, "duplicate").event_id.isin(gen.labels.event_id).any()


def test_book_faults_are_crossed_or_wide_and_away_from_anomalies(
    gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]
) -> None:
    for kind in ("crossed", "wide_spread"):
        for row in _dirty(gen, kind).itertuples():
            doc = json.loads(gen.raw_lines[row.line_no])
            spread_bps = (doc["ask"] - doc["bid"]) / ((doc["ask"] + doc["bid"]) / 2) * 1e4
            assert doc["bid"] > doc["ask"] if kind == "crossed" else spread_bps > 500, doc
            assert check_quote_line(gen.raw_lines[row.line_no], SUITE) is None  # warn only: it flows on
    faulty = set(gen.manifest.event_id[gen.manifest.kind.isin(["crossed", "wide_spread"])])
    for label in gen.labels.itertuples():
        frame = by_symbol[label.symbol]
        at = frame.index[frame.event_id == label.event_id][0]
        assert not set(frame.event_id[max(0, at - 2) : at + 3]) & faulty


def test_extra_field_lines_have_a_venue(gen: GeneratedQuotes) -> None:
    for row in _dirty(gen, "extra_field").itertuples():
        doc = json.loads(gen.raw_lines[row.line_no])
        assert doc["event_id"] == row.event_id and doc["venue"] in {"XNAS", "XNYS", "ARCX", "BATS", "IEXG"}


def test_late_lines_arrive_far_behind_event_time(gen: GeneratedQuotes) -> None:
    late = _dirty(gen, "late")
    malformed = set(_dirty(gen, "malformed").line_no)
    newest = pd.Timestamp.min.tz_localize("UTC")
    newest_before: dict[int, pd.Timestamp] = {}
    for n, line in enumerate(gen.raw_lines):
        newest_before[n] = newest
        if n not in malformed:
            newest = max(newest, pd.Timestamp(json.loads(line)["event_time"]))
    for row in late.itertuples():
        event_time = pd.Timestamp(json.loads(gen.raw_lines[row.line_no])["event_time"])
        assert newest_before[row.line_no] - event_time > pd.Timedelta(
            minutes=20
        )  # far past a 10-minute watermark
        assert row.line_no > 0.95 * len(gen.raw_lines)


def test_late_lines_never_touch_an_anomaly(gen: GeneratedQuotes, by_symbol: dict[str, pd.DataFrame]) -> None:
    late_ids = set(_dirty(gen, "late").event_id)
    for label in gen.labels.itertuples():
        frame = by_symbol[label.symbol]
        at = frame.index[frame.event_id == label.event_id][0]
        around = set(frame.event_id[max(0, at - 1) : at + 2])  # the one before, itself, the one after
        assert not around & late_ids


def test_dirty_works_for_tiny_runs() -> None:
    gen = generate_quotes(symbols=1, minutes=2, ticks_per_minute=10, dirty=True, inject_anomalies=True)
    assert gen.labels.empty  # too short for anomalies past the warm-up
    assert set(gen.manifest.kind) <= {
        "malformed",
        "duplicate",
        "extra_field",
        "late",
        "crossed",
        "wide_spread",
    }
    for row in _dirty(gen, "malformed").itertuples():
        assert check_quote_line(gen.raw_lines[row.line_no], SUITE) == row.expected_reason


def test_summary_counts(gen: GeneratedQuotes) -> None:
    summary = gen.summary()
    assert summary["quotes"] == len(gen.quotes) and summary["lines"] == len(gen.raw_lines)
    assert summary["price_jump"] + summary["volume_spike"] == len(gen.labels)
    assert sum(v for k, v in summary.items() if k.startswith("malformed:")) == summary["malformed"]


# --- contract serialisation -----------------------------------------------------------------------


def test_every_serialised_quote_parses_back_to_contract_types(gen: GeneratedQuotes) -> None:
    for row in gen.quotes.to_dict("records"):
        doc = json.loads(quote_to_json(row))
        assert list(doc) == list(QUOTE_FIELDS)
        assert isinstance(doc["event_id"], str) and isinstance(doc["symbol"], str)
        assert CONTRACT_TIME.match(doc["event_time"])
        assert pd.Timestamp(doc["event_time"]) == row["event_time"]  # already millisecond precision
        assert isinstance(doc["price"], float) and doc["price"] > 0
        assert type(doc["volume"]) is int and doc["volume"] >= 0
        assert isinstance(doc["bid"], float) and isinstance(doc["ask"], float)


def test_quote_to_json_is_compact_and_keeps_extras_last() -> None:
    line = quote_to_json(
        {
            "venue": "XNAS",
            "event_id": "A-1",
            "symbol": "A",
            "event_time": datetime(2026, 1, 2, 3, 4, 5, 678901),
            "price": np.float64(10.123456),
            "volume": np.int64(7),
            "bid": 10.1,
            "ask": 10.2,
            "note": None,
        }
    )
    assert line == (
        '{"event_id":"A-1","symbol":"A","event_time":"2026-01-02T03:04:05.678Z","price":10.1235,'
        '"volume":7,"bid":10.1,"ask":10.2,"venue":"XNAS"}'
    )


def test_quote_to_json_converts_times_to_utc() -> None:
    base = {"event_id": "A-1", "symbol": "A", "price": 1.0, "volume": 1, "bid": 0.9, "ask": 1.1}
    plus_two = datetime(2026, 1, 2, 5, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2)))
    for value in (
        plus_two,
        pd.Timestamp("2026-01-02T03:00:00.123456Z"),
        "2026-01-02T03:00:00.123Z",
        np.datetime64("2026-01-02T03:00:00.123"),
    ):
        assert (
            json.loads(quote_to_json({**base, "event_time": value}))["event_time"]
            == "2026-01-02T03:00:00.123Z"
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"price": None}, "price"),
        ({"event_id": None}, "event_id"),
        ({"volume": 1.5}, "whole"),
        ({"price": float("inf")}, "finite"),
    ],
)
def test_quote_to_json_refuses_what_it_cannot_serialise(change: dict, message: str) -> None:
    record = {"event_id": "A-1", "symbol": "A", "event_time": DEFAULT_START, "price": 1.0, "volume": 1}
    with pytest.raises(ValueError, match=message):
        quote_to_json({**record, **change})


@given(
    price=st.floats(min_value=0.0001, max_value=1e6, allow_nan=False),
    volume=st.integers(min_value=0, max_value=10**12),
    millis=st.integers(min_value=0, max_value=10**12),
)
def test_quote_to_json_round_trips(price: float, volume: int, millis: int) -> None:
    moment = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    record = {
        "event_id": "X-1",
        "symbol": "X",
        "event_time": moment,
        "price": price,
        "volume": volume,
        "bid": price,
        "ask": price,
    }
    doc = json.loads(quote_to_json(record))
    assert parse_event_time(doc["event_time"]) == moment
    assert math.isclose(doc["price"], price, abs_tol=5e-5) and doc["volume"] == volume
    expected = (
        None
        if round(price, 4) > 0
        else "expectations: price_positive_finite, bid_positive_finite, ask_positive_finite"
    )
    assert check_quote_line(quote_to_json(record), SUITE) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty_value"),
        ("{", "invalid_json"),
        ('{"price":NaN}', "invalid_json"),
        ("[1]", "not_an_object"),
        (
            "{}",
            "expectations: event_id_not_null, symbol_not_null, event_time_not_null, price_not_null, volume_not_null",
        ),
        ('{"event_id":1}', "event_id_not_string"),
        (
            '{"event_id":" ","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":1}',
            "expectations: event_id_not_blank",
        ),
        (
            '{"event_id":"e","symbol":"a b","event_time":"2026-11-20T14:30:00Z","price":1,"volume":1}',
            "expectations: symbol_in_universe",
        ),
        (
            '{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1e400,"volume":1}',
            "expectations: price_positive_finite",
        ),
        (
            '{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":-1}',
            "expectations: volume_non_negative",
        ),
        ('{"event_id":"e","symbol":"A","event_time":"2026-11-20 14:30:00"}', "bad_event_time"),
        ('{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":"1"}', "price_not_number"),
        (
            '{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":1.0}',
            "volume_not_integer",
        ),
        (
            '{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":1,"bid":-1}',
            "expectations: bid_positive_finite",
        ),
        (
            '{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00Z","price":1,"volume":1,"bid":2,"ask":1}',
            None,  # crossed: a warn expectation, the quote flows on
        ),
        (
            '{"event_id":"e","symbol":"A","event_time":"2026-11-20T14:30:00.1+01:00","price":1,"volume":0}',
            None,
        ),
    ],
)
def test_check_quote_line_reasons(line: str, reason: str | None) -> None:
    assert check_quote_line(line, SUITE) == reason


def test_check_quote_line_without_rules_checks_only_the_contract() -> None:
    assert check_quote_line('{"price":-1}') is None
    assert check_quote_line('{"price":"-1"}') == "price_not_number"


def test_format_event_time_truncates_to_milliseconds() -> None:
    assert format_event_time(datetime(2026, 11, 20, 14, 30, 0, 999999)) == "2026-11-20T14:30:00.999Z"


# --- writers --------------------------------------------------------------------------------------


def test_writers(tmp_path, gen: GeneratedQuotes) -> None:
    out = tmp_path / "nested" / "quotes.jsonl"
    write_jsonl(gen, out)
    assert out.read_text(encoding="utf-8").split("\n") == [*gen.raw_lines, ""]
    written = write_labels(gen, out)
    assert written == [tmp_path / "nested" / "quotes.labels.csv", tmp_path / "nested" / "quotes.manifest.csv"]
    assert labels_path(out) == written[0] and manifest_path(out) == written[1]
    labels = pd.read_csv(written[0])
    assert list(labels.columns) == list(gen.labels.columns) and len(labels) == len(gen.labels)
    assert labels.event_time.str.match(CONTRACT_TIME.pattern).all()
    manifest = pd.read_csv(written[1], keep_default_na=False)
    assert manifest.line_no.tolist() == gen.manifest.line_no.tolist()

    csv_path = write_csv(gen, tmp_path / "quotes.csv")
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == list(QUOTE_FIELDS) and len(frame) == len(gen.quotes)
    assert frame.volume.dtype == np.int64
    assert frame.event_time.iloc[0] == format_event_time(gen.quotes.event_time.iloc[0])


def test_write_labels_without_dirty_writes_only_labels(tmp_path) -> None:
    gen = generate_quotes(symbols=2, minutes=5, inject_anomalies=True)
    assert write_labels(gen, tmp_path / "q.jsonl") == [tmp_path / "q.labels.csv"]
    assert not (tmp_path / "q.manifest.csv").exists()


SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "quotes_sample.jsonl"


@pytest.mark.skipif(not SAMPLE.exists(), reason="no committed sample")
def test_committed_sample_matches_the_generator(tmp_path, gen: GeneratedQuotes) -> None:
    # The sample is documented as `surveil generate ... --seed 7`; regenerate it if this fails on purpose.
    out = tmp_path / SAMPLE.name
    write_jsonl(gen, out)
    for path in (out, *write_labels(gen, out)):
        assert path.read_bytes() == (SAMPLE.parent / path.name).read_bytes(), path.name


# --- Span anomalies (the models' labelled data) --------------------------------------------------------


@pytest.fixture(scope="module")
def spans() -> GeneratedQuotes:
    return generate_quotes(
        symbols=3, minutes=120, seed=21, inject_anomalies=True, anomaly_types=ANOMALY_TYPES
    )


def _symbol_rows(gen: GeneratedQuotes, label: pd.Series) -> pd.DataFrame:
    return gen.quotes[gen.quotes.symbol == label.symbol].reset_index(drop=True)


def _span(gen: GeneratedQuotes, label: pd.Series) -> pd.DataFrame:
    own = _symbol_rows(gen, label)
    return own[(own.event_time >= label.event_time) & (own.event_time <= label.end_time)]


def test_every_span_type_is_labelled_twice_per_symbol_in_two_hours(spans: GeneratedQuotes) -> None:
    counts = spans.labels.groupby(["symbol", "anomaly_type"]).size()
    assert set(spans.labels.anomaly_type) == set(ANOMALY_TYPES)
    assert (counts == 2).all()
    assert spans.summary()["flash_crash"] == 6


def test_spans_are_ordered_spaced_and_after_the_warm_up(spans: GeneratedQuotes) -> None:
    for symbol, labels in spans.labels.groupby("symbol"):
        own = spans.quotes[(spans.quotes.symbol == symbol) & ~spans.quotes.event_id.str.contains(r"\.")]
        ticks = own.reset_index(drop=True)
        ordered = labels.sort_values("event_time")
        starts = [int(np.searchsorted(ticks.event_time, t)) for t in ordered.event_time]
        ends = [int(np.searchsorted(ticks.event_time, t, side="right")) - 1 for t in ordered.end_time]
        assert starts[0] >= 150
        for end, next_start in zip(ends[:-1], starts[1:], strict=True):
            assert next_start - end > 120
        assert all(end >= start for start, end in zip(starts, ends, strict=True))


def test_the_same_seed_gives_the_same_spans_and_another_seed_does_not(spans: GeneratedQuotes) -> None:
    again = generate_quotes(
        symbols=3, minutes=120, seed=21, inject_anomalies=True, anomaly_types=ANOMALY_TYPES
    )
    pd.testing.assert_frame_equal(spans.quotes, again.quotes)
    pd.testing.assert_frame_equal(spans.labels, again.labels)
    assert spans.raw_lines == again.raw_lines
    other = generate_quotes(
        symbols=3, minutes=120, seed=22, inject_anomalies=True, anomaly_types=ANOMALY_TYPES
    )
    assert not spans.labels.event_id.equals(other.labels.event_id)


def test_a_stale_feed_repeats_the_last_quote_then_catches_up(spans: GeneratedQuotes) -> None:
    for _, label in spans.labels[spans.labels.anomaly_type == "stale_feed"].iterrows():
        rows = _span(spans, label)
        frozen, catch_up = rows.iloc[:-1], rows.iloc[-1]
        assert len(frozen) == label.magnitude
        assert frozen[["price", "bid", "ask"]].nunique().tolist() == [1, 1, 1]
        own = _symbol_rows(spans, label)
        before = own[own.event_time < label.event_time].iloc[-1]
        assert frozen.price.iloc[0] == before.price
        assert catch_up.price != frozen.price.iloc[0]


def test_a_flash_crash_falls_by_its_depth_and_recovers(spans: GeneratedQuotes) -> None:
    for _, label in spans.labels[spans.labels.anomaly_type == "flash_crash"].iterrows():
        rows = _span(spans, label)
        own = _symbol_rows(spans, label)
        before = own[own.event_time < label.event_time].price.iloc[-1]
        trough = rows.price.min() / before - 1
        assert trough == pytest.approx(label.magnitude, abs=0.015)
        assert rows.price.iloc[-1] / before - 1 == pytest.approx(0, abs=0.02)


def test_a_spread_blowout_widens_the_book_below_the_quality_bound(spans: GeneratedQuotes) -> None:
    for _, label in spans.labels[spans.labels.anomaly_type == "spread_blowout"].iterrows():
        rows = _span(spans, label)
        own = _symbol_rows(spans, label)
        usual = ((own.ask - own.bid) / own.price).median()
        wide = (rows.ask - rows.bid) / rows.price
        assert wide.median() > 5 * usual
        assert (wide * 1e4 < 400).all()  # the quality suite warns at 500
        assert ((rows.bid < rows.price) & (rows.price < rows.ask)).all()


def test_quote_stuffing_bursts_messages_between_ticks(spans: GeneratedQuotes) -> None:
    for _, label in spans.labels[spans.labels.anomaly_type == "quote_stuffing"].iterrows():
        rows = _span(spans, label)
        stuffed = rows[rows.event_id.str.contains(r"\.")]
        assert len(stuffed) == label.magnitude and 60 <= label.magnitude <= 150
        assert stuffed.event_id.is_unique and stuffed.event_time.is_unique
        assert stuffed.event_time.is_monotonic_increasing
        assert (stuffed.event_time.dt.microsecond % 1000 == 0).all()  # millisecond precision
        assert label.event_id == stuffed.event_id.iloc[0] and label.end_time == stuffed.event_time.iloc[-1]
        own = _symbol_rows(spans, label)
        assert not own.event_time.duplicated().any()
        # Every message repeats its tick's price, strictly between that tick and five ticks later.
        tick_id = label.event_id.rsplit(".", 1)[0]
        ticks = own[~own.event_id.str.contains(r"\.")].reset_index(drop=True)
        at = ticks.index[ticks.event_id == tick_id][0]
        assert ticks.event_time[at] < stuffed.event_time.min()
        assert stuffed.event_time.max() < ticks.event_time[at + 5]
        assert stuffed.event_id.tolist() == [f"{tick_id}.{k:03d}" for k in range(len(stuffed))]
        assert sorted([*stuffed.event_id, tick_id, ticks.event_id[at + 1]])[0] == tick_id
        assert (stuffed.price == ticks.price[at]).all() and stuffed.volume.between(1, 20).all()
        assert ((stuffed.bid < stuffed.price) & (stuffed.price < stuffed.ask)).all()
        assert stuffed.bid.nunique() == 2 and stuffed.ask.nunique() == 2  # flickering by one step


def test_a_momentum_drift_moves_the_price_its_way(spans: GeneratedQuotes) -> None:
    for _, label in spans.labels[spans.labels.anomaly_type == "momentum_drift"].iterrows():
        rows = _span(spans, label)
        assert np.sign(rows.price.iloc[-1] / rows.price.iloc[0] - 1) == np.sign(label.magnitude)
        assert 120 <= len(rows) <= 200


def test_train_and_test_sets_use_different_symbols() -> None:
    train = generate_quotes(symbols=4, minutes=10, seed=1, first_symbol=0)
    test = generate_quotes(symbols=4, minutes=10, seed=2, first_symbol=4)
    assert not set(train.quotes.symbol) & set(test.quotes.symbol)
    # A symbol's path depends on its place in the list, not on where the set starts.
    alone = generate_quotes(symbols=1, minutes=10, seed=2, first_symbol=5)
    same = test.quotes[test.quotes.symbol == alone.quotes.symbol.iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone.quotes, same)


def test_dirty_lines_stay_out_of_anomaly_spans() -> None:
    gen = generate_quotes(
        symbols=3, minutes=120, seed=21, inject_anomalies=True, anomaly_types=ANOMALY_TYPES, dirty=True
    )
    assert set(gen.labels.anomaly_type) == set(ANOMALY_TYPES)
    assert {"late", "duplicate", "crossed", "wide_spread"} <= set(gen.manifest.kind)
    # An extra field leaves the quote as it is; every other dirty kind moves, repeats or alters it.
    touched = set(gen.manifest[gen.manifest.kind != "extra_field"].event_id.dropna())
    for _, label in gen.labels.iterrows():
        own = _symbol_rows(gen, label)
        inside = np.flatnonzero((own.event_time >= label.event_time) & (own.event_time <= label.end_time))
        around = own.event_id[max(0, inside.min() - 2) : inside.max() + 3]  # two quotes either side
        assert not touched & set(around), label.anomaly_type
    faulty = gen.manifest.event_id[gen.manifest.kind.isin(["crossed", "wide_spread"])]
    clean = gen.quotes[~gen.quotes.event_id.isin(faulty)]
    assert ((clean.bid < clean.price) & (clean.price < clean.ask)).all()


def test_unknown_anomaly_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown anomaly types.*flash_crash"):  # lists the valid ones
        generate_quotes(symbols=1, minutes=10, inject_anomalies=True, anomaly_types=["meteor"])
    with pytest.raises(ValueError, match="first_symbol"):
        generate_quotes(symbols=1, minutes=10, first_symbol=-1)


def test_every_quote_stays_inside_its_book_with_every_type(spans: GeneratedQuotes) -> None:
    q = spans.quotes
    assert ((q.bid < q.price) & (q.price < q.ask)).all()
    for column in ("price", "bid", "ask"):
        assert (q[column] == q[column].round(4)).all()
    assert spans.quotes.event_id.is_unique and q.event_time.is_monotonic_increasing


def test_labels_of_every_type_have_their_span_and_magnitude(spans: GeneratedQuotes) -> None:
    labels = spans.labels
    assert list(labels.columns) == LABEL_COLUMNS
    assert labels.event_id.isin(spans.quotes.event_id).all()
    point = labels.anomaly_type.isin(BASIC_ANOMALY_TYPES)
    assert (labels.end_time[point] == labels.event_time[point]).all()
    assert (labels.end_time[~point] > labels.event_time[~point]).all()
    magnitude = labels.set_index("anomaly_type").magnitude
    assert magnitude["flash_crash"].between(-0.09, -0.04).all()
    assert magnitude["stale_feed"].between(40, 90).all()
    assert magnitude["spread_blowout"].between(8, 20).all()
    assert magnitude["momentum_drift"].abs().between(0.03, 0.06).all()
    assert magnitude["price_jump"].abs().between(0.06, 0.12).all()


def test_span_anomalies_leave_the_clean_path_alone(spans: GeneratedQuotes) -> None:
    clean = generate_quotes(symbols=3, minutes=120, seed=21)
    ticks = spans.quotes[~spans.quotes.event_id.str.contains(r"\.")].reset_index(drop=True)
    # Same ticks at the same times; volumes differ only where an anomaly sets them.
    pd.testing.assert_series_equal(ticks.event_id, clean.quotes.event_id)
    pd.testing.assert_series_equal(ticks.event_time, clean.quotes.event_time)
    loud = spans.labels[spans.labels.anomaly_type.isin(["flash_crash", "volume_spike"])]
    changed = ticks.volume != clean.quotes.volume
    for row in ticks[changed].itertuples():
        own = loud[loud.symbol == row.symbol]
        assert ((own.event_time <= row.event_time) & (row.event_time <= own.end_time)).any(), row


def test_a_flash_crash_lifts_volume_while_it_falls(spans: GeneratedQuotes) -> None:
    clean = generate_quotes(symbols=3, minutes=120, seed=21).quotes.set_index("event_id")
    for _, label in spans.labels[spans.labels.anomaly_type == "flash_crash"].iterrows():
        rows = _span(spans, label).set_index("event_id")
        falling = rows.price.to_numpy()[:9]  # the fall lasts 3-8 ticks: its end is the lowest price
        fall = int(np.argmin(falling)) + 1
        ratio = rows.volume.iloc[:fall] / clean.volume[rows.index[:fall]]
        assert (ratio > 1.5).all()  # 3-6x the expected volume against lognormal noise


def test_basic_types_keep_the_sample_placement() -> None:
    default = generate_quotes(symbols=3, minutes=60, seed=7, inject_anomalies=True)
    reordered = generate_quotes(
        symbols=3, minutes=60, seed=7, inject_anomalies=True, anomaly_types=["volume_spike", "price_jump"]
    )
    pd.testing.assert_frame_equal(default.quotes, reordered.quotes)
    pd.testing.assert_frame_equal(default.labels, reordered.labels)
    jumps_only = generate_quotes(
        symbols=3, minutes=60, seed=7, inject_anomalies=True, anomaly_types="price_jump"
    )
    expected = default.labels[default.labels.anomaly_type == "price_jump"].reset_index(drop=True)
    pd.testing.assert_frame_equal(jumps_only.labels, expected)
    assert "flash_crash" not in jumps_only.summary() and jumps_only.summary()["volume_spike"] == 0


def test_a_short_session_drops_the_anomalies_that_do_not_fit() -> None:
    short = generate_quotes(
        symbols=4, minutes=20, seed=3, inject_anomalies=True, anomaly_types=ANOMALY_TYPES
    )  # 600 ticks: room for a few spans after the warm-up, not all seven types
    counts = short.labels.groupby("symbol").size()
    assert (counts >= 1).all() and (counts < len(ANOMALY_TYPES)).all()
    assert set(short.summary()) >= set(ANOMALY_TYPES)  # every requested type is reported, even at 0
    assert generate_quotes(
        symbols=2, minutes=5, inject_anomalies=True, anomaly_types=ANOMALY_TYPES
    ).labels.empty  # 150 ticks: all inside the warm-up


def test_labels_csv_writes_end_time_in_the_contract_format(tmp_path, spans: GeneratedQuotes) -> None:
    (written,) = write_labels(spans, tmp_path / "spans.jsonl")
    labels = pd.read_csv(written)
    assert list(labels.columns) == LABEL_COLUMNS and len(labels) == len(spans.labels)
    assert labels.end_time.str.match(CONTRACT_TIME.pattern).all()
    assert (labels.end_time >= labels.event_time).all()


def test_cli_generate_writes_every_type_for_a_later_set_of_symbols(tmp_path) -> None:
    out = tmp_path / "test.jsonl"
    argv = ["generate", "--out", str(out), "--symbols", "2", "--minutes", "60", "--seed", "3"]
    assert cli.main([*argv, "--anomaly-types", "all", "--first-symbol", "12"]) == 0
    labels = pd.read_csv(labels_path(out))
    assert set(labels.anomaly_type) == set(ANOMALY_TYPES)
    assert set(labels.symbol) == {"MYRA", "NOVX"}
    expected = generate_quotes(
        symbols=2, minutes=60, seed=3, inject_anomalies=True, anomaly_types=ANOMALY_TYPES, first_symbol=12
    )
    assert out.read_text(encoding="utf-8").splitlines() == expected.raw_lines
    assert cli.main([*argv, "--anomaly-types", "flash_crash, stale_feed"]) == 0
    assert set(pd.read_csv(labels_path(out)).anomaly_type) == {"flash_crash", "stale_feed"}
    with pytest.raises(SystemExit, match="unknown anomaly types"):
        cli.main([*argv, "--anomaly-types", "meteor"])
