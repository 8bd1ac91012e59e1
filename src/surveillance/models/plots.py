"""plotly figures of a detector comparison: PR curves and recall per anomaly type."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from surveillance.models.evaluation import OVERALL, PrCurve


def _pr_layout(figure: go.Figure, title: str) -> go.Figure:
    return figure.update_layout(
        title=title,
        xaxis_title="recall (labelled events detected)",
        yaxis_title="precision (alert events that are real)",
        xaxis_range=[0, 1.02],
        yaxis_range=[0, 1.02],
        template="plotly_white",
    )


def pr_curve_figure(name: str, curve: PrCurve, threshold: float) -> go.Figure:
    """One detector's event-level PR curves: overall (bold) and per anomaly type."""
    figure = go.Figure()
    for kind in curve.precision:
        figure.add_trace(
            go.Scatter(
                x=curve.recall[kind],
                y=curve.precision[kind],
                mode="lines",
                name=f"{kind} (AP {curve.average_precision(kind):.3f})",
                line={"width": 4 if kind == OVERALL else 1.5},
                customdata=curve.thresholds,
                hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>threshold %{customdata:.4g}",
            )
        )
    return _pr_layout(figure, f"{name}: event-level precision-recall (chosen threshold {threshold:.4g})")


def recall_by_type_figure(name: str, table: pd.DataFrame) -> go.Figure:
    """One detector's recall per anomaly type at its threshold."""
    rows = table[table.anomaly_type != OVERALL]
    figure = go.Figure(
        go.Bar(
            x=rows.anomaly_type,
            y=rows.recall,
            text=[f"{d}/{n}" for d, n in zip(rows.detected_events, rows.labelled_events, strict=True)],
            textposition="outside",
        )
    )
    figure.update_layout(
        title=f"{name}: recall per anomaly type (detected / labelled events)",
        yaxis_title="recall",
        yaxis_range=[0, 1.1],
        template="plotly_white",
    )
    return figure


def comparison_figure(curves: Mapping[str, PrCurve]) -> go.Figure:
    """Every detector's overall PR curve on one chart."""
    figure = go.Figure()
    for name, curve in curves.items():
        figure.add_trace(
            go.Scatter(
                x=curve.recall[OVERALL],
                y=curve.precision[OVERALL],
                mode="lines",
                name=f"{name} (AP {curve.average_precision():.3f})",
            )
        )
    return _pr_layout(figure, "Detectors compared: event-level precision-recall on the test set")
