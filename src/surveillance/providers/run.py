"""`surveil ingest`: one provider, one feed into the quotes topic, until stopped.

The provider runs on its own thread; this one prints the progress line every ``ingest.progress_interval``
and, on a stop (SIGTERM, Ctrl-C), tells the provider, then sends and waits for what was already buffered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surveillance.config import Settings, interval_seconds, resolve_local_path
from surveillance.ingestion.replay import connected_producer
from surveillance.providers.base import FeedStopped, ProviderError, load_provider
from surveillance.providers.feed import KafkaFeed, kafka_sender


def ingest_metrics_port(settings: Settings) -> int:
    """Where `surveil ingest` serves its metrics: ``ingest.metrics_port``, else ``metrics.port + 2``."""
    return settings.ingest.metrics_port or settings.metrics.port + 2


@dataclass(frozen=True)
class IngestResult:
    """How an ingest run ended."""

    published: int
    failed: int
    duplicates: int
    reconnects: int
    error: str | None = None  # the provider's: a bad key, an unknown symbol, a refused plan
    fatal: bool = False  # the error is the user's to fix (exit 2), not a fault of the run (exit 1)
    unsent_file: Path | None = None

    @property
    def exit_code(self) -> int:
        if self.error and self.fatal:
            return 2
        return 1 if self.error or self.failed else 0


def run_ingest(
    settings: Settings,
    provider_name: str,
    symbols: Sequence[str],
    *,
    topic: str | None = None,
    options: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
) -> IngestResult:
    """Publish the provider's quotes to ``topic`` (default: the quotes topic) until ``stop`` is set or the
    provider ends. A provider that cannot start (ProviderError) is reported in the result, fatal."""
    from surveillance.observability.metrics import serve_metrics

    stop = stop or threading.Event()
    try:
        # A plugin's own settings (ingest.plugins.<name>), then what the command line gave.
        given = {**settings.ingest.plugins.get(provider_name, {}), **(options or {})}
        provider = load_provider(provider_name)(settings, list(symbols), given)
    except ProviderError as exc:
        return IngestResult(0, 0, 0, 0, error=str(exc), fatal=True)
    except ImportError as exc:  # a provider's own packages are an extra
        why = f"the {provider_name} provider needs {exc.name or exc}: pip install 'surveillance[ingest]'"
        return IngestResult(0, 0, 0, 0, error=why, fatal=True)
    retry_for_s = float(interval_seconds(settings.ingest.retry_for))
    producer, unreachable = connected_producer(settings.kafka, retry_for_s, say)
    if producer is None:
        return IngestResult(0, 0, 0, 0, error=unreachable or "no Kafka broker")
    topic = topic or settings.kafka.topics.quotes
    if settings.metrics.enabled:
        serve_metrics(settings.metrics.host, ingest_metrics_port(settings))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    unsent = Path(resolve_local_path(settings.state_dir)) / "ingest" / f"{provider_name}.unsent.{stamp}.jsonl"
    feed = KafkaFeed(
        provider_name,
        kafka_sender(producer, topic),
        producer.flush,
        buffer_records=settings.ingest.buffer_records,
        dedup_ids=settings.ingest.dedup_ids,
        unsent_path=unsent,
        say=say,
    )
    failure: list[BaseException] = []

    def run_provider() -> None:
        try:
            provider.run(feed)
        except FeedStopped:
            pass
        except BaseException as exc:  # reported by the main thread, which decides the exit
            failure.append(exc)

    worker = threading.Thread(target=run_provider, name=f"ingest-{provider_name}", daemon=True)
    feed.start()
    worker.start()
    say(f"ingesting from {provider_name} into {topic} (Ctrl-C or SIGTERM stops it)")
    every = float(interval_seconds(settings.ingest.progress_interval))
    mark = (time.monotonic(), 0)
    next_line = time.monotonic() + every
    while worker.is_alive() and not stop.is_set():
        stop.wait(min(0.2, max(0.0, next_line - time.monotonic())))
        if time.monotonic() >= next_line:
            say(feed.progress_line(since=mark))
            mark = (time.monotonic(), feed.tally.messages)
            next_line = time.monotonic() + every
    if stop.is_set():
        say(f"stopping: {provider_name} is told, then what it handed over is sent")
    feed.stop()
    worker.join(15)
    feed.close(timeout_s=retry_for_s + 10)
    try:
        producer.close(timeout=10)
    except Exception as exc:  # batches still unacknowledged: their callbacks count them failed
        feed.say(f"the producer did not close cleanly: {exc}")
    say(feed.progress_line())
    error = failure[0] if failure else None
    tally = feed.tally
    if error is not None:
        message: str | None = (
            str(error) if isinstance(error, ProviderError) else f"{type(error).__name__}: {error}"
        )
    elif tally.failed:
        message = f"{tally.failed} quote(s) not acknowledged: {tally.first_error}"
    elif tally.noted:
        message = tally.first_error
    else:
        message = None
    return IngestResult(
        published=tally.published,
        failed=tally.failed,
        duplicates=tally.duplicates,
        reconnects=tally.reconnects,
        error=message,
        fatal=isinstance(error, ProviderError),
        unsent_file=unsent if tally.failed else None,
    )
