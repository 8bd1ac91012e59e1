"""A look at a topic before the stream runs: Kafka read once in batch, through the bronze and silver parsers.

The preview applies the quote contract only (:func:`surveillance.transforms.silver.parse_quotes`); the
Great Expectations suites, deduplication and the watermark are the stream's (see ``notebooks/02``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from surveillance.config import Settings
from surveillance.lakehouse import read_table, table_exists
from surveillance.quality.report import quarantine_reasons_figure
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.silver import parse_quotes

PREVIEW_STREAM_ID = "preview"  # bronze rows need a stream id and batch; these are never written
NO_SYMBOL = "(no symbol)"


def read_topic(spark: SparkSession, settings: Settings, topic: str | None = None) -> DataFrame:
    """Every record now in the topic (default: the quotes topic), read once in batch."""
    return (
        spark.read.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", topic or settings.kafka.topics.quotes)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )


def preview_quotes(kafka_records: DataFrame) -> DataFrame:
    """Kafka rows -> per record: its symbol (else its key), event minute and contract reject reason."""
    parsed = parse_quotes(to_bronze(kafka_records, PREVIEW_STREAM_ID, batch_id=-1))
    return parsed.select(
        "partition",
        "offset",
        F.coalesce(F.col("_raw_symbol"), F.col("key"), F.lit(NO_SYMBOL)).alias("symbol"),
        F.date_trunc("minute", "_event_time").alias("event_minute"),
        "reject_reason",
    )


@dataclass(frozen=True)
class TopicPreview:
    """Counts of a topic's records as the stream's parser sees them."""

    messages: int
    valid: int
    by_symbol: pd.DataFrame  # symbol, valid, rejected
    by_minute: pd.DataFrame  # event_minute, symbol, messages (valid records)
    reasons: pd.DataFrame  # reason, records


def summarize_preview(counts: pd.DataFrame) -> TopicPreview:
    """The preview from per (symbol, event_minute, reject_reason) counts."""
    outcome = np.where(counts["reject_reason"].isna(), "valid", "rejected")
    by_symbol = (
        counts.assign(outcome=outcome)
        .pivot_table(index="symbol", columns="outcome", values="count", aggfunc="sum", fill_value=0)
        .reindex(columns=["valid", "rejected"], fill_value=0)
        .reset_index()
        .rename_axis(columns=None)
    )
    valid = counts[counts["reject_reason"].isna()]
    by_minute = (
        valid.groupby(["event_minute", "symbol"], as_index=False)["count"]
        .sum()
        .rename(columns={"count": "messages"})
        .sort_values(["event_minute", "symbol"], ignore_index=True)
    )
    reasons = (
        counts[counts["reject_reason"].notna()]
        .groupby("reject_reason", as_index=False)["count"]
        .sum()
        .rename(columns={"reject_reason": "reason", "count": "records"})
        .sort_values("records", ascending=False, ignore_index=True)
    )
    return TopicPreview(int(counts["count"].sum()), int(valid["count"].sum()), by_symbol, by_minute, reasons)


def topic_preview(spark: SparkSession, settings: Settings) -> TopicPreview:
    """Read the quotes topic in batch and count its records by symbol, minute and reject reason."""
    counts = (
        preview_quotes(read_topic(spark, settings))
        .groupBy("symbol", "event_minute", "reject_reason")
        .count()
        .toPandas()
    )
    return summarize_preview(counts)


def latest_bronze(spark: SparkSession, locations: dict[str, str], rows: int = 20) -> DataFrame | None:
    """The newest rows of the bronze table, or None if the stream has not created it yet."""
    location = locations["bronze_quotes"]
    if not table_exists(spark, location):
        return None
    return (
        read_table(spark, location).orderBy(F.desc("ingested_at"), "partition", F.desc("offset")).limit(rows)
    )


def messages_per_symbol_figure(by_symbol: pd.DataFrame) -> go.Figure:
    """Stacked bars: records per symbol that meet the contract and that it rejects."""
    fig = go.Figure()
    for outcome, colour in (("valid", "#1f77b4"), ("rejected", "#d62728")):
        fig.add_trace(go.Bar(x=by_symbol["symbol"], y=by_symbol[outcome], name=outcome, marker_color=colour))
    fig.update_layout(
        barmode="stack",
        title="Messages per symbol (by the quote contract)",
        yaxis_title="messages",
        height=420,
    )
    return fig


def messages_per_minute_figure(by_minute: pd.DataFrame) -> go.Figure:
    """One line per symbol: valid messages per minute of event time."""
    fig = go.Figure()
    for symbol, part in by_minute.groupby("symbol"):
        fig.add_trace(go.Scatter(x=part["event_minute"], y=part["messages"], mode="lines", name=symbol))
    fig.update_layout(
        title="Messages per minute of event time", xaxis_title="event time (UTC)", yaxis_title="messages"
    )
    return fig


def reject_reasons_figure(reasons: pd.DataFrame) -> go.Figure:
    """Horizontal bars: records the contract rejects, by reason."""
    return quarantine_reasons_figure(reasons).update_layout(title="Rejected by the quote contract, by reason")
