"""The report's figures (plotly), shared by the HTML report (interactive) and the PDF (as PNG images).

A rule keeps one colour and one marker everywhere, so the legend says what a marker is.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import plotly.graph_objects as go

from surveillance.reporting.content import ReportContent, SymbolChart

RULE_MARKERS = {
    "price_jump": "triangle-up",
    "return_zscore": "diamond",
    "volume_spike": "square",
    "model": "star",
}
RULE_COLOURS = {
    "price_jump": "#d62728",
    "return_zscore": "#9467bd",
    "volume_spike": "#ff7f0e",
    "model": "#2ca02c",
}
OTHER_COLOUR = "#7f7f7f"
SEVERITY_COLOURS = {"high": "#d62728", "medium": "#ff7f0e", "low": "#7f7f7f"}


def rule_colour(rule: str) -> str:
    return RULE_COLOURS.get(rule, OTHER_COLOUR)


def price_figure(chart: SymbolChart) -> go.Figure:
    """The symbol's close (and low-high band) over the range, with its alerts marked at their quotes."""
    bars = chart.bars
    step = "1-minute" if chart.bar_minutes == 1 else f"{chart.bar_minutes}-minute"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=bars["bar_start"],
            y=bars["high"],
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=bars["bar_start"],
            y=bars["low"],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.15)",
            name="low–high",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=bars["bar_start"],
            y=bars["close"],
            mode="lines",
            name=f"close ({step} bars)",
            line={"color": "#1f77b4", "width": 1.3},
        )
    )
    alerts = chart.alerts.dropna(subset=["price"])
    for rule, hits in alerts.groupby("rule", sort=True):
        fig.add_trace(
            go.Scatter(
                x=hits["event_time"],
                y=hits["price"],
                mode="markers",
                name=f"{rule} ({len(hits)})",
                marker={
                    "symbol": RULE_MARKERS.get(str(rule), "circle"),
                    "color": rule_colour(str(rule)),
                    "size": 10,
                    "line": {"width": 1, "color": "black"},
                },
                text=[
                    f"{rule} {sev}<br>{aid}"
                    for sev, aid in zip(hits["severity"], hits["alert_id"], strict=True)
                ],
                hoverinfo="text+x+y",
            )
        )
    fig.update_layout(
        title=f"{chart.symbol}: price and alerts",
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 90},
        legend={"orientation": "h", "y": -0.3},
        xaxis_title="event time (UTC)",
        yaxis_title="price",
    )
    return fig


def alerts_by_rule_figure(content: ReportContent) -> go.Figure:
    """Alerts of the range per rule, stacked by severity."""
    fig = go.Figure()
    rules = sorted({row["rule"] for row in content.alerts_by_rule})
    for severity in ("high", "medium", "low"):
        counts = {rule: 0 for rule in rules}
        for row in content.alerts_by_rule:
            if row["severity"] == severity:
                counts[row["rule"]] += row["alerts"]
        if any(counts.values()):
            fig.add_trace(
                go.Bar(
                    x=list(counts),
                    y=list(counts.values()),
                    name=severity,
                    marker_color=SEVERITY_COLOURS[severity],
                )
            )
    fig.update_layout(
        barmode="stack",
        title="Alerts by rule and severity",
        height=340,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        xaxis_title="rule",
        yaxis_title="alerts",
    )
    return fig


def report_figures(content: ReportContent) -> list[tuple[str, go.Figure]]:
    """Every figure of the report, with a caption, in order."""
    figures = (
        [("Alerts by rule and severity", alerts_by_rule_figure(content))] if content.alerts_by_rule else []
    )
    figures += [(f"{chart.symbol}: price and alerts", price_figure(chart)) for chart in content.charts]
    return figures


_render_lock = threading.Lock()


def png_images(figures: list[go.Figure], width: int = 1000, height: int | None = None) -> list[bytes]:
    """The figures as PNG, rendered offline by Kaleido in a headless Chromium (one browser for all of
    them; one render at a time per process)."""
    from surveillance.reporting.content import RendererMissing

    if not figures:
        return []
    try:
        import kaleido
    except ImportError as exc:
        raise RendererMissing(
            "PDF charts need the 'kaleido' package (pip install 'surveillance[reports]')"
        ) from exc
    with _render_lock:
        try:
            kaleido.start_sync_server(silence_warnings=True)
        except Exception as exc:
            raise RendererMissing(
                "PDF charts are drawn by Kaleido in a headless Chromium or Chrome, and none was found: "
                f"install one (Debian: apt-get install chromium) ({exc})"
            ) from exc
        try:
            return [_png(fig, width, height) for fig in figures]
        finally:
            kaleido.stop_sync_server(silence_warnings=True)


def _png(fig: go.Figure, width: int, height: int | None) -> bytes:
    options: dict[str, Any] = {"format": "png", "width": width, "height": height or fig.layout.height or 400}
    with warnings.catch_warnings():
        # plotly passes browser options that a running Kaleido server already has.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        return fig.to_image(**options, scale=2)
