"""Polygon.io's (Massive's) WebSocket stocks feed as a provider.

The protocol (https://polygon.io/docs/websocket/stocks/overview): on connect the server says
``[{"ev":"status","status":"connected",...}]``; we send ``{"action":"auth","params":KEY}`` and expect
``auth_success`` (``auth_failed`` is final: a bad key or a plan without WebSocket access), then
``{"action":"subscribe","params":"T.AAPL,Q.AAPL"}``. Every frame is a JSON array of events:

- ``T`` (trade): ``sym, x, i, z, p, s, c, t (Unix ms), q`` -> a quote row: price ``p``, volume ``s``, and
  the bid/ask of the symbol's latest ``Q``;
- ``Q`` (quote): ``sym, bx, bp, bs, ax, ap, as, c, t, q`` -> updates the symbol's bid/ask (a row of its own,
  price = mid and volume 0, only with ``publish_quotes``);
- ``status``: subscription acks, errors, and the server's reasons for closing (``max_connections`` is
  final: another client uses the key; ``slow_consumer`` and ``force_disconnect`` are reconnected).

The event_id is ``polygon:<T|Q>:<ticker>:<New York date>:<q>``: ``q`` is unique per ticker within a
session (Polygon resets it daily), so a message resent after a reconnect keeps its id. A dropped
connection is retried with backoff and the subscriptions are sent again. Outside market hours (Polygon's
market status, holidays included; the clock if that cannot be asked) it disconnects and waits.

Symbology (:mod:`surveillance.providers.symbology`): tickers are Polygon's, case-sensitive (``BRK.B``, a
preferred ``BACpB``); ours are the same but ``BACpB`` -> ``BAC.PB``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from surveillance.config import Settings, interval_seconds
from surveillance.providers.base import (
    AuthenticationError,
    Backoff,
    Feed,
    ProviderError,
    UnknownSymbolError,
    contract_record,
    stable_event_id,
)
from surveillance.providers.market_hours import NEW_YORK, us_equity_state
from surveillance.providers.symbology import SymbolError, polygon_to_ours

_FINAL_STATUSES = {"max_connections"}  # another connection uses this key: reconnecting would fight it
_CLOSING_STATUSES = {"force_disconnect", "slow_consumer", "disconnected"}
_READ_TIMEOUT_S = 1.0  # how often the reader looks up from the socket (stop, market close)


def session_date(epoch_ms: int) -> str:
    """The trading session's date (New York) of a Polygon timestamp: its sequence numbers reset daily."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).astimezone(NEW_YORK).strftime("%Y%m%d")


def event_time(epoch_ms: int) -> datetime:
    """A Polygon timestamp (Unix milliseconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


class PolygonBook:
    """Each ticker's latest bid and ask (from ``Q`` events), and the rows its events become."""

    def __init__(self, publish_quotes: bool) -> None:
        self.publish_quotes = publish_quotes
        self._quotes: dict[str, tuple[float, float]] = {}

    def rows(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The contract quotes of a ``T`` or ``Q`` event (none for a quote that only updates the book)."""
        kind, ticker = event.get("ev"), str(event.get("sym", ""))
        try:
            symbol = polygon_to_ours(ticker)
        except SymbolError:
            symbol = ticker  # published as Polygon spells it: silver quarantines it with the reason
        if kind == "Q":
            bid, ask = float(event.get("bp") or 0), float(event.get("ap") or 0)
            self._quotes[ticker] = (bid, ask)
            if not (self.publish_quotes and bid > 0 and ask > 0):
                return []
            row = self._base(event, "Q", ticker, symbol)
            row.update(
                price=(bid + ask) / 2,
                volume=0,
                bid=bid,
                ask=ask,
                bid_size=event.get("bs"),
                ask_size=event.get("as"),
            )
            return [row]
        if kind == "T":
            row = self._base(event, "T", ticker, symbol)
            row.update(
                price=event["p"], volume=event.get("s", 0), exchange=event.get("x"), trade_id=event.get("i")
            )
            if event.get("c"):
                row["conditions"] = event["c"]
            bid, ask = self._quotes.get(ticker, (0.0, 0.0))
            if bid > 0 and ask > 0:
                row.update(bid=bid, ask=ask)
            return [row]
        return []

    @staticmethod
    def _base(event: Mapping[str, Any], kind: str, ticker: str, symbol: str) -> dict[str, Any]:
        stamp = int(event["t"])
        sequence = event.get("q")
        if sequence is None:  # not documented to happen; the exchange's ids then keep the id stable
            sequence = f"{event.get('x', '')}-{event.get('trfi', '')}-{event.get('i', '')}-{stamp}"
        return {
            "event_id": stable_event_id("polygon", kind, ticker, session_date(stamp), sequence),
            "symbol": symbol,
            "event_time": event_time(stamp),
            "source": "polygon",
            "kind": "trade" if kind == "T" else "quote",
            "provider_symbol": ticker,
            "sequence": event.get("q"),
        }


class PolygonProvider:
    """Trades (with the latest quote's bid/ask) from Polygon's WebSocket, reconnecting until stopped."""

    name = "polygon"

    def __init__(self, settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> None:
        self.settings = settings.ingest.polygon
        if not symbols:
            raise UnknownSymbolError("polygon needs --symbols: Polygon tickers such as AAPL,MSFT,BRK.B")
        self.tickers = [symbol.strip() for symbol in symbols if symbol.strip()]
        for ticker in self.tickers:
            if ticker != "*":
                try:
                    polygon_to_ours(ticker)
                except SymbolError as exc:
                    raise UnknownSymbolError(str(exc)) from None
        self.api_key = os.environ.get(self.settings.api_key_env, "").strip()
        if not self.api_key:
            raise AuthenticationError(
                f"no Polygon.io API key: set the environment variable {self.settings.api_key_env}"
            )
        self.book = PolygonBook(self.settings.publish_quotes)
        self.backoff = Backoff(
            interval_seconds(self.settings.reconnect.initial), interval_seconds(self.settings.reconnect.max)
        )
        self._market_checked_at = float("-inf")
        self._market_is_open = True
        self._status_failed = False

    # -- REST: symbols and market status --------------------------------------------------------------

    def _get(self, path: str) -> httpx.Response:
        return httpx.get(
            f"{self.settings.rest_url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10.0,
        )

    def check_symbols(self, feed: Feed) -> None:
        """Ask the reference API about each ticker: unknown ones are an error (the feed would stay silent)."""
        unknown = []
        for ticker in self.tickers:
            if ticker == "*":
                continue
            try:
                response = self._get(f"/v3/reference/tickers/{ticker}")
            except httpx.HTTPError as exc:
                feed.say(
                    f"could not check the tickers at {self.settings.rest_url} ({exc}); subscribing as given"
                )
                return
            if response.status_code in (401, 403):
                raise AuthenticationError(f"Polygon refused the API key: {_message(response)}")
            if response.status_code == 404:
                unknown.append(ticker)
            elif response.status_code != 200:
                feed.say(
                    f"the ticker check answered {response.status_code}: {_message(response)}; subscribing"
                )
                return
        if unknown:
            raise UnknownSymbolError(
                f"Polygon does not know {', '.join(unknown)} (tickers are case-sensitive: BRK.B, BACpB)"
            )

    def market_open(self, feed: Feed, now: float | None = None) -> bool:
        """Whether the market is open, asked at most every ``market_check_interval`` (and said on change)."""
        now = time.monotonic() if now is None else now
        if now - self._market_checked_at < interval_seconds(self.settings.market_check_interval):
            return self._market_is_open
        self._market_checked_at = now
        mode = self.settings.market_hours
        if mode == "always":
            self._market_is_open = True
            return True
        clock = us_equity_state(datetime.now(UTC), self.settings.extended_hours)
        if mode == "status":
            try:
                response = self._get("/v1/marketstatus/now")
                response.raise_for_status()
                market = str(response.json().get("market", ""))
                self._status_failed = False
                is_open = market == "open" or (market == "extended-hours" and self.settings.extended_hours)
                self._market_is_open = is_open
                feed.market(is_open, f"Polygon market status: {market}", None if is_open else clock.next_open)
                return is_open
            except (httpx.HTTPError, ValueError) as exc:
                if not self._status_failed:
                    feed.say(
                        f"market status unavailable ({exc}); going by the clock (US sessions, no holidays)"
                    )
                self._status_failed = True
        self._market_is_open = clock.is_open
        feed.market(clock.is_open, f"US {clock.session} session by the clock", clock.next_open)
        return clock.is_open

    # -- the WebSocket --------------------------------------------------------------------------------

    def run(self, feed: Feed) -> None:
        if self.settings.check_symbols:
            self.check_symbols(feed)
        while True:
            while not self.market_open(feed):
                feed.wait(min(interval_seconds(self.settings.market_check_interval), 60))
            connected_at = None
            try:
                with connect(self.settings.url, open_timeout=15, close_timeout=5, max_size=2**24) as socket:
                    self._handshake(socket, feed)
                    connected_at = time.monotonic()
                    self._read(socket, feed)
                    continue  # the market closed: the loop waits for it to open again
            except InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status != 429:  # a wrong address or a plan without this feed
                    raise ProviderError(
                        f"{self.settings.url} refused the WebSocket upgrade: HTTP {status}"
                    ) from None
                reason = _reason(exc)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, ProviderReconnect) as exc:
                reason = _reason(exc)
            except InvalidURI as exc:
                raise ProviderError(f"ingest.polygon.url is not a WebSocket address: {exc}") from None
            if connected_at is not None and time.monotonic() - connected_at >= self.backoff.maximum:
                self.backoff.reset()  # it held long enough: a fresh drop starts from the first delay
            delay = self.backoff.next_delay()
            feed.disconnected(reason, delay)
            feed.wait(delay)

    def _handshake(self, socket: ClientConnection, feed: Feed) -> None:
        socket.send(json.dumps({"action": "auth", "params": self.api_key}))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                events = _events(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            except ValueError:
                continue  # not JSON: not the answer we wait for
            for event in events:
                feed.received()
                status, message = event.get("status"), event.get("message", "")
                if event.get("ev") != "status" or status in ("connected", "success"):
                    continue
                if status == "auth_success":
                    params = ",".join(
                        f"{channel}.{t}" for t in self.tickers for channel in self.settings.channels
                    )
                    socket.send(json.dumps({"action": "subscribe", "params": params}))
                    feed.connected(f"{self.settings.url}, subscribed to {params}")
                    return
                if status == "auth_failed":
                    raise AuthenticationError(f"Polygon refused the API key: {message}")
                if status in _FINAL_STATUSES:
                    raise ProviderError(f"Polygon closed the connection: {status}: {message}")
                raise ProviderReconnect(f"{status}: {message}")
        raise ProviderReconnect("no authentication answer within 15 s")

    def _read(self, socket: ClientConnection, feed: Feed) -> None:
        while True:
            if not self.market_open(feed):
                feed.say("the market closed: disconnecting until it opens")
                return
            if feed.stopping():
                feed.wait(0)  # raises FeedStopped
            try:
                frame = socket.recv(timeout=_READ_TIMEOUT_S)
            except TimeoutError:
                continue
            try:
                events = _events(frame)
            except ValueError as exc:
                feed.received()
                feed.say(f"a frame that is not JSON ({exc}): {str(frame)[:200]}")
                continue
            for event in events:
                feed.received()
                if event.get("ev") == "status":
                    self._status(event, feed)
                    continue
                try:
                    records = [contract_record(row) for row in self.book.rows(event)]
                except (KeyError, TypeError, ValueError) as exc:
                    feed.say(
                        f"an event we cannot read ({type(exc).__name__}: {exc}): {json.dumps(event)[:200]}"
                    )
                    continue
                for record in records:
                    feed.publish(record)

    def _status(self, event: Mapping[str, Any], feed: Feed) -> None:
        status, message = event.get("status"), event.get("message", "")
        if status == "success":
            return  # a subscription acknowledged (one per topic)
        if status in _FINAL_STATUSES:
            raise ProviderError(f"Polygon closed the connection: {status}: {message}")
        if status in _CLOSING_STATUSES:
            raise ProviderReconnect(f"{status}: {message}")
        feed.say(f"status {status}: {message}")


class ProviderReconnect(Exception):
    """The server said it is closing (slow consumer, forced disconnect): reconnect with backoff."""


def _events(frame: str | bytes) -> list[Mapping[str, Any]]:
    """A frame's events: Polygon sends a JSON array (a lone object is taken as one event)."""
    parsed = json.loads(frame)
    events = parsed if isinstance(parsed, list) else [parsed]
    return [event for event in events if isinstance(event, Mapping)]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        return f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body.get("error") or body.get("status") or body)
    except ValueError:
        return response.text[:200]


def factory(settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> PolygonProvider:
    """The entry point: ``surveil ingest --provider polygon --symbols AAPL,MSFT``."""
    return PolygonProvider(settings, symbols, options)
