"""The detection query: Kafka quotes -> per-symbol state -> rules and champion model -> alerts.

Its own read of the quotes topic and its own checkpoint, beside the lakehouse query, so an alert never
waits for a Delta commit, a validation run or a bar. Per micro-batch:

1. parse the records and judge them with the silver suite's row predicates (as the lakehouse does), as a
   projection: every record reaches the state operator with silver's verdict, which keeps the accepted;
2. ``applyInPandasWithState`` per symbol (:mod:`surveillance.detection.symbol_state`): re-sent ids dropped,
   late and out-of-order flagged per symbol, and each new quote's context attached from its symbol's tail
   (:func:`~surveillance.detection.context.tick_context`, the function a backfill applies to silver);
3. in ``foreachBatch``: the rules and the champion model, row-level on that context (the same
   :func:`~surveillance.pipeline.layers.alerts_from_context` a backfill runs), then the alerts are sent
   to the alerts topic, and the batch ends; the ``alerts`` table is appended from a background thread
   (:mod:`surveillance.sinks.alerts_table`), so no alert waits for a Delta commit.

The state store holds everything a batch needs from earlier ones: no table is read inside a micro-batch.
The alerts topic is at least once (a crash between the send and the checkpoint re-sends the batch, with
the same ``alert_id``s); the ``alerts`` table is exactly once: at start, one read of it says up to which
batch it holds this query's alerts; the committed batches after that are recovered from the topic, and a
replayed batch that already appended is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from surveillance.checkpoints import detection_checkpoint
from surveillance.config import Settings, interval_seconds
from surveillance.detection.episodes import OpenEpisode, assign_episodes, read_open_episodes
from surveillance.detection.rules import rule_windows
from surveillance.detection.symbol_state import (
    ENRICHED_SCHEMA,
    INPUT_SCHEMA,
    OPERATOR_INPUT_SCHEMA,
    STATE_SCHEMA,
    StateLimits,
    symbol_state_function,
)
from surveillance.lakehouse import ALERTS, STREAM_PROGRESS, read_table, table_locations, write_table
from surveillance.models.features import HISTORY_TICKS
from surveillance.models.scoring import MODEL_RULE, ChampionModel, LoadedModel
from surveillance.observability.metrics import ALERT_METRIC_FIELDS, record_detection_batch
from surveillance.pipeline.batch_errors import reporting_batch_errors
from surveillance.pipeline.layers import alerts_from_context, route_quotes, silver_row_checks
from surveillance.pipeline.profile import BatchProfile
from surveillance.sinks.alerts_table import (
    AlertTableAppender,
    read_alert_records,
    recover_alert_rows,
    rows_from_topic,
)
from surveillance.sinks.kafka_alerts import AlertPublisher, kafka_record_columns, with_episode
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.silver import parse_quotes, with_silver_fields

log = logging.getLogger(__name__)
DETECTION_POOL = "detection"
CRASH_ENV = "SURVEIL_CRASH_AT"


def _crash_point(step: str, batch_id: int) -> None:
    if os.environ.get(CRASH_ENV) == f"detect-{step}:{batch_id}":
        os._exit(86)


def state_limits(settings: Settings) -> StateLimits:
    """How much each symbol's state keeps (see :mod:`surveillance.detection.symbol_state`)."""
    rules = settings.rules
    return StateLimits(
        tail_ticks=max(HISTORY_TICKS, rules.zscore.window + 1, rules.volume_spike.window + 1),
        late_after_micros=interval_seconds(settings.stream.watermark) * 1_000_000,
        dedup_horizon_micros=interval_seconds(settings.stream.dedup_horizon) * 1_000_000,
        dedup_max_ids=settings.stream.dedup_max_ids,
    )


def judged_quotes(records: DataFrame, settings: Settings) -> DataFrame:
    """Kafka records -> every parsed record in the state operator's input columns, with ``accepted``: the
    verdict silver will give it (the contract and the suite's row predicates, as in the lakehouse query).

    A projection, not a filter: a filter on the verdict would be pushed down into the parse, and Spark
    would then evaluate the parsed fields once per predicate that reads them (measured: 8x slower). The
    operator keeps the accepted records. Expectations comparing rows of one batch with each other cannot
    run before a stateful operator and are left to the lakehouse.
    """
    # No per-batch value in this stage: a literal that changes every batch (the batch id, the batch's
    # timestamp behind current_timestamp()) would make Spark generate and compile its code anew each time.
    bronze = to_bronze(records, "", 0, ingested_at=F.lit(None).cast("timestamp"))
    routed = route_quotes(parse_quotes(bronze), silver_row_checks(settings), row_level_only=True)
    return (
        with_silver_fields(routed)
        .select(
            F.col("reject_reason").isNull().alias("accepted"),
            "symbol",
            "event_id",
            F.unix_micros("event_time").alias("event_micros"),
            "price",
            "volume",
            "bid",
            "ask",
            "dq_warnings",
            "kafka_partition",
            "kafka_offset",
            F.unix_micros("kafka_timestamp").alias("kafka_micros"),
        )
        .select(*OPERATOR_INPUT_SCHEMA.fieldNames())
    )


def symbol_context(quotes: DataFrame, settings: Settings) -> DataFrame:
    """The per-symbol stateful step: each batch's new quotes, flagged, with their per-symbol context."""
    windows = rule_windows(settings.rules, model_features=settings.models.scoring.enabled)
    return quotes.groupBy("symbol").applyInPandasWithState(
        symbol_state_function(state_limits(settings), windows),
        outputStructType=ENRICHED_SCHEMA,
        stateStructType=STATE_SCHEMA,
        outputMode="append",
        timeoutConf=GroupStateTimeout.NoTimeout,
    )


def as_rule_context(context: DataFrame, stream_id: str, batch_id: int, started_at: dt.datetime) -> DataFrame:
    """The operator's rows in the columns the detectors read: silver's, ``is_new``, and the context."""
    event_time = F.timestamp_micros("event_micros")
    silver_like = [
        "event_id",
        "symbol",
        event_time.alias("event_time"),
        "price",
        "volume",
        "bid",
        "ask",
        F.to_date(event_time).alias("event_date"),
        "is_late",
        "is_out_of_order",
        "dq_warnings",
        "kafka_partition",
        "kafka_offset",
        F.timestamp_micros("kafka_micros").alias("kafka_timestamp"),
        F.lit(started_at).cast("timestamp").alias("ingested_at"),
        F.lit(stream_id).alias("stream_id"),
        F.lit(batch_id).cast("long").alias("batch_id"),
        F.lit(True).alias("is_new"),
        F.timestamp_micros("prev_event_micros").alias("prev_event_time"),
    ]
    flags = ("is_late", "is_out_of_order")
    context_only = [name for name in context.columns if name not in (*INPUT_SCHEMA.fieldNames(), *flags)]
    return context.select(*silver_like, *context_only)


def last_committed_batch(spark: SparkSession, checkpoint: str) -> int:
    """The last micro-batch the query's checkpoint records as committed (-1: none), on any file system."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint.rstrip('/')}/commits")
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return -1
    names = [status.getPath().getName() for status in fs.listStatus(path)]
    return max((int(name) for name in names if name.isdigit()), default=-1)


def checkpoint_query_id(spark: SparkSession, checkpoint: str) -> str | None:
    """The query id a checkpoint's ``metadata`` file holds (None: no checkpoint yet), read through the
    Hadoop file system (any store Spark reads) rather than with a Spark job: a restart waits for it."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint.rstrip('/')}/metadata")
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        return json.loads(reader.readLine())["id"]
    finally:
        stream.close()


class AlertBatchWriter:
    """The detection query's foreachBatch body: ``(context, batch_id) -> None``."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings
        self.locations = table_locations(settings)
        self.checkpoint = detection_checkpoint(settings)
        self.query_name = settings.detection.query_name
        self.quality_on = settings.quality.enabled
        self.champion = ChampionModel(settings) if settings.models.scoring.enabled else None
        # A restart waits for all of this before its first batch: the model loads (MLflow, mostly Python)
        # while the alerts recovery waits on Spark.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="champion-load") as loader:
            loading = loader.submit(self.champion.current) if self.champion is not None else None
            self.publisher = AlertPublisher(
                settings.kafka, interval_seconds(settings.detection.publish_timeout)
            )
            self._stream_id = checkpoint_query_id(spark, self.checkpoint)
            # Only the last batch before a crash can be replayed: the table says up to where alerts
            # committed.
            self._appended_up_to = self._recover_alerts()
            if loading is not None:
                loading.result()  # loaded before the first batch, not inside it
        self.appender = AlertTableAppender(spark, self.locations[ALERTS.name], self._append_hook)
        # Each symbol's open episode, carried from batch to batch; at start, what the alerts table left
        # up to the last committed batch (the next one may be a replay: it gets the same episodes).
        committed = (
            (self._stream_id, last_committed_batch(spark, self.checkpoint)) if self._stream_id else None
        )
        self._open_episodes: dict[str, OpenEpisode] = read_open_episodes(
            spark, self.locations[ALERTS.name], committed=committed
        )
        self._merge_gap_micros = round(settings.models.evaluation.merge_gap_seconds * 1e6)
        self._progress: list[dict] = []
        self._progress_lock = threading.Lock()
        self._flushed_at = time.monotonic()
        self._progress_interval = interval_seconds(settings.detection.progress_interval)
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detection-progress")

    def _recover_alerts(self) -> int:
        """Append the alerts of committed batches a crash kept from the table (from the topic); the last
        batch whose alerts the table now holds."""
        if self._stream_id is None:
            return -1
        last = (
            read_table(self.spark, self.locations[ALERTS.name])
            .where(F.col("stream_id") == self._stream_id)
            .agg(F.max("batch_id").alias("batch"), F.unix_millis(F.max("detected_at")).alias("at_ms"))
            .first()
        )
        appended = -1 if last["batch"] is None else int(last["batch"])
        committed = last_committed_batch(self.spark, self.checkpoint)
        if committed <= appended:
            return appended
        # Records of later batches were sent after the last appended batch started (its detected_at).
        since_ms = last["at_ms"] if last["at_ms"] is not None else 0
        records = read_alert_records(self.settings.kafka, since_ms)
        missing = recover_alert_rows(records, self._stream_id, appended, committed)
        if missing:
            rows = rows_from_topic(self.spark, missing)
            write_table(rows.write.format("delta").mode("append"), self.locations[ALERTS.name])
            log.warning(
                "recovered %d alerts of batches %d-%d from the alerts topic into the alerts table",
                len(missing),
                appended + 1,
                committed,
            )
        return committed

    def _append_hook(self, moment: str, batch_ids: list[int]) -> None:
        # Test hooks: "detect-alerts:N" dies right after the table append of batch N; "detect-table:N"
        # before it, once Spark has committed the batch (so it is not replayed: only the topic has its
        # alerts).
        for batch_id in batch_ids:
            if moment == "after":
                _crash_point("alerts", batch_id)
            elif os.environ.get(CRASH_ENV) == f"detect-table:{batch_id}":
                deadline = time.monotonic() + 60
                while last_committed_batch(self.spark, self.checkpoint) < batch_id:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                os._exit(86)

    def stream_id(self) -> str:
        if self._stream_id is None:
            self._stream_id = checkpoint_query_id(self.spark, self.checkpoint)
        assert self._stream_id is not None, "the query writes its checkpoint metadata before a batch"
        return self._stream_id

    def __call__(self, context: DataFrame, batch_id: int) -> None:
        started_at = dt.datetime.now(dt.UTC)
        profile = BatchProfile(self.spark, self.query_name, batch_id, DETECTION_POOL)
        rows = as_rule_context(context, self.stream_id(), batch_id, started_at).persist()
        try:
            with profile.step("state"):
                counts = rows.agg(
                    F.count("*").alias("new"),
                    F.count_if("is_late").alias("late"),
                    F.count_if("is_out_of_order").alias("out_of_order"),
                    F.count_if(F.size("dq_warnings") > 0).alias("warned"),
                ).first()
            found: list[Row] = []
            model = None
            if counts["new"]:
                with profile.step("model_refresh"):
                    model = self.champion.current() if self.champion else None
                found = self._detect(rows, model, batch_id, profile)
        finally:
            rows.unpersist()
        per_rule: dict[str, int] = {}
        for alert in found:
            per_rule[alert["rule"]] = per_rule.get(alert["rule"], 0) + 1
        progress = self._record(batch_id, started_at, counts, per_rule, model, profile)
        record_detection_batch(
            self.query_name,
            progress,
            [{name: alert[name] for name in ALERT_METRIC_FIELDS} for alert in found],
        )

    def _detect(
        self, rows: DataFrame, model: LoadedModel | None, batch_id: int, profile: BatchProfile
    ) -> list[Row]:
        """Rules and model on the batch's quotes in context; alerts sent, then appended; the alerts.

        One Spark job brings the alerts (few) to the driver with their Kafka records: the send and the
        append both start from them, and nothing is computed twice.
        """
        alerts = alerts_from_context(rows, self.settings, model, self.quality_on)
        key, value = kafka_record_columns(alerts)
        with profile.step("rules_and_model"):
            found = alerts.select(
                "*",
                F.unix_micros("event_time").alias("_event_micros"),
                key.alias("_kafka_key"),
                value.alias("_kafka_value"),
            ).collect()
        if not found:
            return found
        with profile.step("episodes"):
            episodes = self._episodes(found)
        with profile.step("publish"):
            records = [
                (row["_kafka_key"], with_episode(row["_kafka_value"], episode), row["alert_id"])
                for row, episode in zip(found, episodes, strict=True)
            ]
            self.publisher.send(records, self.stream_id(), batch_id)
        _crash_point("publish", batch_id)
        if batch_id > self._appended_up_to:
            names = ALERTS.schema.fieldNames()
            self.appender.submit(
                batch_id,
                [
                    tuple(episode if name == "episode_id" else row[name] for name in names)
                    for row, episode in zip(found, episodes, strict=True)
                ],
            )
            self._appended_up_to = batch_id
        return found

    def _episodes(self, found: list[Row]) -> list[str]:
        """Each alert's episode, continuing each symbol's open episode (detection/episodes.py)."""
        frame = pd.DataFrame(
            {
                "symbol": [row["symbol"] for row in found],
                "event_micros": [row["_event_micros"] for row in found],
                "event_id": [row["event_id"] for row in found],
            }
        )
        ids, self._open_episodes = assign_episodes(frame, self._open_episodes, self._merge_gap_micros)
        return list(ids)

    def _record(
        self,
        batch_id: int,
        started_at: dt.datetime,
        counts: Row,
        per_rule: dict[str, int],
        model: LoadedModel | None,
        profile: BatchProfile,
    ) -> dict:
        """Buffer the batch's progress row (returned); a background append every
        ``detection.progress_interval``."""
        row = {
            "stream_id": self.stream_id(),
            "batch_id": batch_id,
            "records_in": None,
            "silver_rows": counts["new"],
            "late_rows": counts["late"],
            "out_of_order_rows": counts["out_of_order"],
            "dq_warning_rows": counts["warned"],
            "alert_rows": sum(per_rule.values()),
            "model_version": model.version if model is not None else None,
            "model_alert_rows": per_rule.get(MODEL_RULE, 0),
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.UTC),
            "query_name": self.query_name,
            "step_seconds": profile.step_seconds(),
            "spark_jobs": profile.spark_jobs(),
        }
        with self._progress_lock:
            self._progress.append(row)
        if time.monotonic() - self._flushed_at >= self._progress_interval:
            self._flushed_at = time.monotonic()
            self._flusher.submit(self.flush_progress)
        return row

    def flush_progress(self) -> None:
        """Append the buffered progress rows in one commit (off the batch's critical path)."""
        with self._progress_lock:
            rows, self._progress = self._progress, []
        if not rows:
            return
        try:
            BatchProfile(self.spark, f"{self.query_name}-progress", rows[-1]["batch_id"]).tag_thread()
            frame = self.spark.createDataFrame(rows, STREAM_PROGRESS.schema)
            write_table(frame.write.format("delta").mode("append"), self.locations[STREAM_PROGRESS.name])
        except Exception as exc:  # telemetry must not stop detection
            log.warning("could not record %d detection progress rows: %s", len(rows), exc)

    def close(self) -> None:
        """Append the queued alerts, record what is buffered and release the producer (after the query
        stopped)."""
        self.appender.close()
        self._flusher.shutdown(wait=True)
        self.flush_progress()
        self.publisher.close()


def start_detection(
    spark: SparkSession, settings: Settings, records: DataFrame, once: bool = False
) -> tuple[StreamingQuery, AlertBatchWriter]:
    """Start the detection query on ``records`` (the quotes topic); the writer is closed by the caller."""
    writer = AlertBatchWriter(spark, settings)
    detection = settings.detection
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", DETECTION_POOL)
    # The query copies the session's settings when it starts: its state gets its own partition count.
    session_partitions = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(detection.state_partitions))
    stream = (
        symbol_context(judged_quotes(records, settings), settings)
        .writeStream.queryName(detection.query_name)
        .option("checkpointLocation", writer.checkpoint)
        .foreachBatch(reporting_batch_errors(detection.query_name, writer))
    )
    if once:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=detection.trigger_interval)
    try:
        return stream.start(), writer
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", session_partitions)
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)
