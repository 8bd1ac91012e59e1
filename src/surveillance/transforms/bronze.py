"""Bronze: Kafka records exactly as received."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def to_bronze(
    kafka_records: DataFrame, stream_id: str, batch_id: int, ingested_at: dt.datetime | Column | None = None
) -> DataFrame:
    """Kafka source rows -> bronze rows (key and value as text, Kafka coordinates, ingestion time, batch)."""
    ingested = F.current_timestamp() if ingested_at is None else ingested_at
    if isinstance(ingested, dt.datetime):
        ingested = F.lit(ingested).cast("timestamp")
    return kafka_records.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        ingested.alias("ingested_at"),
    ).withColumns(
        {
            "ingest_date": F.to_date("ingested_at"),
            "stream_id": F.lit(stream_id),
            "batch_id": F.lit(batch_id).cast("long"),
        }
    )


def first_ingestion(bronze: DataFrame) -> DataFrame:
    """Each Kafka record (topic, partition, offset) once, as first ingested.

    A stream restarted on a new checkpoint reads the topic again and records those messages again.
    """
    first = Window.partitionBy("topic", "partition", "offset").orderBy("ingested_at", "stream_id", "batch_id")
    return (
        bronze.withColumn("_ingestion", F.row_number().over(first)).where("_ingestion = 1").drop("_ingestion")
    )
