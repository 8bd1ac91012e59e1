"""What the lakehouse holds after a run: counts per layer, quarantine reasons, alerts by rule and symbol, and
the alert episodes (what an analyst reviews: consecutive alerts of a symbol, see detection/episodes.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from rich.console import Console
from rich.table import Table

from surveillance.detection.episodes import alert_episodes
from surveillance.lakehouse import PUBLIC_TABLES, read_table


def _severity_rank() -> Column:
    return F.when(F.col("severity") == "high", 3).when(F.col("severity") == "medium", 2).otherwise(1)


@dataclass
class LakehouseSummary:
    layer_counts: dict[str, int]
    quarantine_by_reason: dict[str, int]
    alerts_by_rule: dict[str, int]
    alerts_by_rule_symbol: list[dict[str, Any]]
    top_alerts: list[dict[str, Any]] = field(default_factory=list)
    late_rows: int = 0
    episodes_by_symbol: dict[str, int] = field(default_factory=dict)
    top_episodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return sum(self.episodes_by_symbol.values())


def summarize(spark: SparkSession, locations: dict[str, str], top: int = 10) -> LakehouseSummary:
    """Collect the run summary from the Delta tables."""
    counts = {name: read_table(spark, locations[name]).count() for name in PUBLIC_TABLES}
    quarantine = read_table(spark, locations["quarantine_quotes"]).groupBy("reason").count()
    alerts = read_table(spark, locations["alerts"])
    by_rule = alerts.groupBy("rule").count()
    by_rule_symbol = alerts.groupBy("rule", "symbol").count().orderBy("rule", "symbol")
    top_alerts = (
        alerts.orderBy(_severity_rank().desc(), (F.col("score") / F.col("threshold")).desc(), "alert_id")
        .limit(top)
        .select(
            "rule",
            "symbol",
            "event_time",
            "event_id",
            "score",
            "threshold",
            "severity",
            "confidence",
            "details",
        )
    )
    late = read_table(spark, locations["silver_quotes"]).where("is_late").count()
    episodes = alert_episodes(spark, locations["alerts"])
    by_symbol = episodes.groupBy("symbol").count()
    top_episodes = episodes.orderBy(
        F.when(F.col("peak_severity") == "high", 3)
        .when(F.col("peak_severity") == "medium", 2)
        .otherwise(1)
        .desc(),
        F.desc("peak_score_ratio"),
        "episode_id",
    ).limit(top)
    return LakehouseSummary(
        layer_counts=counts,
        quarantine_by_reason={r["reason"]: r["count"] for r in quarantine.orderBy(F.desc("count")).collect()},
        alerts_by_rule={r["rule"]: r["count"] for r in by_rule.orderBy("rule").collect()},
        alerts_by_rule_symbol=[r.asDict() for r in by_rule_symbol.collect()],
        top_alerts=[r.asDict() for r in top_alerts.collect()],
        late_rows=late,
        episodes_by_symbol={r["symbol"]: r["count"] for r in by_symbol.collect()},
        top_episodes=[r.asDict() for r in top_episodes.collect()],
    )


def wide_console() -> Console:
    """A console at least 150 columns wide, so the evidence tables stay legible in logs and pipes."""
    return Console(width=max(Console().width, 150))


def print_summary(summary: LakehouseSummary, console: Console | None = None) -> None:
    """Render the summary as terminal tables."""
    console = console or Console()
    layers = Table(title="Rows per table")
    layers.add_column("table")
    layers.add_column("rows", justify="right")
    for name, count in summary.layer_counts.items():
        layers.add_row(name, f"{count:,}")
    layers.add_row("(silver rows flagged late)", f"{summary.late_rows:,}")
    console.print(layers)

    reasons = Table(title="Quarantined rows by reason")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for reason, count in summary.quarantine_by_reason.items():
        reasons.add_row(reason, str(count))
    console.print(reasons)

    symbols = sorted({row["symbol"] for row in summary.alerts_by_rule_symbol})
    matrix = Table(title="Alerts by rule and symbol")
    matrix.add_column("rule")
    for symbol in symbols:
        matrix.add_column(symbol, justify="right")
    matrix.add_column("total", justify="right")
    for rule, total in summary.alerts_by_rule.items():
        cells = {row["symbol"]: row["count"] for row in summary.alerts_by_rule_symbol if row["rule"] == rule}
        matrix.add_row(rule, *[str(cells.get(symbol, 0)) for symbol in symbols], str(total))
    episodes = summary.episodes_by_symbol
    matrix.add_row(
        "episodes (to review)",
        *[str(episodes.get(symbol, 0)) for symbol in symbols],
        str(summary.episodes),
        style="bold",
    )
    console.print(matrix)

    if summary.top_episodes:
        reviewed = Table(title="Top alert episodes (consecutive alerts of a symbol: one event to review)")
        for column in ("severity", "symbol", "start", "end", "rules", "quotes", "alerts", "peak score"):
            reviewed.add_column(column, overflow="fold")
        for episode in summary.top_episodes:
            reviewed.add_row(
                episode["peak_severity"],
                episode["symbol"],
                str(episode["start_time"]),
                str(episode["end_time"]),
                ", ".join(episode["rules"]),
                str(episode["quote_count"]),
                str(episode["alert_count"]),
                f"{episode['peak_score_ratio']:.3g}x threshold",
            )
        console.print(reviewed)

    top = Table(title="Top alerts and their evidence")
    for column in ("severity", "confidence", "rule", "symbol", "event_time", "event_id", "score", "evidence"):
        top.add_column(column, overflow="fold")
    for alert in summary.top_alerts:
        evidence = json.loads(alert["details"])
        # Empty lists (no data-quality warnings) say nothing: leave them out.
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in evidence.items() if v != [])
        top.add_row(
            alert["severity"],
            alert["confidence"] or "",
            alert["rule"],
            alert["symbol"],
            str(alert["event_time"]),
            alert["event_id"],
            f"{alert['score']:.4g} (>{alert['threshold']:.4g})",
            shown,
        )
    console.print(top)


def _fmt(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict) and "feature" in value[0]:
        # A model's top features: name and robust z (distance from the training median).
        return "; ".join(f"{item['feature']} z={item['robust_z']:.3g}" for item in value)
    return f"{value:.5g}" if isinstance(value, float) else str(value)
