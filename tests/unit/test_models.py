"""Detectors, the MLflow model and the comparison: reproducible training, registry round trip on a temporary
SQLite store, champion promotion by margin. No Spark; MLflow is the real thing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from surveillance import cli
from surveillance.config import Settings, load_settings
from surveillance.models.compare import (
    IN_DISTRIBUTION,
    OUT_OF_DISTRIBUTION,
    compare_detectors,
    labelled_set,
    train_and_evaluate,
)
from surveillance.models.detectors import DETECTOR_CLASSES, build_detector
from surveillance.models.features import FEATURE_COLUMNS, MODEL_FEATURES
from surveillance.models.registry import alias_version, model_versions, registry_exists

SMALL = [
    "models.train.symbols=4",
    "models.train.minutes=60",
    "models.test.symbols=2",
    "models.test.first_symbol=4",
    "models.test.minutes=60",
    "models.out_of_distribution.symbols=3",
    "models.out_of_distribution.minutes=60",
    "models.evaluation.calibration_share=0.25",
]


@pytest.fixture(scope="module", autouse=True)
def _no_real_market_data() -> Iterator[None]:
    """Small comparisons here; the real-data evaluation has its own tests (test_model_quality_gate)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SURVEIL_REAL_DATA", "/nonexistent/realdata")
        yield


def small_settings(tmp_path: Path, *overrides: str) -> Settings:
    return load_settings(env="local", overrides=[f"state_dir={tmp_path}/state", *SMALL, *overrides])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object, object, object]:
    settings = small_settings(tmp_path_factory.mktemp("data"))
    train, test = labelled_set(settings.models.train), labelled_set(settings.models.test)
    symbols = train.symbols()
    tests = {IN_DISTRIBUTION: test, OUT_OF_DISTRIBUTION: labelled_set(settings.models.out_of_distribution)}
    return settings, train.subset(symbols[:3]), train.subset(symbols[3:]), tests


def test_the_splits_differ_in_symbols_and_hold_every_anomaly_type(data: tuple) -> None:
    _, fit, calibration, tests = data
    test, ood = tests[IN_DISTRIBUTION], tests[OUT_OF_DISTRIBUTION]
    assert not set(fit.symbols()) & set(test.symbols())
    assert not set(ood.symbols()) & (set(fit.symbols()) | set(calibration.symbols()) | set(test.symbols()))
    assert not set(calibration.symbols()) & set(fit.symbols())
    assert {"flash_crash", "stale_feed", "spread_blowout", "quote_stuffing", "momentum_drift"} <= set(
        test.labels.anomaly_type
    )
    assert set(np.unique(test.row_types)) - {""} == set(test.labels.anomaly_type)
    assert set(ood.labels.anomaly_type) == set(test.labels.anomaly_type)


@pytest.mark.parametrize("name", ["isolation_forest", "gradient_boosting", "robust_zscore"])
def test_training_is_reproducible_with_a_seed(data: tuple, name: str) -> None:
    settings, fit, calibration, tests = data
    test = tests[IN_DISTRIBUTION]
    params = {"max_iter": 30} if name == "gradient_boosting" else {}
    first = train_and_evaluate(name, params, fit, calibration, tests, settings)
    again = train_and_evaluate(name, params, fit, calibration, tests, settings)
    scores = first.model.score_frame(test.rows)
    pd.testing.assert_frame_equal(scores, again.model.score_frame(test.rows))
    assert first.detector.threshold == again.detector.threshold
    pd.testing.assert_frame_equal(first.table, again.table)
    if name == "isolation_forest":  # its randomness comes from the seed
        other = settings.with_overrides("models.seed=7")
        moved = train_and_evaluate(name, params, fit, calibration, tests, other)
        assert not np.allclose(moved.model.score_frame(test.rows).score, scores.score)


def test_baselines_keep_the_rules_thresholds(data: tuple) -> None:
    settings, fit, calibration, tests = data
    test = tests[IN_DISTRIBUTION]
    jump = train_and_evaluate("fixed_jump", {"threshold": 0.05}, fit, calibration, tests, settings)
    assert jump.detector.threshold == 0.05
    returns = np.expm1(test.rows.ret_1.to_numpy())
    flagged = jump.model.score_frame(test.rows).is_anomaly.to_numpy()
    np.testing.assert_array_equal(flagged, np.nan_to_num(np.abs(returns)) > 0.05)


def test_scores_come_with_top_contributing_features(data: tuple) -> None:
    settings, fit, calibration, tests = data
    test = tests[IN_DISTRIBUTION]
    # The threshold at the best F1: flags to look at on this small set.
    at_best_f1 = settings.with_overrides("models.evaluation.min_precision=0")
    result = train_and_evaluate("robust_zscore", {}, fit, calibration, tests, at_best_f1)
    scored = result.model.score_frame(test.rows)
    assert list(scored.columns[:3]) == ["score", "is_anomaly", "rarity"]
    # Rarity: the share of normal training quotes scoring at least as high; flagged quotes are rare.
    assert scored.rarity.between(0, 1).all()
    assert 0.3 < scored.rarity[test.row_types == ""].median() < 0.7
    assert scored.rarity[scored.is_anomaly].max() < 0.05
    assert (np.diff(scored.sort_values("score").rarity.to_numpy()) <= 0).all()
    assert set(scored.top_feature_1) <= set(MODEL_FEATURES)
    assert (scored.top_deviation_1 >= scored.top_deviation_2).all()
    stale = test.rows[(test.row_types == "stale_feed") & (test.rows.frozen_run_ratio > 3)]
    # A frozen feed is explained by its run (a quote of it with a volume far off its usual may be too).
    assert len(stale) and (result.model.score_frame(stale).top_feature_1 == "frozen_run_ratio").mean() > 0.9


def test_unknown_detector_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter.*n_trees"):
        build_detector("isolation_forest", {"n_trees": 5})
    with pytest.raises(ValueError, match="threshold"):
        build_detector("robust_zscore", {"threshold": 3})  # learned, not set
    assert set(DETECTOR_CLASSES) == set(load_settings(env="local").models.detectors)


def test_registry_round_trip_and_champion_promotion(tmp_path: Path) -> None:
    weak = small_settings(tmp_path, "models.detectors={fixed_jump: {threshold: 0.05}}")
    assert not registry_exists(weak) and alias_version(weak) is None

    first = compare_detectors(weak)
    assert first.decision.promoted and first.decision.challenger_version == 1
    assert first.decision.reason == "no champion yet"
    champion = alias_version(weak)
    assert champion is not None and int(champion.version) == 1

    # The registered model, loaded back by alias, scores exactly as the one trained in memory.
    test = labelled_set(weak.models.test)
    loaded = mlflow.pyfunc.load_model("models:/market_anomaly@champion")
    pd.testing.assert_frame_equal(
        loaded.predict(test.rows[list(FEATURE_COLUMNS)]).reset_index(drop=True),
        first.best.model.score_frame(test.rows[list(FEATURE_COLUMNS)]).reset_index(drop=True),
        check_dtype=False,
    )

    # The same detector again does not beat the champion by the margin: registered, not promoted.
    again = compare_detectors(weak)
    assert not again.decision.promoted
    assert again.decision.champion_score == pytest.approx(again.decision.challenger_score)
    assert int(alias_version(weak).version) == 1

    # A stronger detector does: the alias moves, and the decision is on the comparison's run.
    strong = weak.with_overrides("models.detectors={gradient_boosting: {max_iter: 50}}")
    third = compare_detectors(strong)
    assert third.decision.promoted, third.decision.reason
    assert third.decision.challenger_score > third.decision.champion_score + 0.01
    assert int(alias_version(strong).version) == 3
    parent = mlflow.get_run(third.parent_run_id)
    assert parent.data.tags["decision"] == "promoted"
    assert parent.data.metrics["champion_score"] == pytest.approx(third.decision.champion_score)

    versions = model_versions(strong)
    assert [(v["version"], v["aliases"], v["detector"]) for v in versions] == [
        (3, ["challenger", "champion"], "gradient_boosting"),
        (2, [], "fixed_jump"),
        (1, [], "fixed_jump"),
    ]
    children = mlflow.search_runs(
        [third.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{third.parent_run_id}'"
    )
    assert len(children) == 1
    run_id = children.run_id[0]
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"pr_curve.html", "recall_by_type.html", "metrics_by_type.csv"} <= artifacts
    metrics = mlflow.get_run(run_id).data.metrics
    assert {"precision", "recall", "f1", "pr_auc", "rows_per_second", "recall_flash_crash"} <= set(metrics)
    assert {"ood_precision", "ood_recall", "ood_f1", "ood_recall_flash_crash", "selection_score"} <= set(
        metrics
    )
    # Chosen on the worse of the two test sets.
    assert metrics["selection_score"] == pytest.approx(min(metrics["f1"], metrics["ood_f1"]))
    assert {"pr_curve_ood.html", "recall_by_type_ood.html"} <= artifacts


def test_models_list_shows_versions_aliases_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    settings = [f"state_dir={tmp_path}/state", *SMALL]
    argv = [arg for item in settings for arg in ("--set", item)]
    assert cli.main([*argv, "models", "list"]) == 0
    assert "no versions of market_anomaly registered yet" in capsys.readouterr().out
    assert cli.main([*argv, "--set", "models.detectors={fixed_jump: {}}", "models", "compare"]) == 0
    assert cli.main([*argv, "models", "list"]) == 0
    shown = capsys.readouterr().out
    assert "challenger, champion" in shown and "fixed_jump" in shown
