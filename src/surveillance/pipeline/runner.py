"""Run the streaming job from a terminal: a live progress display, clean stop on Ctrl-C / SIGTERM."""

from __future__ import annotations

import signal
from types import FrameType

from pyspark.sql.streaming import StreamingQuery
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from surveillance.config import Settings
from surveillance.kafka.admin import topic_end_offsets
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


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[batches]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
