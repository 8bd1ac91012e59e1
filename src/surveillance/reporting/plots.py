"""Plotly report: per-symbol price with alert markers, and alert counts by rule and symbol."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import SparkSession

from surveillance.lakehouse import read_table

RULE_MARKERS = {"price_jump": "triangle-up", "return_zscore": "diamond", "volume_spike": "square"}


def price_with_alerts_figure(bars: pd.DataFrame, alerts: pd.DataFrame) -> go.Figure:
    """One panel per symbol: 1-minute close (and high-low band) with alert markers at the alerted quote."""
    symbols = sorted(bars["symbol"].unique()) if not bars.empty else []
    fig = make_subplots(
        rows=max(len(symbols), 1),
        cols=1,
        shared_xaxes=True,
        subplot_titles=symbols or ["no data"],
        vertical_spacing=0.02 if len(symbols) > 6 else 0.06,
    )
    for row, symbol in enumerate(symbols, start=1):
        mine = bars[bars["symbol"] == symbol].sort_values("bar_start")
        fig.add_trace(
            go.Scatter(
                x=mine["bar_start"],
                y=mine["high"],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=mine["bar_start"],
                y=mine["low"],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(31,119,180,0.15)",
                showlegend=False,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=mine["bar_start"],
                y=mine["close"],
                mode="lines",
                name=f"{symbol} close",
                line={"color": "#1f77b4", "width": 1.2},
                showlegend=False,
            ),
            row=row,
            col=1,
        )
        for rule, marker in RULE_MARKERS.items():
            hits = alerts[(alerts["symbol"] == symbol) & (alerts["rule"] == rule)]
            if hits.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=hits["event_time"],
                    y=hits["price"],
                    mode="markers",
                    name=rule,
                    legendgroup=rule,
                    showlegend=row == 1 or symbol == symbols[0],
                    marker={"symbol": marker, "size": 9, "line": {"width": 1, "color": "black"}},
                    text=hits["hover"],
                    hoverinfo="text",
                ),
                row=row,
                col=1,
            )
    fig.update_layout(
        height=max(300, 220 * len(symbols)), title="Price (1-minute close, high-low band) and alerts"
    )
    return fig


def alert_counts_figure(alerts: pd.DataFrame) -> go.Figure:
    """Stacked bars: alerts per symbol, one colour per rule."""
    fig = go.Figure()
    if not alerts.empty:
        counts = alerts.groupby(["symbol", "rule"]).size().reset_index(name="alerts")
        for rule, part in counts.groupby("rule"):
            fig.add_trace(go.Bar(x=part["symbol"], y=part["alerts"], name=rule))
    fig.update_layout(
        barmode="stack",
        title="Alerts by symbol and rule",
        xaxis_title="symbol",
        yaxis_title="alerts",
        height=420,
    )
    return fig


def load_report_frames(spark: SparkSession, locations: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gold bars and alerts (with the alerted quote's price) as pandas frames."""
    bars = read_table(spark, locations["gold_bars_1m"]).select("symbol", "bar_start", "high", "low", "close")
    alerts = read_table(spark, locations["alerts"])
    silver = read_table(spark, locations["silver_quotes"]).select("event_id", "price")
    alerts = alerts.join(silver, "event_id", "left").select(
        "symbol", "rule", "event_time", "event_id", "price", "score", "severity", "details"
    )
    alerts_pd = alerts.toPandas()
    alerts_pd["hover"] = (
        alerts_pd["rule"]
        + " "
        + alerts_pd["severity"]
        + "<br>"
        + alerts_pd["event_id"].astype(str)
        + "<br>score "
        + alerts_pd["score"].round(4).astype(str)
        + "<br>"
        + alerts_pd["details"].astype(str)
    )
    return bars.toPandas(), alerts_pd


def write_report(spark: SparkSession, locations: dict[str, str], out_dir: Path) -> Path:
    """Write ``surveillance_report.html`` (both figures, plotly.js embedded so it opens offline)."""
    bars, alerts = load_report_frames(spark, locations)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "surveillance_report.html"
    price = price_with_alerts_figure(bars, alerts).to_html(full_html=False, include_plotlyjs=True)
    counts = alert_counts_figure(alerts).to_html(full_html=False, include_plotlyjs=False)
    path.write_text(
        "<html><head><meta charset='utf-8'><title>Market surveillance report</title></head><body>"
        f"<h1>Market surveillance report</h1><p>{len(alerts)} alerts over {bars['symbol'].nunique()} symbols."
        f"</p>{counts}{price}</body></html>"
    )
    return path
