"""Terminal views of a comparison and of the registered model's versions."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from surveillance.models.compare import Comparison


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_comparison(comparison: Comparison, console: Console, overall_only: bool = False) -> None:
    """Per detector and anomaly type: events, precision, recall, F1, PR-AUC; throughput; the decision.

    ``overall_only``: one row per detector (all anomaly types together).
    """
    table = Table(title="Detectors on the test set (event level)", show_lines=False)
    for name in ("detector", "anomaly type", "events", "detected", "precision", "recall", "F1", "PR-AUC"):
        table.add_column(name, justify="left" if name in ("detector", "anomaly type") else "right")
    table.add_column("rows/s", justify="right")
    frame = comparison.table()
    if overall_only:
        frame = frame[frame.anomaly_type == "all"]
    for detector, rows in frame.groupby("detector", sort=False):
        for position, row in enumerate(rows.itertuples(index=False)):
            overall = row.anomaly_type == "all"
            style = "bold" if overall else None
            table.add_row(
                str(detector) if position == 0 else "",
                str(row.anomaly_type),
                str(row.labelled_events),
                str(row.detected_events),
                _number(row.precision),
                _number(row.recall),
                _number(row.f1),
                _number(row.pr_auc),
                f"{row.rows_per_second:,.0f}" if overall else "",
                style=style,
                end_section=position == len(rows) - 1,
            )
    console.print(table)
    decision = comparison.decision
    console.print(
        f"best: [bold]{comparison.best.name}[/] registered as version {decision.challenger_version}"
    )
    verdict = "[green]promoted to champion[/]" if decision.promoted else "[yellow]champion kept[/]"
    console.print(f"{verdict}: {decision.reason}")
    console.print(f"MLflow: {comparison.tracking_uri} (experiment id {comparison.experiment_id})")


def print_versions(rows: list[dict[str, Any]], name: str, champion_alias: str, console: Console) -> None:
    """The registered model's versions: aliases, detector, test scores, creation time."""
    if not rows:
        console.print(f"no versions of {name} registered yet: run `surveil models compare`")
        return
    table = Table(title=f"Registered model {name}")
    for column in (
        "version",
        "aliases",
        "detector",
        "metric",
        "score",
        "precision",
        "recall",
        "F1",
        "PR-AUC",
    ):
        table.add_column(
            column, justify="right" if column not in ("aliases", "detector", "metric") else "left"
        )
    table.add_column("created (UTC)")
    for row in rows:
        created = dt.datetime.fromtimestamp(row["created"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(row["version"]),
            ", ".join(row["aliases"]),
            row["detector"],
            row["metric"],
            _number(row["score"], 4),
            _number(row["precision"]),
            _number(row["recall"]),
            _number(row["f1"]),
            _number(row["pr_auc"]),
            created,
            style="bold" if champion_alias in row["aliases"] else None,
        )
    console.print(table)
