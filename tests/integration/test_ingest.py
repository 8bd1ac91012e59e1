"""`surveil ingest` end to end, without the internet: each network provider against a local server speaking
its documented protocol (tests/market_feeds.py), into the real local Kafka broker, then `stream --once`
into silver, read back with delta-rs.

What only recorded protocol messages can show (the providers' real servers are out of reach here): that
Polygon and Yahoo still speak as documented; the fixtures follow their documentation and yfinance's own
protobuf class.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from api_server import free_port
from deltalake import DeltaTable
from kafka import KafkaConsumer
from market_feeds import PolygonStandIn, YahooStreamer, pricing_frame
from stream_process import stream_overrides

from surveillance.config import Settings
from surveillance.ingestion.contract import check_quote_line
from surveillance.providers.polygon import session_date

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration

POLYGON_SESSION = "session_with_drop_and_resend.json"


class Ingest:
    """`surveil ingest` as its own process, as an operator runs it; what it prints goes to a file."""

    def __init__(self, settings: Settings, *args: str, sets: tuple[str, ...] = (), env: dict | None = None):
        overrides = [*stream_overrides(settings), "ingest.progress_interval=1 second", *sets]
        sets_args = [arg for value in overrides for arg in ("--set", value)]
        self.log = Path(settings.state_dir) / f"ingest-{uuid.uuid4().hex[:8]}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "surveillance.cli", *sets_args, "ingest", *args],
            env={**os.environ, **(env or {})},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Its exit code (waiting for it to end by itself) and everything it printed."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(
                f"ingest did not end within {timeout:.0f} s:\n{self.output[-4000:]}"
            ) from None
        return code, self.output

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM, then its exit code and everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"ingest exited {self.process.returncode} before {what}:\n{self.output[-4000:]}"
                )
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.output[-4000:]}")
            time.sleep(0.2)


def _topic(settings: Settings) -> list[tuple[str | None, dict]]:
    consumer = KafkaConsumer(
        settings.kafka.topics.quotes,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        **settings.kafka.client_options(),
    )
    records = [(m.key.decode() if m.key else None, json.loads(m.value)) for m in consumer]
    consumer.close()
    return records


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _at(server: PolygonStandIn, *more: str) -> tuple[str, ...]:
    """Settings that point the polygon provider at the stand-in (and metrics at a free port)."""
    return (
        f"ingest.polygon.url={server.url}/stocks",
        f"ingest.polygon.rest_url={server.rest.url}",
        f"ingest.metrics_port={free_port()}",
        *more,
    )


def _expected_polygon_trades(session: dict) -> dict[str, dict]:
    """Every trade of the recorded session by its event_id, with the bid/ask of its ticker's latest quote."""
    trades: dict[str, dict] = {}
    for connection in session["connections"]:
        book: dict[str, tuple[float, float]] = {}
        for frame in connection["frames"]:
            for event in frame:
                if event["ev"] == "Q":
                    book[event["sym"]] = (event["bp"], event["ap"])
                elif event["ev"] == "T":
                    event_id = f"polygon:T:{event['sym']}:{session_date(event['t'])}:{event['q']}"
                    trades.setdefault(event_id, {**event, "book": book.get(event["sym"])})
    return trades


def test_polygon_feed_through_a_drop_and_a_resend_lands_each_trade_once_in_silver(pipeline: Pipeline) -> None:
    """The recorded Polygon session: authentication, subscription, trades and quotes, a status error, the
    connection cut mid-stream, a reconnect with backoff and resubscription, the last frames resent. Each
    trade reaches the topic once, keyed by our symbol (BACpB -> BAC.PB), with its quote's bid/ask, passes
    the default universe, and lands in silver once; the progress line and the metrics tell the story."""
    settings, metrics_port = pipeline.settings, free_port()
    with PolygonStandIn.from_fixture(POLYGON_SESSION) as server:
        ingest = Ingest(
            settings,
            "--provider",
            "polygon",
            "--symbols",
            "AAPL,BRK.B,BACpB",
            # the later metrics port wins over the one _at picks
            sets=_at(
                server, "ingest.polygon.reconnect.initial=1 second", f"ingest.metrics_port={metrics_port}"
            ),
            env={"POLYGON_API_KEY": server.session["api_key"]},
        )
        expected = _expected_polygon_trades(server.session)
        ingest.wait_for(server.sent_all.is_set, 60, "second connection served")
        published = f'surveil_ingest_published_total{{provider="polygon"}} {len(expected)}.0'
        ingest.wait_for(lambda: published in _scrape(metrics_port), 30, "every trade acknowledged")
        metrics = _scrape(metrics_port)
        code, output = ingest.stop()
        subscriptions = list(server.subscriptions)
    assert code == 0, output
    assert len(subscriptions) == 2 and subscriptions[0] == subscriptions[1]  # resubscribed after the drop
    assert "T.AAPL" in subscriptions[0] and "Q.BACpB" in subscriptions[0]
    assert "disconnected" in output and "reconnecting in" in output and "status error: Invalid JSON" in output
    assert "msg/s" in output and "reconnects 1" in output and "last " in output
    assert 'surveil_ingest_reconnects_total{provider="polygon"} 1.0' in metrics
    assert 'surveil_ingest_duplicates_dropped_total{provider="polygon"}' in metrics

    records = _topic(settings)
    ids = [value["event_id"] for _, value in records]
    assert sorted(ids) == sorted(expected), "each trade once on the topic (resent ones dropped)"
    rules = settings.quality.suites.silver_quotes
    value_rules = {name: spec.model_dump() for name, spec in rules.items()}
    for key, value in records:
        trade = expected[value["event_id"]]
        assert key == value["symbol"] == {"BACpB": "BAC.PB"}.get(trade["sym"], trade["sym"])
        assert (value["price"], value["volume"]) == (trade["p"], trade["s"])
        assert (value["bid"], value["ask"]) == trade["book"]
        assert check_quote_line(json.dumps(value), value_rules) is None, value

    pipeline.run_once()
    silver = DeltaTable(pipeline.locations["silver_quotes"]).to_pandas()
    quarantine = DeltaTable(pipeline.locations["quarantine_quotes"]).to_pandas()
    assert sorted(silver["event_id"]) == sorted(expected) and quarantine.empty
    assert set(silver["symbol"]) == {"AAPL", "BRK.B", "BAC.PB"}


def test_polygon_bad_key_is_a_clear_error_not_a_reconnect_loop(pipeline: Pipeline) -> None:
    with PolygonStandIn.from_fixture(POLYGON_SESSION) as server:
        code, output = Ingest(
            pipeline.settings,
            "--provider",
            "polygon",
            "--symbols",
            "AAPL",
            sets=_at(server, "ingest.polygon.check_symbols=false"),
            env={"POLYGON_API_KEY": "wrong-key"},
        ).finish()
        connections = server.connections
    assert code == 2, output
    assert "Polygon refused the API key: authentication failed" in output and "Traceback" not in output
    assert connections == 1


def test_polygon_unknown_symbol_and_missing_key_are_clear_errors(pipeline: Pipeline) -> None:
    with PolygonStandIn.from_fixture(POLYGON_SESSION) as server:
        sets = _at(server)
        unknown = Ingest(
            pipeline.settings,
            "--provider",
            "polygon",
            "--symbols",
            "AAPL,ZZZZQ",
            sets=sets,
            env={"POLYGON_API_KEY": server.session["api_key"]},
        ).finish()
        no_key = Ingest(
            pipeline.settings,
            "--provider",
            "polygon",
            "--symbols",
            "AAPL",
            sets=sets,
            env={"POLYGON_API_KEY": ""},
        ).finish()
        unmappable = Ingest(
            pipeline.settings,
            "--provider",
            "polygon",
            "--symbols",
            "AAPL,brk b",
            sets=sets,
            env={"POLYGON_API_KEY": server.session["api_key"]},
        ).finish()
        connections = server.connections
    assert unknown[0] == 2 and "Polygon does not know ZZZZQ" in unknown[1], unknown[1]
    assert no_key[0] == 2 and "set the environment variable POLYGON_API_KEY" in no_key[1], no_key[1]
    assert unmappable[0] == 2 and "'brk b' is not a stocks ticker we map" in unmappable[1], unmappable[1]
    assert all("Traceback" not in output for _, output in (unknown, no_key, unmappable))
    assert connections == 0


def test_polygon_outside_market_hours_says_so_and_waits_without_connecting(pipeline: Pipeline) -> None:
    with PolygonStandIn.from_fixture(POLYGON_SESSION, market="closed") as server:
        ingest = Ingest(
            pipeline.settings,
            "--provider",
            "polygon",
            "--symbols",
            "AAPL",
            sets=_at(server),
            env={"POLYGON_API_KEY": server.session["api_key"]},
        )
        ingest.wait_for(lambda: "outside market hours" in ingest.output, 60, "the market closed")
        time.sleep(5)
        status_calls = sum(call.startswith("/v1/marketstatus") for call in server.rest_calls)
        code, output = ingest.stop()
        connections = server.connections
    assert code == 0, output
    assert "outside market hours (Polygon market status: closed)" in output and "waiting" in output
    assert connections == 0 and status_calls == 1  # asked once; the next check is minutes away


# Yahoo updates: (symbol, price, ms after the start, exchange, quote type, market hours, other fields).
YAHOO_UPDATES = [
    ("BTC-USD", 94745.08, 0, "CCC", 41, 1, {"currency": "USD", "day_volume": 59_712_028_672}),
    ("EURUSD=X", 1.0842, 1, "CCY", 14, 1, {}),
    ("BRK-B", 471.1, 2, "NYQ", 8, 1, {"day_volume": 1_000, "last_size": 100, "bid": 471.05, "ask": 471.15}),
    ("ES=F", 6012.25, 3, "CME", 18, 1, {"day_volume": 50_000}),
    ("VOD.L", 71.2, 4, "LSE", 8, 2, {"day_volume": 9_000}),
    ("BTC-USD", 94750.0, 5, "CCC", 41, 1, {"currency": "USD", "day_volume": 59_712_030_000}),
    ("ES=F", 6012.5, 6, "CME", 18, 1, {"day_volume": 50_040}),
    # pre-market: market_hours 0, which Yahoo's protobuf leaves out
    ("BRK-B", 471.2, 7, "NYQ", 8, 0, {"day_volume": 1_300, "last_size": 300, "bid": 471.15, "ask": 471.25}),
]


def _yahoo_frames(start_ms: int) -> tuple[list[str], list[str]]:
    """The first connection's six updates; the second resends the last two, then two new ones."""
    frames = [
        pricing_frame(id=symbol, price=price, time=start_ms + offset, exchange=exchange, quote_type=kind,
                      market_hours=hours, **fields)
        for symbol, price, offset, exchange, kind, hours, fields in YAHOO_UPDATES
    ]  # fmt: skip
    first = frames[:6]
    return first, [*first[-2:], *frames[6:]]


def test_yfinance_stream_of_yahoo_symbols_reaches_silver_in_our_symbology(pipeline: Pipeline) -> None:
    """yfinance's own WebSocket client against a local streamer sending Yahoo's protobuf frames; the
    streamer closes the first connection, the provider reconnects and the resent updates are dropped.
    Yahoo's BTC-USD, EURUSD=X, BRK-B, ES=F and VOD.L reach silver as BTC-USD, EUR-USD, BRK.B, ES1!
    and VOD:XLON."""
    settings = pipeline.settings
    start_ms = int(time.time() * 1000) - 5_000
    first, second = _yahoo_frames(start_ms)
    with YahooStreamer([first, second]) as streamer:
        ingest = Ingest(
            settings,
            "--provider",
            "yfinance",
            "--symbols",
            "BTC-USD,EURUSD=X,BRK-B,ES=F,VOD.L",
            sets=(
                f"ingest.yfinance.url={streamer.url}/?version=2",
                "ingest.yfinance.mode=stream",
                "ingest.yfinance.check_symbols=false",
                "ingest.yfinance.reconnect.initial=1 second",
                f"ingest.metrics_port={free_port()}",
            ),
        )
        ingest.wait_for(streamer.sent_all.is_set, 60, "second connection served")
        ingest.wait_for(lambda: "8 published" in ingest.output, 30, "eight updates acknowledged")
        time.sleep(1)
        code, output = ingest.stop()
        subscribed = list(streamer.subscribed)
    assert code == 0, output
    assert len(subscribed) == 2 and sorted(subscribed[0]) == sorted(subscribed[1])
    records = _topic(settings)
    assert len(records) == 8, records  # 6 + 4 - 2 resent
    by_time = {value["event_time"]: value for _, value in records}
    assert len(by_time) == 8
    symbols = {key for key, _ in records}
    assert symbols == {"BTC-USD", "EUR-USD", "BRK.B", "ES1!", "VOD:XLON"}
    brk = sorted((v for _, v in records if v["symbol"] == "BRK.B"), key=lambda v: v["event_time"])
    assert [(v["volume"], v["bid"], v["ask"]) for v in brk] == [(100, 471.05, 471.15), (300, 471.15, 471.25)]
    assert brk[1]["market_hours"] == "pre-market"
    es = sorted((v for _, v in records if v["symbol"] == "ES1!"), key=lambda v: v["event_time"])
    assert [v["volume"] for v in es] == [0, 40]  # the day volume's growth

    pipeline.run_once()
    silver = DeltaTable(pipeline.locations["silver_quotes"]).to_pandas()
    quarantine = DeltaTable(pipeline.locations["quarantine_quotes"]).to_pandas()
    assert quarantine.empty, quarantine[["reason", "raw_value"]].to_string()
    assert sorted(silver["event_id"]) == sorted(v["event_id"] for _, v in records)
    assert set(silver["symbol"]) == symbols


def test_replay_provider_sends_a_file_and_ends(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "event_id": f"r{n}",
                "symbol": "ACME",
                "event_time": "2026-11-20T14:30:00Z",
                "price": 10.0 + n,
                "volume": 5,
            }
        )
        for n in range(50)
    ]
    source = tmp_path / "quotes.jsonl"
    source.write_text("\n".join([*lines[:25], "", "not json", *lines[25:]]) + "\n")
    code, output = Ingest(
        pipeline.settings,
        "--provider",
        "replay",
        "--file",
        str(source),
        sets=(f"ingest.metrics_port={free_port()}",),
    ).finish(120)
    assert code == 0, output
    assert "1 blank line(s) skipped" in output and "51 published" in output
    records = _topic_raw(pipeline.settings)
    assert sorted(value for _, value in records) == sorted([*lines, "not json"])  # byte for byte
    assert {key for key, value in records if value != "not json"} == {"ACME"}


def _topic_raw(settings: Settings) -> list[tuple[str | None, str]]:
    consumer = KafkaConsumer(
        settings.kafka.topics.quotes,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        **settings.kafka.client_options(),
    )
    records = sorted(consumer, key=lambda m: (m.partition, m.offset))
    consumer.close()
    return [(m.key.decode() if m.key else None, m.value.decode()) for m in records]
