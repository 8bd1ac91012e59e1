"""The same jobs on a real Spark cluster (make test-cluster): a standalone master and two workers on
loopback, started by ``surveil cluster up`` from the pyspark distribution's own classes; the streaming job
(both queries, the champion scoring on executors) and a backfill go through ``spark-submit --master
spark://...`` and give exactly what the local run gives. Tables read back with delta-rs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from stream_process import stream_overrides

from surveillance.cluster import LocalSparkCluster, spark_submit_command
from surveillance.config import Settings
from surveillance.ingestion.generator import DEFAULT_START, generate_quotes
from surveillance.lakehouse import table_locations
from surveillance.models.compare import compare_detectors
from surveillance.models.registry import mlflow_location

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
# Set when a row is written, not derived from the data: the only columns two runs may not share.
WRITE_TIMES = {"ingested_at", "ingest_date", "stream_id", "batch_id", "updated_at", "detected_at"}
KEYS = {
    "bronze_quotes": ["partition", "offset"],
    "silver_quotes": ["event_id"],
    "quarantine_quotes": ["kafka_partition", "kafka_offset"],
    "gold_bars_1m": ["symbol", "bar_start"],
    "alerts": ["alert_id"],
}
REBUILT = ("silver_quotes", "gold_bars_1m", "alerts", "quarantine_quotes", "dq_results", "backfill_runs")


@pytest.fixture(scope="module")
def cluster(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalSparkCluster]:
    """A master and two one-core workers on ports of their own, stopped after the module."""
    settings = kafka_settings.with_overrides(
        f"state_dir={tmp_path_factory.mktemp('cluster-state')}",
        "spark.local_cluster.port=17077",
        "spark.local_cluster.webui_port=18080",
        "spark.local_cluster.worker_memory=2g",
    )
    cluster = LocalSparkCluster(settings)
    try:
        status = cluster.up(timeout=180)
        assert status.workers_alive == 2 and status.cores == 2, status
        yield cluster
    finally:
        cluster.down()
    assert not cluster.status().running and not cluster.status().pids


def _submit(cluster: LocalSparkCluster, job: str, settings: Settings, *job_args: str) -> str:
    sets = [item for value in stream_overrides(settings) for item in ("--set", value)]
    sets += ["--set", f"models.tracking_uri={settings.models.tracking_uri}"]
    sets += ["--set", f"models.artifact_location={settings.models.artifact_location}"]
    tables = [f"lakehouse.tables.{name}={where}" for name, where in settings.lakehouse.tables.items()]
    sets += [item for value in tables for item in ("--set", value)]
    command = spark_submit_command(
        cluster.master_url,
        job,
        [*job_args, "--env", "local", *sets],
        executor_memory="1g",
        total_executor_cores=2,
        conf={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"},
    )
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{job} on the cluster exited {done.returncode}:\n{done.stderr[-5000:]}"
    return done.stderr


def _table(location: str, name: str) -> pd.DataFrame:
    frame = DeltaTable(location).to_pandas()
    frame = frame.drop(columns=[c for c in frame.columns if c in WRITE_TIMES])
    return frame.sort_values(KEYS[name], ignore_index=True)


def _same(left: pd.DataFrame, right: pd.DataFrame, name: str) -> None:
    assert len(left) > 0, f"{name} is empty"
    pd.testing.assert_frame_equal(left, right[left.columns], check_dtype=False, obj=name)


@pytest.fixture(scope="module", autouse=True)
def _no_real_market_data() -> Iterator[None]:
    """Small comparisons: the real-data evaluation is the quality gate's (test_model_quality_gate)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SURVEIL_REAL_DATA", "/nonexistent/realdata")
        yield


def test_the_stream_and_a_backfill_on_a_standalone_cluster_equal_the_local_run(
    pipeline: Pipeline, cluster: LocalSparkCluster, tmp_path: Path
) -> None:
    # A registered champion, so that the model is scored on the cluster's executors too.
    models = [
        f"models.tracking_uri=sqlite:///{tmp_path}/mlflow/mlflow.db",
        f"models.artifact_location={tmp_path}/mlflow/artifacts",
        "models.train.symbols=3",
        "models.train.minutes=40",
        "models.test.symbols=2",
        "models.test.first_symbol=3",
        "models.test.minutes=40",
        "models.out_of_distribution.symbols=3",
        "models.out_of_distribution.minutes=40",
        "models.evaluation.min_precision=0",
    ]
    local = pipeline.settings.with_overrides(*models, "stream.max_offsets_per_trigger=2500")
    Path(mlflow_location(local).sqlite_file).parent.mkdir(parents=True)
    compare_detectors(local.with_overrides("models.detectors={robust_zscore: {}}"))
    MlflowClient(mlflow_location(local).tracking_uri).set_registered_model_alias(
        local.models.registered_name, local.models.champion_alias, "1"
    )
    generated = generate_quotes(symbols=4, minutes=20, seed=61, inject_anomalies=True, dirty=True)
    late = set(generated.manifest.loc[generated.manifest.kind == "late", "line_no"])
    # Without the very late lines: a symbol's quotes arrive in event-time order, so that the backfill's
    # alerts equal the stream's (README, "Limits worth knowing").
    sent = pipeline.send_lines([line for n, line in enumerate(generated.raw_lines) if n not in late])

    # The local run: the test session's own local Spark.
    pipeline.settings = local
    pipeline.run_once()
    # The cluster run: the same topic, a lakehouse and checkpoints of its own, both queries in one driver.
    remote = local.with_overrides(
        f"lakehouse.root={tmp_path}/cluster/lakehouse", f"stream.checkpoint_dir={tmp_path}/cluster/checkpoint"
    )
    _submit(cluster, "stream", remote, "--once")

    mine, theirs = table_locations(local), table_locations(remote)
    for name in KEYS:
        _same(_table(theirs[name], name), _table(mine[name], name), name)
    bronze = _table(theirs["bronze_quotes"], "bronze_quotes")
    alerts = _table(theirs["alerts"], "alerts")
    assert len(bronze) == sent and not bronze.duplicated(["partition", "offset"]).any()
    assert (alerts.rule == "model").any() and (alerts.rule == "price_jump").any()
    assert {json.loads(d)["model_version"] for d in alerts[alerts.rule == "model"].details} == {"1"}

    # A backfill on the cluster, from its bronze into empty tables, equals the local stream's tables.
    rebuilt = remote.with_overrides(
        *(f"lakehouse.tables.{n}={tmp_path}/cluster/rebuilt/{n}" for n in REBUILT)
    )
    day = DEFAULT_START.date().isoformat()
    _submit(cluster, "backfill", rebuilt, "--from", day, "--to", day)
    again = table_locations(rebuilt)
    for name in ("silver_quotes", "gold_bars_1m", "alerts"):
        _same(_table(again[name], name), _table(mine[name], name), f"backfilled {name}")

    # Both ran as applications of the cluster, on its executors (not in a local driver).
    state = cluster.master_state() or {}
    finished = [app for app in state["completedapps"] if app["state"] == "FINISHED"]
    assert len(finished) >= 2 and all(app["cores"] == 2 for app in finished[-2:]), state["completedapps"]


def test_the_wheel_a_cluster_installs_carries_the_configuration_and_fights_no_runtime_pins(
    tmp_path: Path,
) -> None:
    """Built as a cluster library: conf/*.yml inside it (loaded with no checkout in sight), scikit-learn a
    runtime requirement (the champion is unpickled on executors), ranges rather than exact pins."""
    import subprocess as sp
    import sys
    import sysconfig
    import zipfile

    built = sp.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("surveillance-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {f"surveillance/conf/{env}.yml" for env in ("base", "local", "dev", "prod")} <= names
    runtime = [
        line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert any("scikit-learn" in line for line in runtime)
    assert not [line for line in runtime if "==" in line], runtime
    elsewhere = tmp_path / "no-checkout"
    elsewhere.mkdir()
    loaded = sp.run(
        # -S: no .pth files, so not the editable install of this checkout; its dependencies from the venv.
        [sys.executable, "-S", "-c", "from surveillance.config import conf_dir, load_settings;"
         "print(conf_dir()); print(load_settings(env='local').stream.processes)"],
        cwd=elsewhere,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "PYTHONPATH": f"{tmp_path / 'site'}:{sysconfig.get_paths()['purelib']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == [str(tmp_path / "site" / "surveillance" / "conf"), "2"]
