"""``surveil dq bench``: what one validation run per micro-batch costs, at several batch sizes.

It builds micro-batches exactly as the stream sees them (Kafka-shaped rows of generated quotes, dirty
lines included, through bronze, the parser and the silver projection), then times the silver suite's
GX validation (one pass, counts) and, separately, routing the rows by the suite's compiled predicates
(one projection, timed by counting its output), and counts Spark jobs.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from rich.console import Console
from rich.table import Table

from surveillance.config import Settings
from surveillance.ingestion.generator import generate_quotes
from surveillance.pipeline.layers import route_quotes, silver_row_checks, suite_frame
from surveillance.quality.validation import SuiteValidator
from surveillance.transforms.bronze import to_bronze
from surveillance.transforms.silver import parse_quotes

_KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def _micro_batch(spark: SparkSession, rows: int, dirty: bool) -> DataFrame:
    """About ``rows`` Kafka records of generated quotes, as the validation step receives them (cached)."""
    symbols = 8
    minutes = max(1, -(-rows // (symbols * 30)))
    lines = generate_quotes(symbols=symbols, minutes=minutes, seed=11, dirty=dirty).raw_lines[:rows]
    now = dt.datetime.now(dt.UTC)
    records = [(None, line.encode(), "quotes", 0, offset, now) for offset, line in enumerate(lines)]
    bronze = to_bronze(spark.createDataFrame(records, _KAFKA_SCHEMA), "bench", 0, now)
    parsed = parse_quotes(bronze).persist()
    parsed.count()
    return parsed


def _jobs(spark: SparkSession) -> int:
    return max([0, *spark.sparkContext.statusTracker().getJobIdsForGroup()])


def run_dq_bench(
    spark: SparkSession,
    settings: Settings,
    sizes: Sequence[int] = (1_000, 10_000),
    repeats: int = 5,
    out: Path | None = None,
    console: Console | None = None,
) -> list[dict[str, float]]:
    """Median validation time per micro-batch for each size, clean and dirty; printed and returned."""
    console = console or Console()
    validator = SuiteValidator("silver_quotes", settings.quality.suites.silver_quotes)
    checks = silver_row_checks(settings)
    figures = []
    for rows in sizes:
        for dirty in (False, True):
            parsed = _micro_batch(spark, rows, dirty)
            batch = suite_frame(parsed).persist()
            validator.validate(batch)  # warm-up: GX resolves its metric graph once
            timings, row_key_timings, jobs = [], [], []
            for _ in range(repeats):
                before = _jobs(spark)
                run = validator.validate(batch)
                jobs.append(_jobs(spark) - before)
                timings.append(run.seconds)
                started = time.perf_counter()
                route_quotes(parsed, checks).where("size(dq_errors) > 0 or size(dq_warnings) > 0").count()
                row_key_timings.append(time.perf_counter() - started)
            failed = sum(not result.success for result in run.results)
            figures.append(
                {
                    "rows": rows,
                    "data": "dirty" if dirty else "clean",
                    "expectations": len(run.results),
                    "failed_expectations": failed,
                    "median_s": statistics.median(timings),
                    "routing_median_s": statistics.median(row_key_timings),
                    "spark_jobs": statistics.median(jobs),
                    "us_per_row": statistics.median(timings) / rows * 1e6,
                }
            )
            batch.unpersist()
            parsed.unpersist()
    table = Table(title=f"Silver suite validation per micro-batch (median of {repeats})")
    for header in (
        "rows",
        "data",
        "expectations",
        "failed",
        "seconds",
        "routing (predicates) s",
        "Spark jobs",
        "µs/row",
    ):
        table.add_column(header, justify="right")
    for f in figures:
        table.add_row(
            f"{f['rows']:,}",
            f["data"],
            str(f["expectations"]),
            str(f["failed_expectations"]),
            f"{f['median_s']:.2f}",
            f"{f['routing_median_s']:.2f}",
            f"{f['spark_jobs']:.0f}",
            f"{f['us_per_row']:.0f}",
        )
    console.print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2))
    return figures
