"""Publish alerts to the alerts Kafka topic (at least once; consumers deduplicate on alert_id)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from surveillance.config import KafkaSettings


def alerts_to_kafka_records(alerts: DataFrame) -> DataFrame:
    """Alert rows -> Kafka records: key = symbol (per-symbol order), value = the alert as JSON."""
    body = F.struct(*[F.col(name) for name in alerts.columns if name not in ("stream_id", "batch_id")])
    headers = F.array(
        F.struct(F.lit("alert_id").alias("key"), F.col("alert_id").cast("binary").alias("value"))
    )
    return alerts.select(
        F.col("symbol").alias("key"), F.to_json(body).alias("value"), headers.alias("headers")
    )


def publish_alerts(alerts: DataFrame, kafka: KafkaSettings) -> None:
    """Send alert rows to ``kafka.topics.alerts`` with Spark's Kafka batch writer."""
    (
        alerts_to_kafka_records(alerts)
        .write.format("kafka")
        .options(**kafka.spark_options())
        .option("topic", kafka.topics.alerts)
        .option("includeHeaders", "true")
        .save()
    )


class AlertPublisher:
    """Sends a micro-batch's alert records from the driver with one long-lived producer (acks=all).

    Alerts are few per batch: a driver-side send saves the Spark job (and connection set-up) a Kafka batch
    write costs, which matters on the detection query's critical path.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        from kafka import KafkaProducer

        self.topic = kafka.topics.alerts
        self.producer = KafkaProducer(acks="all", linger_ms=0, retries=5, **kafka.client_options())

    def publish(self, alerts: DataFrame) -> int:
        """Send every alert of ``alerts``; block until the broker has them all. How many were sent."""
        records = alerts_to_kafka_records(alerts).collect()
        futures = [
            self.producer.send(
                self.topic,
                key=row["key"].encode(),
                value=row["value"].encode(),
                headers=[(h["key"], bytes(h["value"])) for h in row["headers"]],
            )
            for row in records
        ]
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises if the broker refused one
        return len(records)

    def close(self) -> None:
        self.producer.close(timeout=10)
