"""Publish alerts to the alerts Kafka topic (at least once; consumers deduplicate on alert_id)."""

from __future__ import annotations

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
JSON_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}


def kafka_record_columns(alerts: DataFrame) -> tuple[Column, Column]:
    """(key, value) of an alert's Kafka record: key = symbol (per-symbol order), value = the alert as JSON."""
    body = F.struct(
        *[F.col(name) for name in ALERTS.schema.fieldNames() if name not in ("stream_id", "batch_id")]
    )
    return F.col("symbol"), F.to_json(body, JSON_OPTIONS)


class AlertPublisher:
    """Sends a micro-batch's alert records from the driver with one long-lived producer (acks=all).

    Alerts are few per batch: a driver-side send saves the Spark job (and connection set-up) a Kafka batch
    write costs, which matters on the detection query's critical path.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        from kafka import KafkaProducer

        self.topic = kafka.topics.alerts
        self.producer = KafkaProducer(acks="all", linger_ms=0, retries=5, **kafka.client_options())

    def send(self, records: list[tuple[str, str, str]], stream_id: str, batch_id: int) -> int:
        """Send one micro-batch's (key, JSON value, alert_id) records; block until the broker has them
        all. How many."""
        batch = [(STREAM_HEADER, stream_id.encode()), (BATCH_HEADER, str(batch_id).encode())]
        futures = [
            self.producer.send(
                self.topic,
                key=key.encode(),
                value=value.encode(),
                headers=[("alert_id", alert_id.encode()), *batch],
            )
            for key, value, alert_id in records
        ]
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises if the broker refused one
        return len(records)

    def close(self) -> None:
        self.producer.close(timeout=10)
