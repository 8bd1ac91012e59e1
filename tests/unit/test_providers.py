"""Market data providers: our symbology and each provider's mapping, their quotes, the feed's bounded
buffer, reconnect backoff, market hours, discovery, and yfinance's polling against a local chart server."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from surveillance.config import load_settings
from surveillance.ingestion.contract import check_quote_line
from surveillance.providers.base import (
    Backoff,
    FeedRecord,
    FeedStopped,
    ProviderError,
    RecentIds,
    UnknownSymbolError,
    available_providers,
    contract_record,
    load_provider,
)
from surveillance.providers.feed import KafkaFeed
from surveillance.providers.market_hours import us_equity_state
from surveillance.providers.polygon import PolygonBook, session_date
from surveillance.providers.run import IngestResult
from surveillance.providers.symbology import (
    SYMBOL_REGEX,
    SymbolError,
    is_our_symbol,
    ours_to_polygon,
    ours_to_yahoo,
    polygon_to_ours,
    yahoo_to_ours,
)
from surveillance.providers.yahoo import YahooQuotes, YFinanceProvider, chart_market_open

YAHOO = {
    "AAPL": "AAPL",
    "BRK-B": "BRK.B",
    "BF-A": "BF.A",
    "VOD.L": "VOD:XLON",
    "SHOP.TO": "SHOP:XTSE",
    "7203.T": "7203:XTKS",
    "0700.HK": "0700:XHKG",
    "BTC-USD": "BTC-USD",
    "ETH-USDT": "ETH-USDT",
    "EURUSD=X": "EUR-USD",
    "JPY=X": "USD-JPY",
    "ES=F": "ES1!",
    "ESZ25.CME": "ESZ25:XCME",
    "^GSPC": "^GSPC",
}
POLYGON = {"AAPL": "AAPL", "BRK.B": "BRK.B", "BACpB": "BAC.PB", "ABRpD": "ABR.PD", "ESZ25": "ESZ25"}


def _silver_rules() -> dict[str, Any]:
    suite = load_settings().quality.suites.silver_quotes
    return {name: spec.model_dump() for name, spec in suite.items()}


def _quote(symbol: str) -> str:
    return json.dumps(
        {"event_id": "e", "symbol": symbol, "event_time": "2026-11-20T14:30:00Z", "price": 1.0, "volume": 1}
    )


@pytest.mark.parametrize(("yahoo", "ours"), YAHOO.items())
def test_yahoo_symbols_map_to_ours_and_back(yahoo: str, ours: str) -> None:
    assert yahoo_to_ours(yahoo) == ours
    assert ours_to_yahoo(ours) == yahoo
    assert is_our_symbol(ours)


@pytest.mark.parametrize(("polygon", "ours"), POLYGON.items())
def test_polygon_tickers_map_to_ours_and_back(polygon: str, ours: str) -> None:
    assert polygon_to_ours(polygon) == ours
    assert ours_to_polygon(ours) == polygon


@pytest.mark.parametrize("bad", ["VOD.ZZ", "acme inc", "BRK B", "", "X" * 13])
def test_symbols_we_cannot_map_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(SymbolError, match="Yahoo symbol"):
        yahoo_to_ours(bad)


def test_polygon_symbols_outside_its_stocks_feed_are_refused() -> None:
    for bad in ("brk b", "X:BTCUSD", "C:EURUSD"):
        with pytest.raises(SymbolError, match="not a stocks ticker"):
            polygon_to_ours(bad)
    for ours in ("EUR-USD", "VOD:XLON", "^GSPC", "ES1!"):
        with pytest.raises(SymbolError):
            ours_to_polygon(ours)


def test_the_default_universe_is_our_symbology_and_accepts_every_built_in_providers_symbols() -> None:
    rules = _silver_rules()
    assert rules["symbol_in_universe"]["kwargs"]["regex"] == SYMBOL_REGEX
    for symbol in [*YAHOO.values(), *POLYGON.values()]:
        assert check_quote_line(_quote(symbol), rules) is None, symbol
    for junk in ("acme inc", "aapl", "BRK-B-C", "A" * 13, "AAPL\n", "EURUSD=X", "VOD.L.X"):
        assert check_quote_line(_quote(junk), rules) == "expectations: symbol_in_universe", junk


def _trade(sym: str, t: int, q: int, price: float = 10.0) -> dict[str, Any]:
    return {"ev": "T", "sym": sym, "x": 4, "i": "77", "z": 3, "p": price, "s": 200, "c": [14], "t": t, "q": q}


def _pquote(sym: str, t: int, q: int, bid: float, ask: float) -> dict[str, Any]:
    return {
        "ev": "Q",
        "sym": sym,
        "bx": 1,
        "bp": bid,
        "bs": 100,
        "ax": 2,
        "ap": ask,
        "as": 300,
        "t": t,
        "q": q,
    }


def test_a_polygon_trade_carries_its_tickers_latest_quote_and_a_stable_id() -> None:
    book = PolygonBook(publish_quotes=False)
    t = 1_795_185_000_000  # 2026-11-20T14:30:00Z
    first = book.rows(_trade("BACpB", t, 5))[0]
    assert "bid" not in first and first["symbol"] == "BAC.PB" and first["provider_symbol"] == "BACpB"
    assert book.rows(_pquote("BACpB", t + 1, 6, 24.8, 24.9)) == []  # a quote only updates the book
    row = book.rows(_trade("BACpB", t + 2, 7, 24.85))[0]
    assert (row["price"], row["volume"], row["bid"], row["ask"]) == (24.85, 200, 24.8, 24.9)
    assert row["event_id"] == "polygon:T:BACpB:20261120:7"
    assert PolygonBook(False).rows(_trade("BACpB", t + 2, 7, 24.85))[0]["event_id"] == row["event_id"]
    record = contract_record(row)
    assert record.key == b"BAC.PB" and record.event_time == "2026-11-20T14:30:00.002Z"
    assert check_quote_line(record.value, _silver_rules()) is None


def test_polygon_quotes_become_rows_only_when_asked_and_never_one_sided() -> None:
    book = PolygonBook(publish_quotes=True)
    rows = book.rows(_pquote("AAPL", 1_795_185_000_000, 9, 228.0, 228.2))
    assert [(r["price"], r["volume"], r["kind"]) for r in rows] == [(228.1, 0, "quote")]
    assert book.rows(_pquote("AAPL", 1_795_703_400_001, 10, 0, 228.2)) == []


def test_polygon_ids_use_the_new_york_session_date_across_utc_midnight() -> None:
    after_hours = int(datetime(2026, 11, 21, 0, 30, tzinfo=UTC).timestamp() * 1000)  # 19:30 in New York
    assert session_date(after_hours) == "20261120"


def test_an_unmappable_polygon_ticker_is_published_as_spelled_so_silver_quarantines_it() -> None:
    row = PolygonBook(False).rows(_trade("X:BTCUSD", 1_795_185_000_000, 1))[0]
    assert row["symbol"] == "X:BTCUSD"
    assert check_quote_line(contract_record(row).value, _silver_rules()) == "expectations: symbol_in_universe"


def test_yahoo_updates_get_a_volume_and_keep_their_id_when_resent() -> None:
    quotes = YahooQuotes({"ES=F": "ES1!", "BRK-B": "BRK.B"})
    base = {"id": "ES=F", "price": 6012.25, "time": "1795185000000", "day_volume": "50000", "market_hours": 1}
    first = quotes.from_stream(base)
    assert first is not None and first["volume"] == 0 and first["symbol"] == "ES1!"
    second = quotes.from_stream({**base, "time": "1795185000100", "day_volume": "50040"})
    assert second is not None and second["volume"] == 40
    new_day = quotes.from_stream({**base, "time": "1795271400000", "day_volume": "12"})
    assert new_day is not None and new_day["volume"] == 0  # the day's count restarted
    brk = quotes.from_stream({"id": "BRK-B", "price": 471.1, "time": "1795185000000", "last_size": "300"})
    assert brk is not None and brk["volume"] == 300 and brk["market_hours"] == "pre-market"  # 0 is left out
    resent = YahooQuotes({"ES=F": "ES1!"}).from_stream(
        {**base, "time": "1795185000100", "day_volume": "50040"}
    )
    assert resent is not None and resent["event_id"] == second["event_id"]
    assert quotes.from_stream({"id": "ES=F", "time": "1795185000000"}) is None  # no price: no quote


def test_chart_trading_periods_decide_whether_polling_is_worth_it() -> None:
    meta = {"currentTradingPeriod": {"pre": {"start": 100, "end": 200}, "post": {"start": 300, "end": 400}}}
    assert chart_market_open(meta, 150) and chart_market_open(meta, 399)
    assert not chart_market_open(meta, 99) and not chart_market_open(meta, 400)
    assert chart_market_open({}, 0)  # no schedule (crypto): always


def test_us_market_hours_by_the_clock() -> None:
    saturday = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    state = us_equity_state(saturday)
    assert not state.is_open and state.next_open == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Mon 04:00 ET
    early = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # 03:00 in New York
    assert us_equity_state(early).next_open == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert us_equity_state(datetime(2026, 11, 20, 15, 0, tzinfo=UTC)).session == "regular"
    assert us_equity_state(datetime(2026, 11, 20, 10, 0, tzinfo=UTC)).session == "pre-market"
    regular_only = us_equity_state(datetime(2026, 11, 20, 10, 0, tzinfo=UTC), extended_hours=False)
    assert not regular_only.is_open and regular_only.next_open == datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(1, 8, jitter=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next_delay() == 1
    assert 1.0 <= Backoff(1, 8).next_delay() <= 1.2  # jitter: up to 20% more


def test_recent_ids_forget_the_oldest_beyond_capacity() -> None:
    recent = RecentIds(2)
    # "a" seen again is kept (most recent); "c" then pushes out "b"
    assert [recent.seen(i) for i in ("a", "b", "a", "c", "b")] == [False, False, True, False, False]


class _SlowKafka:
    """A send that waits until released: Kafka being slow, as the feed sees it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[bytes] = []

    def send(self, record: FeedRecord, on_ok: Any, on_error: Any) -> None:
        self.release.wait()
        self.sent.append(record.value)
        (on_error if record.value == b"refused" else on_ok)("refused by the broker")


def _record(n: int | str) -> FeedRecord:
    return FeedRecord(key=b"K", value=str(n).encode(), event_id=f"id-{n}")


def test_a_slow_kafka_holds_the_provider_back_with_memory_bounded() -> None:
    kafka = _SlowKafka()
    feed = KafkaFeed("test", kafka.send, lambda: None, buffer_records=5, say=lambda _: None)
    feed.start()
    handed: list[int] = []

    def provider() -> None:
        for n in range(50):
            feed.publish(_record(n))
            handed.append(n)

    thread = threading.Thread(target=provider, daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and len(handed) <= 5 + 1  # the buffer, and the one being sent
    kafka.release.set()
    thread.join(10)
    feed.publish(_record(3))  # a resend: dropped by its id
    feed.close(timeout_s=10)
    assert kafka.sent == [str(n).encode() for n in range(50)]
    assert (feed.tally.published, feed.tally.duplicates, feed.tally.failed) == (50, 1, 0)
    assert "50 published" in feed.progress_line() and "1 resent" in feed.progress_line()


def test_a_stop_releases_a_provider_blocked_on_a_full_buffer() -> None:
    kafka = _SlowKafka()
    feed = KafkaFeed("test", kafka.send, lambda: None, buffer_records=1, say=lambda _: None)
    feed.start()
    outcome: list[str] = []

    def provider() -> None:
        try:
            for n in range(10):
                feed.publish(_record(n))
        except FeedStopped:
            outcome.append("stopped")

    thread = threading.Thread(target=provider, daemon=True)
    thread.start()
    time.sleep(0.5)
    feed.stop()
    thread.join(5)
    assert outcome == ["stopped"]
    kafka.release.set()
    feed.close(timeout_s=10)
    assert feed.tally.published == len(kafka.sent) == 2  # the one in send() and the one buffered


def test_a_close_that_kafka_does_not_let_finish_writes_the_buffer_to_the_unsent_file(tmp_path: Path) -> None:
    kafka = _SlowKafka()  # never released: Kafka takes nothing
    unsent = tmp_path / "unsent.jsonl"
    feed = KafkaFeed(
        "test", kafka.send, lambda: None, buffer_records=10, unsent_path=unsent, say=lambda _: None
    )
    feed.start()
    for n in range(4):
        feed.publish(_record(n))
    feed.close(timeout_s=1)
    assert unsent.read_bytes() == b"1\n2\n3\n"  # "0" is in send(), which reports it itself
    assert feed.tally.noted and "did not take the buffered quotes" in (feed.tally.first_error or "")
    kafka.release.set()


def test_quotes_kafka_refused_are_written_to_an_unsent_file(tmp_path: Path) -> None:
    kafka = _SlowKafka()
    kafka.release.set()
    unsent = tmp_path / "unsent.jsonl"
    feed = KafkaFeed(
        "test", kafka.send, lambda: None, buffer_records=10, unsent_path=unsent, say=lambda _: None
    )
    feed.start()
    for value in ("a", "refused", "b"):
        feed.publish(FeedRecord(key=None, value=value.encode()))
    feed.close(timeout_s=10)
    assert (feed.tally.published, feed.tally.failed) == (2, 1)
    assert unsent.read_bytes() == b"refused\n"
    result = IngestResult(published=2, failed=1, duplicates=0, reconnects=0)
    assert result.exit_code == 1
    assert IngestResult(0, 0, 0, 0, error="bad key", fatal=True).exit_code == 2
    assert IngestResult(5, 0, 0, 3).exit_code == 0


def test_providers_are_found_by_entry_point_and_an_unknown_one_is_named() -> None:
    assert {"polygon", "yfinance", "replay"} <= set(available_providers())
    assert callable(load_provider("polygon"))
    with pytest.raises(
        ProviderError, match=r"no provider 'bloomberg' is installed .*polygon.*replay.*yfinance"
    ):
        load_provider("bloomberg")


class _RecordingFeed:
    """A Feed that keeps what it is given (for providers driven directly)."""

    def __init__(self) -> None:
        self.records: list[FeedRecord] = []
        self.lines: list[str] = []
        self.messages = 0

    def publish(self, record: FeedRecord) -> None:
        self.records.append(record)

    def received(self, count: int = 1) -> None:
        self.messages += count

    def stopping(self) -> bool:
        return False

    def wait(self, seconds: float) -> None:
        raise FeedStopped

    def connected(self, detail: str) -> None:
        self.lines.append(f"connected {detail}")

    def disconnected(self, reason: str, retry_in_s: float) -> None:
        self.lines.append(f"disconnected {reason}")

    def market(self, is_open: bool, detail: str, next_open: datetime | None = None) -> None:
        self.lines.append(f"market {is_open}")

    def say(self, message: str) -> None:
        self.lines.append(message)


def _chart(price: float, stamp: int, volume: int, open_now: bool = True) -> dict[str, Any]:
    now = int(time.time())
    start, end = (now - 3600, now + 3600) if open_now else (now - 7200, now - 3600)
    return {
        "currency": "USD",
        "symbol": "X",
        "exchangeName": "NMS",
        "instrumentType": "EQUITY",
        "exchangeTimezoneName": "America/New_York",
        "timezone": "EST",
        "gmtoffset": -18000,
        "regularMarketPrice": price,
        "regularMarketTime": stamp,
        "regularMarketVolume": volume,
        "priceHint": 2,
        "dataGranularity": "1m",
        "range": "1d",
        "validRanges": ["1d", "5d"],
        "currentTradingPeriod": {
            "pre": {"start": start, "end": start + 1, "timezone": "EST", "gmtoffset": -18000},
            "regular": {"start": start + 1, "end": end - 1, "timezone": "EST", "gmtoffset": -18000},
            "post": {"start": end - 1, "end": end, "timezone": "EST", "gmtoffset": -18000},
        },
    }


@pytest.fixture
def yfinance_cache(tmp_path: Path) -> Any:
    """yfinance's caches in a temporary folder, and its process-wide error setting restored afterwards."""
    import yfinance

    hidden = yfinance.config.debug.hide_exceptions
    yfinance.set_tz_cache_location(str(tmp_path / "yfinance-cache"))
    yield yfinance
    yfinance.config.debug.hide_exceptions = hidden


def test_yfinance_polling_against_a_local_chart_server(yfinance_cache: Any) -> None:
    """The polling layer through yfinance itself (its session pointed at a local server speaking Yahoo's
    chart endpoint): a new market time is published once, an unchanged one is not, a closed market is
    reported, and a symbol Yahoo does not know is a clear error."""
    from market_feeds import LocalYahooSession, YahooChartServer

    stamp = int(time.time()) - 30
    server = YahooChartServer({"AAPL": _chart(231.5, stamp, 1000), "BRK-B": _chart(471.1, stamp, 50, False)})
    try:
        settings = load_settings(overrides=["ingest.yfinance.mode=poll"])
        session = LocalYahooSession(server.url)
        provider = YFinanceProvider(settings, ["AAPL", "BRK-B"], {"session": session})
        feed, last_time = _RecordingFeed(), {}
        assert provider.poll_once(feed, last_time) is True  # AAPL's market is open
        first = [json.loads(record.value) for record in feed.records]
        assert [(q["symbol"], q["price"], q["volume"]) for q in first] == [
            ("AAPL", 231.5, 0),
            ("BRK.B", 471.1, 0),
        ]
        assert provider.poll_once(feed, last_time) is True and len(feed.records) == 2  # unchanged: not again
        server.charts["AAPL"] = _chart(231.7, stamp + 5, 1300)
        provider.poll_once(feed, last_time)
        latest = json.loads(feed.records[-1].value)
        assert (latest["price"], latest["volume"], len(feed.records)) == (231.7, 300, 3)
        server.failing["AAPL"] = 503  # Yahoo having a bad minute is not an unknown symbol
        assert provider.poll_once(feed, last_time) is False and len(feed.records) == 3
        del server.failing["AAPL"]
        server.charts["AAPL"] = _chart(231.7, stamp + 5, 1300, open_now=False)
        assert provider.poll_once(feed, last_time) is False  # every market closed: poll rarely
        unknown = YFinanceProvider(settings, ["ZZZZQ"], {"session": session})
        with pytest.raises(UnknownSymbolError, match="Yahoo does not know ZZZZQ"):
            unknown.poll_once(_RecordingFeed(), {})
    finally:
        server.close()


class _FakeSocket:
    """What PolygonProvider._read needs of a connection: frames, then the connection closing."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames

    def recv(self, timeout: float | None = None) -> str:
        if not self.frames:
            from websockets.exceptions import ConnectionClosedError

            raise ConnectionClosedError(None, None)
        return self.frames.pop(0)


def test_a_polygon_frame_or_event_we_cannot_read_is_said_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.exceptions import ConnectionClosed

    from surveillance.providers.polygon import PolygonProvider

    monkeypatch.setenv("POLYGON_API_KEY", "k")
    settings = load_settings(overrides=["ingest.polygon.market_hours=always"])
    provider = PolygonProvider(settings, ["AAPL"], {})
    good = _trade("AAPL", 1_795_185_000_000, 3)
    frames = [
        "not json",
        json.dumps([{**_trade("AAPL", 1_795_185_000_000, 1), "p": None}, {"ev": "T", "sym": "AAPL"}]),
        json.dumps([good]),
    ]
    feed = _RecordingFeed()
    with pytest.raises(ConnectionClosed):
        provider._read(_FakeSocket(frames), feed)
    assert [json.loads(record.value)["event_id"] for record in feed.records] == ["polygon:T:AAPL:20261120:3"]
    assert sum("not JSON" in line for line in feed.lines) == 1
    assert sum("an event we cannot read" in line for line in feed.lines) == 2


def test_a_plugin_gets_its_own_settings_and_the_command_lines_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from surveillance.providers import run

    seen: dict[str, Any] = {}

    def factory(settings: Any, symbols: list[str], options: dict[str, Any]) -> Any:
        seen.update(symbols=symbols, options=options)
        raise ProviderError("stop here (before Kafka)")

    monkeypatch.setattr(run, "load_provider", lambda name: factory)
    settings = load_settings(
        overrides=["ingest.plugins.myvendor.endpoint=tcp://feed:9000", "ingest.plugins.myvendor.depth=5"]
    )
    result = run.run_ingest(settings, "myvendor", ["AAA"], options={"depth": 10})
    assert seen == {"symbols": ["AAA"], "options": {"endpoint": "tcp://feed:9000", "depth": 10}}
    assert result.exit_code == 2 and result.error == "stop here (before Kafka)"
