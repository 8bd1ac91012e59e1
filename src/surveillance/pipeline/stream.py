"""The streaming job: two queries on the quotes topic in one Spark application.

* the **detection query** (:mod:`surveillance.pipeline.detection`): per-symbol state, rules and the champion
  model, alerts to the alerts topic and the ``alerts`` table, in a FAIR scheduler pool of higher weight;
* the **lakehouse query** (:class:`QuoteBatchWriter`, this module): bronze, quarantine, silver, gold,
  ``dq_results`` and ``stream_progress``.

Every Delta write of the lakehouse query is idempotent per micro-batch (appends keyed by
``stream_id``/``batch_id``, see :mod:`surveillance.sinks.delta`; a bounded MERGE for bars), and everything a
batch derives from earlier batches is read from rows of *other* batches, so a batch replayed after a crash
computes what its first attempt did.

Times crossing between Python and Spark are timezone-aware UTC datetimes (PySpark reads naive ones as the
host's local time, while the session computes in UTC).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from surveillance.config import Settings, interval_seconds, resolve_local_path
from surveillance.detection.episodes import ensure_episodes_view
from surveillance.lakehouse import BRONZE, SILVER, STREAM_PROGRESS, ensure_tables, read_table, table_locations
from surveillance.observability.metrics import record_lakehouse_batch
from surveillance.pipeline.batch_errors import reporting_batch_errors
from surveillance.pipeline.detection import AlertBatchWriter, checkpoint_query_id, start_detection
from surveillance.pipeline.layers import (
    route_quotes,
    silver_extra_fields,
    silver_row_checks,
    suite_frame,
    suite_validators,
    with_batch_outcomes,
)
from surveillance.pipeline.profile import BatchProfile
from surveillance.quality.columns import with_quote_totals
from surveillance.quality.results import dq_result_rows, dq_results_frame, drift_row
from surveillance.quality.validation import SuiteRun
from surveillance.sinks.delta import append_batch, upsert_bars
from surveillance.transforms.arrivals import ArrivalLimits
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.gold import on_time, stream_bars
from surveillance.transforms.silver import contract_reasons, parse_quotes, to_quarantine, to_silver
from surveillance.transforms.silver_state import (
    OUTPUT_SCHEMA,
    STATE_SCHEMA,
    routed_records,
    silver_state_function,
    state_input,
    touched_bars,
)

# Test hook: SURVEIL_CRASH_AT="<step>:<batch_id>" kills the process (no clean-up, like a power cut) right
# after that step of that micro-batch. Used by the crash/restart tests; unset in normal runs.
CRASH_ENV = "SURVEIL_CRASH_AT"
LAKEHOUSE_POOL = "lakehouse"


def _crash_point(step: str, batch_id: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{step}:{batch_id}":
        os._exit(86)


@dataclass(frozen=True)
class BatchStats:
    records_in: int
    valid_rows: int  # rows that pass the contract and every error expectation (silver candidates)
    contract_valid_rows: int  # rows that pass the contract (what the suite validates)
    min_event_time: dt.datetime | None
    max_event_time: dt.datetime | None
    event_dates: list[dt.date]
    # The merged VARIANT schema of the batch's valid messages (which fields producers sent, of what type).
    message_schema: str | None = None
    # Quarantined rows by reason: each contract rule's name, and "expectations" for error expectations.
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HighWater:
    """Event-time high-water marks after a micro-batch: overall and per symbol."""

    max_event_time: dt.datetime | None
    per_symbol: dict[str, dt.datetime]


def utc_from_micros(micros: int | None) -> dt.datetime | None:
    """An aware UTC datetime from microseconds since the epoch (Spark's ``unix_micros``)."""
    return (
        None if micros is None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    )


def utc_now() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def batch_stats(routed: DataFrame) -> BatchStats:
    """Counts and the event-time range of one routed micro-batch (see ``route_quotes``), in one Spark job.

    The event-time range is that of the rows silver may take: a quarantined quote's time never widens it.
    """
    valid = F.col("reject_reason").isNull()
    errors = F.col("dq_errors") if "dq_errors" in routed.columns else F.array()
    contract_valid = valid | (F.size(errors) > 0)
    event_time = F.when(valid, F.col("_event_time"))
    reasons = contract_reasons()
    row = routed.agg(
        F.count("*").alias("records"),
        F.count_if(valid).alias("valid"),
        F.count_if(contract_valid).alias("contract_valid"),
        F.unix_micros(F.min(event_time)).alias("lo"),
        F.unix_micros(F.max(event_time)).alias("hi"),
        F.collect_set(F.to_date(event_time)).alias("dates"),
        F.schema_of_variant_agg(F.when(contract_valid, F.col("_doc"))).alias("message_schema"),
        # Per quarantine reason, in the same job: the metrics' label set is the contract's rule names.
        *[F.count_if(F.col("reject_reason") == name).alias(f"reason:{name}") for name in reasons],
        F.count_if(F.col("reject_reason").startswith("expectations")).alias("reason:expectations"),
    ).first()
    return BatchStats(
        row["records"],
        row["valid"],
        row["contract_valid"],
        utc_from_micros(row["lo"]),
        utc_from_micros(row["hi"]),
        sorted(row["dates"] or []),
        row["message_schema"],
        {
            key.removeprefix("reason:"): value
            for key, value in row.asDict().items()
            if key.startswith("reason:") and value
        },
    )


def new_quote_counts(routed: DataFrame) -> list[Row]:
    """Per symbol, the batch's new silver quotes: how many, late, out of order, warned, and the latest
    event time (microseconds); one Spark job, one row per symbol."""
    return (
        routed.where("is_new")
        .groupBy(F.col("_raw_symbol").alias("symbol"))
        .agg(
            F.count("*").alias("rows"),
            F.count_if("is_late").alias("late"),
            F.count_if("is_out_of_order").alias("out_of_order"),
            F.count_if(F.size("dq_warnings") > 0).alias("warned"),
            F.unix_micros(F.max("_event_time")).alias("max_micros"),
        )
        .collect()
    )


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
        # (batch id, event-time high-water marks after it): saves a table read per batch while running.
        self._high_water: tuple[int, HighWater] | None = None
        self._first_batch = True
        self._silver_columns: dict[str, str] | None = None  # {column: type} of the silver table
        self.silver_validator, self.bars_validator = suite_validators(settings)
        self.row_checks = silver_row_checks(settings)
        # The three appends, the bars MERGE and the GX run of a batch are independent: run them side by
        # side (Delta commits are mostly driver-side waiting, so this overlaps well even on two cores).
        self._pool = ThreadPoolExecutor(max_workers=5, thread_name_prefix="delta-write")

    def stream_id(self) -> str:
        """The checkpoint's own query id: stable across restarts, new for a fresh checkpoint.

        Rows carry it with their batch id, so batch ids restarting at 0 after a checkpoint reset never
        collide with an earlier stream's batches.
        """
        if self._stream_id is None:
            self._stream_id = checkpoint_query_id(self.spark, self.checkpoint)
            assert self._stream_id is not None, "the query writes its checkpoint metadata before a batch"
        return self._stream_id

    def _this_batch(self, batch_id: int) -> Column:
        return (F.col("stream_id") == self.stream_id()) & (F.col("batch_id") == batch_id)

    def _table(self, name: str) -> DataFrame:
        return read_table(self.spark, self.locations[name])

    def _previous_high_water(self, batch_id: int) -> HighWater:
        if self._high_water is not None and self._high_water[0] == batch_id - 1:
            return self._high_water[1]
        earlier = self._table(STREAM_PROGRESS.name).where(
            ~self._this_batch(batch_id) & F.col("max_event_time").isNotNull()
        )
        # Each lakehouse progress row holds the marks up to its batch; the latest (of any stream) is the
        # frontier. Detection rows carry no marks (its state store has them).
        row = (
            earlier.orderBy(F.desc("finished_at"))
            .select(
                F.unix_micros("max_event_time").alias("max_micros"),
                F.map_entries(
                    F.transform_values("symbol_max_event_time", lambda _, t: F.unix_micros(t))
                ).alias("symbols"),
            )
            .first()
        )
        if row is None:
            return HighWater(None, {})
        per_symbol = {entry[0]: utc_from_micros(entry[1]) for entry in row["symbols"] or []}
        return HighWater(utc_from_micros(row["max_micros"]), per_symbol)

    def __call__(self, rows: DataFrame, batch_id: int) -> None:
        started_at = utc_now()
        profile = BatchProfile(self.spark, self.settings.stream.query_name, batch_id, LAKEHOUSE_POOL)
        # The state step's output, computed once and cached: every write below starts from it. The
        # batch's identity is stamped on after the cache: a value that changes every batch inside the
        # parse would make Spark generate and compile that large stage's code anew each batch.
        cached = rows.persist()
        ingested = F.lit(started_at).cast("timestamp")
        stamped = routed_records(cached).withColumns(
            {
                "ingested_at": ingested,
                "ingest_date": F.to_date(ingested),
                "stream_id": F.lit(self.stream_id()),
                "batch_id": F.lit(batch_id).cast("long"),
            }
        )
        # Cached too: the batch-level expectations (a window over the batch) and the parse of ``value``
        # that schema drift reads then run once, not once per write.
        records = with_batch_outcomes(stamped, self.row_checks).persist()
        try:
            self._process(records, touched_bars(cached), batch_id, started_at, profile)
        finally:
            # Most derived first: uncaching a frame that a cached one builds on makes Spark re-plan that one.
            records.unpersist()
            cached.unpersist()
        self._first_batch = False

    def _process(
        self,
        routed: DataFrame,
        touched: DataFrame,
        batch_id: int,
        started_at: dt.datetime,
        profile: BatchProfile,
    ) -> None:
        with profile.step("state_and_counts"):
            stats = batch_stats(routed)
            per_symbol = new_quote_counts(routed)
        previous = self._previous_high_water(batch_id)
        extra_fields, drift = self._extra_fields(stats.message_schema)
        new_quotes = to_silver(routed.where("is_new"), extra_fields)
        new_count = sum(row["rows"] for row in per_symbol)
        quarantine_count = stats.records_in - stats.valid_rows
        appends = {
            "bronze_quotes": (routed.select(*BRONZE.schema.fieldNames()), stats.records_in),
            "quarantine_quotes": (to_quarantine(routed), quarantine_count),
            "silver_quotes": (new_quotes, new_count),
        }
        # An empty append would still cost a Spark job and a Delta commit.
        tasks = [
            profile.in_thread(f"write_{name}", self._append, rows, name, batch_id)
            for name, (rows, count) in appends.items()
            if count
        ]
        if new_count:
            tasks.append(
                profile.in_thread("bars", self._update_bars, touched, new_quotes, stats, batch_id, profile)
            )
        if self.silver_validator is not None and stats.contract_valid_rows:
            tasks.append(profile.in_thread("validate", self._validate_silver, routed, extra_fields))
        runs = self._run_all(tasks)
        if extra_fields:
            self._silver_columns = None  # the append may have added columns

        with profile.step("write_dq_results"):
            dq_rows = [*dq_result_rows(runs), drift_row(drift, stats.contract_valid_rows, started_at)]
            self._append(
                dq_results_frame(self.spark, dq_rows, self.stream_id(), batch_id), "dq_results", batch_id
            )
        # High-water marks move only with quotes that reached silver (never with a quarantined one).
        batch_max = {row["symbol"]: utc_from_micros(row["max_micros"]) for row in per_symbol}
        high_water = _advance(previous, max(batch_max.values(), default=None), batch_max)
        progress = {
            "stream_id": self.stream_id(),
            "batch_id": batch_id,
            "records_in": stats.records_in,
            "silver_rows": new_count,
            "duplicate_rows": stats.valid_rows - new_count,
            "quarantine_rows": quarantine_count,
            "late_rows": sum(row["late"] for row in per_symbol),
            "out_of_order_rows": sum(row["out_of_order"] for row in per_symbol),
            "dq_warning_rows": sum(row["warned"] for row in per_symbol),
            "alert_rows": None,
            "max_event_time": high_water.max_event_time,
            "watermark": high_water.max_event_time - self.watermark_delay
            if high_water.max_event_time
            else None,
            "symbol_max_event_time": high_water.per_symbol,
            "validation_seconds": sum(run.seconds for run in runs) if runs else None,
            "model_version": None,
            "model_alert_rows": None,
            "started_at": started_at,
            "finished_at": utc_now(),
            "query_name": self.settings.stream.query_name,
            "step_seconds": profile.step_seconds(),
            "spark_jobs": profile.spark_jobs(),
        }
        progress_row = self.spark.createDataFrame([progress], STREAM_PROGRESS.schema)
        self._append(progress_row, STREAM_PROGRESS.name, batch_id)
        self._high_water = (batch_id, high_water)
        record_lakehouse_batch(progress["query_name"], progress, stats.quarantined_by_reason, dq_rows)
        _crash_point("progress", batch_id)

    def _run_all(self, tasks: list[Callable[[], Any]]) -> list[SuiteRun]:
        """Run the batch's writes side by side; every one is waited for, even when one fails."""
        futures = [self._pool.submit(task) for task in tasks]
        runs, errors = [], []
        for future in futures:
            try:
                result = future.result()
            except Exception as exc:  # re-raised below, after the others finished
                errors.append(exc)
                continue
            if isinstance(result, SuiteRun):
                runs.append(result)
        if errors:
            raise errors[0]
        return runs

    def _validate_silver(self, routed: DataFrame, extra_fields: dict[str, str]) -> SuiteRun:
        """GX over the batch's contract-valid quotes, once: the record for dq_results (rows are routed
        by the same expectations as predicates)."""
        quotes = suite_frame(routed, extra_fields).persist()
        try:
            return self.silver_validator.validate(quotes)
        finally:
            quotes.unpersist()

    def _extra_fields(self, message_schema: str | None) -> tuple[dict[str, str], dict[str, Any]]:
        """Silver's extra columns for this batch and what producers sent beyond the contract."""
        return silver_extra_fields(
            self._silver_table_columns(), message_schema, self.settings.schema_settings.evolve
        )

    def evolved_fields(self) -> dict[str, str]:
        """Columns silver gained from producers' fields (schema evolution): the suite may name them."""
        if not self.settings.schema_settings.evolve:
            return {}
        core = set(SILVER.schema.fieldNames())
        return {name: kind for name, kind in self._silver_table_columns().items() if name not in core}

    def _silver_table_columns(self) -> dict[str, str]:
        if self._silver_columns is None:
            schema = self._table("silver_quotes").schema
            self._silver_columns = {field.name: field.dataType.simpleString() for field in schema.fields}
        return self._silver_columns

    def _append(self, rows: DataFrame, name: str, batch_id: int) -> None:
        # Only the first batch of a run can be a replay of a batch that was (partly) written before.
        evolve = name == "silver_quotes" and self.settings.schema_settings.evolve
        append_batch(
            rows,
            self.locations[name],
            self.stream_id(),
            batch_id,
            may_be_replay=self._first_batch,
            merge_schema=evolve,
        )
        _crash_point(name, batch_id)

    def _update_bars(
        self,
        touched: DataFrame,
        new_quotes: DataFrame,
        stats: BatchStats,
        batch_id: int,
        profile: BatchProfile,
    ) -> SuiteRun | None:
        """MERGE the bars the batch touched, whole (from the state step), into gold; validate them.

        The bars suite sees each bar as gold now holds it, with ``quote_volume``/``quote_count``: what the
        bar held before the batch plus this batch's on-time silver quotes of its minute, summed here by
        Spark, apart from the state step's own arithmetic.
        """
        bars = stream_bars(touched).persist()
        try:
            with profile.step("bars_merge"):
                upsert_bars(self.spark, self.locations["gold_bars_1m"], bars, stats.event_dates)
            _crash_point("gold", batch_id)
            if self.bars_validator is None:
                return None
            before = touched.select(
                "symbol",
                F.timestamp_micros("minute_micros").alias("bar_start"),
                "volume_before",
                "count_before",
            )
            with profile.step("bars_validate"):
                return self.bars_validator.validate(with_quote_totals(bars, on_time(new_quotes), before))
        finally:
            bars.unpersist()


def _advance(
    previous: HighWater, batch_max: dt.datetime | None, per_symbol: dict[str, dt.datetime]
) -> HighWater:
    """The high-water marks after a batch: the later of the previous ones and the batch's own."""
    overall = max((t for t in (previous.max_event_time, batch_max) if t is not None), default=None)
    merged = dict(previous.per_symbol)
    for symbol, moment in per_symbol.items():
        if moment is not None and (symbol not in merged or moment > merged[symbol]):
            merged[symbol] = moment
    return HighWater(overall, merged)


def _end_of_minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def dates_between(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """Every UTC date from ``start`` to ``end`` inclusive (the date partitions a time range touches)."""
    first, last = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def read_quotes(
    spark: SparkSession, settings: Settings, max_offsets: int | str | None = "stream"
) -> DataFrame:
    """The quotes topic as a streaming DataFrame (Kafka source); ``max_offsets`` per trigger defaults to
    ``stream.max_offsets_per_trigger``."""
    stream = settings.stream
    reader = (
        spark.readStream.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.topics.quotes)
        .option("startingOffsets", stream.starting_offsets)
        .option("failOnDataLoss", str(stream.fail_on_data_loss).lower())
    )
    limit = stream.max_offsets_per_trigger if max_offsets == "stream" else max_offsets
    if limit:
        reader = reader.option("maxOffsetsPerTrigger", limit)
    return reader.load()


@dataclass
class StreamingJob:
    """The queries of ``surveil stream``, watched and stopped together (a StreamingQuery's surface): the
    lakehouse query's where it runs, else the detection query's."""

    lakehouse: StreamingQuery | None
    detection: StreamingQuery | None = None
    detection_writer: AlertBatchWriter | None = None
    _closed: bool = False

    @property
    def queries(self) -> list[StreamingQuery]:
        return [q for q in (self.detection, self.lakehouse) if q is not None]

    @property
    def isActive(self) -> bool:
        """True while every query runs (with ``once``: while any still has data to finish)."""
        active = [q.isActive for q in self.queries]
        failed = any(q.exception() is not None for q in self.queries if not q.isActive)
        if failed or not any(active):
            self._close()
            return False
        return True

    @property
    def main(self) -> StreamingQuery:
        """The lakehouse query, or the detection query where it runs alone."""
        query = self.lakehouse or self.detection
        assert query is not None, "a job runs at least one query (checked by the configuration)"
        return query

    @property
    def name(self) -> str:
        return self.main.name

    @property
    def id(self) -> str:
        """The main query's id (its checkpoint's): the ``stream_id`` of the rows it writes."""
        return self.main.id

    @property
    def lastProgress(self) -> dict | None:
        return self.main.lastProgress

    @property
    def recentProgress(self) -> list[dict]:
        return self.main.recentProgress

    def awaitTermination(self, timeout: float | None = None) -> None:
        running = [q for q in self.queries if q.isActive]
        for query in running:
            query.awaitTermination((timeout or 1.0) / len(running))

    def exception(self) -> Exception | None:
        for query in self.queries:
            error = query.exception()
            if error is not None:
                return error
        return None

    def stop(self) -> None:
        for query in self.queries:
            if query.isActive:
                query.stop()
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            for query in self.queries:
                if query.isActive:
                    query.stop()
            if self.detection_writer is not None:
                self.detection_writer.close()


def lakehouse_state_step(
    records: DataFrame, settings: Settings, evolved_fields: Mapping[str, str]
) -> DataFrame:
    """Kafka records -> parsed, routed, and through the per-symbol state step (dedup, arrival flags, open
    bars; :mod:`surveillance.transforms.silver_state`): what each lakehouse micro-batch writes from."""
    # No per-batch value in these stages (see QuoteBatchWriter.__call__).
    bronze = to_bronze(records, "", -1, ingested_at=F.lit(None).cast("timestamp"))
    checks = silver_row_checks(settings)
    routed = route_quotes(parse_quotes(bronze), checks, evolved_fields, row_level_only=True)
    stream = settings.stream
    limits = ArrivalLimits(
        late_after_micros=interval_seconds(stream.watermark) * 1_000_000,
        dedup_horizon_micros=interval_seconds(stream.dedup_horizon) * 1_000_000,
        dedup_max_ids=stream.dedup_max_ids,
    )
    return (
        state_input(routed)
        .groupBy("state_key")
        .applyInPandasWithState(
            silver_state_function(limits),
            outputStructType=OUTPUT_SCHEMA,
            stateStructType=STATE_SCHEMA,
            outputMode="append",
            timeoutConf=GroupStateTimeout.NoTimeout,
        )
    )


# The tables each query writes (its start creates them if missing); the backfill's own are created by it.
# alert_actions is the API's (surveil api), created with the alerts so the lakehouse lists it from the start;
# drift_results is `surveil drift report`'s, created with the quotes' tables for the same reason.
DETECTION_TABLES = ("alerts", "stream_progress", "alert_actions")
LAKEHOUSE_TABLES = (
    "bronze_quotes",
    "quarantine_quotes",
    "silver_quotes",
    "gold_bars_1m",
    "dq_results",
    "stream_progress",
    "drift_results",
)


def tables_written(settings: Settings) -> list[str]:
    """The tables the enabled queries write: a query's process checks no other table at its start."""
    names = [
        *(DETECTION_TABLES if settings.detection.enabled else ()),
        *(LAKEHOUSE_TABLES if settings.stream.enabled else ()),
    ]
    return list(dict.fromkeys(names))


def start_stream(spark: SparkSession, settings: Settings, once: bool = False) -> StreamingJob:
    """Create the tables if needed and start the enabled queries (``once``: process what is there, then
    stop).

    The detection query starts first, in the ``detection`` FAIR pool; the lakehouse query in its own.
    """
    locations, written = table_locations(settings), tables_written(settings)
    ensure_tables(spark, locations, written)
    if "alerts" in written:
        ensure_episodes_view(spark, locations["alerts"])
    detection, detection_writer = None, None
    if settings.detection.enabled:
        records = read_quotes(spark, settings, settings.detection.max_offsets_per_trigger)
        detection, detection_writer = start_detection(spark, settings, records, once)
    if not settings.stream.enabled:
        return StreamingJob(None, detection, detection_writer)
    writer = QuoteBatchWriter(spark, settings)
    # The query copies the session's settings when it starts: its state gets its own partition count.
    session_partitions = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(settings.stream.state_partitions))
    stream = (
        lakehouse_state_step(read_quotes(spark, settings), settings, writer.evolved_fields())
        .writeStream.queryName(settings.stream.query_name)
        .option("checkpointLocation", writer.checkpoint)
        .foreachBatch(reporting_batch_errors(settings.stream.query_name, writer))
    )
    if once:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=settings.stream.trigger_interval)
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", LAKEHOUSE_POOL)
    try:
        return StreamingJob(stream.start(), detection, detection_writer)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", session_partitions)
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)


def processed_offsets(query: StreamingQuery | StreamingJob) -> int:
    """Offsets of the quotes topic the query has finished so far (sum over partitions); for both queries
    of a job, those that both have finished."""
    if isinstance(query, StreamingJob):
        return min(processed_offsets(q) for q in query.queries)
    progress = query.lastProgress
    if not progress or not progress.get("sources"):
        return 0
    end = progress["sources"][0].get("endOffset") or {}
    if isinstance(end, str):
        # PySpark renders the offsets either as JSON or, when it went through a dict, as its Python repr.
        end = ast.literal_eval(end) if end.startswith("{'") else json.loads(end)
    return sum(int(offset) for partitions in end.values() for offset in partitions.values())


def wait_for(
    query: StreamingQuery | StreamingJob,
    on_tick: Callable[[StreamingQuery], None] | None = None,
    poll_s: float = 0.5,
    stop_requested: threading.Event | None = None,
) -> None:
    """Block until the query stops, calling ``on_tick`` while it runs; re-raise its failure.

    ``stop_requested`` (set by a signal handler) stops the query from this loop: a handler that called
    Py4J itself would interrupt the Py4J call this loop is in (a reentrant read of its socket).
    """
    try:
        while query.isActive:
            if stop_requested is not None and stop_requested.is_set():
                query.stop()
                return
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
