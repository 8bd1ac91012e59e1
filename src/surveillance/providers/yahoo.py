"""Yahoo Finance, through the ``yfinance`` package, as a provider.

Two ways in, chosen by ``ingest.yfinance.mode`` (``auto`` takes the first the installed yfinance offers):

- **stream**: yfinance's live ``WebSocket`` (Yahoo's streamer: JSON frames holding a base64 ``PricingData``
  protobuf, which yfinance decodes into a dict: ``id, price, time`` (Unix ms, as text), ``day_volume``,
  ``last_size``, ``bid, ask, bid_size, ask_size``, ``market_hours`` (0 pre, 1 regular, 2 post, 3 extended;
  zero values are left out), ``quote_type``, ``exchange``). Its sync client never reconnects by itself, so
  each connection is a new client, retried with backoff; ``listen`` runs on a thread of its own.
- **poll**: every ``poll_interval`` each symbol's chart metadata (``regularMarketPrice``,
  ``regularMarketTime``, ``regularMarketVolume``, ``currentTradingPeriod``); an unchanged market time is
  not published again. When every symbol's market is closed it asks only every ``closed_poll_interval``.

A quote's volume is the update's ``last_size`` when Yahoo gives one, else the growth of the day's volume
since the symbol's previous update (0 for the first). The event_id is built from Yahoo's symbol, the
update's time, the day's volume and the price: a resent update keeps its id.

Symbology (:func:`surveillance.providers.symbology.yahoo_to_ours`): ``--symbols`` as Yahoo spells them
(``AAPL, BRK-B, VOD.L, BTC-USD, EURUSD=X, ES=F, ^GSPC``); ours are ``AAPL, BRK.B, VOD:XLON, BTC-USD,
EUR-USD, ES1!, ^GSPC``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from surveillance.config import Settings, interval_seconds
from surveillance.providers.base import (
    Backoff,
    Feed,
    FeedStopped,
    ProviderError,
    UnknownSymbolError,
    contract_record,
    stable_event_id,
)
from surveillance.providers.market_hours import us_equity_state
from surveillance.providers.symbology import SymbolError, yahoo_to_ours

MARKET_HOURS = {0: "pre-market", 1: "regular", 2: "post-market", 3: "extended hours"}


def _int(value: Any) -> int | None:
    # yfinance hands 64-bit protobuf fields over as text, and chart times as pandas Timestamps.
    if hasattr(value, "timestamp"):
        return int(value.timestamp())
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class YahooQuotes:
    """Yahoo updates into contract quotes, one symbol's day volume remembered to derive each update's."""

    def __init__(self, symbols: Mapping[str, str]) -> None:
        self.symbols = dict(symbols)  # Yahoo's spelling -> ours
        self._day_volume: dict[str, int] = {}

    def volume(self, yahoo: str, last_size: int | None, day_volume: int | None) -> int:
        """The update's volume: its last trade's size, else the day volume's growth (never negative)."""
        previous = self._day_volume.get(yahoo)
        if day_volume is not None:
            self._day_volume[yahoo] = day_volume
        if last_size is not None and last_size >= 0:
            return last_size
        if day_volume is None or previous is None:
            return 0
        return max(0, day_volume - previous)  # a new day restarts the count

    def from_stream(self, message: Mapping[str, Any]) -> dict[str, Any] | None:
        """The quote of one streamed update (None for one without a symbol, time or price)."""
        yahoo = str(message.get("id") or "")
        stamp, price = _int(message.get("time")), message.get("price")
        if not yahoo or stamp is None or not price:
            return None
        day_volume = _int(message.get("day_volume"))
        row: dict[str, Any] = {
            "event_id": stable_event_id("yfinance", yahoo, stamp, day_volume or "", price),
            "symbol": self.symbols.get(yahoo) or _ours_or_raw(yahoo),
            "event_time": datetime.fromtimestamp(stamp / 1000, tz=UTC),
            "price": price,
            "volume": self.volume(yahoo, _int(message.get("last_size")), day_volume),
            "source": "yfinance",
            "provider_symbol": yahoo,
            "market_hours": MARKET_HOURS.get(int(message.get("market_hours", 0)), "unknown"),
        }
        if message.get("bid") and message.get("ask"):
            row.update(bid=message["bid"], ask=message["ask"])
        for name in ("exchange", "quote_type", "currency"):
            if message.get(name) is not None:
                row[name] = message[name]
        return row

    def from_chart(self, yahoo: str, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """The quote in a chart's metadata (None without a market time or price)."""
        stamp, price = _int(meta.get("regularMarketTime")), meta.get("regularMarketPrice")
        if stamp is None or not price:
            return None
        day_volume = _int(meta.get("regularMarketVolume"))
        return {
            "event_id": stable_event_id("yfinance", yahoo, stamp * 1000, day_volume or "", price),
            "symbol": self.symbols.get(yahoo) or _ours_or_raw(yahoo),
            "event_time": datetime.fromtimestamp(stamp, tz=UTC),
            "price": price,
            "volume": self.volume(yahoo, None, day_volume),
            "source": "yfinance",
            "provider_symbol": yahoo,
            "exchange": meta.get("exchangeName"),
            "currency": meta.get("currency"),
        }


def _ours_or_raw(yahoo: str) -> str:
    try:
        return yahoo_to_ours(yahoo)
    except SymbolError:
        return yahoo  # silver quarantines it with the reason


def chart_market_open(meta: Mapping[str, Any], now: float) -> bool:
    """Whether ``now`` (Unix s) is inside the chart's current trading period, pre- to post-market."""
    periods = meta.get("currentTradingPeriod") or {}
    bounds = [p for p in periods.values() if isinstance(p, Mapping)]
    starts = [s for s in (_int(p.get("start")) for p in bounds) if s is not None]
    ends = [e for e in (_int(p.get("end")) for p in bounds) if e is not None]
    if not starts or not ends:
        return True  # no schedule given: assume it trades (crypto)
    return min(starts) <= now < max(ends)


class YFinanceProvider:
    """Yahoo Finance quotes, streamed or polled, until stopped."""

    name = "yfinance"

    def __init__(self, settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> None:
        import yfinance

        self.yf = yfinance
        self.settings = settings.ingest.yfinance
        if not symbols:
            raise UnknownSymbolError("yfinance needs --symbols as Yahoo spells them: AAPL,BTC-USD,EURUSD=X")
        mapping = {}
        for yahoo in (symbol.strip() for symbol in symbols if symbol.strip()):
            try:
                mapping[yahoo] = yahoo_to_ours(yahoo)
            except SymbolError as exc:
                raise UnknownSymbolError(str(exc)) from None
        self.quotes = YahooQuotes(mapping)
        self.session = options.get("session")  # a requests/curl_cffi session (a proxy, a local stand-in)
        self._known: set[str] = set()  # symbols Yahoo answered for
        mode = self.settings.mode
        if mode == "auto":
            mode = "stream" if hasattr(yfinance, "WebSocket") else "poll"
        if mode == "stream" and not hasattr(yfinance, "WebSocket"):
            raise ProviderError(f"yfinance {yfinance.__version__} has no live WebSocket: use mode poll")
        self.mode = mode
        self.backoff = Backoff(
            interval_seconds(self.settings.reconnect.initial), interval_seconds(self.settings.reconnect.max)
        )
        # Errors reach us rather than being printed and swallowed (a process-wide yfinance setting).
        yfinance.config.debug.hide_exceptions = False
        # yfinance 1.7 opens its socket the way websockets 17 deprecates (it works): not the operator's news.
        warnings.filterwarnings("ignore", message=r"connect\(\) must be used as a context manager")

    def run(self, feed: Feed) -> None:
        if self.mode == "stream":
            self._stream(feed)
        else:
            self._poll(feed)

    # -- stream ---------------------------------------------------------------------------------------

    def _market_by_clock(self, feed: Feed) -> None:
        """Says whether the US market is open when every symbol is a US listing (others trade around the
        clock or on venues whose hours we do not model): the socket just idles meanwhile."""
        ours = self.quotes.symbols.values()
        if all(not any(mark in symbol for mark in ":-!^") for symbol in ours):
            state = us_equity_state(datetime.now(UTC))
            feed.market(state.is_open, f"US {state.session} session by the clock", state.next_open)

    def _stream(self, feed: Feed) -> None:
        url = self.settings.url or "wss://streamer.finance.yahoo.com/?version=2"
        symbols = list(self.quotes.symbols)
        if self.settings.check_symbols:
            self.check_symbols(feed)  # Yahoo's streamer accepts any name and then stays silent on it
        while True:
            self._market_by_clock(feed)
            client = self.yf.WebSocket(url=url, verbose=False)
            try:
                client.subscribe(symbols)  # connects
            except Exception as exc:  # refused, unreachable, handshake failed
                delay = self.backoff.next_delay()
                feed.disconnected(f"{type(exc).__name__}: {exc}", delay)
                feed.wait(delay)
                continue
            feed.connected(f"{url}, subscribed to {','.join(symbols)}")
            connected_at = time.monotonic()
            got = self._listen(client, feed)
            if time.monotonic() - connected_at >= self.backoff.maximum:
                self.backoff.reset()  # it held long enough: a fresh drop starts from the first delay
            delay = self.backoff.next_delay()
            feed.disconnected(f"the streamer closed the connection after {got} update(s)", delay)
            feed.wait(delay)

    def _listen(self, client: Any, feed: Feed) -> int:
        """Run yfinance's blocking ``listen`` on its own thread until the server closes (returns the
        number of updates) or a stop (closes the client, raises FeedStopped)."""
        count = [0]

        def handle(message: dict[str, Any]) -> None:
            # Anything raised here would end yfinance's listen (and the connection): report and go on.
            feed.received()
            count[0] += 1
            if feed.stopping():
                return
            try:
                row = self.quotes.from_stream(message) if "error" not in message else None
                if row is None:
                    feed.say(f"an update we cannot read: {dict(message)}"[:300])
                    return
                feed.publish(contract_record(row))
            except FeedStopped:
                return
            except Exception as exc:
                feed.say(f"an update we cannot read ({type(exc).__name__}: {exc}): {dict(message)}"[:300])

        def listen() -> None:
            try:
                client.listen(handle)
            except Exception as exc:
                feed.say(f"the stream ended: {type(exc).__name__}: {exc}")

        listener = threading.Thread(target=listen, name="yfinance-listen", daemon=True)
        listener.start()
        next_market_check = time.monotonic() + 60
        while listener.is_alive():
            listener.join(0.5)
            if feed.stopping():
                _close(client)
                listener.join(5)
                raise FeedStopped
            if time.monotonic() >= next_market_check:  # a connection can outlive a session
                self._market_by_clock(feed)
                next_market_check = time.monotonic() + 60
        _close(client)
        return count[0]

    # -- poll -----------------------------------------------------------------------------------------

    def chart(self, yahoo: str) -> Mapping[str, Any] | None:
        """The symbol's chart metadata; None when Yahoo has no prices for it right now (a quiet morning,
        a 5xx). UnknownSymbolError when Yahoo does not know the symbol; _RateLimited on a 429."""
        from yfinance.exceptions import YFPricesMissingError, YFRateLimitError, YFTickerMissingError

        ticker = self.yf.Ticker(yahoo, session=self.session)
        try:
            ticker.history(period="1d", interval="1m", prepost=True)
            meta = ticker.get_history_metadata()
        except YFPricesMissingError:
            return None
        except YFTickerMissingError as exc:
            if yahoo in self._known:
                return None  # it answered before: a passing failure, not an unknown symbol
            raise UnknownSymbolError(f"Yahoo does not know {yahoo}: {exc}") from None
        except YFRateLimitError as exc:
            raise _RateLimited(str(exc)) from None
        except OSError as exc:  # requests' errors; a 404 is Yahoo's answer for a symbol it lacks
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 404 and yahoo not in self._known:
                raise UnknownSymbolError(
                    f"Yahoo does not know {yahoo} (404 from its quote service)"
                ) from None
            raise
        self._known.add(yahoo)
        return meta

    def check_symbols(self, feed: Feed) -> None:
        """Ask Yahoo about each symbol once: an unknown one is an error; other failures are said and left."""
        for yahoo in self.quotes.symbols:
            try:
                self.chart(yahoo)
            except UnknownSymbolError:
                raise
            except Exception as exc:
                feed.say(f"could not check {yahoo} ({type(exc).__name__}: {exc}); subscribing anyway")
                return

    def poll_once(self, feed: Feed, last_time: dict[str, int]) -> bool:
        """Ask each symbol's chart once and publish what changed; True if any symbol's market is open."""
        any_open = False
        for yahoo in self.quotes.symbols:
            meta = self.chart(yahoo)
            feed.received()
            if meta is None:
                continue  # no prices right now
            any_open = any_open or chart_market_open(meta, time.time())
            row = self.quotes.from_chart(yahoo, meta)
            stamp = _int(meta.get("regularMarketTime"))
            if row is None or last_time.get(yahoo) == stamp:
                continue  # nothing new since the last poll
            last_time[yahoo] = stamp
            feed.publish(contract_record(row))
        return any_open

    def _poll(self, feed: Feed) -> None:
        last_time: dict[str, int] = {}
        connected = False
        while True:
            try:
                is_open = self.poll_once(feed, last_time)
            except UnknownSymbolError:
                raise
            except Exception as exc:  # Yahoo down, rate limits, an answer yfinance could not parse
                connected = False
                delay = self.backoff.next_delay()
                feed.disconnected(f"{type(exc).__name__}: {exc}", delay)
                feed.wait(delay)
                continue
            if not connected:
                feed.connected(
                    f"polling {len(self.quotes.symbols)} symbol(s) every {self.settings.poll_interval}"
                )
                connected = True
            self.backoff.reset()
            feed.market(is_open, "Yahoo's trading periods for the symbols")
            wait = self.settings.poll_interval if is_open else self.settings.closed_poll_interval
            feed.wait(interval_seconds(wait))


class _RateLimited(Exception):
    """Yahoo answered 429: wait longer before the next poll."""


def _close(client: Any) -> None:
    with contextlib.suppress(Exception):  # already closed by the server
        client.close()


def factory(settings: Settings, symbols: Sequence[str], options: Mapping[str, Any]) -> YFinanceProvider:
    """The entry point: ``surveil ingest --provider yfinance --symbols AAPL,BTC-USD``."""
    return YFinanceProvider(settings, symbols, options)
