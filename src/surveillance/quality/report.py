"""What the data-quality history says: ``surveil dq status`` (a table) and ``surveil dq report`` (HTML).

Both read only the lakehouse (``dq_results``, ``stream_progress``, ``quarantine_quotes``), so they work
while the stream runs, after it, or on another machine that can read the tables.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from rich.console import Console
from rich.table import Table

from surveillance.config import ExpectationSpec, Settings
from surveillance.lakehouse import lakehouse_progress, read_table
from surveillance.quality.results import CONTRACT_SUITE
from surveillance.quality.validation import active_expectations, build_expectation

_COUNTS = (
    "records_in",
    "silver_rows",
    "quarantine_rows",
    "dq_warning_rows",
    "duplicate_rows",
    "late_rows",
    "out_of_order_rows",
)
_BATCH_COLUMNS = ["stream_id", "batch_id", "finished_at", *_COUNTS, "validation_seconds", "watermark"]


@dataclass(frozen=True)
class DqStatus:
    """The last micro-batches with their counts, and the expectations each one failed."""

    batches: pd.DataFrame
    failures: pd.DataFrame


def load_dq_status(spark: SparkSession, locations: dict[str, str], last: int = 10) -> DqStatus:
    """The ``last`` micro-batches (newest first) and their failed expectations."""
    progress = lakehouse_progress(read_table(spark, locations["stream_progress"]))
    batches = progress.orderBy(F.desc("finished_at")).limit(last).select(*_BATCH_COLUMNS).toPandas()
    if batches.empty:
        return DqStatus(batches, pd.DataFrame(columns=["stream_id", "batch_id", "suite", "expectation"]))
    keys = spark.createDataFrame(batches[["stream_id", "batch_id"]].astype({"batch_id": "int64"}))
    failures = (
        read_table(spark, locations["dq_results"])
        .join(F.broadcast(keys), ["stream_id", "batch_id"], "left_semi")
        .where(~F.col("success"))
        .select(
            "stream_id", "batch_id", "suite", "expectation", "severity", "unexpected_count", "observed_value"
        )
        .toPandas()
    )
    return DqStatus(batches, failures)


def _failed_text(failures: pd.DataFrame) -> str:
    parts = []
    for row in failures.itertuples():
        count = "" if pd.isna(row.unexpected_count) else f" {int(row.unexpected_count)}"
        mark = "[red]" if row.severity == "error" else "[yellow]"
        parts.append(f"{mark}{row.expectation}{count}[/]")
    return ", ".join(parts) or "[green]all passed[/]"


def print_dq_status(status: DqStatus, console: Console) -> None:
    """The status as a table: one row per micro-batch, newest first."""
    table = Table(title="Data quality of the last micro-batches (newest first)", show_lines=False)
    for header in (
        "batch",
        "finished (UTC)",
        "records",
        "silver",
        "quarantined",
        "warned",
        "duplicates",
        "late",
        "out of order",
        "GX s",
        "failed expectations (rows)",
    ):
        table.add_column(header, justify="left" if header.startswith(("failed", "finished")) else "right")
    for batch in status.batches.itertuples():
        mine = status.failures[
            (status.failures.stream_id == batch.stream_id) & (status.failures.batch_id == batch.batch_id)
        ]
        seconds = "" if pd.isna(batch.validation_seconds) else f"{batch.validation_seconds:.2f}"
        table.add_row(
            str(batch.batch_id),
            pd.Timestamp(batch.finished_at).strftime("%Y-%m-%d %H:%M:%S"),
            *(f"{int(getattr(batch, name) or 0):,}" for name in _COUNTS),
            seconds,
            _failed_text(mine),
        )
    if status.batches.empty:
        console.print("no micro-batch has been processed yet")
        return
    console.print(table)


def pass_rate_figure(results: pd.DataFrame) -> go.Figure:
    """Pass rate (% of rows meeting it; 0/100 for table-level checks) per expectation over micro-batches."""
    suites = sorted(results["suite"].unique()) if not results.empty else []
    fig = make_subplots(rows=max(len(suites), 1), cols=1, subplot_titles=suites or ["no results yet"])
    for row, suite in enumerate(suites, start=1):
        mine = results[results["suite"] == suite].sort_values("run_time")
        for expectation, part in mine.groupby("expectation", sort=False):
            rate = (100 - part["unexpected_percent"]).where(
                part["unexpected_percent"].notna(), part["success"].astype(float) * 100
            )
            fig.add_trace(
                go.Scatter(
                    x=part["run_time"],
                    y=rate,
                    mode="lines+markers",
                    name=f"{suite}.{expectation}",
                    text=[
                        f"batch {b} · {s}" for b, s in zip(part["batch_id"], part["severity"], strict=True)
                    ],
                    hovertemplate="%{text}<br>%{y:.3f} %<extra>" + expectation + "</extra>",
                ),
                row=row,
                col=1,
            )
        fig.update_yaxes(title_text="% of rows passing", row=row, col=1)
    fig.update_layout(height=max(380, 380 * len(suites)), title="Expectation pass rates per micro-batch")
    return fig


def arrival_figure(batches: pd.DataFrame) -> go.Figure:
    """Per micro-batch: quarantined, warned, late (beyond the watermark) and out-of-order quotes."""
    fig = go.Figure()
    ordered = batches.sort_values("finished_at")
    for column, name in (
        ("quarantine_rows", "quarantined"),
        ("dq_warning_rows", "flowed on with warnings"),
        ("late_rows", "beyond the watermark"),
        ("out_of_order_rows", "out of order"),
    ):
        fig.add_trace(go.Bar(x=ordered["finished_at"], y=ordered[column], name=name))
    fig.update_layout(
        barmode="group", title="Quotes per micro-batch by outcome", yaxis_title="quotes", height=420
    )
    return fig


def quarantine_reasons_figure(reasons: pd.DataFrame) -> go.Figure:
    """Horizontal bars: quarantined records by reason."""
    ordered = reasons.sort_values("records")
    fig = go.Figure(go.Bar(x=ordered["records"], y=ordered["reason"], orientation="h"))
    fig.update_layout(
        title="Quarantined records by reason", height=max(300, 26 * len(ordered) + 120), margin={"l": 360}
    )
    return fig


def write_dq_page(batches: pd.DataFrame, results: pd.DataFrame, reasons: pd.DataFrame, path: Path) -> Path:
    """The plotly page: pass rates over time, outcomes per batch, quarantine reasons."""
    figures = [pass_rate_figure(results), arrival_figure(batches), quarantine_reasons_figure(reasons)]
    body = "".join(fig.to_html(full_html=False, include_plotlyjs=(n == 0)) for n, fig in enumerate(figures))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<html><head><meta charset='utf-8'><title>Data quality</title></head><body>"
        f"<h1>Data quality</h1><p>The last {len(batches)} micro-batches. Great Expectations Data Docs: "
        "<a href='gx/index.html'>gx/index.html</a>.</p>"
        f"{body}</body></html>"
    )
    return path


def write_data_docs(
    results: pd.DataFrame, out_dir: Path, suites: Mapping[str, Mapping[str, ExpectationSpec]] | None = None
) -> Path:
    """Great Expectations Data Docs (static HTML) for the given ``dq_results`` rows, one page per batch.

    The validation results are rebuilt from the table (GX's own result objects, with the expectation's
    type, arguments, name and severity), so the docs can be made at any time from the lakehouse alone.
    ``suites`` (the configured ones) adds a page per expectation suite, which the index links to.
    """
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    out_dir = out_dir.resolve()  # GX's file store wants an absolute path
    shutil.rmtree(out_dir, ignore_errors=True)
    context = gx.get_context(mode="ephemeral")
    context.add_data_docs_site(
        "surveillance",
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    for suite, specs in (suites or {}).items():
        expectations = [
            build_expectation(suite, n, spec, None) for n, spec in active_expectations(specs).items()
        ]
        context.suites.add(gx.ExpectationSuite(name=suite, expectations=expectations))
    gx_results = results[results["suite"] != CONTRACT_SUITE]
    for (stream_id, batch_id, suite), rows in gx_results.groupby(["stream_id", "batch_id", "suite"]):
        run_time = pd.Timestamp(rows["run_time"].min()).to_pydatetime()
        run_id = RunIdentifier(run_name=f"batch {batch_id} of stream {stream_id[:8]}", run_time=run_time)
        items = [
            ExpectationValidationResult(
                success=bool(row.success),
                expectation_config=ExpectationConfiguration(
                    type=row.expectation_type,
                    kwargs=json.loads(row.kwargs),
                    meta={"name": row.expectation, "severity": row.severity},
                ),
                result=json.loads(row.result) if row.result else {},
            )
            for row in rows.itertuples()
        ]
        passed = sum(item.success for item in items)
        statistics = {
            "evaluated_expectations": len(items),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(items) - passed,
            "success_percent": 100.0 * passed / len(items) if items else None,
        }
        outcome = ExpectationSuiteValidationResult(
            success=passed == len(items),
            results=items,
            suite_name=suite,
            statistics=statistics,
            meta={"run_id": run_id, "validation_time": run_time.isoformat(), "batch_id": int(batch_id)},
        )
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite),
            run_id=run_id,
            batch_identifier=f"{stream_id}-{batch_id}",
        )
        context.validation_results_store.set(key, outcome)
    context.build_data_docs(site_names=["surveillance"])
    return out_dir / "index.html"


def write_dq_report(
    spark: SparkSession,
    locations: dict[str, str],
    out_dir: Path,
    last: int = 200,
    suites: Mapping[str, Mapping[str, ExpectationSpec]] | None = None,
) -> tuple[Path, Path]:
    """The plotly page (``dq_report.html``) and GX Data Docs (``gx/index.html``) for the last batches."""
    progress = lakehouse_progress(read_table(spark, locations["stream_progress"]))
    latest = progress.orderBy(F.desc("finished_at")).limit(last)
    batches = latest.select(*_BATCH_COLUMNS).toPandas()
    results = (
        read_table(spark, locations["dq_results"])
        .join(latest.select("stream_id", "batch_id"), ["stream_id", "batch_id"], "left_semi")
        .toPandas()
    )
    quarantine = read_table(spark, locations["quarantine_quotes"])
    reasons = quarantine.groupBy("reason").agg(F.count("*").alias("records")).toPandas()
    page = write_dq_page(batches, results, reasons, out_dir / "dq_report.html")
    docs = write_data_docs(results, out_dir / "gx", suites)
    return page, docs


def configured_suites(settings: Settings) -> dict[str, Mapping[str, ExpectationSpec]]:
    """The suites as configured, for the Data Docs' suite pages."""
    suites = settings.quality.suites
    return {name: getattr(suites, name) for name in type(suites).model_fields}
