"""The streaming job and backfills from a terminal: live progress, a clean stop on Ctrl-C / SIGTERM."""

from __future__ import annotations

import signal
from types import FrameType

from pyspark.sql.streaming import StreamingQuery
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from surveillance.config import Settings
from surveillance.kafka.admin import topic_end_offsets
from surveillance.pipeline.backfill import STEPS, BackfillReport, EventRange, run_backfill
from surveillance.pipeline.stream import processed_offsets, start_stream, wait_for
from surveillance.quality.validation import preload_great_expectations
from surveillance.spark import get_spark


def run_stream(settings: Settings, once: bool = False, console: Console | None = None) -> None:
    """Start the streaming job and block until it stops (``once``: when everything available is done)."""
    console = console or Console(stderr=True)
    if settings.quality.enabled:
        preload_great_expectations()  # overlaps the import with Spark's start-up
    spark = get_spark(settings)
    # With availableNow the query stops at the offsets that exist when it starts: that is the total.
    total = sum(topic_end_offsets(settings.kafka, settings.kafka.topics.quotes).values()) if once else None
    query = start_stream(spark, settings, once=once)
    previous = signal.getsignal(signal.SIGTERM)

    def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
        query.stop()

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        with _progress(console) as progress:
            task = progress.add_task("quotes", total=None, batches="")

            def show(q: StreamingQuery) -> None:
                last = q.lastProgress or {}
                rate = last.get("processedRowsPerSecond") or 0.0
                progress.update(
                    task,
                    completed=processed_offsets(q),
                    total=total,
                    batches=f"batch {last.get('batchId', '-')} | {rate:,.0f} rows/s",
                )

            wait_for(query, show)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if query.isActive:
            query.stop()


def _progress(console: Console, detail: str = "batches") -> Progress:
    """A progress bar with a task's ``detail`` field beside the count."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[{detail}]}}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def backfill_with_progress(
    settings: Settings, range_: EventRange, console: Console | None = None
) -> BackfillReport:
    """Run a backfill with a step-by-step progress display, then print what it found and changed."""
    console = console or Console(stderr=True)
    if settings.quality.enabled:
        preload_great_expectations()
    spark = get_spark(settings)
    with _progress(console, detail="step") as progress:
        task = progress.add_task(f"backfill {range_}", total=len(STEPS), step="starting")

        def on_step(step: str) -> None:
            progress.update(task, completed=STEPS.index(step), step=step)

        report = run_backfill(spark, settings, range_, on_step)
        progress.update(task, completed=len(STEPS), step="done")
    print_backfill_report(report, console)
    return report


def print_backfill_report(report: BackfillReport, console: Console) -> None:
    """The backfill's figures and, per table, the rows it inserted, updated and deleted."""
    console.print(
        f"{report.run_id}: {report.range}, bronze read from {report.bronze_from_date}, "
        f"{report.seconds:.1f} s\n"
        f"quotes in range {report.quotes_in_range:,} | silver {report.silver_rows:,} | "
        f"bars {report.bar_rows:,} | alerts {report.alert_rows:,} | newly quarantined "
        f"{report.quarantined_rows:,} | model {report.model_version or 'none'}"
    )
    table = Table("table", "inserted", "updated", "deleted", "unchanged")
    for name, change in report.changes.items():
        table.add_row(
            name, *(f"{n:,}" for n in (change.inserted, change.updated, change.deleted, change.unchanged))
        )
    console.print(table)
    if not report.changed:
        console.print("nothing changed: the lakehouse already held exactly these rows")
