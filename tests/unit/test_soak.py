"""The soak's pure pieces: windows, trend verdicts, memory by process (/proc), Delta log sizes, its report."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from surveillance.bench import alert_latency
from surveillance.soak import (
    Distribution,
    LogSize,
    ProcessInfo,
    QuerySample,
    SoakReport,
    SoakSample,
    batch_seconds,
    command_line,
    delta_log_size,
    descendants,
    distribution,
    durations_by_query,
    header_line,
    lag_trend,
    machine_info,
    memory_by_role,
    parent_pids,
    process_kind,
    process_tree_memory,
    rss_kib,
    sample_line,
    slope_trend,
    trends,
)

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


# --- windows ---------------------------------------------------------------------------------------------


def test_distribution_of_an_empty_window_has_no_figures() -> None:
    assert distribution([]) == Distribution(0, None, None, None)


def test_distribution_median_p99_and_max() -> None:
    window = distribution([4.0, 1.0, 3.0, 2.0])
    assert window.count == 4
    assert window.p50 == pytest.approx(2.5)
    assert window.p99 == pytest.approx(3.97)  # linear interpolation, as bench's percentiles
    assert window.max == 4.0


def test_batch_seconds_prefers_the_profiled_total_then_the_timestamps() -> None:
    # From Arrow a map column arrives as (key, value) pairs.
    assert batch_seconds({"step_seconds": [("state", 1.5), ("total", 2.25)]}) == 2.25
    timed = {"step_seconds": None, "started_at": T0, "finished_at": T0 + dt.timedelta(seconds=3.5)}
    assert batch_seconds(timed) == 3.5
    assert batch_seconds({"step_seconds": [("state", 1.0)], "started_at": T0, "finished_at": None}) is None


def test_durations_by_query_names_each_query_by_its_role() -> None:
    rows = [
        {"query_name": "quotes_to_alerts", "step_seconds": [("total", 1.0)]},
        {"query_name": "quotes_to_lakehouse", "step_seconds": [("total", 20.0)]},
        {"query_name": "quotes_to_alerts", "step_seconds": [("total", 3.0)]},
        {"query_name": "other_query", "step_seconds": [("total", 5.0)]},
        {"query_name": "quotes_to_alerts", "step_seconds": None},  # no duration: not counted
    ]
    roles = {"quotes_to_alerts": "detection", "quotes_to_lakehouse": "lakehouse"}
    assert durations_by_query(rows, roles) == {
        "detection": [1.0, 3.0],
        "lakehouse": [20.0],
        "other_query": [5.0],
    }


def test_alert_latency_is_the_alerts_kafka_time_minus_its_quotes() -> None:
    quote_ms = int(dt.datetime(2026, 12, 3, 12, 0, 0, 250_000, tzinfo=dt.UTC).timestamp() * 1000)
    value = json.dumps({"alert_id": "a", "source_kafka_timestamp": "2026-12-03T12:00:00.250Z"}).encode()
    fields = dict.fromkeys(ConsumerRecord._fields)
    message = ConsumerRecord(**{**fields, "timestamp": quote_ms + 1_500, "value": value})
    assert alert_latency(message) == (quote_ms, 1.5)


# --- trends ----------------------------------------------------------------------------------------------

MINUTES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_a_steady_series_is_flat() -> None:
    trend = slope_trend(MINUTES, [100, 102, 99, 101, 100, 101])
    assert trend.verdict == "flat"
    assert trend.samples == 6
    assert abs(trend.change_over_run) < 0.2 * trend.mean


def test_a_rising_series_is_growing_and_a_sinking_one_falling() -> None:
    rising = slope_trend(MINUTES, [100, 110, 120, 130, 140, 150])
    assert rising.verdict == "growing"
    assert rising.slope_per_minute == pytest.approx(10.0)
    assert rising.change_over_run == pytest.approx(50.0)  # 40 % of the mean, 125
    assert slope_trend(MINUTES, [150, 140, 130, 120, 110, 100]).verdict == "falling"


def test_the_slope_threshold_is_a_share_of_the_mean() -> None:
    # A rise of 10 over the run on a mean of 105: 9.5 %, flat at 20 %, growing at 5 %.
    values = [100, 102, 104, 106, 108, 110]
    assert slope_trend(MINUTES, values).verdict == "flat"
    assert slope_trend(MINUTES, values, threshold=0.05).verdict == "growing"


def test_slope_trend_skips_missing_values_and_needs_three() -> None:
    assert slope_trend(MINUTES, [None, 1.0, None, 2.0, None, None]).verdict == "too few samples"
    assert slope_trend(MINUTES, [10, None, 10, None, 10, None]).verdict == "flat"
    assert slope_trend(MINUTES, [0, 0, 0, 0, 0, 0]).verdict == "flat"
    assert slope_trend([1.0, 1.0, 1.0], [1, 2, 3]).verdict == "too few samples"  # no time span


def test_a_lag_swinging_with_batches_is_bounded() -> None:
    # A detection lag of one batch or none, at 1,000 quotes/s: the slack is 2 s of input.
    swinging = [0, 9_000, 500, 8_000, 0, 9_500, 300, 8_800, 0]
    assert lag_trend(swinging, slack=2_000).verdict == "bounded"


def test_a_lag_whose_last_third_is_well_above_its_first_is_growing() -> None:
    trend = lag_trend([1_000, 2_000, 5_000, 8_000, 12_000, 15_000], slack=2_000)
    assert trend.verdict == "growing"
    assert trend.first_third_mean == 1_500
    assert trend.last_third_mean == 13_500
    assert lag_trend([1_000, 2_000], slack=0).verdict == "too few samples"


def _sample(minute: float, lag: int, batch_s: float, jvm_mb: int) -> SoakSample:
    queries = {
        "detection": QuerySample(committed=int(minute * 60_000), lag=lag, batches=distribution([batch_s])),
        "lakehouse": QuerySample(committed=0, lag=int(minute * 60_000), batches=distribution([])),
    }
    return SoakSample(
        elapsed_s=minute * 60,
        events_sent=int(minute * 60_000),
        queries=queries,
        latency=distribution([2.0, 4.0]),
        memory={"detection": {"python_kib": 300_000, "jvm_kib": jvm_mb * 1024, "python_workers_kib": 0}},
        delta_log={"silver_quotes": LogSize(files=int(minute * 10), bytes=int(minute * 10_000))},
        load_1m=1.0,
    )


def test_trends_leave_out_the_warm_up_and_judge_each_series() -> None:
    # Minute 1 is warm-up: its JVM of 200 MB and its slow batch do not count.
    samples = [_sample(1, 0, 30.0, 200)] + [_sample(m, 9_000, 8.0, 1_000) for m in range(2, 8)]
    verdicts = trends(samples, rate=1_000)
    assert verdicts["memory.detection.jvm_kib"].verdict == "flat"
    assert verdicts["memory.detection.jvm_kib"].samples == 6
    assert verdicts["detection.batch_median_s"].verdict == "flat"
    assert verdicts["detection.lag"].verdict == "bounded"
    assert verdicts["lakehouse.lag"].verdict == "growing"  # committed nothing while the input lasted
    assert verdicts["lakehouse.batch_median_s"].verdict == "too few samples"
    assert verdicts["delta_log.silver_quotes.files"].verdict == "growing"
    assert verdicts["latency.p99_s"].verdict == "flat"
    assert "memory.detection.python_workers_kib" not in verdicts  # a kind this run did not have
    assert "memory.lakehouse.jvm_kib" not in verdicts


def test_with_too_few_samples_after_the_warm_up_every_sample_counts() -> None:
    samples = [_sample(m / 2, 0, 1.0, 500) for m in range(1, 5)]  # two minutes in all
    assert trends(samples, rate=1_000)["detection.lag"].samples == 4


# --- memory by process -----------------------------------------------------------------------------------

PYTHON = "/work/main/.venv/bin/python"


def test_process_kinds() -> None:
    assert process_kind(["/usr/lib/jvm/java-17/bin/java", "-cp", "x", "SparkSubmit"]) == "jvm"
    assert process_kind([PYTHON, "-m", "pyspark.daemon"]) == "python_worker"
    assert process_kind([PYTHON, "-m", "surveillance.cli", "stream"]) == "python"
    assert process_kind(["/bin/bash", "spark-class"]) == "other"
    assert process_kind([]) == "other"


def test_descendants_of_a_process_parents_first() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert descendants(10, parents) == [11, 12, 13]
    assert descendants(13, parents) == []


def test_memory_by_role_sums_each_query_process_tree_by_kind() -> None:
    stream = [PYTHON, "-m", "surveillance.cli", "stream", "--settings-json", "/s/logs/soak.settings.json"]

    def query(role: str) -> tuple[str, ...]:
        return (PYTHON, "-m", "surveillance.cli", "stream", "--settings-json", f"/s/processes/{role}.json")

    processes = {
        100: ProcessInfo(1, tuple(stream), 50_000),
        101: ProcessInfo(100, query("detection"), 300_000),
        102: ProcessInfo(101, ("/jvm/bin/java", "-Xmx1g"), 1_000_000),
        103: ProcessInfo(102, (PYTHON, "-m", "pyspark.daemon"), 40_000),
        104: ProcessInfo(103, (PYTHON, "-m", "pyspark.daemon"), 60_000),  # a worker forked by the daemon
        111: ProcessInfo(100, query("lakehouse"), 280_000),
        112: ProcessInfo(111, ("/jvm/bin/java",), 900_000),
        113: ProcessInfo(112, (PYTHON, "-m", "pyspark.daemon"), None),  # exited while we looked
    }
    memory = memory_by_role(100, processes)
    assert memory["stream"] == {
        "python_kib": 50_000,
        "jvm_kib": 0,
        "python_workers_kib": 0,
        "other_kib": 0,
        "python_workers": 0,
    }
    assert memory["detection"] == {
        "python_kib": 300_000,
        "jvm_kib": 1_000_000,
        "python_workers_kib": 100_000,
        "other_kib": 0,
        "python_workers": 2,
    }
    assert memory["lakehouse"]["jvm_kib"] == 900_000
    assert memory["lakehouse"]["python_workers"] == 0


def test_memory_of_one_process_running_both_queries_is_the_stream_role() -> None:
    processes = {
        100: ProcessInfo(1, (PYTHON, "-m", "surveillance.cli", "stream"), 300_000),
        101: ProcessInfo(100, ("/jvm/bin/java",), 1_500_000),
    }
    assert set(memory_by_role(100, processes)) == {"stream"}


def test_rss_and_parent_of_this_process_from_proc() -> None:
    own = rss_kib(os.getpid())
    assert own is not None and own > 1_000  # a Python interpreter with pytest loaded: several MB
    assert parent_pids()[os.getpid()] == os.getppid()
    assert "python" in Path(command_line(os.getpid())[0]).name
    assert rss_kib(2**22 + 1) is None  # above the kernel's largest pid: no such process


def test_process_tree_memory_counts_a_child_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while (rss_kib(child.pid) or 0) < 1_000 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the interpreter has started
        memory = process_tree_memory(os.getpid())
        assert set(memory) == {"stream"}  # not a `surveil stream` query process
        assert memory["stream"]["python_kib"] >= (rss_kib(os.getpid()) or 0)
        assert memory["stream"]["python_kib"] > (rss_kib(os.getpid()) or 0) * 0.5 + 1_000
    finally:
        child.kill()
        child.wait()


# --- Delta logs, the report ------------------------------------------------------------------------------


def test_delta_log_size_counts_every_file_under_the_log(tmp_path: Path) -> None:
    log = tmp_path / "silver_quotes" / "_delta_log"
    (log / "_staged_commits").mkdir(parents=True)
    (log / "00000000000000000000.json").write_bytes(b"x" * 100)
    (log / "00000000000000000000.crc").write_bytes(b"x" * 10)
    (log / "_staged_commits" / "00000000000000000001.uuid.json").write_bytes(b"x" * 5)
    (tmp_path / "silver_quotes" / "part-0000.parquet").write_bytes(b"x" * 1_000)  # data, not log
    assert delta_log_size(tmp_path / "silver_quotes") == LogSize(files=3, bytes=115)
    assert delta_log_size(tmp_path / "gold_bars_1m") is None


def test_a_sample_prints_as_one_line_under_the_header() -> None:
    line = sample_line(_sample(3, 9_000, 8.0, 1_000))
    assert len(line) == len(header_line())
    assert "180,000" in line  # quotes sent
    assert "293+1,000/0" in line  # detection's MB: Python driver + JVM / Python workers
    assert "8.0/8.0" in line  # detection's batch median / max
    assert "3.0/4.0" in line  # latency p50 / p99


def test_the_report_keeps_samples_trends_and_the_machine(tmp_path: Path) -> None:
    samples = [_sample(m, 9_000, 8.0, 1_000) for m in range(1, 6)]
    report = SoakReport(
        settings={"minutes": 5, "rate_events_per_s": 1_000},
        machine=machine_info(),
        started_at=T0.isoformat(),
        samples=samples,
        trends=trends(samples, rate=1_000),
    )
    written = json.loads(report.to_json())
    assert written["machine"]["cores"] == os.cpu_count()
    assert written["machine"]["memory_kib"] > 0
    assert [s["minute"] for s in written["samples"]] == [1, 2, 3, 4, 5]
    assert written["samples"][0]["queries"]["detection"]["batches"]["p50"] == 8.0
    assert written["samples"][0]["delta_log"]["silver_quotes"] == {"files": 10, "bytes": 10_000}
    assert written["trends"]["detection.lag"]["verdict"] == "bounded"
    assert report.ok
