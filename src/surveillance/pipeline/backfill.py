"""Backfill: recompute silver, gold and alerts for an event-time range from bronze, in batch, idempotently.

The range is treated as one large micro-batch, with the same layer functions as the stream
(:mod:`surveillance.pipeline.layers`): its quotes are bronze's records whose event time falls in the range
(each Kafka record once, as first ingested), validated by the same suite; its history is silver before the
range (``rules.history_lookback``), so dedup, previous prices and rolling windows continue from the quotes
before it. Each quote keeps its ingestion (stream id, batch id, time) and is judged late or out of order
against the watermark its own micro-batch had (from ``stream_progress``), so a backfill over data the stream
received in event-time order reproduces the stream's silver, gold and alerts row for row.

Writes replace exactly the range (:func:`surveillance.sinks.delta.replace_range`): a table whose range
already holds those rows is not written at all, so a rerun changes nothing. Rows the suite now rejects are
added to quarantine once. Backfilled alerts are not re-published to Kafka: they restate history.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from surveillance.config import Settings, interval_seconds
from surveillance.detection.episodes import read_open_episodes, with_episodes
from surveillance.lakehouse import (
    BACKFILL_RUNS,
    ensure_tables,
    lakehouse_progress,
    read_table,
    table_locations,
    write_table,
)
from surveillance.models.scoring import ChampionModel, LoadedModel
from surveillance.pipeline.layers import (
    derive_alerts,
    new_silver_quotes,
    route_quotes,
    rule_context,
    silver_extra_fields,
    silver_row_checks,
    suite_frame,
    suite_validators,
)
from surveillance.pipeline.stream import batch_stats, dates_between, utc_now
from surveillance.quality.columns import with_quote_totals
from surveillance.quality.results import dq_result_rows, dq_results_frame
from surveillance.sinks.delta import RangeChange, insert_missing, replace_range
from surveillance.transforms.bronze import first_ingestion
from surveillance.transforms.gold import on_time, one_minute_bars
from surveillance.transforms.silver import BATCH_STATE_SCHEMA, parse_quotes, to_quarantine

# Quotes are not ingested before they happen; a day covers any producer clock running ahead. Bronze is
# read from (range start - this) onwards, or from earlier if silver already holds quotes of the range
# ingested earlier, so nothing the stream kept is ever dropped by a backfill.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(days=1)
STEPS = (
    "read bronze",
    "arrival state",
    "validate",
    "derive",
    "silver",
    "gold",
    "alerts",
    "quarantine",
    "record",
)

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RELATIVE = re.compile(r"^today(?:-(\d+))?$")


@dataclass(frozen=True)
class EventRange:
    """A half-open event-time range [start, end) in UTC, on minute boundaries (bars are whole minutes)."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if moment.tzinfo is None or moment.second or moment.microsecond:
                raise ValueError(f"{moment.isoformat()}: a backfill range starts and ends on a UTC minute")
        if self.start >= self.end:
            raise ValueError(f"empty range: {self.start.isoformat()} is not before {self.end.isoformat()}")

    @property
    def dates(self) -> list[dt.date]:
        """The event-date partitions the range touches."""
        return dates_between(self.start, self.end - dt.timedelta(microseconds=1))

    def scope(self, time_column: str, date_column: str) -> str:
        """The range as a SQL predicate on a table's event-time column and its date partition column."""
        days = ", ".join(f"DATE'{day.isoformat()}'" for day in self.dates)
        return (
            f"{date_column} IN ({days}) AND {time_column} >= TIMESTAMP'{_sql_time(self.start)}' "
            f"AND {time_column} < TIMESTAMP'{_sql_time(self.end)}'"
        )

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def _sql_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parse_bound(text: str, is_end: bool, today: dt.date) -> dt.datetime:
    value = text.strip().lower()
    relative = _RELATIVE.match(value)
    day: dt.date | None = None
    if value == "yesterday":
        day = today - dt.timedelta(days=1)
    elif relative:
        day = today - dt.timedelta(days=int(relative.group(1) or 0))
    elif _DAY.match(value):
        day = dt.date.fromisoformat(value)
    if day is not None:
        # A day given as --to is included: the range ends at the next midnight.
        day = day + dt.timedelta(days=1) if is_end else day
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: expected YYYY-MM-DD, an ISO timestamp such as 2026-11-30T14:00Z, today, yesterday or "
            "today-N"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r}: give the time zone (Z for UTC)")
    return moment.astimezone(dt.UTC)


def event_range(start: str, end: str, today: dt.date | None = None) -> EventRange:
    """The range for ``--from``/``--to``: days (``--to`` included) or ISO minute timestamps (excluded).

    Days may also be ``today``, ``yesterday`` or ``today-N`` (N days ago), so a nightly job can say
    ``--from yesterday --to yesterday``.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    return EventRange(_parse_bound(start, False, today), _parse_bound(end, True, today))


def batch_states(progress: DataFrame, batches: DataFrame, watermark_delay: dt.timedelta) -> DataFrame:
    """The state each micro-batch of ``batches`` ran with, from the stream's ``progress`` rows.

    ``batches`` has (stream_id, batch_id, ingested_at); ingested_at is the moment the batch started. Its
    state is that of the latest progress row finished before then (the high-water marks after the previous
    batch), as the stream itself read it; a batch with none before it had no watermark yet.
    """
    delay_micros = int(watermark_delay.total_seconds() * 1_000_000)
    marks = F.struct("max_event_time", "symbol_max_event_time")
    events = progress.select(
        F.col("finished_at").alias("at"),
        F.lit(1).alias("order"),
        F.lit(None).cast("string").alias("stream_id"),
        F.lit(None).cast("bigint").alias("batch_id"),
        marks.alias("marks"),
    ).unionByName(
        batches.select(
            F.col("ingested_at").alias("at"),
            F.lit(0).alias("order"),
            "stream_id",
            F.col("batch_id").cast("bigint"),
            F.lit(None).cast(progress.select(marks.alias("m")).schema["m"].dataType).alias("marks"),
        )
    )
    # One ordered pass over a few rows per micro-batch; at equal times a batch sees only earlier rows.
    timeline = Window.orderBy("at", "order").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    known = events.withColumn("known", F.last("marks", ignorenulls=True).over(timeline))
    return known.where(F.col("order") == 0).select(
        "stream_id",
        "batch_id",
        F.timestamp_micros(F.unix_micros(F.col("known.max_event_time")) - F.lit(delay_micros)).alias(
            "watermark"
        ),
        F.coalesce(F.col("known.symbol_max_event_time"), F.create_map().cast("map<string,timestamp>")).alias(
            "symbol_max_event_time"
        ),
    )


@dataclass
class BackfillReport:
    """What a backfill found and changed."""

    run_id: str
    range: EventRange
    bronze_from_date: dt.date
    quotes_in_range: int = 0
    silver_rows: int = 0
    quarantined_rows: int = 0
    bar_rows: int = 0
    alert_rows: int = 0
    model_version: str | None = None
    changes: dict[str, RangeChange] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(change.changed for change in self.changes.values())


class BackfillRun:
    """One backfill of one event-time range (``run()`` does the work; ``on_step`` reports each step)."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        range_: EventRange,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.spark = spark
        self.settings = settings
        self.range = range_
        self.locations = table_locations(settings)
        self.on_step = on_step or (lambda step: None)
        self.run_id = f"backfill-{uuid.uuid4()}"
        self.silver_validator, self.bars_validator = suite_validators(settings)
        self.row_checks = silver_row_checks(settings)

    def _table(self, name: str) -> DataFrame:
        return read_table(self.spark, self.locations[name])

    def bronze_from_date(self) -> dt.date:
        """The earliest ingestion date whose bronze records may hold quotes of the range."""
        earliest = (
            self._table("silver_quotes")
            .where(self.range.scope("event_time", "event_date"))
            .agg(F.min("ingested_at").alias("first"))
            .first()["first"]
        )
        start = (self.range.start - CLOCK_SKEW_ALLOWANCE).date()
        return min(start, earliest.astimezone(dt.UTC).date()) if earliest else start

    def _quotes_in_range(self, bronze_from: dt.date) -> DataFrame:
        bronze = self._table("bronze_quotes").where(
            (F.col("ingest_date") >= F.lit(bronze_from))
            & (F.col("topic") == self.settings.kafka.topics.quotes)
        )
        checked = route_quotes(parse_quotes(first_ingestion(bronze)), self.row_checks)
        # Contract-valid records of the range, including those an error expectation rejects (quarantine).
        in_range = (
            (F.col("reject_reason").isNull() | (F.size("dq_errors") > 0))
            & (F.col("_event_time") >= F.lit(self.range.start))
            & (F.col("_event_time") < F.lit(self.range.end))
        )
        return checked.where(in_range)

    def _history(self) -> DataFrame:
        """Silver before the range, as far back as the rules look (the range itself is being replaced)."""
        start = self.range.start - dt.timedelta(
            seconds=interval_seconds(self.settings.rules.history_lookback)
        )
        return self._table("silver_quotes").where(
            F.col("event_date").isin(dates_between(start, self.range.start))
            & (F.col("event_time") >= F.lit(start))
            & (F.col("event_time") < F.lit(self.range.start))
        )

    def _batch_states(self, quotes: DataFrame) -> DataFrame:
        batches = quotes.select("stream_id", "batch_id", "ingested_at").distinct()
        bounds = batches.agg(F.min("ingested_at").alias("lo"), F.max("ingested_at").alias("hi")).first()
        if bounds["lo"] is None:
            return self.spark.createDataFrame([], BATCH_STATE_SCHEMA)
        progress = lakehouse_progress(self._table("stream_progress"))
        # The row just before the first batch, and those up to the last: not the whole table.
        before = (
            progress.where(F.col("finished_at") < F.lit(bounds["lo"])).orderBy(F.desc("finished_at")).limit(1)
        )
        during = progress.where(
            (F.col("finished_at") >= F.lit(bounds["lo"])) & (F.col("finished_at") < F.lit(bounds["hi"]))
        )
        delay = dt.timedelta(seconds=interval_seconds(self.settings.stream.watermark))
        states = batch_states(before.unionByName(during), batches, delay)
        return states.persist()

    def _extra_fields(self, message_schema: str | None) -> dict[str, str]:
        schema = self._table("silver_quotes").schema
        columns = {column.name: column.dataType.simpleString() for column in schema.fields}
        return silver_extra_fields(columns, message_schema, self.settings.schema_settings.evolve)[0]

    def _with_episodes(self, alerts: DataFrame) -> DataFrame:
        """The range's alerts in episodes, continuing those open as it starts (as the stream would)."""
        gap = round(self.settings.models.evaluation.merge_gap_seconds * 1e6)
        start = round(self.range.start.timestamp() * 1e6)
        still_open = read_open_episodes(self.spark, self.locations["alerts"], start - gap, start)
        return with_episodes(alerts, still_open, gap)

    def _model(self) -> LoadedModel | None:
        if not self.settings.models.scoring.enabled:
            return None
        return ChampionModel(self.settings).current()

    def run(self) -> BackfillReport:
        """Recompute the range and replace it in silver, gold and alerts; record the run."""
        started, clock = utc_now(), time.monotonic()
        ensure_tables(self.spark, self.locations)
        self.on_step("read bronze")
        bronze_from = self.bronze_from_date()
        report = BackfillReport(self.run_id, self.range, bronze_from)
        quotes = self._quotes_in_range(bronze_from).persist()
        cached: list[DataFrame] = [quotes]
        try:
            stats = batch_stats(quotes)
            report.quotes_in_range = stats.contract_valid_rows
            self.on_step("arrival state")
            state = self._batch_states(quotes)
            cached.append(state)
            self.on_step("validate")
            extra_fields = self._extra_fields(stats.message_schema)
            silver_run = None
            if self.silver_validator is not None and stats.contract_valid_rows:
                silver_run = self.silver_validator.validate(suite_frame(quotes, extra_fields))
            routed = quotes
            self.on_step("derive")
            history = self._history().persist()
            delay = interval_seconds(self.settings.stream.watermark)
            new_quotes = new_silver_quotes(routed, extra_fields, history, state, delay).persist()
            model = self._model() if stats.valid_rows else None
            report.model_version = model.version if model is not None else None
            alerts = self._with_episodes(
                derive_alerts(
                    rule_context(history, new_quotes), self.settings, model, self.silver_validator is not None
                )
            ).persist()
            bars = one_minute_bars(on_time(new_quotes)).persist()
            cached.extend([history, new_quotes, alerts, bars])
            self.on_step("silver")
            report.changes["silver_quotes"] = replace_range(
                new_quotes,
                self.locations["silver_quotes"],
                ["symbol", "event_id"],
                self.range.scope("event_time", "event_date"),
                merge_schema=bool(extra_fields),
            )
            self.on_step("gold")
            report.changes["gold_bars_1m"] = replace_range(
                bars,
                self.locations["gold_bars_1m"],
                ["symbol", "bar_start"],
                self.range.scope("bar_start", "bar_date"),
                volatile=["updated_at"],
                # The stream sums a minute's notional batch by batch, a backfill in one pass.
                approximate=["vwap"],
            )
            self.on_step("alerts")
            report.changes["alerts"] = replace_range(
                alerts,
                self.locations["alerts"],
                ["alert_id"],
                self.range.scope("event_time", "alert_date"),
                # Written by the detection query's batches: a backfill keeps the stored provenance.
                volatile=["detected_at", "stream_id", "batch_id"],
            )
            # The comparison counted every row the backfill computed: no separate count jobs.
            report.silver_rows, report.bar_rows, report.alert_rows = (
                report.changes[name].computed for name in ("silver_quotes", "gold_bars_1m", "alerts")
            )
            self.on_step("quarantine")
            report.quarantined_rows = insert_missing(
                to_quarantine(routed),
                self.locations["quarantine_quotes"],
                ["topic", "kafka_partition", "kafka_offset", "reason"],
                f"ingest_date >= DATE'{bronze_from.isoformat()}'",
            )
            report.changes["quarantine_quotes"] = RangeChange(inserted=report.quarantined_rows)
            self.on_step("record")
            runs = [silver_run] if silver_run is not None else []
            if self.bars_validator is not None and report.bar_rows:
                runs.append(self.bars_validator.validate(with_quote_totals(bars, on_time(new_quotes))))
            if runs:
                results = dq_results_frame(self.spark, dq_result_rows(runs), self.run_id, 0)
                write_table(results.write.format("delta").mode("append"), self.locations["dq_results"])
        finally:
            # Most derived first: uncaching a frame that cached frames still build on makes Spark re-plan
            # each of them (minutes here, for plans this size).
            for frame in reversed(cached):
                frame.unpersist()
        report.seconds = time.monotonic() - clock
        self._record(report, started)
        return report

    def _record(self, report: BackfillReport, started: dt.datetime) -> None:
        row = {
            "run_id": report.run_id,
            "range_start": report.range.start,
            "range_end": report.range.end,
            "bronze_from_date": report.bronze_from_date,
            "quotes_in_range": report.quotes_in_range,
            "silver_rows": report.silver_rows,
            "quarantined_rows": report.quarantined_rows,
            "bar_rows": report.bar_rows,
            "alert_rows": report.alert_rows,
            "model_version": report.model_version,
            "changes": json.dumps({name: asdict(change) for name, change in report.changes.items()}),
            "started_at": started,
            "finished_at": utc_now(),
        }
        frame = self.spark.createDataFrame([row], BACKFILL_RUNS.schema)
        write_table(frame.write.format("delta").mode("append"), self.locations[BACKFILL_RUNS.name])


def run_backfill(
    spark: SparkSession,
    settings: Settings,
    range_: EventRange,
    on_step: Callable[[str], None] | None = None,
) -> BackfillReport:
    """Backfill ``range_``: silver, gold and alerts recomputed from bronze and replaced, idempotently."""
    return BackfillRun(spark, settings, range_, on_step).run()
