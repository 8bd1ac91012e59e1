"""Train and evaluate every configured detector on the same labelled data, log each to MLflow, and let the
best challenge the registered champion.

Data: two generated sets with every anomaly type, on different seeds and symbols (``models.train``,
``models.test``), each symbol with its own randomised market (price level, volatility, tick rate, spread,
volume scale); and an out-of-distribution set (``models.out_of_distribution``) from an independent market
model (:mod:`surveillance.ingestion.ood_market`) with the same labelled anomaly types. The training
symbols are split: most fit the detectors, the rest (``calibration_share``) choose each learned detector's
threshold: the highest event recall at ``evaluation.min_precision`` or better. The two test sets are only
ever scored.

Selection and promotion use each detector's *worse* score of the two test sets, never the
in-distribution one alone: a detector that only works on data like its training data is not chosen. The
best by ``models.selection_metric`` is registered as a new version of ``models.registered_name`` (alias
``challenger``). It takes the champion alias if there is no champion, or if it beats the champion,
re-scored on these same two sets, by more than ``models.promotion_margin``. The decision and both scores
are logged on the comparison's parent run and as tags of the new version.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surveillance.config import DataSplit, OutOfDistributionSplit, Settings
from surveillance.ingestion.generator import (
    ANOMALY_TYPES,
    RANDOMISED_MARKET,
    SAMPLE_MARKET,
    GeneratedQuotes,
    generate_quotes,
)
from surveillance.models.detectors import Detector, build_detector
from surveillance.models.evaluation import (
    EventCounts,
    EventScorer,
    PrCurve,
    choose_threshold,
    metrics_table,
    pr_curve,
    row_labels,
)
from surveillance.models.features import FEATURE_COLUMNS, quote_features, with_event_micros
from surveillance.models.real_evaluation import RealEvaluation, RealMarketData, combined, evaluate_models

log = logging.getLogger(__name__)
CHALLENGER_ALIAS = "challenger"


@dataclass
class LabelledSet:
    """Scorable feature rows of a generated set, the anomaly type of each row ('' = normal), the labels."""

    rows: pd.DataFrame
    row_types: np.ndarray
    labels: pd.DataFrame

    def symbols(self) -> list[str]:
        return sorted(self.rows.symbol.unique())

    def subset(self, symbols: list[str]) -> LabelledSet:
        keep = self.rows.symbol.isin(symbols).to_numpy()
        return LabelledSet(
            self.rows[keep].reset_index(drop=True),
            self.row_types[keep],
            self.labels[self.labels.symbol.isin(symbols)].reset_index(drop=True),
        )


def labelled_set(split: DataSplit | OutOfDistributionSplit) -> LabelledSet:
    """Generate a split with every anomaly type and compute its features (the one feature definition).

    A :class:`OutOfDistributionSplit` comes from the independent market of
    :mod:`surveillance.ingestion.ood_market`, a :class:`DataSplit` from the training generator.
    """
    if isinstance(split, OutOfDistributionSplit):
        from surveillance.ingestion.ood_market import generate_ood_quotes

        generated = generate_ood_quotes(
            symbols=split.symbols, minutes=split.minutes, seed=split.seed, first_symbol=split.first_symbol
        )
    else:
        generated = generate_quotes(
            symbols=split.symbols,
            minutes=split.minutes,
            seed=split.seed,
            inject_anomalies=True,
            anomaly_types=ANOMALY_TYPES,
            first_symbol=split.first_symbol,
            ticks_per_minute=split.ticks_per_minute,
            market=RANDOMISED_MARKET if split.randomize else SAMPLE_MARKET,
        )
    return labelled_frames(generated)


def labelled_frames(generated: GeneratedQuotes) -> LabelledSet:
    """Scorable feature rows of generated quotes with each row's anomaly type."""
    features = quote_features(with_event_micros(generated.quotes))
    rows = features[features.scorable].reset_index(drop=True)
    return LabelledSet(rows, row_labels(rows, generated.labels), generated.labels)


IN_DISTRIBUTION, OUT_OF_DISTRIBUTION = "in_distribution", "out_of_distribution"


@dataclass
class Evaluation:
    """A model's outcome on one labelled test set: event counts at its threshold, PR curve, metrics."""

    counts: EventCounts
    curve: PrCurve
    table: pd.DataFrame

    def overall(self, metric: str) -> float:
        return float(self.table.iloc[0][metric])


@dataclass
class DetectorResult:
    name: str
    detector: Detector
    model: Any  # AnomalyModel
    evaluations: dict[str, Evaluation]  # by test set: IN_DISTRIBUTION, OUT_OF_DISTRIBUTION
    rows_per_second: float
    fit_seconds: float

    def score(self, metric: str) -> float:
        """The selection score: the worse of the test sets' overall ``metric`` (NaN counts as worst)."""
        return worse_score(self.evaluations, metric)

    @property
    def table(self) -> pd.DataFrame:
        """Metrics per test set and anomaly type (and 'all')."""
        return pd.concat(
            [evaluation.table.assign(test_set=name) for name, evaluation in self.evaluations.items()],
            ignore_index=True,
        )


def worse_score(evaluations: dict[str, Evaluation], metric: str) -> float:
    values = [np.nan_to_num(evaluation.overall(metric), nan=-1.0) for evaluation in evaluations.values()]
    return float(min(values))


def _scorer(data: LabelledSet, settings: Settings) -> EventScorer:
    evaluation = settings.models.evaluation
    return EventScorer(data.rows, data.labels, evaluation.merge_gap_seconds, evaluation.tolerance_seconds)


def scoring_throughput(model: Any, rows: pd.DataFrame, repeats: int = 3) -> float:
    """Rows per second of the MLflow model's predict (scores and top features), best of ``repeats``."""
    model.score_frame(rows.head(1000))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.score_frame(rows)
        best = min(best, time.perf_counter() - started)
    return len(rows) / best if best > 0 else float("inf")


def load_real_market_data(root: Path | None = None) -> RealMarketData | None:
    """The real market data and its features, or None where it is not at hand (a user's clone)."""
    from surveillance.models.real_markets import find_real_data, load_real_quotes

    found = find_real_data(root)
    if found is None:
        return None
    return RealMarketData.from_quotes(load_real_quotes(found))


def fit_detector(
    name: str, params: dict[str, Any], fit: LabelledSet, calibration: LabelledSet, settings: Settings
) -> tuple[Detector, Any]:
    """One detector fitted on ``fit`` with its threshold chosen on ``calibration``, and its MLflow model."""
    from surveillance.models.pyfunc import AnomalyModel

    detector = build_detector(name, params)
    detector.fit(fit.rows, fit.row_types, settings.models.seed)
    if detector.learns_threshold:
        detector.threshold = choose_threshold(
            _scorer(calibration, settings),
            detector.score(calibration.rows),
            settings.models.evaluation.min_precision,
        )
    return detector, AnomalyModel(detector, fit.rows, fit.row_types, settings.models.scoring.top_features)


def training_split(settings: Settings) -> tuple[LabelledSet, LabelledSet]:
    """The training set's symbols split: (fit, calibration)."""
    train = labelled_set(settings.models.train)
    symbols = train.symbols()
    held_out = max(1, round(len(symbols) * settings.models.evaluation.calibration_share))
    if held_out >= len(symbols):
        raise ValueError("models.train needs at least 2 symbols: some fit, some choose thresholds")
    return train.subset(symbols[:-held_out]), train.subset(symbols[-held_out:])


def train_and_evaluate(
    name: str,
    params: dict[str, Any],
    fit: LabelledSet,
    calibration: LabelledSet,
    tests: dict[str, LabelledSet],
    settings: Settings,
) -> DetectorResult:
    """Fit one detector, choose its threshold on the calibration symbols, evaluate it on each test set."""
    started = time.perf_counter()
    detector, model = fit_detector(name, params, fit, calibration, settings)
    fit_seconds = time.perf_counter() - started
    evaluations = {set_name: evaluate_model(model, test, settings) for set_name, test in tests.items()}
    return DetectorResult(
        name,
        detector,
        model,
        evaluations,
        rows_per_second=scoring_throughput(model, next(iter(tests.values())).rows),
        fit_seconds=fit_seconds,
    )


def evaluate_model(model: Any, test: LabelledSet, settings: Settings) -> Evaluation:
    """Event counts at the model's threshold, the PR curve and the metrics table on a test set."""
    scored = model.score_frame(test.rows)
    scorer = _scorer(test, settings)
    counts = scorer.count(scored["is_anomaly"].to_numpy(bool))
    curve = pr_curve(scorer, scored["score"].to_numpy(np.float64))
    return Evaluation(counts, curve, metrics_table(counts, curve))


@dataclass
class Decision:
    promoted: bool
    challenger_version: int
    challenger_score: float
    champion_version: int | None
    champion_score: float | None
    reason: str


@dataclass
class Comparison:
    results: list[DetectorResult]
    best: DetectorResult
    decision: Decision
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    real: RealEvaluation | None = None  # where real market data is at hand (models/real_markets.py)
    selection_metric: str = "f1"

    def table(self) -> pd.DataFrame:
        """One row per detector, test set and anomaly type (and 'all'): precision, recall, F1, PR-AUC,
        rows/s."""
        frames = [
            result.table.assign(detector=result.name, rows_per_second=result.rows_per_second)
            for result in self.results
        ]
        columns = ["detector", "test_set", "anomaly_type", "labelled_events", "detected_events"]
        metrics = ["precision", "recall", "f1", "pr_auc", "rows_per_second"]
        return pd.concat(frames, ignore_index=True)[[*columns, *metrics]]


def _metric_key(kind: str, metric: str, test_set: str = IN_DISTRIBUTION) -> str:
    """MLflow metric names: the in-distribution ones as before (f1, recall_price_jump), the
    out-of-distribution ones prefixed (ood_f1, ood_recall_price_jump)."""
    name = metric if kind == "all" else f"{metric}_{kind}"
    return name if test_set == IN_DISTRIBUTION else f"ood_{name}"


def _log_detector_run(
    result: DetectorResult,
    settings: Settings,
    test: LabelledSet,
    real: dict[str, Any] | None = None,
    training: pd.DataFrame | None = None,
) -> str:
    """Log one detector as a nested run: params, metrics (and ``real``: its real-data row), PR curve and
    recall charts, the model.

    Returns the logged model's URI (what the registry registers).
    """
    import mlflow
    from mlflow.models import infer_signature

    from surveillance.models.plots import pr_curve_figure, recall_by_type_figure

    with mlflow.start_run(run_name=result.name, nested=True):
        mlflow.set_tag("detector", result.name)
        mlflow.log_params(
            {
                **{f"param.{key}": value for key, value in result.detector.params().items()},
                "threshold": result.detector.threshold,
                "threshold_learned": result.detector.learns_threshold,
                "features": ",".join(result.detector.features),
            }
        )
        metrics: dict[str, float] = {
            "rows_per_second": result.rows_per_second,
            "fit_seconds": result.fit_seconds,
            "selection_score": result.score(settings.models.selection_metric),
        }
        threshold = result.detector.threshold
        for test_set, evaluation in result.evaluations.items():
            metrics[_metric_key("all", "predicted_events", test_set)] = float(evaluation.counts.predicted)
            metrics[_metric_key("all", "false_events", test_set)] = float(evaluation.counts.false)
            for row in evaluation.table.itertuples(index=False):
                for metric in ("precision", "recall", "f1", "pr_auc"):
                    value = float(getattr(row, metric))
                    if np.isfinite(value):
                        metrics[_metric_key(row.anomaly_type, metric, test_set)] = value
            suffix = "" if test_set == IN_DISTRIBUTION else "_ood"
            mlflow.log_figure(
                pr_curve_figure(result.name, evaluation.curve, threshold), f"pr_curve{suffix}.html"
            )
            mlflow.log_figure(
                recall_by_type_figure(f"{result.name} ({test_set})", evaluation.table),
                f"recall_by_type{suffix}.html",
            )
        for key in ("alerts_per_1000", "episodes_per_1000", "move_recall"):
            if real is not None and np.isfinite(real[key]):
                metrics[f"real_{key}"] = float(real[key])
        mlflow.log_metrics(metrics)
        mlflow.log_text(result.table.to_csv(index=False), "metrics_by_type.csv")
        if training is not None:
            # What the market looked like to this model: `surveil drift report` compares silver with it.
            from surveillance.observability.drift import log_reference

            log_reference(training, settings.drift.max_rows)
        example = test.rows[list(FEATURE_COLUMNS)].head(20)
        # MLflow warns about every pickled python_model; our model class is part of the installed library.
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        try:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=result.model,
                signature=infer_signature(example, result.model.score_frame(example)),
                input_example=example,
                pip_requirements=_requirements(),
            )
        finally:
            pyfunc_log.setLevel(level)
        return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ("mlflow", "scikit-learn", "numpy", "pandas", "surveillance")
    return [f"{name}=={version(name)}" for name in names]


def _promote(
    settings: Settings, best: DetectorResult, logged_model_uri: str, tests: dict[str, LabelledSet]
) -> Decision:
    """Register the best detector as a new version; move the champion alias if it wins by the margin."""
    import mlflow

    from surveillance.models.pyfunc import model_incompatibility
    from surveillance.models.registry import alias_version, client, model_uri

    models = settings.models
    metric = models.selection_metric
    mlflow_client = client(settings)
    champion = alias_version(settings)
    champion_score = None
    incompatible = ""
    if champion is not None:
        # The champion's logged score may come from other test sets: score it again on these.
        champion_model = mlflow.pyfunc.load_model(model_uri(settings, champion.version)).unwrap_python_model()
        incompatible = model_incompatibility(champion_model)
        if not incompatible:
            champion_score = worse_score(
                {name: evaluate_model(champion_model, data, settings) for name, data in tests.items()}, metric
            )
    version = mlflow.register_model(logged_model_uri, models.registered_name)
    challenger_score = best.score(metric)
    overall = best.evaluations[IN_DISTRIBUTION].table.iloc[0]
    ood = best.evaluations[OUT_OF_DISTRIBUTION].table.iloc[0]
    for key, value in {
        "detector": best.name,
        "selection_metric": metric,
        "selection_rule": "worse of the in- and out-of-distribution test sets",
        "test_score": challenger_score,
        **{f"test_{name}": overall[name] for name in ("precision", "recall", "f1", "pr_auc")},
        **{f"ood_{name}": ood[name] for name in ("precision", "recall", "f1", "pr_auc")},
        "test_seed": models.test.seed,
        "ood_seed": models.out_of_distribution.seed,
    }.items():
        mlflow_client.set_model_version_tag(models.registered_name, version.version, key, str(value))
    mlflow_client.set_registered_model_alias(models.registered_name, CHALLENGER_ALIAS, version.version)
    if champion is None:
        promoted, reason = True, "no champion yet"
    elif incompatible:
        promoted, reason = True, f"the champion (version {champion.version}) {incompatible}"
    elif challenger_score > champion_score + models.promotion_margin:
        promoted = True
        reason = (
            f"{metric} {challenger_score:.4f} beats the champion's {champion_score:.4f} "
            f"by more than {models.promotion_margin}"
        )
    else:
        promoted = False
        reason = (
            f"{metric} {challenger_score:.4f} does not beat the champion's {champion_score:.4f} "
            f"by more than {models.promotion_margin}"
        )
    if promoted:
        mlflow_client.set_registered_model_alias(
            models.registered_name, models.champion_alias, version.version
        )
    mlflow_client.set_model_version_tag(
        models.registered_name, version.version, "promotion", "champion" if promoted else "rejected"
    )
    return Decision(
        promoted,
        int(version.version),
        challenger_score,
        None if champion is None else int(champion.version),
        champion_score,
        reason,
    )


def compare_detectors(
    settings: Settings, on_progress: Callable[[str], None] = lambda message: None
) -> Comparison:
    """Train, evaluate and log every configured detector; register the best; decide the champion."""
    import mlflow

    from surveillance.models.plots import comparison_figure
    from surveillance.models.registry import use_mlflow

    models = settings.models
    location = use_mlflow(settings)
    experiment = mlflow.get_experiment_by_name(models.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else mlflow.create_experiment(models.experiment, artifact_location=location.artifact_location)
    )
    on_progress("generating the train and test sets and their features")
    fit, calibration = training_split(settings)
    test = labelled_set(models.test)
    tests = {IN_DISTRIBUTION: test, OUT_OF_DISTRIBUTION: labelled_set(models.out_of_distribution)}

    started = dt.datetime.now(dt.UTC)
    # Child runs (one per detector) go where the active experiment is: make it this one.
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name=f"compare-{started:%Y%m%d-%H%M%S}") as parent:
        mlflow.log_params(
            {
                "selection_metric": models.selection_metric,
                "promotion_margin": models.promotion_margin,
                "seed": models.seed,
                "train": json.dumps(models.train.model_dump()),
                "test": json.dumps(models.test.model_dump()),
                "out_of_distribution": json.dumps(models.out_of_distribution.model_dump()),
                "fit_symbols": ",".join(fit.symbols()),
                "calibration_symbols": ",".join(calibration.symbols()),
                "test_symbols": ",".join(test.symbols()),
                "train_rows": len(fit.rows) + len(calibration.rows),
                "test_rows": len(test.rows),
                "test_events": len(test.labels),
                "ood_symbols": ",".join(tests[OUT_OF_DISTRIBUTION].symbols()),
                "ood_rows": len(tests[OUT_OF_DISTRIBUTION].rows),
                "ood_events": len(tests[OUT_OF_DISTRIBUTION].labels),
                "features": ",".join(FEATURE_COLUMNS),
                **{f"evaluation.{k}": v for k, v in models.evaluation.model_dump().items()},
            }
        )
        real_data = load_real_market_data()
        results: list[DetectorResult] = []
        model_uris: dict[str, str] = {}
        real_rows: list[RealEvaluation] = []
        for name, params in models.detectors.items():
            on_progress(f"training and evaluating {name}")
            result = train_and_evaluate(name, params, fit, calibration, tests, settings)
            results.append(result)
            real_row = None
            if real_data is not None:
                real_rows.append(
                    evaluate_models({name: result.model}, real_data, models.evaluation.merge_gap_seconds)
                )
                real_row = real_rows[-1].table.iloc[0].to_dict()
            training = pd.concat([fit.rows, calibration.rows], ignore_index=True)
            model_uris[name] = _log_detector_run(result, settings, test, real_row, training)
        metric = models.selection_metric
        best = max(results, key=lambda result: np.nan_to_num(result.score(metric), nan=-1.0))
        on_progress(f"registering {best.name} and deciding the champion")
        decision = _promote(settings, best, model_uris[best.name], tests)
        comparison = Comparison(
            results,
            best,
            decision,
            experiment_id,
            parent.info.run_id,
            location.tracking_uri,
            combined(*real_rows) if real_rows else None,
            metric,
        )
        mlflow.log_text(comparison.table().to_csv(index=False), "comparison.csv")
        if comparison.real is not None:
            mlflow.log_dict(comparison.real.as_dict(), "real_data.json")
        for test_set in tests:
            suffix = "" if test_set == IN_DISTRIBUTION else "_ood"
            curves = {r.name: r.evaluations[test_set].curve for r in results}
            mlflow.log_figure(comparison_figure(curves), f"pr_curves{suffix}.html")
        mlflow.set_tags(
            {
                "best_detector": best.name,
                "decision": "promoted" if decision.promoted else "kept champion",
                "decision_reason": decision.reason,
                "challenger_version": str(decision.challenger_version),
                "champion_version_before": str(decision.champion_version or ""),
            }
        )
        scores = {"challenger_score": decision.challenger_score}
        if decision.champion_score is not None:
            scores["champion_score"] = decision.champion_score
        mlflow.log_metrics(scores)
    return comparison
