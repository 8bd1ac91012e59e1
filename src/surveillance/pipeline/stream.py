"""The streaming job: Kafka quotes -> bronze/silver/quarantine/gold/alerts Delta tables + alerts topic.

One query reads the quotes topic; its foreachBatch body (:class:`QuoteBatchWriter`) runs the pure layer
transforms and then the sinks. Every Delta write is idempotent per micro-batch (``txnAppId``/``txnVersion``
appends, a bounded MERGE for bars), and everything a batch derives from earlier batches is read from rows
of *earlier* batch ids, so a batch replayed after a crash computes exactly what its first attempt did.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from surveillance.config import Settings, interval_seconds, resolve_local_path
from surveillance.detection.rules import detect_alerts
from surveillance.lakehouse import STREAM_PROGRESS, ensure_tables, table_locations
from surveillance.sinks.delta import append_once, upsert_bars
from surveillance.sinks.kafka_alerts import publish_alerts
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.gold import bar_keys, one_minute_bars
from surveillance.transforms.silver import (
    first_per_event_id,
    flag_late,
    not_seen_before,
    to_quarantine,
    to_silver,
    with_reject_reason,
)

# Test hook: SURVEIL_CRASH_AT="<step>:<batch_id>" kills the process (no clean-up, like a power cut) right
# after that step of that micro-batch. Used by the crash/restart tests; unset in normal runs.
CRASH_ENV = "SURVEIL_CRASH_AT"


def _crash_point(step: str, batch_id: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{step}:{batch_id}":
        os._exit(86)


@dataclass(frozen=True)
class BatchStats:
    records_in: int
    valid_rows: int
    min_event_time: dt.datetime | None
    max_event_time: dt.datetime | None
    event_dates: list[dt.date]


class QuoteBatchWriter:
    """The foreachBatch body: ``(batch_df, batch_id) -> None``."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings
        self.locations = table_locations(settings)
        self.checkpoint = resolve_local_path(settings.stream.checkpoint_dir)
        self.watermark_delay = dt.timedelta(seconds=interval_seconds(settings.stream.watermark))
        self.lookback = dt.timedelta(seconds=interval_seconds(settings.rules.history_lookback))
        self._app_id: str | None = None

    def app_id(self) -> str:
        """The Delta transaction app id: the query name plus the checkpoint's own query id.

        Tying it to the checkpoint means a fresh checkpoint (batch ids restarting at 0) is a new writer,
        not one whose batches Delta would skip as already written.
        """
        if self._app_id is None:
            metadata = self.spark.read.text(f"{self.checkpoint}/metadata").first()
            query_id = json.loads(metadata[0])["id"] if metadata else "no-checkpoint"
            self._app_id = f"{self.settings.stream.query_name}:{query_id}"
        return self._app_id

    def _table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.locations[name])

    def _previous_max_event_time(self, batch_id: int) -> dt.datetime | None:
        last = (
            self._table(STREAM_PROGRESS.name)
            .where(F.col("batch_id") < batch_id)
            .orderBy(F.col("batch_id").desc())
            .select("max_event_time")
            .first()
        )
        return last[0] if last else None

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        started_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        records = records.persist()
        try:
            self._process(records, batch_id, started_at)
        finally:
            records.unpersist()

    def _process(self, records: DataFrame, batch_id: int, started_at: dt.datetime) -> None:
        app_id = self.app_id()
        bronze = to_bronze(records, batch_id, ingested_at=started_at)
        checked = with_reject_reason(bronze)
        candidates = first_per_event_id(to_silver(checked))
        stats = self._stats(records, checked)

        previous_max = self._previous_max_event_time(batch_id)
        watermark = previous_max - self.watermark_delay if previous_max else None
        history = self._silver_history(batch_id, stats)
        new_quotes = flag_late(not_seen_before(candidates, history.select("event_id")), watermark).persist()
        try:
            new_count = new_quotes.count()
            late_count = new_quotes.where("is_late").count() if new_count else 0
            context = history.withColumn("is_new", F.lit(False)).unionByName(
                new_quotes.withColumn("is_new", F.lit(True))
            )
            alerts = detect_alerts(context, self.settings.rules).persist()
            try:
                alert_count = alerts.count()
                # Alerts go out first: the lakehouse writes below are slower than a Kafka send.
                if alert_count and not self._alerts_already_written(batch_id):
                    publish_alerts(alerts, self.settings.kafka)
                _crash_point("publish", batch_id)
                append_once(bronze, self.locations["bronze_quotes"], app_id, batch_id)
                _crash_point("bronze", batch_id)
                append_once(to_quarantine(checked), self.locations["quarantine_quotes"], app_id, batch_id)
                _crash_point("quarantine", batch_id)
                append_once(new_quotes, self.locations["silver_quotes"], app_id, batch_id)
                _crash_point("silver", batch_id)
                append_once(alerts, self.locations["alerts"], app_id, batch_id)
                _crash_point("alerts", batch_id)
            finally:
                alerts.unpersist()
            if new_count:
                self._update_bars(new_quotes, stats)
            _crash_point("gold", batch_id)
        finally:
            new_quotes.unpersist()

        batch_max = stats.max_event_time
        max_event_time = max((t for t in (previous_max, batch_max) if t is not None), default=None)
        progress = {
            "batch_id": batch_id,
            "records_in": stats.records_in,
            "silver_rows": new_count,
            "duplicate_rows": stats.valid_rows - new_count,
            "quarantine_rows": stats.records_in - stats.valid_rows,
            "late_rows": late_count,
            "alert_rows": alert_count,
            "max_event_time": max_event_time,
            "watermark": max_event_time - self.watermark_delay if max_event_time else None,
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        }
        progress_row = self.spark.createDataFrame([progress], STREAM_PROGRESS.schema)
        append_once(progress_row, self.locations[STREAM_PROGRESS.name], app_id, batch_id)
        _crash_point("progress", batch_id)

    @staticmethod
    def _stats(records: DataFrame, checked: DataFrame) -> BatchStats:
        valid = to_silver(checked)
        row = valid.agg(
            F.count("*").alias("valid"),
            F.min("event_time").alias("lo"),
            F.max("event_time").alias("hi"),
            F.collect_set("event_date").alias("dates"),
        ).first()
        return BatchStats(records.count(), row["valid"], row["lo"], row["hi"], sorted(row["dates"] or []))

    def _silver_history(self, batch_id: int, stats: BatchStats) -> DataFrame:
        """Silver rows of earlier batches that the rules and dedup of this batch may need.

        Bounded by event time: [earliest quote in the batch - rules.history_lookback, latest quote], with
        the matching date partitions, so the read does not grow with the table.
        """
        silver = self._table("silver_quotes")
        if stats.min_event_time is None:
            return silver.where(F.lit(False))
        start = stats.min_event_time - self.lookback
        days = (stats.max_event_time.date() - start.date()).days
        dates = [start.date() + dt.timedelta(days=n) for n in range(days + 1)]
        return silver.where(
            F.col("event_date").isin(dates)
            & F.col("event_time").between(F.lit(start), F.lit(stats.max_event_time))
            & (F.col("batch_id") < batch_id)
        )

    def _alerts_already_written(self, batch_id: int) -> bool:
        # publish happens before the Delta append, so alerts committed for this batch id mean an earlier
        # attempt already published them; skip sending them twice.
        alerts = self._table("alerts").where(F.col("batch_id") == batch_id)
        return alerts.limit(1).count() > 0

    def _update_bars(self, new_quotes: DataFrame, stats: BatchStats) -> None:
        keys = bar_keys(new_quotes)
        first_minute = stats.min_event_time.replace(second=0, microsecond=0)
        silver = self._table("silver_quotes").where(
            F.col("event_date").isin(stats.event_dates)
            & (F.col("event_time") >= F.lit(first_minute))
            & (F.col("event_time") <= F.lit(stats.max_event_time))
        )
        touched = silver.join(
            keys.hint("broadcast"),
            (silver.symbol == keys.symbol) & (F.date_trunc("minute", silver.event_time) == keys.bar_start),
            "left_semi",
        )
        upsert_bars(self.spark, self.locations["gold_bars_1m"], one_minute_bars(touched), stats.event_dates)


def read_quotes(spark: SparkSession, settings: Settings) -> DataFrame:
    """The quotes topic as a streaming DataFrame (Kafka source)."""
    stream = settings.stream
    reader = (
        spark.readStream.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.topics.quotes)
        .option("startingOffsets", stream.starting_offsets)
        .option("failOnDataLoss", str(stream.fail_on_data_loss).lower())
    )
    if stream.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", stream.max_offsets_per_trigger)
    return reader.load()


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingQuery:
    """Create the tables if needed and start the query (``once``: process what is there, then stop)."""
    ensure_tables(spark, table_locations(settings))
    writer = QuoteBatchWriter(spark, settings)
    stream = (
        read_quotes(spark, settings)
        .writeStream.queryName(settings.stream.query_name)
        .option("checkpointLocation", writer.checkpoint)
        .foreachBatch(writer)
    )
    if once:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=settings.stream.trigger_interval)
    return stream.start()


def processed_offsets(query: StreamingQuery) -> int:
    """Offsets of the quotes topic the query has finished so far (sum over partitions)."""
    progress = query.lastProgress
    if not progress or not progress.get("sources"):
        return 0
    end = progress["sources"][0].get("endOffset") or {}
    if isinstance(end, str):
        end = json.loads(end)
    return sum(int(offset) for partitions in end.values() for offset in partitions.values())


def wait_for(query: StreamingQuery, on_tick: Callable[[StreamingQuery], None] | None = None,
             poll_s: float = 0.5) -> None:
    """Block until the query stops, calling ``on_tick`` while it runs; re-raise its failure."""
    try:
        while query.isActive:
            if on_tick:
                on_tick(query)
            query.awaitTermination(poll_s)
    except KeyboardInterrupt:
        query.stop()
        raise
    if on_tick:
        on_tick(query)
    error = query.exception()
    if error is not None:
        raise RuntimeError(f"streaming query failed: {error}")
