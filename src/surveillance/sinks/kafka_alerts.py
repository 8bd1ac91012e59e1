"""Publish alerts to the alerts Kafka topic (at least once; consumers deduplicate on alert_id)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from surveillance.config import KafkaSettings
from surveillance.lakehouse import ALERTS

# Headers of every alert record besides alert_id: the detection query's checkpoint id and micro-batch,
# from which the alerts table recovers batches a crash kept from it (surveillance.sinks.alerts_table).
STREAM_HEADER = "stream_id"
BATCH_HEADER = "batch_id"
# Timestamps in the alert's JSON keep microseconds (Spark's default JSON format stops at milliseconds), so
# a row read back from the topic equals the one appended from the batch.
log = logging.getLogger(__name__)
JSON_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}


def kafka_record_columns(alerts: DataFrame) -> tuple[Column, Column]:
    """(key, value) of an alert's Kafka record: key = symbol (per-symbol order), value = the alert as JSON."""
    body = F.struct(
        *[F.col(name) for name in ALERTS.schema.fieldNames() if name not in ("stream_id", "batch_id")]
    )
    return F.col("symbol"), F.to_json(body, JSON_OPTIONS)


def with_episode(value: str, episode_id: str) -> str:
    """An alert's record value with its episode id, known only once the batch's alerts are (few: cheap)."""
    alert = json.loads(value)
    alert["episode_id"] = episode_id
    return json.dumps(alert, separators=(",", ":"))


class AlertPublisher:
    """Sends a micro-batch's alert records from the driver with one long-lived producer (acks=all).

    Alerts are few per batch: a driver-side send saves the Spark job (and connection set-up) a Kafka batch
    write costs, which matters on the detection query's critical path.

    While the topic refuses them (the broker away, too few in-sync replicas, records over its size limit,
    ...) the records not yet acknowledged are sent again, with their alert_id, until ``timeout_s``; what
    waits is logged every ``say_every_s``. Only then does the send fail, and with it the batch, which a
    restart re-runs. A refusal the broker calls final (not retriable: e.g. a record too large) leaves
    kafka-python's idempotent producer in a fatal state in which it fails every later send, so the
    producer is replaced before the next attempt.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        timeout_s: float = 600.0,
        say_every_s: float = 10.0,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.topic = kafka.topics.alerts
        self.bootstrap = kafka.bootstrap_servers
        self.timeout_s, self.say_every_s = timeout_s, say_every_s
        self._make_producer = producer_factory or (lambda: _kafka_producer(kafka))
        self.producer = self._make_producer()
        self.producers_replaced = 0

    def send(self, records: list[tuple[str, str, str]], stream_id: str, batch_id: int) -> int:
        """Send one micro-batch's (key, JSON value, alert_id) records; block until the broker has them
        all (retrying as the class says). How many."""
        batch = [(STREAM_HEADER, stream_id.encode()), (BATCH_HEADER, str(batch_id).encode())]
        waiting = list(records)
        started = last_said = time.monotonic()
        while waiting:
            refused, error = self._attempt(waiting, batch)
            if not refused:
                break
            waited = time.monotonic() - started
            if waited >= self.timeout_s:
                raise RuntimeError(
                    f"the alerts topic {self.topic!r} at {self.bootstrap} refused {len(refused)} alert(s) of "
                    f"batch {batch_id} for {waited:.0f} s (detection.publish_timeout): {error}"
                ) from error
            if time.monotonic() - last_said >= self.say_every_s or waited < 1:
                log.warning(
                    "waiting for the alerts topic %r at %s: %d alert(s) of batch %d not acknowledged "
                    "(%s); retrying, %.0f s so far, up to %.0f s",
                    self.topic,
                    self.bootstrap,
                    len(refused),
                    batch_id,
                    error,
                    waited,
                    self.timeout_s,
                )
                last_said = time.monotonic()
            if not _retriable(error):
                self._replace_producer(error)
            time.sleep(1.0)
            waiting = refused
        return len(records)

    def _attempt(
        self, records: list[tuple[str, str, str]], batch: list[tuple[str, bytes]]
    ) -> tuple[list[tuple[str, str, str]], Exception | None]:
        """Send ``records`` once; the ones the broker did not acknowledge and the first error."""
        futures = []
        refused: list[tuple[str, str, str]] = []
        first_error: Exception | None = None
        for record in records:
            key, value, alert_id = record
            try:
                futures.append(
                    (
                        record,
                        self.producer.send(
                            self.topic,
                            key=key.encode(),
                            value=value.encode(),
                            headers=[("alert_id", alert_id.encode()), *batch],
                        ),
                    )
                )
            except Exception as exc:  # no metadata in time, a full buffer: this record waits
                refused.append(record)
                first_error = first_error or exc
        try:
            self.producer.flush()
        except Exception as exc:
            first_error = first_error or exc
        for record, future in futures:
            try:
                future.get(timeout=60)
            except Exception as exc:
                refused.append(record)
                first_error = first_error or exc
        return refused, first_error

    def _replace_producer(self, error: Exception | None) -> None:
        log.warning("replacing the alerts producer after a final refusal (%s)", error)
        try:
            self.producer.close(timeout=5)
        except Exception as exc:  # a producer in a fatal state may fail to close: it is dropped anyway
            log.warning("the refused alerts producer did not close cleanly: %s", exc)
        self.producer = self._make_producer()
        self.producers_replaced += 1

    def close(self) -> None:
        self.producer.close(timeout=10)


def _kafka_producer(kafka: KafkaSettings) -> Any:
    from kafka import KafkaProducer

    # Each attempt is bounded, so that a refused record comes back to send() to be retried and logged,
    # rather than waiting silently in the producer for minutes.
    return KafkaProducer(acks="all", linger_ms=0, delivery_timeout_ms=30_000, **kafka.client_options())


def _retriable(error: Exception | None) -> bool:
    """Whether the producer may go on after ``error``: Kafka's retriable errors and timeouts (no broker,
    no metadata yet) are; any other refusal may have left it in a fatal state."""
    from kafka.errors import KafkaTimeoutError

    return error is None or isinstance(error, KafkaTimeoutError) or bool(getattr(error, "retriable", False))
