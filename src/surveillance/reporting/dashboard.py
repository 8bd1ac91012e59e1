"""The surveillance dashboard: one symbol's candlesticks with its alerts, the alert timeline, rule × symbol.

Figure builders are pure (pandas in, plotly figure out); :func:`load_dashboard` reads what they need.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from surveillance.lakehouse import read_table
from surveillance.reporting.charts import RULE_MARKERS

MODEL_MARKER = "star"
SEVERITY_COLOURS = {"high": "#d62728", "medium": "#ff7f0e", "low": "#7f7f7f"}
ALERT_COLUMNS = [
    "alert_id",
    "symbol",
    "rule",
    "severity",
    "confidence",
    "event_time",
    "event_id",
    "score",
    "threshold",
    "price",
    "episode_id",
]
BAR_COLUMNS = ["symbol", "bar_start", "open", "high", "low", "close", "volume", "trade_count"]


@dataclass(frozen=True)
class Dashboard:
    """Every alert (with the alerted quote's price), the chosen symbol and that symbol's one-minute bars."""

    alerts: pd.DataFrame
    symbol: str | None
    bars: pd.DataFrame


def busiest_symbol(alerts: pd.DataFrame) -> str | None:
    """The symbol with the most alerts (ties: the first by name), or None without alerts."""
    if alerts.empty:
        return None
    counts = alerts.groupby("symbol").size()
    return str(counts[counts == counts.max()].index.min())


def load_dashboard(spark: SparkSession, locations: dict[str, str], symbol: str | None = None) -> Dashboard:
    """Alerts joined to their quote's price, and the bars of ``symbol`` (default: the one most alerted)."""
    silver = read_table(spark, locations["silver_quotes"]).select("event_id", "price")
    table = read_table(spark, locations["alerts"])
    alerts = (
        table.join(silver, "event_id", "left")
        # A table from before episodes (not yet given the column by a stream's start) has no episode_id.
        .select(*[name for name in ALERT_COLUMNS if name in {*table.columns, "price"}])
        .orderBy("event_time", "rule")
        .toPandas()
    )
    bars_table = read_table(spark, locations["gold_bars_1m"])
    chosen = symbol or busiest_symbol(alerts)
    if chosen is None:  # no alerts yet: the first symbol that has bars
        first = bars_table.agg(F.min("symbol")).first()
        chosen = first[0] if first else None
    bars = bars_table.where(F.col("symbol") == chosen).select(*BAR_COLUMNS).orderBy("bar_start").toPandas()
    return Dashboard(alerts, chosen, bars)


def _alert_hover(alerts: pd.DataFrame) -> pd.Series:
    return (
        alerts["rule"]
        + " · "
        + alerts["severity"].astype(str)
        + " (confidence "
        + alerts["confidence"].astype(str)
        + ")<br>"
        + alerts["event_id"].astype(str)
        + "<br>score "
        + alerts["score"].round(4).astype(str)
        + " > "
        + alerts["threshold"].round(4).astype(str)
    )


def candlestick_figure(bars: pd.DataFrame, alerts: pd.DataFrame, symbol: str | None) -> go.Figure:
    """One symbol's one-minute candlesticks and volume, a marker per alert at the alerted quote's price."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.04)
    fig.add_trace(
        go.Candlestick(
            x=bars["bar_start"],
            open=bars["open"],
            high=bars["high"],
            low=bars["low"],
            close=bars["close"],
            name=f"{symbol} 1m",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=bars["bar_start"], y=bars["volume"], name="volume", marker_color="#9ecae1"), row=2, col=1
    )
    mine = alerts[alerts["symbol"] == symbol]
    for rule, hits in mine.groupby("rule"):
        fig.add_trace(
            go.Scatter(
                x=hits["event_time"],
                y=hits["price"],
                mode="markers",
                name=rule,
                marker={
                    "symbol": RULE_MARKERS.get(rule, MODEL_MARKER),
                    "size": 11,
                    "color": [SEVERITY_COLOURS.get(s, "#7f7f7f") for s in hits["severity"]],
                    "line": {"width": 1, "color": "black"},
                },
                text=_alert_hover(hits),
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    fig.update_layout(
        title=f"{symbol or 'no symbol'}: one-minute bars and {len(mine)} alerts (colour = severity)",
        xaxis_rangeslider_visible=False,
        height=620,
    )
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    return fig


def episode_count(alerts: pd.DataFrame) -> int:
    """The episodes the alerts make (an alert written before episodes existed is one of its own)."""
    if alerts.empty:
        return 0
    episodes = alerts["episode_id"] if "episode_id" in alerts else pd.Series(None, index=alerts.index)
    return int(episodes.fillna(alerts["alert_id"]).nunique())


def alert_timeline_figure(alerts: pd.DataFrame) -> go.Figure:
    """Every alert at its event time, one row per rule, coloured by severity."""
    fig = go.Figure()
    for severity, colour in SEVERITY_COLOURS.items():
        part = alerts[alerts["severity"] == severity]
        if part.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=part["event_time"],
                y=part["rule"],
                mode="markers",
                name=severity,
                marker={"color": colour, "size": 9, "opacity": 0.8},
                text=part["symbol"] + "<br>" + _alert_hover(part),
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title=f"Alert timeline: {len(alerts)} alerts in {episode_count(alerts)} episodes, by rule, severity",
        xaxis_title="event time (UTC)",
        yaxis_title="rule",
        yaxis={"type": "category", "categoryorder": "category descending"},
        height=380,
    )
    return fig


def alert_heatmap_figure(alerts: pd.DataFrame) -> go.Figure:
    """Alert counts by rule (rows) and symbol (columns)."""
    counts = alerts.groupby(["rule", "symbol"]).size().unstack(fill_value=0).sort_index().sort_index(axis=1)
    fig = go.Figure(
        go.Heatmap(
            z=counts.to_numpy(),
            x=list(counts.columns),
            y=list(counts.index),
            text=counts.to_numpy(),
            texttemplate="%{text}",
            colorscale="Reds",
            colorbar={"title": {"text": "alerts"}},
            hovertemplate="%{y} on %{x}: %{z} alerts<extra></extra>",
        )
    )
    fig.update_layout(title="Alerts by rule and symbol", xaxis_title="symbol", yaxis_title="rule", height=360)
    return fig
