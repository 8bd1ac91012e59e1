"""The detector comparisons as MLflow recorded them: runs as tables, the figures of a comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go

from surveillance.config import Settings
from surveillance.models.plots import comparison_figure, pr_curve_figure, recall_by_type_figure
from surveillance.models.registry import use_mlflow

if TYPE_CHECKING:
    from surveillance.models.compare import Comparison

COMPARISON_COLUMNS = {
    "run_id": "run_id",
    "start_time": "start_time",
    "tags.best_detector": "best_detector",
    "tags.decision": "decision",
    "tags.decision_reason": "reason",
    "metrics.challenger_score": "challenger_score",
    "metrics.champion_score": "champion_score",
}
DETECTOR_COLUMNS = {
    "tags.detector": "detector",
    "metrics.precision": "precision",
    "metrics.recall": "recall",
    "metrics.f1": "f1",
    "metrics.pr_auc": "pr_auc",
    "metrics.ood_precision": "ood_precision",
    "metrics.ood_recall": "ood_recall",
    "metrics.ood_f1": "ood_f1",
    "metrics.selection_score": "selection_score",
    "metrics.real_alerts_per_1000": "real_alerts_per_1000",
    "metrics.rows_per_second": "rows_per_second",
    "params.threshold": "threshold",
    "run_id": "run_id",
}
PARENT_TAG = "tags.mlflow.parentRunId"


@dataclass(frozen=True)
class ComparisonRuns:
    """Every comparison (parent run, newest first) and the detector runs of the newest one (best first)."""

    comparisons: pd.DataFrame
    detectors: pd.DataFrame

    @property
    def latest_run_id(self) -> str | None:
        """The newest comparison's run id, or None before the first comparison."""
        return None if self.comparisons.empty else str(self.comparisons.iloc[0]["run_id"])


def _columns(runs: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    # search_runs has a column only for keys some run logged: absent ones are shown empty.
    return pd.DataFrame({label: runs.get(key, pd.NA) for key, label in names.items()})


def split_runs(runs: pd.DataFrame) -> ComparisonRuns:
    """Parent (comparison) and child (detector) runs from ``mlflow.search_runs`` output, newest first."""
    if runs.empty:
        return ComparisonRuns(
            pd.DataFrame(columns=list(COMPARISON_COLUMNS.values())),
            pd.DataFrame(columns=list(DETECTOR_COLUMNS.values())),
        )
    parent_ids = runs[PARENT_TAG] if PARENT_TAG in runs else pd.Series(pd.NA, index=runs.index)
    ordered = runs.sort_values("start_time", ascending=False)
    parents = ordered[parent_ids.loc[ordered.index].isna()]
    comparisons = _columns(parents, COMPARISON_COLUMNS).reset_index(drop=True)
    latest = comparisons.iloc[0]["run_id"] if not comparisons.empty else None
    children = ordered[parent_ids.loc[ordered.index] == latest]
    # Best first by what selection used (the worse of the two test sets); runs older than it by F1.
    order = "selection_score" if children.get("metrics.selection_score", pd.Series()).notna().any() else "f1"
    detectors = _columns(children, DETECTOR_COLUMNS).sort_values(order, ascending=False, ignore_index=True)
    return ComparisonRuns(comparisons, detectors)


def comparison_runs(settings: Settings) -> ComparisonRuns:
    """The configured experiment's runs (``mlflow.search_runs``) as comparisons and detector runs."""
    import mlflow

    use_mlflow(settings)
    experiment = mlflow.get_experiment_by_name(settings.models.experiment)
    if experiment is None:
        return split_runs(pd.DataFrame())
    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id], order_by=["attributes.start_time DESC"]
    )
    return split_runs(runs)


def logged_figure_html(settings: Settings, run_id: str, artifact: str = "pr_curves.html") -> str:
    """A figure a comparison logged to its MLflow run, as the HTML page MLflow stored."""
    import mlflow

    use_mlflow(settings)
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact}")


def comparison_figures(comparison: Comparison) -> list[go.Figure]:
    """Every detector's PR curve on one chart, per test set; then the best detector's PR curves and recall
    per type, per test set (in-distribution first, then out-of-distribution)."""
    from surveillance.models.compare import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION

    best = comparison.best
    figures = []
    for test_set in (IN_DISTRIBUTION, OUT_OF_DISTRIBUTION):
        curves = {result.name: result.evaluations[test_set].curve for result in comparison.results}
        figures.append(comparison_figure(curves))
    for test_set in (IN_DISTRIBUTION, OUT_OF_DISTRIBUTION):
        evaluation = best.evaluations[test_set]
        figures.append(
            pr_curve_figure(f"{best.name} ({test_set})", evaluation.curve, best.detector.threshold)
        )
        figures.append(recall_by_type_figure(f"{best.name} ({test_set})", evaluation.table))
    return figures
