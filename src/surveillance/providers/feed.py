"""The feed a provider publishes into: a bounded buffer, an idempotent Kafka producer, progress and metrics.

The provider runs on its own thread and calls :meth:`KafkaFeed.publish`; a publisher thread drains the
buffer into the producer (``acks=all``, idempotent: a retried send is written once). When Kafka is slow the
buffer fills and ``publish`` blocks, which holds the provider back (a WebSocket stops being read, so TCP
slows the sender): memory stays bounded. On a stop the provider is told first; what it had published is
still sent and acknowledged, and anything Kafka never acknowledged is written to an ``unsent`` file that
`surveil replay` sends as it is.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from surveillance.providers.base import FeedRecord, FeedStopped, RecentIds

log = logging.getLogger(__name__)

MAX_SYMBOL_SERIES = 1000  # symbols with a last-quote-time series of their own

MESSAGES = Counter("surveil_ingest_messages", "Messages read from the provider's feed", ["provider"])
QUOTES = Counter("surveil_ingest_quotes", "Contract quotes handed to the feed", ["provider"])
PUBLISHED = Counter("surveil_ingest_published", "Quotes Kafka acknowledged", ["provider"])
FAILED = Counter("surveil_ingest_publish_failures", "Quotes Kafka never acknowledged", ["provider"])
DUPLICATES = Counter(
    "surveil_ingest_duplicates_dropped",
    "Quotes resent by the provider (an event_id already published)",
    ["provider"],
)
RECONNECTS = Counter("surveil_ingest_reconnects", "Connections lost or refused, then retried", ["provider"])
CONNECTED = Gauge("surveil_ingest_connected", "1 while connected to the provider", ["provider"])
MARKET_OPEN = Gauge("surveil_ingest_market_open", "1 while the provider's market is open", ["provider"])
BUFFERED = Gauge("surveil_ingest_buffer_records", "Quotes waiting in the buffer for Kafka", ["provider"])
BUFFER_CAPACITY = Gauge("surveil_ingest_buffer_capacity_records", "The buffer's bound", ["provider"])
BLOCKED = Counter(
    "surveil_ingest_blocked_seconds", "Time the provider waited on a full buffer (Kafka slow)", ["provider"]
)
LAST_QUOTE = Gauge(
    "surveil_ingest_last_quote_timestamp_seconds",
    "Event time of the last quote per symbol",
    ["provider", "symbol"],
)


@dataclass
class _Tally:
    """Counts shared by the provider, the publisher and the producer's callbacks (under one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: int = 0
    quotes: int = 0
    duplicates: int = 0
    published: int = 0
    failed: int = 0
    reconnects: int = 0
    first_error: str | None = None
    noted: bool = False  # an error not about one record (a flush, a close that timed out)
    last_quote: dict[str, str] = field(default_factory=dict)  # symbol -> event time


class KafkaFeed:
    """A :class:`~surveillance.providers.base.Feed` that publishes to a Kafka topic.

    ``send(record, on_ok, on_error)`` does the sending (a KafkaProducer's ``send`` with callbacks, see
    :func:`kafka_sender`) and ``flush()`` waits for the acknowledgements; both run on the publisher thread.
    """

    def __init__(
        self,
        provider: str,
        send: Callable[[FeedRecord, Callable[..., None], Callable[[Any], None]], None],
        flush: Callable[[], None],
        *,
        buffer_records: int,
        dedup_ids: int = 100_000,
        unsent_path: Path | None = None,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._send, self._flush, self._say, self._clock = send, flush, say, clock
        self._buffer: queue.Queue[FeedRecord | None] = queue.Queue(maxsize=buffer_records)
        self._stop = threading.Event()
        self._closing = threading.Event()  # the provider is done: drain, then end
        self._abandoned = threading.Event()  # close() gave up waiting: take nothing more
        self.unsent_path = unsent_path
        self._recent = RecentIds(dedup_ids)
        self._recent_lock = threading.Lock()  # a plugin may publish from several threads
        self.tally = _Tally()
        self._market_open: bool | None = None
        self._series: set[str] = set()
        self._publisher = threading.Thread(
            target=self._publish_loop, name=f"ingest-{provider}-kafka", daemon=True
        )
        self._started = clock()
        BUFFER_CAPACITY.labels(provider).set(buffer_records)
        BUFFERED.labels(provider).set(0)
        CONNECTED.labels(provider).set(0)
        MARKET_OPEN.labels(provider).set(1)  # open unless the provider says otherwise

    # -- the provider's side ------------------------------------------------------------------------

    def publish(self, record: FeedRecord) -> None:
        if self._stop.is_set():
            raise FeedStopped
        with self._recent_lock:
            resent = record.event_id is not None and self._recent.seen(record.event_id)
        if resent:
            with self.tally.lock:
                self.tally.duplicates += 1
            DUPLICATES.labels(self.provider).inc()
            return
        waited_from: float | None = None
        while True:
            try:
                self._buffer.put(record, timeout=0.25)
                break
            except queue.Full:
                if self._stop.is_set():
                    raise FeedStopped from None
                if waited_from is None:
                    waited_from = self._clock()
        if waited_from is not None:
            BLOCKED.labels(self.provider).inc(self._clock() - waited_from)
        with self.tally.lock:
            self.tally.quotes += 1
            if record.symbol and record.event_time:
                self.tally.last_quote[record.symbol] = record.event_time
        QUOTES.labels(self.provider).inc()
        BUFFERED.labels(self.provider).set(self._buffer.qsize())
        if record.symbol and record.event_time and self._symbol_series(record.symbol):
            moment = datetime.fromisoformat(record.event_time.replace("Z", "+00:00"))
            LAST_QUOTE.labels(self.provider, record.symbol).set(moment.timestamp())

    def _symbol_series(self, symbol: str) -> bool:
        # One series per symbol, up to a bound: a firehose (Polygon's "*") must not flood Prometheus.
        if symbol in self._series or len(self._series) < MAX_SYMBOL_SERIES:
            self._series.add(symbol)
            return True
        return False

    def received(self, count: int = 1) -> None:
        with self.tally.lock:
            self.tally.messages += count
        MESSAGES.labels(self.provider).inc(count)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise FeedStopped

    def connected(self, detail: str) -> None:
        CONNECTED.labels(self.provider).set(1)
        self._say(f"{self.provider}: connected ({detail})")

    def disconnected(self, reason: str, retry_in_s: float) -> None:
        CONNECTED.labels(self.provider).set(0)
        RECONNECTS.labels(self.provider).inc()
        with self.tally.lock:
            self.tally.reconnects += 1
        self._say(f"{self.provider}: disconnected ({reason}); reconnecting in {retry_in_s:.1f} s")

    def market(self, is_open: bool, detail: str, next_open: datetime | None = None) -> None:
        MARKET_OPEN.labels(self.provider).set(1 if is_open else 0)
        if is_open == self._market_open:
            return
        self._market_open = is_open
        if is_open:
            self._say(f"{self.provider}: market open ({detail})")
        else:
            when = f"; it opens {next_open.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if next_open else ""
            self._say(f"{self.provider}: outside market hours ({detail}){when}; waiting")

    def say(self, message: str) -> None:
        self._say(f"{self.provider}: {message}")

    # -- the Kafka side -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the publisher thread."""
        self._publisher.start()

    def stop(self) -> None:
        """Ask the provider to stop: publish and wait raise FeedStopped from now on."""
        self._stop.set()

    def close(self, timeout_s: float) -> None:
        """After the provider returned: send what is buffered and wait for the acknowledgements, for up to
        ``timeout_s``; whatever is still buffered then is written to the unsent file."""
        self._stop.set()
        self._closing.set()
        self._publisher.join(timeout_s)
        if self._publisher.is_alive():
            self._abandoned.set()  # the publisher takes nothing more; what it holds in send() it reports
            self._note(f"Kafka did not take the buffered quotes within {timeout_s:.0f} s")
        while True:
            try:
                record = self._buffer.get_nowait()
            except queue.Empty:
                break
            self._failed(record.value, "not sent: the feed closed before Kafka took it")
        BUFFERED.labels(self.provider).set(0)

    def _publish_loop(self) -> None:
        while not self._abandoned.is_set():
            try:
                record = self._buffer.get(timeout=0.25)
            except queue.Empty:
                if self._closing.is_set():
                    break  # stopped and drained
                continue
            BUFFERED.labels(self.provider).set(self._buffer.qsize())
            try:
                self._send(
                    record, self._acknowledged, lambda error, value=record.value: self._failed(value, error)
                )
            except Exception as exc:  # a send refused outright (too large, no metadata in time)
                self._failed(record.value, exc)
        try:
            self._flush()
        except Exception as exc:  # unacknowledged records are reported by their own callbacks
            self._note(f"flush failed: {exc}")

    def _acknowledged(self, *_: Any) -> None:
        with self.tally.lock:
            self.tally.published += 1
        PUBLISHED.labels(self.provider).inc()

    def _failed(self, value: bytes, error: Any) -> None:
        """Count a record Kafka never took and append it, as sent, to the unsent file (memory stays flat)."""
        with self.tally.lock:
            self.tally.failed += 1
            if self.tally.first_error is None:
                self.tally.first_error = (
                    error if isinstance(error, str) else f"{type(error).__name__}: {error}"
                )
            if self.unsent_path is not None:
                self.unsent_path.parent.mkdir(parents=True, exist_ok=True)
                with self.unsent_path.open("ab") as unsent:
                    unsent.write(value + b"\n")
        FAILED.labels(self.provider).inc()

    def _note(self, error: str) -> None:
        with self.tally.lock:
            self.tally.first_error = self.tally.first_error or error
            self.tally.noted = True

    # -- reporting ----------------------------------------------------------------------------------

    def progress_line(self, since: tuple[float, int] | None = None, symbols_shown: int = 4) -> str:
        """messages/s, counts, buffer, reconnects and each symbol's last quote time, on one line."""
        now = self._clock()
        with self.tally.lock:
            tally = self.tally
            start_time, start_count = since or (self._started, 0)
            rate = (tally.messages - start_count) / max(now - start_time, 1e-9)
            last = sorted(tally.last_quote.items(), key=lambda item: item[1], reverse=True)
            shown = ", ".join(f"{symbol} {moment[11:23]}" for symbol, moment in last[:symbols_shown])
            more = f" (+{len(last) - symbols_shown} more)" if len(last) > symbols_shown else ""
            return (
                f"{self.provider}: {rate:,.1f} msg/s · {tally.messages:,} messages · {tally.quotes:,} quotes "
                f"· {tally.published:,} published · {tally.failed:,} failed · {tally.duplicates:,} resent "
                f"· buffer {self._buffer.qsize():,}/{self._buffer.maxsize:,} · reconnects {tally.reconnects}"
                + (f" · last {shown}{more}" if shown else "")
            )


def kafka_sender(
    producer: Any, topic: str
) -> Callable[[FeedRecord, Callable[..., None], Callable[[Any], None]], None]:
    """``send`` for :class:`KafkaFeed` over a KafkaProducer: keyed by symbol, callbacks on the result."""

    def send(record: FeedRecord, on_ok: Callable[..., None], on_error: Callable[[Any], None]) -> None:
        future = producer.send(topic, value=record.value, key=record.key)
        future.add_callback(on_ok)
        future.add_errback(on_error)

    return send
