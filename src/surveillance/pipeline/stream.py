"""The streaming job: Kafka quotes -> bronze/silver/quarantine/gold/alerts Delta tables + alerts topic.

One query reads the quotes topic; its foreachBatch body (:class:`QuoteBatchWriter`) runs the pure layer
transforms and then the sinks. Every Delta write is idempotent per micro-batch (``txnAppId``/``txnVersion``
appends, a bounded MERGE for bars), and everything a batch derives from earlier batches is read from rows
of *earlier* batch ids, so a batch replayed after a crash computes exactly what its first attempt did.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from surveillance.config import Settings, interval_seconds, resolve_local_path
from surveillance.detection.rules import detect_alerts
from surveillance.lakehouse import BRONZE, STREAM_PROGRESS, ensure_tables, table_locations
from surveillance.sinks.delta import append_batch, batch_committed, upsert_bars
from surveillance.sinks.kafka_alerts import publish_alerts
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.gold import bar_keys, one_minute_bars
from surveillance.transforms.silver import (
    first_per_event_id,
    flag_late,
    not_seen_before,
    parse_quotes,
    to_quarantine,
    to_silver,
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


def batch_stats(checked: DataFrame) -> BatchStats:
    """Counts and the event-time range of one parsed micro-batch, in a single Spark job."""
    valid = F.col("reject_reason").isNull()
    event_time = F.when(valid, F.col("_event_time"))
    row = checked.agg(
        F.count("*").alias("records"),
        F.count_if(valid).alias("valid"),
        F.min(event_time).alias("lo"),
        F.max(event_time).alias("hi"),
        F.collect_set(F.to_date(event_time)).alias("dates"),
    ).first()
    return BatchStats(row["records"], row["valid"], row["lo"], row["hi"], sorted(row["dates"] or []))


class QuoteBatchWriter:
    """The foreachBatch body: ``(batch_df, batch_id) -> None``."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings
        self.locations = table_locations(settings)
        self.checkpoint = resolve_local_path(settings.stream.checkpoint_dir)
        self.watermark_delay = dt.timedelta(seconds=interval_seconds(settings.stream.watermark))
        self.lookback = dt.timedelta(seconds=interval_seconds(settings.rules.history_lookback))
        self._stream_id: str | None = None
        # (batch id, event-time high-water mark after it): saves a table read per batch while running.
        self._high_water: tuple[int, dt.datetime | None] | None = None
        self._first_batch = True
        # The four appends of a batch are independent: run them side by side (Delta commits are mostly
        # driver-side waiting, so this overlaps well even on two cores).
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="delta-append")

    def stream_id(self) -> str:
        """The checkpoint's own query id: stable across restarts, new for a fresh checkpoint.

        Rows carry it with their batch id, so batch ids restarting at 0 after a checkpoint reset never
        collide with an earlier stream's batches.
        """
        if self._stream_id is None:
            metadata = self.spark.read.text(f"{self.checkpoint}/metadata").first()
            self._stream_id = json.loads(metadata[0])["id"]
        return self._stream_id

    def _this_batch(self, batch_id: int) -> Column:
        return (F.col("stream_id") == self.stream_id()) & (F.col("batch_id") == batch_id)

    def _table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.locations[name])

    def _previous_max_event_time(self, batch_id: int) -> dt.datetime | None:
        if self._high_water is not None and self._high_water[0] == batch_id - 1:
            return self._high_water[1]
        earlier = self._table(STREAM_PROGRESS.name).where(~self._this_batch(batch_id))
        return earlier.agg(F.max("max_event_time")).first()[0]

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        started_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        bronze = to_bronze(records, self.stream_id(), batch_id, ingested_at=started_at)
        # Parsed once and cached: every write below starts from these rows, not from Kafka or the JSON.
        checked = parse_quotes(bronze).persist()
        try:
            self._process(checked, batch_id, started_at)
        finally:
            checked.unpersist()
        self._first_batch = False

    def _process(self, checked: DataFrame, batch_id: int, started_at: dt.datetime) -> None:
        stats = batch_stats(checked)
        previous_max = self._previous_max_event_time(batch_id)
        watermark = previous_max - self.watermark_delay if previous_max else None
        history = self._silver_history(batch_id, stats)
        candidates = first_per_event_id(to_silver(checked))
        new_quotes = flag_late(not_seen_before(candidates, history.select("event_id")), watermark).persist()
        alerts = None
        try:
            counts = new_quotes.agg(F.count("*").alias("rows"), F.count_if("is_late").alias("late")).first()
            new_count, late_count = counts["rows"], counts["late"]
            context = history.withColumn("is_new", F.lit(False)).unionByName(
                new_quotes.withColumn("is_new", F.lit(True))
            )
            alerts = detect_alerts(context, self.settings.rules).persist()
            alert_count = alerts.count()
            # Alerts go out first: the lakehouse writes below are slower than a Kafka send.
            already_sent = self._first_batch and self._committed("alerts", batch_id)
            if alert_count and not already_sent:
                publish_alerts(alerts, self.settings.kafka)
            _crash_point("publish", batch_id)
            bronze = checked.select(*BRONZE.schema.fieldNames())
            appends = {
                "bronze_quotes": bronze,
                "quarantine_quotes": to_quarantine(checked),
                "silver_quotes": new_quotes,
                "alerts": alerts,
            }
            futures = [
                self._pool.submit(self._append, rows, name, batch_id) for name, rows in appends.items()
            ]
            for future in futures:
                future.result()
            _crash_point("appends", batch_id)
            if new_count:
                self._update_bars(new_quotes, stats)
            _crash_point("gold", batch_id)
        finally:
            new_quotes.unpersist()
            if alerts is not None:
                alerts.unpersist()

        max_event_time = max((t for t in (previous_max, stats.max_event_time) if t is not None), default=None)
        progress = {
            "stream_id": self.stream_id(),
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
        self._append(progress_row, STREAM_PROGRESS.name, batch_id)
        self._high_water = (batch_id, max_event_time)
        _crash_point("progress", batch_id)

    def _committed(self, name: str, batch_id: int) -> bool:
        return batch_committed(self.spark, self.locations[name], self.stream_id(), batch_id)

    def _append(self, rows: DataFrame, name: str, batch_id: int) -> None:
        # Only the first batch of a run can be a replay of a batch that was (partly) written before.
        append_batch(rows, self.locations[name], self.stream_id(), batch_id, may_be_replay=self._first_batch)
        _crash_point(name, batch_id)

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
            & ~self._this_batch(batch_id)
        )

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
        # PySpark renders the offsets either as JSON or, when it went through a dict, as its Python repr.
        end = ast.literal_eval(end) if end.startswith("{'") else json.loads(end)
    return sum(int(offset) for partitions in end.values() for offset in partitions.values())


def wait_for(
    query: StreamingQuery, on_tick: Callable[[StreamingQuery], None] | None = None, poll_s: float = 0.5
) -> None:
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
