"""The champion model in the running stream: model alerts with version and evidence, the same scores as the
batch path, and a moved alias picked up without a restart. Real Kafka, Delta and MLflow (SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from model_settings import SMALL_MODELS as SMALL_COMPARISON

from surveillance.config import Settings
from surveillance.ingestion.generator import ANOMALY_TYPES, GeneratedQuotes, generate_quotes
from surveillance.models.compare import compare_detectors
from surveillance.models.features import quote_features, with_event_micros
from surveillance.models.registry import mlflow_location, model_uri
from surveillance.pipeline.stream import processed_offsets, start_stream

pytestmark = pytest.mark.integration

SMALL_MODELS = [
    *SMALL_COMPARISON,
    "models.scoring.reload_interval=1 second",
    "stream.trigger_interval=1 second",
]


@pytest.fixture(scope="module", autouse=True)
def _no_real_market_data() -> Iterator[None]:
    """Small comparisons: the real-data evaluation is the quality gate's (test_model_quality_gate)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SURVEIL_REAL_DATA", "/nonexistent/realdata")
        yield


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _expected_flags(settings: Settings, version: str, generated: GeneratedQuotes) -> set[str]:
    """Event ids the given model version flags when the whole data set is scored at once (batch path)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri(settings, version)).unwrap_python_model()
    features = quote_features(with_event_micros(generated.quotes))
    features = features[features.scorable]
    scored = model.score_frame(features)
    return set(features.event_id[scored.is_anomaly.to_numpy()])


def test_stream_scores_with_the_champion_and_follows_the_alias(new_pipeline, tmp_path: Path) -> None:
    pipeline = new_pipeline(tmp_path)
    settings = pipeline.settings.with_overrides(
        f"models.tracking_uri=sqlite:///{tmp_path}/mlflow/mlflow.db",
        f"models.artifact_location={tmp_path}/mlflow/artifacts",
        *SMALL_MODELS,
    )
    Path(mlflow_location(settings).sqlite_file).parent.mkdir(parents=True)
    # Two registered versions: a learned robust z-score (champion) and the fixed 5 % jump baseline.
    compare_detectors(settings.with_overrides("models.detectors={robust_zscore: {}}"))
    compare_detectors(settings.with_overrides("models.detectors={fixed_jump: {threshold: 0.05}}"))
    client = MlflowClient(mlflow_location(settings).tracking_uri)
    client.set_registered_model_alias("market_anomaly", "champion", "1")

    generated = generate_quotes(
        symbols=3, minutes=40, seed=11, inject_anomalies=True, anomaly_types=ANOMALY_TYPES
    )
    lines = generated.raw_lines  # event-time order (clean data)
    half = len(lines) // 2
    first_ids = set(generated.quotes.event_id.iloc[:half])
    second_ids = set(generated.quotes.event_id.iloc[half:])

    pipeline.settings = settings
    query = start_stream(pipeline.spark, settings)
    try:
        sent = pipeline.send_lines(lines[:half], "first.jsonl")
        _wait_until(lambda: processed_offsets(query) >= sent, 240, "the first half")
        client.set_registered_model_alias("market_anomaly", "champion", "2")
        time.sleep(1.5)  # past the reload interval
        sent += pipeline.send_lines(lines[half:], "second.jsonl")
        _wait_until(lambda: processed_offsets(query) >= sent, 240, "the second half")
    finally:
        query.stop()

    alerts = pipeline.pandas("alerts")
    model_alerts = alerts[alerts.rule == "model"]
    details = model_alerts.details.map(json.loads)
    version = details.map(lambda d: d["model_version"])
    # Every model alert says which version raised it; the first half was scored by 1, the second by 2.
    assert set(version[model_alerts.event_id.isin(first_ids)]) == {"1"}
    assert set(version[model_alerts.event_id.isin(second_ids)]) == {"2"}
    assert (version == "1").sum() >= 5 and (version == "2").sum() >= 1
    # The stream's features and scores equal the batch path's on the same quotes.
    assert set(model_alerts.event_id[version == "1"]) == _expected_flags(settings, "1", generated) & first_ids
    assert (
        set(model_alerts.event_id[version == "2"]) == _expected_flags(settings, "2", generated) & second_ids
    )
    sample = details.iloc[0]
    assert sample["detector"] in ("robust_zscore", "fixed_jump")
    assert 1 <= len(sample["top_features"]) <= 3
    assert all({"feature", "robust_z"} <= set(item) for item in sample["top_features"])
    assert (model_alerts.score > model_alerts.threshold).all()
    # Severity from rarity (share of normal training quotes scoring as high): 1e-4 high, 1e-3 medium.
    rarity = details.map(lambda d: d["rarity"])
    expected_severity = np.where(rarity <= 1e-4, "high", np.where(rarity <= 1e-3, "medium", "low"))
    assert (model_alerts.severity.to_numpy() == expected_severity).all()
    progress = pipeline.pandas("stream_progress").sort_values("batch_id")
    # Alerts and model versions are the detection query's.
    progress = progress[progress.query_name == settings.detection.query_name]
    assert progress.model_version.dropna().tolist()[0] == "1"
    assert progress.model_version.dropna().tolist()[-1] == "2"
    assert progress.model_alert_rows.sum() == len(model_alerts)
    assert not pd.isna(progress.model_version).all()


def test_a_champion_registered_by_one_command_scores_in_the_next(new_pipeline, tmp_path: Path) -> None:
    """``surveil models compare``, then ``surveil replay`` and ``surveil stream --once``, each its own process
    with the default MLflow configuration (a store under the state dir), as the README sequence runs them."""
    pipeline = new_pipeline(tmp_path)
    settings = pipeline.settings.with_overrides(f"state_dir={tmp_path}/state")
    sample = tmp_path / "quotes.jsonl"
    generated = generate_quotes(symbols=3, minutes=30, seed=11, inject_anomalies=True)
    sample.write_text("".join(f"{line}\n" for line in generated.raw_lines), encoding="utf-8")
    overrides = [
        f"state_dir={settings.state_dir}",
        f"kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"kafka.topics.quotes={settings.kafka.topics.quotes}",
        f"kafka.topics.alerts={settings.kafka.topics.alerts}",
        f"lakehouse.root={settings.lakehouse.root}",
        f"stream.checkpoint_dir={settings.stream.checkpoint_dir}",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        "models.detectors={robust_zscore: {}}",
        *SMALL_MODELS,
    ]
    sets = [arg for value in overrides for arg in ("--set", value)]

    def surveil(*command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "surveillance.cli", *sets, *command],
            cwd=tmp_path,  # MLflow's default store would land here: it must not be used
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return done

    surveil("models", "compare")
    surveil("replay", "--file", str(sample))
    stream = surveil("stream", "--once")
    assert "Registered Model with name=market_anomaly not found" not in stream.stderr
    assert not (tmp_path / "mlflow.db").exists()
    alerts = pipeline.pandas("alerts")
    assert (alerts.rule == "model").sum() > 0
    model_alerts = alerts[alerts.rule == "model"].details.map(json.loads)
    assert set(model_alerts.map(lambda d: d["model_version"])) == {"1"}
