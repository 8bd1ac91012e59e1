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
