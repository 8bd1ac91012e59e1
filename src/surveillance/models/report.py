"""Terminal views of a comparison and of the registered model's versions."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from surveillance.models.compare import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, Comparison
from surveillance.models.real_evaluation import RealEvaluation


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_comparison(comparison: Comparison, console: Console, overall_only: bool = False) -> None:
    """Per detector and anomaly type, side by side on the in-distribution and the out-of-distribution test
    sets: events, detected, precision, recall, F1; the selection score (the worse F1); throughput; the
    real-data false-alarm load where real data is at hand; the decision.

    ``overall_only``: one row per detector (all anomaly types together).
    """
    frame = comparison.table()
    ids = frame[frame.test_set == IN_DISTRIBUTION].set_index(["detector", "anomaly_type"])
    ood = frame[frame.test_set == OUT_OF_DISTRIBUTION].set_index(["detector", "anomaly_type"])
    table = Table(
        title="Detectors, event level: in-distribution test set | out-of-distribution test set",
        show_lines=False,
    )
    table.add_column("detector")
    table.add_column("anomaly type")
    for prefix in ("", "OOD "):
        for name in ("events", "found", "P", "R", "F1"):
            table.add_column(f"{prefix}{name}", justify="right")
    table.add_column("selection", justify="right")
    table.add_column("rows/s", justify="right")
    for result in comparison.results:
        kinds = ["all"] if overall_only else list(ids.loc[result.name].index)
        for position, kind in enumerate(kinds):
            overall = kind == "all"
            cells = []
            for part in (ids, ood):
                row = part.loc[(result.name, kind)] if (result.name, kind) in part.index else None
                cells += (
                    ["-"] * 5
                    if row is None
                    else [
                        str(row.labelled_events),
                        str(row.detected_events),
                        _number(row.precision),
                        _number(row.recall),
                        _number(row.f1),
                    ]
                )
            table.add_row(
                result.name if position == 0 else "",
                kind,
                *cells,
                _number(result.score(comparison.selection_metric)) if overall else "",
                f"{result.rows_per_second:,.0f}" if overall else "",
                style="bold" if overall else None,
                end_section=position == len(kinds) - 1,
            )
    console.print(table)
    console.print(
        "P (per type): hits of that type / (hits + every false event); selection: the worse of the two "
        f"overall {comparison.selection_metric} scores"
    )
    if comparison.real is not None:
        print_real(comparison.real, console)
    decision = comparison.decision
    console.print(
        f"best: [bold]{comparison.best.name}[/] registered as version {decision.challenger_version}"
    )
    verdict = "[green]promoted to champion[/]" if decision.promoted else "[yellow]champion kept[/]"
    console.print(f"{verdict}: {decision.reason}")
    console.print(f"MLflow: {comparison.tracking_uri} (experiment id {comparison.experiment_id})")


def print_real(real: RealEvaluation, console: Console, by_symbol: bool = False) -> None:
    """The real-data false-alarm load per detector (and rule) and recall of the real >5 % moves."""
    table = Table(
        title=f"On real markets: {real.quotes:,} quotes, {real.moves} moves of more than 5 %",
        show_lines=False,
    )
    for name in ("detector", "alerts", "per 1,000 quotes", "episodes", "per 1,000 quotes ", "moves found"):
        table.add_column(name, justify="left" if name == "detector" else "right")
    for row in real.table.itertuples(index=False):
        table.add_row(
            row.detector,
            f"{row.alerts:,}",
            _number(row.alerts_per_1000, 2),
            f"{row.episodes:,}",
            _number(row.episodes_per_1000, 2),
            f"{row.moves_flagged}/{row.moves} ({_number(row.move_recall, 2)})",
        )
    console.print(table)
    if not by_symbol or real.by_symbol.empty:
        return
    wide = real.by_symbol.pivot(index="symbol", columns="detector", values="alerts_per_1000")
    quotes = real.by_symbol.drop_duplicates("symbol").set_index("symbol")["quotes"]
    per_symbol = Table(title="Alerts per 1,000 quotes by symbol")
    per_symbol.add_column("symbol")
    per_symbol.add_column("quotes", justify="right")
    for detector in real.table.detector:
        per_symbol.add_column(detector, justify="right")
    for symbol, row in wide.iterrows():
        per_symbol.add_row(
            str(symbol), f"{quotes[symbol]:,}", *[_number(row[d], 1) for d in real.table.detector]
        )
    console.print(per_symbol)


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
