"""Faults a production stream meets (make test-chaos): SIGKILL again and again, being stopped, the broker
and the alerts topic going away, a failed Delta write, and poison input.

Each case runs ``surveil stream`` as its own process (both queries in their own processes, as
conf/local.yml has it) and audits the tables with delta-rs afterwards.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from adversarial import expected_outcomes, messages, quarantined
from deltalake import DeltaTable
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from stream_process import (
    alert_ids_on_topic,
    batches_in_flight,
    caught_up,
    checkpoint_entries,
    query_processes_alive,
    run_stream,
    set_topic_config,
    stream_command,
    stream_overrides,
    unwritable,
)

from surveillance.config import Settings
from surveillance.ingestion.generator import GeneratedQuotes, generate_quotes
from surveillance.kafka.broker import LocalBroker

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

KILLS = 10


def _audit(pipeline: Pipeline, generated: GeneratedQuotes, sent: int, expected_bars: Callable) -> dict:
    """Every table read with delta-rs (not Spark): each sent record once in bronze, each valid distinct
    event_id once in silver, each malformed line once in quarantine with a reason, gold equal to pandas
    bars of silver's on-time quotes, alerts unique and every injected jump alerted on its own event_id."""
    audited = ("bronze_quotes", "silver_quotes", "quarantine_quotes", "gold_bars_1m", "alerts")
    tables = {name: DeltaTable(pipeline.locations[name]).to_pandas() for name in audited}
    bronze, silver, quarantine = tables["bronze_quotes"], tables["silver_quotes"], tables["quarantine_quotes"]
    alerts, manifest, labels = tables["alerts"], generated.manifest, generated.labels
    assert len(bronze) == sent and not bronze.duplicated(["partition", "offset"]).any()
    assert set(silver.event_id) == set(generated.quotes.event_id) and not silver.event_id.duplicated().any()
    assert len(quarantine) == int((manifest.kind == "malformed").sum())
    assert quarantine.reason.notna().all() and (quarantine.reason != "").all()
    late = set(silver[silver.is_late].event_id)
    gold = tables["gold_bars_1m"].sort_values(["symbol", "bar_start"], ignore_index=True)
    expected = expected_bars(generated.quotes[~generated.quotes.event_id.isin(late)])
    assert len(gold) == len(expected)
    for column in ("open", "high", "low", "close"):
        assert np.allclose(gold[column], expected[column]), column
    assert (gold.volume == expected.volume).all() and (gold.trade_count == expected.trade_count).all()
    assert not alerts.alert_id.duplicated().any()
    jumps = set(labels[labels.anomaly_type == "price_jump"].event_id)
    assert jumps <= set(alerts[alerts.rule == "price_jump"].event_id)
    assert set(alert_ids_on_topic(pipeline.settings)) == set(alerts.alert_id)
    return {name: len(frame) for name, frame in tables.items()}


def test_kill_9_loop_then_restart_loses_nothing_and_duplicates_nothing(
    pipeline: Pipeline, tmp_path: Path, expected_bars: Callable
) -> None:
    # 50,400 quotes of 16 symbols with duplicates, malformed and late lines and injected jumps and spikes.
    generated = generate_quotes(symbols=16, minutes=105, seed=13, inject_anomalies=True, dirty=True)
    pipeline.settings = pipeline.settings.with_overrides(
        "stream.max_offsets_per_trigger=3000", "detection.max_offsets_per_trigger=3000"
    )
    sent = pipeline.send(generated)
    chance = random.Random(2026)
    hits: list[list[str]] = []
    for kill in range(KILLS):
        log = tmp_path / f"run_{kill}.log"
        process = subprocess.Popen(
            stream_command(pipeline.settings),
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        # Once this run has written to a checkpoint (it is past its start-up and working), kill it at a
        # random moment, and only with a batch under way (offsets written, no commit yet).
        before = checkpoint_entries(pipeline.settings)
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint_entries(pipeline.settings) - before:
                break
            time.sleep(0.05)
        time.sleep(chance.uniform(0.0, 2.0))
        while time.monotonic() < deadline and process.poll() is None:
            if batches_in_flight(pipeline.settings):
                break
            time.sleep(0.05)
        busy = batches_in_flight(pipeline.settings)
        assert process.poll() is None, f"run {kill} ended before its kill:\n{log.read_text()[-3000:]}"
        assert busy, f"run {kill}: no batch under way to kill"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        hits.append(busy)
        for _ in range(50):  # the query processes die with their parent (PR_SET_PDEATHSIG)
            if not query_processes_alive(pipeline.settings):
                break
            time.sleep(0.1)
        assert not query_processes_alive(pipeline.settings), "a query process outlived its killed parent"

    started = time.monotonic()
    assert run_stream(pipeline.settings, timeout=900) == 0
    final_run_s = time.monotonic() - started
    counts = _audit(pipeline, generated, sent, expected_bars)
    assert counts["bronze_quotes"] == sent >= 50_000 and len(hits) == KILLS
    print(
        f"kill -9 loop: {len(hits)} kills, each with a batch under way ({sum(map(len, hits))} query batches "
        f"hit); the final run {final_run_s:.0f} s; audited {counts}"
    )


def _wait(
    condition: Callable[[], bool], timeout: float, process: subprocess.Popen, log: Path, what: str
) -> float:
    """Seconds until ``condition`` holds, the stream process running all along."""
    started = time.monotonic()
    while not condition():
        assert process.poll() is None, f"the stream exited while {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() - started < timeout, (
            f"not {what} within {timeout} s:\n{log.read_text()[-4000:]}"
        )
        time.sleep(0.5)
    return time.monotonic() - started


def test_a_broker_outage_and_an_alerts_topic_refusing_writes_under_a_running_stream_lose_nothing(
    pipeline: Pipeline, kafka_settings: Settings, tmp_path: Path, expected_bars: Callable
) -> None:
    """`surveil stream` as a service runs it (no --once) lives through the broker stopped for 30 s (a
    replay started during the outage retries and sends everything), then through the alerts topic
    refusing every write (max.message.bytes below any record) for over 20 s; SIGTERM then stops it
    with exit code 0, and the audit finds every table exactly as it must be."""
    generated = generate_quotes(symbols=8, minutes=40, seed=31, inject_anomalies=True, dirty=True)
    lines = generated.raw_lines
    thirds = [
        lines[: len(lines) // 3],
        lines[len(lines) // 3 : 2 * len(lines) // 3],
        lines[2 * len(lines) // 3 :],
    ]
    sent = pipeline.send_lines(thirds[0], "first.jsonl")
    log = tmp_path / "stream.log"
    command = [arg for arg in stream_command(pipeline.settings) if arg != "--once"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )
    try:
        _wait(lambda: caught_up(pipeline.settings), 300, process, log, "through the first third")

        # The broker stops for 30 s; a replay of the second third starts during the outage.
        second = tmp_path / "second.jsonl"
        second.write_text("".join(f"{line}\n" for line in thirds[1]))
        broker = LocalBroker(kafka_settings)
        broker.down()
        down_at = time.monotonic()
        sets = [arg for value in stream_overrides(pipeline.settings) for arg in ("--set", value)]
        replayer = subprocess.Popen(
            [sys.executable, "-m", "surveillance.cli", *sets, "replay", "--file", str(second)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        assert process.poll() is None, f"the stream exited during the outage:\n{log.read_text()[-4000:]}"
        broker.up()
        outage_s = time.monotonic() - down_at
        replay_output, _ = replayer.communicate(timeout=300)
        assert replayer.returncode == 0, replay_output[-3000:]
        assert f"sent {len(thirds[1]):,} messages" in replay_output, replay_output[-3000:]
        sent += len(thirds[1])
        catch_up_s = _wait(
            lambda: caught_up(pipeline.settings), 300, process, log, "caught up after the outage"
        )
        assert "may be unreachable" in log.read_text(), "the stream never said what it waited for"

        # The alerts topic refuses every write (records above its max.message.bytes) for 20 s and more
        # while the third third (with its jumps) arrives. (min.insync.replicas above the replication
        # factor no longer refuses anything: Kafka 4 caps it at the replicas a partition has.)
        set_topic_config(
            pipeline.settings, pipeline.settings.kafka.topics.alerts, {"max.message.bytes": "16"}
        )
        sent += pipeline.send_lines(thirds[2], "third.jsonl")
        _wait(lambda: "waiting for the alerts topic" in log.read_text(), 240, process, log, "refused")
        time.sleep(20)
        set_topic_config(
            pipeline.settings, pipeline.settings.kafka.topics.alerts, {"max.message.bytes": "1048588"}
        )
        _wait(lambda: caught_up(pipeline.settings), 300, process, log, "caught up after the refusals")

        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    stderr = log.read_text()
    assert code == 0 and "Traceback" not in stderr, stderr[-4000:]
    assert stderr.count("SIGTERM: stopping the queries") == 2  # forwarded once to each query's process
    counts = _audit(pipeline, generated, sent, expected_bars)
    print(f"outage {outage_s:.0f} s, caught up {catch_up_s:.0f} s after; audited {counts}")


def test_a_delta_write_that_fails_stops_the_stream_loudly_and_a_restart_completes_the_batch(
    pipeline: Pipeline, tmp_path: Path, expected_bars: Callable
) -> None:
    """Silver's log directory turned unwritable under a running batch (a disk gone read-only): the stream
    fails with the reason, commits nothing of that batch (it is never skipped), and the restart on the
    same checkpoint, the disk back, completes it; the audit finds every table exactly as it must be."""
    generated = generate_quotes(symbols=8, minutes=20, seed=41, inject_anomalies=True, dirty=True)
    half = len(generated.raw_lines) // 2
    sent = pipeline.send_lines(generated.raw_lines[:half], "first.jsonl")
    assert run_stream(pipeline.settings) == 0
    silver_log = Path(pipeline.locations["silver_quotes"]) / "_delta_log"
    silver_versions = sorted(silver_log.glob("*.json"))
    sent += pipeline.send_lines(generated.raw_lines[half:], "second.jsonl")

    with unwritable(silver_log) as how:
        failed = subprocess.run(
            stream_command(pipeline.settings), capture_output=True, text=True, timeout=600
        )
        in_flight = batches_in_flight(pipeline.settings)
    stderr = failed.stderr
    assert failed.returncode != 0, f"the stream ignored the failed write ({how}):\n{stderr[-4000:]}"
    assert "quotes_to_lakehouse: batch" in stderr and "failed; the stream stops with it" in stderr
    assert str(silver_log) in stderr or "silver_quotes" in stderr, stderr[-4000:]
    assert "StackOverflowError" not in stderr, stderr[-4000:]
    assert sorted(silver_log.glob("*.json")) == silver_versions  # nothing of that batch committed
    assert "lakehouse" in in_flight, "the failed batch was marked done in the checkpoint"

    assert run_stream(pipeline.settings) == 0
    counts = _audit(pipeline, generated, sent, expected_bars)
    print(f"failed write ({how}): exit {failed.returncode}, then restart; audited {counts}")


POISON_MESSAGES = 10_000


def test_ten_thousand_adversarial_messages_into_a_running_stream_are_each_kept_or_quarantined(
    pipeline: Pipeline, tmp_path: Path, expected_bars: Callable
) -> None:
    """Hypothesis (fixed seed) sends bursts of adversarial messages, outlier event times included, to
    `surveil stream` running as a service, over 10,000 in all; the stream stays up throughout, stops on
    a SIGTERM sent with a batch under way (exit code 0, no traceback), a restart on its checkpoint
    completes the work, and delta-rs finds each message once in bronze, each rejected
    one in quarantine with the reference check's reason, each valid event_id once in silver, gold equal to
    pandas bars of silver's on-time quotes, and alerts unique and all on the topic."""
    log = tmp_path / "stream.log"
    command = [arg for arg in stream_command(pipeline.settings) if arg != "--once"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )
    sent: list[str] = []
    bursts = iter(range(1_000))

    @hypothesis_settings(
        max_examples=90,  # of 100-250 messages each (an example's draws are bounded): ~11,000 in all
        deadline=None,
        derandomize=True,
        database=None,
        # Each example sends to Kafka: shrinking would replay sends, so a failure is reported as found.
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def a_burst(data: st.DataObject) -> None:
        # event_ids of one burst never collide with another's; the fixed width keeps every burst's
        # messages the same length, so Hypothesis sees the same draws whatever the burst's number.
        prefix = f"b{next(bursts):03d}"
        burst = data.draw(st.lists(messages(prefix), min_size=100, max_size=250), label="burst")
        lines = [line for line in burst if line.strip()]  # replay skips blank lines by design
        assert pipeline.send_lines(lines, f"{prefix}.jsonl") == len(lines)
        sent.extend(lines)
        assert process.poll() is None, f"the stream stopped on {prefix}:\n{log.read_text()[-4000:]}"

    try:
        a_burst()
        assert len(sent) >= POISON_MESSAGES, f"hypothesis generated only {len(sent)} messages"
        # SIGTERM with a batch under way: it finishes or is abandoned cleanly, and the restart redoes it.
        _wait(lambda: bool(batches_in_flight(pipeline.settings)), 120, process, log, "in a batch")
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    stderr = log.read_text()
    assert code == 0, stderr[-4000:]
    assert stderr.count("SIGTERM: stopping the queries") == 2  # forwarded once to each query's process
    assert "Traceback" not in stderr and "reentrant call" not in stderr, stderr[-4000:]
    assert run_stream(pipeline.settings) == 0

    tables = {
        name: DeltaTable(pipeline.locations[name]).to_pandas()
        for name in ("bronze_quotes", "silver_quotes", "quarantine_quotes", "gold_bars_1m", "alerts")
    }
    bronze, silver, quarantine = tables["bronze_quotes"], tables["silver_quotes"], tables["quarantine_quotes"]
    assert sorted(bronze.value) == sorted(sent) and not bronze.duplicated(["partition", "offset"]).any()
    suite = {name: spec.model_dump() for name, spec in pipeline.settings.quality.suites.silver_quotes.items()}
    rejected, valid_ids = expected_outcomes(bronze, suite)
    assert quarantined(quarantine) == rejected and len(quarantine) == len(rejected)
    assert set(silver.event_id) == valid_ids and not silver.event_id.duplicated().any()
    on_time = silver[~silver.is_late]
    gold = tables["gold_bars_1m"].sort_values(["symbol", "bar_start"], ignore_index=True)
    expected = expected_bars(on_time[["event_id", "symbol", "event_time", "price", "volume"]])
    assert len(gold) == len(expected)
    for column in ("open", "high", "low", "close"):
        assert np.allclose(gold[column], expected[column]), column
    assert (gold.volume == expected.volume).all() and (gold.trade_count == expected.trade_count).all()
    alerts = tables["alerts"]
    assert not alerts.alert_id.duplicated().any()
    assert set(alert_ids_on_topic(pipeline.settings)) == set(alerts.alert_id)
    print(f"poison: {len(sent):,} messages, {len(rejected):,} quarantined, {len(silver):,} in silver")
