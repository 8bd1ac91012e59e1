"""Observability end to end: a running `surveil stream` (both query processes) and `surveil api` scraped by a
real Prometheus (Debian's package, started by `surveil monitor`'s code): the lag rises while the stream is
stopped and falls when it catches up, the metrics equal what the tables hold, a drift check lands in its
table, MLflow and Prometheus, and every dashboard panel's query returns data."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from api_server import running_api
from deltalake import DeltaTable
from mlflow import MlflowClient
from model_settings import SMALL_MODELS as SMALL_COMPARISON
from prometheus_client.parser import text_string_to_metric_families
from stream_process import caught_up, stream_overrides

from surveillance.ingestion.generator import generate_quotes
from surveillance.models.compare import compare_detectors
from surveillance.models.registry import mlflow_location
from surveillance.observability.drift import run_drift_report
from surveillance.observability.prometheus_server import Prometheus

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "surveillance.json"
KEY = secrets.token_urlsafe(24)
SMALL_MODELS = [*SMALL_COMPARISON, "models.detectors={robust_zscore: {}}"]


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A process's /metrics: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all((k, v) in sample_labels for k, v in labels.items())
    )


def promql(prometheus: Prometheus, query: str) -> list[dict[str, Any]]:
    return prometheus.api(f"/api/v1/query?query={urllib.parse.quote(query)}")["result"]


@contextmanager
def stream_process(settings: Any, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`surveil stream` (continuous, both query processes) until the block ends; stopped with SIGTERM."""
    sets = [arg for value in stream_overrides(settings) for arg in ("--set", value)]
    extra = [
        f"metrics.port={settings.metrics.port}",
        f"models.tracking_uri={settings.models.tracking_uri}",
        f"models.artifact_location={settings.models.artifact_location}",
        "models.scoring.reload_interval=1 second",
        "stream.trigger_interval=1 second",
        "detection.trigger_interval=1 second",
    ]
    sets += [arg for value in extra for arg in ("--set", value)]
    command = [sys.executable, "-m", "surveillance.cli", *sets, "stream"]
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def metrics_and_monitor_ports() -> tuple[int, int]:
    """A free port whose next one is free too (the two query processes' metrics), and a third free one."""
    while True:
        with socket.socket() as first, socket.socket() as second, socket.socket() as third:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            third.bind(("127.0.0.1", 0))
            return port, third.getsockname()[1]


def rows(pipeline: Pipeline, table: str) -> int:
    """A table's rows, read with delta-rs."""
    return DeltaTable(pipeline.locations[table]).to_pyarrow_dataset().count_rows()


def test_metrics_equal_the_tables_and_every_panel_has_data(
    new_pipeline: Callable[..., Pipeline], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURVEIL_REAL_DATA", "/nonexistent/realdata")  # a small comparison, no real markets
    pipeline = new_pipeline(tmp_path)
    settings = pipeline.settings.with_overrides(
        f"models.tracking_uri=sqlite:///{tmp_path}/mlflow/mlflow.db",
        f"models.artifact_location={tmp_path}/mlflow/artifacts",
        *SMALL_MODELS,
        "monitor.scrape_interval=1 second",
        f"drift.reports_dir={tmp_path}/drift",
    )
    Path(mlflow_location(settings).sqlite_file).parent.mkdir(parents=True)
    compare_detectors(settings)  # the first registered version becomes the champion

    env = {"SURVEIL_API_KEYS": f"ops:viewer:{KEY}"}
    with running_api(settings, env, tmp_path / "api.log", KEY) as api:
        # Chosen while the API holds its port: the metrics ports (the detection query's is the next one)
        # and Prometheus' are three others.
        metrics_port, monitor_port = metrics_and_monitor_ports()
        settings = settings.with_overrides(f"metrics.port={metrics_port}", f"monitor.port={monitor_port}")
        pipeline.settings = settings
        api_port = int(api.base.rsplit(":", 1)[1])
        prometheus = Prometheus(settings.with_overrides(f"serving.port={api_port}"))
        prometheus.up()
        try:
            generated = generate_quotes(symbols=4, minutes=20, seed=5, inject_anomalies=True, dirty=True)
            lag = f'sum(surveil_checkpoint_lag_records{{query="{settings.stream.query_name}"}})'

            def lag_now() -> float | None:
                found = promql(prometheus, lag)
                return float(found[0]["value"][1]) if found else None

            # The stream is not running: the quotes sent wait, and the checkpoint lag the API exports is
            # exactly them; once the stream runs it falls to 0.
            wait_until(lambda: lag_now() == 0, 60, "the lag of the empty topic")
            sent = pipeline.send(generated)
            wait_until(lambda: lag_now() == sent, 60, f"the lag to rise to {sent}")
            with stream_process(settings, tmp_path / "stream.log"):
                wait_until(lambda: caught_up(settings), 300, "both queries to commit every quote")
                wait_until(lambda: lag_now() == 0, 60, "the lag to fall back to 0")
                lakehouse, detection = metrics_port, metrics_port + 1

                # The processes' counters equal the tables (the alerts table is appended in the background).
                def agree() -> bool:
                    mine, theirs = scrape(lakehouse), scrape(detection)
                    return (
                        total(mine, "surveil_stream_input_records_total") == rows(pipeline, "bronze_quotes")
                        and total(mine, "surveil_silver_quotes_total") == rows(pipeline, "silver_quotes")
                        and total(mine, "surveil_quarantined_records_total")
                        == rows(pipeline, "quarantine_quotes")
                        and total(theirs, "surveil_alerts_total") == rows(pipeline, "alerts") > 0
                    )

                wait_until(agree, 120, "the metrics to equal the tables")
                assert rows(pipeline, "quarantine_quotes") > 0 and rows(pipeline, "alerts") > 0

                def lags() -> list[float]:
                    found = scrape(lakehouse)
                    return [v for (n, _), v in found.items() if n == "surveil_kafka_consumer_lag_records"]

                # Read at scrape time, at most every metrics.lag_refresh: one per partition, all caught up.
                try:
                    wait_until(
                        lambda: len(lags()) == settings.kafka.quotes_partitions, 30, "a lag per partition"
                    )
                except AssertionError:
                    log = (tmp_path / "stream.log").read_text(errors="replace")[-3000:]
                    raise AssertionError(
                        f"no lag per partition: {lags()}; the stream's log ends:\n{log}"
                    ) from None
                assert sum(lags()) == 0
                assert total(scrape(detection), "surveil_model_info", version="1") == 1
                # The drift check over the window the stream wrote, against the champion's training data.
                silver_times = DeltaTable(pipeline.locations["silver_quotes"]).to_pandas(
                    columns=["event_time"]
                )
                first = silver_times.event_time.min().tz_convert(None).to_pydatetime()
                last = silver_times.event_time.max().tz_convert(None).to_pydatetime()
                drift = run_drift_report(settings, pipeline.locations, first, last + timedelta(seconds=1))
                assert drift.html.exists() and drift.outcome.current_rows > 0
                stored = DeltaTable(pipeline.locations["drift_results"]).to_pandas()
                assert sorted(stored.feature) == sorted(c.feature for c in drift.outcome.columns)
                logged = MlflowClient(mlflow_location(settings).tracking_uri).list_artifacts(
                    drift.champion.run_id, "drift"
                )
                assert [Path(a.path).name for a in logged] == [drift.html.name]
                # API traffic for its panels.
                for path in ("/v1/alerts", "/v1/symbols", "/v1/health"):
                    urllib.request.urlopen(
                        urllib.request.Request(f"{api.base}{path}", headers={"X-API-Key": KEY}), timeout=30
                    ).read()
                silver = rows(pipeline, "silver_quotes")
                wait_until(
                    lambda: (
                        [float(r["value"][1]) for r in promql(prometheus, "sum(surveil_silver_quotes_total)")]
                        == [silver]
                    ),
                    60,
                    "Prometheus to scrape the final counters",
                )
                panels = json.loads(DASHBOARD.read_text())["panels"]
                queries = [
                    (p["title"], t["expr"].replace("$__rate_interval", "1m"))
                    for p in panels
                    for t in p["targets"]
                ]
                empty: list[str] = []

                def all_have_data() -> bool:
                    empty[:] = [f"{title}: {expr}" for title, expr in queries if not promql(prometheus, expr)]
                    return not empty

                try:
                    wait_until(all_have_data, 60, "every panel's query to return data")
                except AssertionError:
                    raise AssertionError(f"panels without data: {empty}") from None

            alerting = prometheus.api("/api/v1/rules")["groups"]
            assert sum(len(g["rules"]) for g in alerting) == 13
        finally:
            prometheus.down()
