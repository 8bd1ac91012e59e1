"""Backfill against the stream: the same bronze gives the same silver, gold and alerts; reruns change nothing.

The stream runs first (real broker, several micro-batches, duplicates and malformed lines). A backfill run
through ``spark-submit jobs/backfill.py`` then rebuilds silver, gold and alerts from the stream's bronze
into empty tables, which must equal the stream's, table for table. Backfills in place then restate a
narrower range after a rule change, touching nothing outside it, and change nothing when rerun.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from surveillance.cluster import spark_submit_command
from surveillance.ingestion.generator import DEFAULT_START, GeneratedQuotes, generate_quotes
from surveillance.lakehouse import delta_table, read_table
from surveillance.pipeline.backfill import EventRange, event_range, run_backfill

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
REBUILT = ("silver_quotes", "gold_bars_1m", "alerts", "quarantine_quotes", "dq_results", "backfill_runs")
# Written when a row is written, not derived from the data: the only columns a backfill may not reproduce.
# The stream's alerts also carry the detection query's batch (stream_id, batch_id), which a backfill from
# silver cannot know: it keeps the stored ones.
WRITE_TIMES = {"gold_bars_1m": ["updated_at"], "alerts": ["detected_at", "stream_id", "batch_id"]}


def _in_order(generated: GeneratedQuotes) -> list[str]:
    """The dirty lines minus the very late ones: quotes of a symbol then arrive in event-time order.

    Where a quote arrives after later ones, the stream keeps the alert decision it made for the quote
    after it (README, "Limits worth knowing") while a backfill sees the final order: the one place they
    are meant to differ.
    """
    late = set(generated.manifest.loc[generated.manifest.kind == "late", "line_no"])
    return [line for n, line in enumerate(generated.raw_lines) if n not in late]


def _versions(pipeline: Pipeline) -> dict[str, int]:
    return {
        name: delta_table(pipeline.spark, pipeline.locations[name]).history(1).first()["version"]
        for name in ("silver_quotes", "gold_bars_1m", "alerts", "quarantine_quotes")
    }


def _without_write_times(frame: DataFrame, name: str) -> DataFrame:
    return frame.drop(*WRITE_TIMES.get(name, []))


def _spark_submit_backfill(pipeline: Pipeline, rebuilt: Path, day: dt.date) -> subprocess.CompletedProcess:
    """``spark-submit jobs/backfill.py`` over the stream's bronze, into fresh silver/gold/alerts tables."""
    settings = pipeline.settings
    bars_suite = settings.quality.suites.gold_bars_1m
    overrides = [
        f"state_dir={settings.state_dir}",
        f"lakehouse.root={settings.lakehouse.root}",
        f"kafka.topics.quotes={settings.kafka.topics.quotes}",
        *(f"quality.suites.gold_bars_1m.{name}.severity=off" for name in bars_suite),
        *(f"lakehouse.tables.{name}={rebuilt / name}" for name in REBUILT),
    ]
    command = spark_submit_command(
        "local[2]",
        "backfill",
        [
            "--from", day.isoformat(),
            "--to", day.isoformat(),
            "--env", "local",
            *[item for assignment in overrides for item in ("--set", assignment)],
        ],
        conf={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"},
    )  # fmt: skip
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SURVEIL_CONF_DIR": str(ROOT / "conf")}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_backfill_equals_the_stream_restates_its_range_and_reruns_change_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generated = generate_quotes(symbols=3, minutes=30, seed=23, inject_anomalies=True, dirty=True)
    pipeline.send_lines(_in_order(generated))
    pipeline.settings = pipeline.settings.with_overrides("stream.max_offsets_per_trigger=1500")
    pipeline.run_once()
    spark = pipeline.spark
    assert read_table(spark, pipeline.locations["stream_progress"]).count() >= 2, "state across batches"
    stream = {name: pipeline.table(name) for name in ("silver_quotes", "gold_bars_1m", "alerts")}
    assert stream["alerts"].count() > 0 and stream["silver_quotes"].where("size(dq_warnings) > 0").count() > 0

    # 1. spark-submit, from bronze alone, into empty tables: table equality with the stream.
    rebuilt = tmp_path / "rebuilt"
    result = _spark_submit_backfill(pipeline, rebuilt, DEFAULT_START.date())
    assert result.returncode == 0, result.stderr[-4000:]
    for name, frame in stream.items():
        again = read_table(spark, str(rebuilt / name))
        assertDataFrameEqual(_without_write_times(again, name), _without_write_times(frame, name))
    # Rejected by the suite, with an event time (a record without one belongs to no range).
    quarantined = pipeline.table("quarantine_quotes").where(
        F.col("reason").startswith("expectations:")
        & ~F.array_contains("failed_expectations", "event_time_not_null")
    )
    assert quarantined.count() > 0
    assertDataFrameEqual(read_table(spark, str(rebuilt / "quarantine_quotes")), quarantined)
    recorded = read_table(spark, str(rebuilt / "backfill_runs")).first()
    assert recorded["silver_rows"] == stream["silver_quotes"].count()

    # 2. In place, over what the stream wrote: nothing differs, so nothing is written.
    before = _versions(pipeline)
    day = event_range(DEFAULT_START.date().isoformat(), DEFAULT_START.date().isoformat())
    report = run_backfill(spark, pipeline.settings, day)
    assert report.changed == 0, report.changes
    assert _versions(pipeline) == before

    # 3. A stricter rule over a 15-minute range: alerts inside it restated, nothing outside it touched.
    alerts_before = pipeline.pandas("alerts")
    window = EventRange(DEFAULT_START + dt.timedelta(minutes=10), DEFAULT_START + dt.timedelta(minutes=25))
    stricter = pipeline.settings.with_overrides("rules.price_jump.threshold=0.001")
    report = run_backfill(spark, stricter, window)
    assert report.changes["alerts"].inserted > 0
    assert report.changes["silver_quotes"].changed == 0 and report.changes["gold_bars_1m"].changed == 0
    alerts = pipeline.pandas("alerts")
    start, end = (pd.Timestamp(moment).tz_localize(None) for moment in (window.start, window.end))
    inside = alerts.event_time.ge(start) & alerts.event_time.lt(end)
    outside_before = alerts_before[~(alerts_before.event_time.ge(start) & alerts_before.event_time.lt(end))]
    pd.testing.assert_frame_equal(
        alerts[~inside].sort_values("alert_id", ignore_index=True),
        outside_before.sort_values("alert_id", ignore_index=True),
    )
    # Inside: a price jump exactly where |return| from the previous quote (by event time) exceeds 0.1 %.
    quotes = pipeline.pandas("silver_quotes").sort_values(["symbol", "event_time", "event_id"])
    quotes["ret"] = quotes.groupby("symbol").price.pct_change()
    wanted = quotes[quotes.event_time.ge(start) & quotes.event_time.lt(end) & (quotes.ret.abs() > 0.001)]
    assert sorted(alerts[inside & (alerts.rule == "price_jump")].event_id) == sorted(wanted.event_id)
    assert _versions(pipeline)["gold_bars_1m"] == before["gold_bars_1m"]

    # 4. The same again: the range already holds these rows.
    versions = _versions(pipeline)
    assert run_backfill(spark, stricter, window).changed == 0
    assert _versions(pipeline) == versions
