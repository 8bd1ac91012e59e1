"""Watch a running stream from a notebook: a line per micro-batch until it has caught up with the topic."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from surveillance.config import KafkaSettings
from surveillance.kafka.admin import topic_end_offsets
from surveillance.lakehouse import lakehouse_progress, read_table
from surveillance.pipeline.stream import processed_offsets

BATCH_COLUMNS = (
    "stream_id",
    "batch_id",
    "records_in",
    "silver_rows",
    "quarantine_rows",
    "duplicate_rows",
    "dq_warning_rows",
    "late_rows",
    "alert_rows",
    "model_alert_rows",
    "started_at",
    "finished_at",
)


@dataclass(frozen=True)
class StreamWatch:
    """How watching ended: micro-batches seen, offsets processed of those in the topic, caught up or not."""

    batches: list[int]
    processed: int
    topic_end: int
    caught_up: bool
    seconds: float


def batch_line(progress: Mapping[str, Any]) -> str:
    """One micro-batch's progress as a line: its id, records, time taken and rate."""
    rows = int(progress.get("numInputRows") or 0)
    seconds = (progress.get("durationMs") or {}).get("triggerExecution", 0) / 1000
    rate = f" ({rows / seconds:,.0f} records/s)" if seconds else ""
    return f"batch {progress.get('batchId')}: {rows:,} records in {seconds:.1f} s{rate}"


def watch_stream(
    query: StreamingQuery,
    kafka: KafkaSettings,
    max_minutes: float,
    poll_seconds: float = 2.0,
    echo: Callable[[str], None] = print,
) -> StreamWatch:
    """Print a line per micro-batch until the query has processed every offset now in the quotes topic.

    Gives up (without stopping the query) after ``max_minutes``; a query that failed raises its error.
    """
    started = time.monotonic()
    deadline = started + max_minutes * 60
    seen: list[int] = []
    while True:
        # recentProgress, not lastProgress: two batches may finish between two polls.
        for progress in query.recentProgress:
            batch = progress.get("batchId")
            if batch not in seen and progress.get("numInputRows"):
                seen.append(batch)
                echo(batch_line(progress))
        if not query.isActive:
            error = query.exception()
            if error is not None:
                raise RuntimeError(f"streaming query failed: {error}")
        topic_end = sum(topic_end_offsets(kafka, kafka.topics.quotes).values())
        processed = processed_offsets(query)
        caught_up = processed >= topic_end
        if caught_up or not query.isActive or time.monotonic() >= deadline:
            break
        query.awaitTermination(poll_seconds)
    seconds = time.monotonic() - started
    state = "caught up" if caught_up else f"stopped watching after {seconds / 60:.1f} min"
    echo(f"{state}: {processed:,} of {topic_end:,} offsets processed in {len(seen)} micro-batches")
    return StreamWatch(seen, processed, topic_end, caught_up, seconds)


def load_batch_progress(
    spark: SparkSession, locations: dict[str, str], stream_id: str | None = None
) -> pd.DataFrame:
    """The stream_progress rows (one per micro-batch, oldest first), of one stream if ``stream_id`` given."""
    progress = lakehouse_progress(read_table(spark, locations["stream_progress"]))
    if stream_id is not None:
        progress = progress.where(F.col("stream_id") == stream_id)
    return progress.select(*BATCH_COLUMNS).orderBy("finished_at").toPandas()


def batch_counts_figure(progress: pd.DataFrame) -> go.Figure:
    """Per micro-batch: records in, silver rows and quarantined records (top); alerts (bottom)."""
    one_stream = progress["stream_id"].nunique() <= 1
    labels = [
        f"{batch}" if one_stream else f"{stream[:8]}·{batch}"
        for stream, batch in zip(progress["stream_id"], progress["batch_id"], strict=True)
    ]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        subplot_titles=["records per micro-batch", "alerts per micro-batch"],
    )
    for column, name in (
        ("records_in", "records in"),
        ("silver_rows", "silver rows"),
        ("quarantine_rows", "quarantined"),
        ("duplicate_rows", "duplicates"),
    ):
        fig.add_trace(go.Bar(x=labels, y=progress[column], name=name), row=1, col=1)
    fig.add_trace(go.Bar(x=labels, y=progress["alert_rows"], name="alerts"), row=2, col=1)
    fig.add_trace(go.Bar(x=labels, y=progress["model_alert_rows"], name="of which model"), row=2, col=1)
    fig.update_xaxes(title_text="micro-batch", type="category", row=2, col=1)
    fig.update_layout(barmode="group", title="Micro-batches: records, quarantine and alerts", height=560)
    return fig
