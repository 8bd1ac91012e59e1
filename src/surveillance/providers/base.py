"""What a market data provider is, what it is given, and how `surveil ingest` finds one.

A provider turns its feed into contract quotes and hands each to :class:`Feed.publish` as a
:class:`FeedRecord`; the feed buffers them (bounded: a slow Kafka holds the provider back rather than fill
memory) and publishes them with an idempotent producer. Providers are plugins: any installed package can
declare an entry point in the group ``surveillance.providers`` naming a factory
``(settings, symbols, options) -> Provider``; ours are declared the same way in ``pyproject.toml``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, Protocol

from surveillance.ingestion.contract import format_event_time, quote_to_json

ENTRY_POINT_GROUP = "surveillance.providers"


class ProviderError(RuntimeError):
    """The feed cannot go on (a bad key, an unknown symbol, a refused plan): said once, clearly, exit 2."""


class AuthenticationError(ProviderError):
    """The provider refused our credentials."""


class UnknownSymbolError(ProviderError):
    """A symbol the provider does not know, or one we cannot map to our symbology."""


class FeedStopped(Exception):
    """Raised inside a provider by :meth:`Feed.publish` or :meth:`Feed.wait` once a stop was asked for."""


@dataclass(frozen=True)
class FeedRecord:
    """One message for the quotes topic: the key (our symbol), the value, and what the progress line shows."""

    key: bytes | None
    value: bytes
    event_id: str | None = None
    symbol: str | None = None
    event_time: str | None = None


def contract_record(quote: Mapping[str, Any]) -> FeedRecord:
    """A quote (contract fields plus extras) as a record keyed by its symbol; ValueError if it is no quote."""
    text = quote_to_json(quote)
    symbol = str(quote["symbol"])
    return FeedRecord(
        key=symbol.encode("utf-8"),
        value=text.encode("utf-8"),
        event_id=str(quote["event_id"]),
        symbol=symbol,
        event_time=format_event_time(quote["event_time"]),
    )


def stable_event_id(provider: str, *parts: object) -> str:
    """A deterministic event_id from the provider's own ids: the same message resent gives the same id."""
    text = ":".join(str(part) for part in parts)
    if len(text) <= 96:
        return f"{provider}:{text}"
    return f"{provider}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"  # bounded length for the key


class Feed(Protocol):
    """What a provider is given to publish into and report through."""

    def publish(self, record: FeedRecord) -> None:
        """Queue a record; blocks while the buffer is full. Raises FeedStopped once stopping."""

    def received(self, count: int = 1) -> None:
        """Count messages taken off the provider's wire (quotes or not), for the progress line."""

    def stopping(self) -> bool:
        """Whether a stop was asked for."""

    def wait(self, seconds: float) -> None:
        """Sleep, waking at once on a stop (then raises FeedStopped)."""

    def connected(self, detail: str) -> None:
        """The provider is connected (and authenticated, subscribed)."""

    def disconnected(self, reason: str, retry_in_s: float) -> None:
        """The connection dropped or failed; the provider reconnects in ``retry_in_s``."""

    def market(self, is_open: bool, detail: str, next_open: datetime | None = None) -> None:
        """The market is open or closed (said once per change, with when it opens next if known)."""

    def say(self, message: str) -> None:
        """A line for the operator (gaps, provider status messages)."""


class Provider(Protocol):
    """A source of quotes. ``run`` publishes until the feed stops (FeedStopped) or a ProviderError."""

    name: str

    def run(self, feed: Feed) -> None: ...


ProviderFactory = Callable[[Any, Sequence[str], Mapping[str, Any]], Provider]


def available_providers() -> dict[str, Any]:
    """Installed providers by name: their entry points (loaded only when one is used)."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def load_provider(name: str) -> ProviderFactory:
    """The factory of the provider called ``name``; ProviderError naming those installed otherwise."""
    points = available_providers()
    if name not in points:
        known = ", ".join(sorted(points)) or "none"
        raise ProviderError(
            f"no provider {name!r} is installed (installed: {known}); a plugin declares an entry point in "
            f"the group {ENTRY_POINT_GROUP!r}"
        )
    return points[name].load()


class RecentIds:
    """The last ``capacity`` event_ids seen: a reconnect's resend is dropped before it reaches Kafka (silver
    drops any that get through by the same id)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen already; otherwise remembers it and returns False."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False


class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``maximum``, with up to 20% jitter; reset on success."""

    def __init__(self, initial: float, maximum: float, jitter: Callable[[], float] | None = None) -> None:
        import random

        self.initial, self.maximum = initial, maximum
        self._jitter = jitter or random.random
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count it)."""
        delay = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return delay * (1 + 0.2 * self._jitter())

    def reset(self) -> None:
        """A connection worked: the next failure starts again from ``initial``."""
        self.attempt = 0
