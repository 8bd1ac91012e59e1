"""spark-submit's command line for our jobs, and the local cluster's view of itself when nothing runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from surveillance.cluster import ClusterError, LocalSparkCluster, delta_package, spark_submit_command
from surveillance.config import load_settings
from surveillance.spark import KAFKA_CONNECTOR, TOKEN_PROVIDER

ROOT = Path(__file__).resolve().parents[2]


def _option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == name]


def test_the_command_runs_the_job_file_with_our_packages_and_this_python_everywhere() -> None:
    command = spark_submit_command(
        "spark://127.0.0.1:7077", "stream", ["--once", "--env", "local"], total_executor_cores=2
    )
    assert command[0].endswith("bin/spark-submit") and _option(command, "--master") == [
        "spark://127.0.0.1:7077"
    ]
    assert _option(command, "--packages") == [f"{delta_package()},{KAFKA_CONNECTOR}"]
    assert delta_package() == "io.delta:delta-spark_4.1_2.13:4.4.0"
    assert _option(command, "--exclude-packages") == [TOKEN_PROVIDER]
    assert _option(command, "--total-executor-cores") == ["2"]
    conf = dict(item.split("=", 1) for item in _option(command, "--conf"))
    assert conf["spark.pyspark.python"] == conf["spark.pyspark.driver.python"] == sys.executable
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    # The job file, then its own arguments, last.
    assert command[-4:] == [str(ROOT / "jobs" / "stream.py"), "--once", "--env", "local"]


def test_an_unknown_job_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ClusterError, match="choose one of stream, backfill, maintain, compare_models"):
        spark_submit_command("local[2]", "streem")


def test_a_cluster_that_was_never_started_is_reported_down(tmp_path: Path) -> None:
    settings = load_settings(overrides=[f"state_dir={tmp_path}", "spark.local_cluster.webui_port=18999"])
    cluster = LocalSparkCluster(settings)
    status = cluster.status()
    assert not status.running and status.pids == {} and status.master_url == "spark://127.0.0.1:7077"
    assert cluster.down() is False


def test_worker_memory_is_validated_at_start() -> None:
    with pytest.raises(Exception, match="worker_memory"):
        load_settings(overrides=["spark.local_cluster.worker_memory=lots"])
