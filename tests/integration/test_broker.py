"""The local Kafka broker and topic admin against a real broker process (no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from surveillance.config import Settings
from surveillance.kafka.admin import count_messages, delete_topics, ensure_topics, topic_end_offsets
from surveillance.kafka.broker import BrokerError, LocalBroker

pytestmark = pytest.mark.integration

# A second broker for the stop/start test, so the session broker is never disturbed.
OTHER_PORT, OTHER_CONTROLLER_PORT = 19292, 19293


def _private_topics(settings: Settings, quotes_partitions: int = 3) -> Settings:
    """The same settings with topic names of this test's own, so tests never share data."""
    suffix = uuid.uuid4().hex[:8]
    return settings.with_overrides(
        f"kafka.topics.quotes=test_quotes_{suffix}",
        f"kafka.topics.alerts=test_alerts_{suffix}",
        f"kafka.quotes_partitions={quotes_partitions}",
        "kafka.alerts_partitions=1",
    )


def _produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(**settings.kafka.client_options(), acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def test_up_is_idempotent(kafka_settings: Settings) -> None:
    running = LocalBroker(kafka_settings).status()
    started = time.monotonic()
    # A fresh object, as a second CLI call would have: it finds the broker through the pid file.
    again = LocalBroker(kafka_settings).up()
    assert again.pid == running.pid
    assert time.monotonic() - started < 5


def test_status_reports_a_running_answering_broker(kafka_settings: Settings) -> None:
    broker = LocalBroker(kafka_settings)
    status = broker.status()
    assert status.running and status.answering
    assert status.bootstrap == "localhost:19192"
    assert status.log_path.is_file() and (status.data_dir / "meta.properties").is_file()
    assert broker.pid_path.read_text().strip() == str(status.pid)
    assert broker.cluster_id_path.read_text().strip() == broker.cluster_id()
    # Detached: its own session (a Ctrl-C to the test run does not reach it) and the configured heap.
    assert os.getsid(status.pid) == status.pid != os.getsid(0)
    cmdline = Path(f"/proc/{status.pid}/cmdline").read_bytes().split(b"\0")
    assert f"-Xmx{kafka_settings.kafka.local_broker.heap}".encode() in cmdline


def test_ensure_topics_creates_configured_partitions_idempotently(kafka_settings: Settings) -> None:
    settings = _private_topics(kafka_settings, quotes_partitions=3)
    quotes, alerts = settings.kafka.topics.quotes, settings.kafka.topics.alerts
    try:
        assert ensure_topics(settings.kafka) == {quotes: 3, alerts: 1}
        assert ensure_topics(settings.kafka) == {quotes: 3, alerts: 1}
        assert topic_end_offsets(settings.kafka, quotes) == {0: 0, 1: 0, 2: 0}
        assert count_messages(settings.kafka, alerts) == 0
    finally:
        delete_topics(settings.kafka, [quotes, alerts])
    consumer = KafkaConsumer(**settings.kafka.client_options())
    try:
        assert not {quotes, alerts} & consumer.topics()
    finally:
        consumer.close()


def test_produce_and_consume_roundtrip(kafka_settings: Settings) -> None:
    settings = _private_topics(kafka_settings)
    topic = settings.kafka.topics.quotes
    ensure_topics(settings.kafka)
    try:
        records = [(f"SYM{i % 3}".encode(), f'{{"seq": {i}}}'.encode()) for i in range(10)]
        _produce(settings, topic, records)
        consumer = KafkaConsumer(
            topic,
            **settings.kafka.client_options(),
            group_id=None,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
        )
        try:
            received = []
            for message in consumer:
                received.append((message.key, message.value))
                if len(received) == len(records):
                    break
        finally:
            consumer.close()
        assert sorted(received) == sorted(records)
        assert count_messages(settings.kafka, topic) == len(records)
        assert sum(topic_end_offsets(settings.kafka, topic).values()) == len(records)
    finally:
        delete_topics(settings.kafka, [topic, settings.kafka.topics.alerts])


def test_down_then_up_keeps_cluster_id_and_data(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = kafka_settings.with_overrides(
        f"state_dir={tmp_path}",
        f"kafka.bootstrap_servers=localhost:{OTHER_PORT}",
        f"kafka.local_broker.port={OTHER_PORT}",
        f"kafka.local_broker.controller_port={OTHER_CONTROLLER_PORT}",
    )
    broker = LocalBroker(settings)
    try:
        first = broker.up()
        cluster_id = broker.cluster_id()
        ensure_topics(settings.kafka)
        _produce(settings, settings.kafka.topics.quotes, [(b"AAPL", b"1"), (b"MSFT", b"2"), (b"AAPL", b"3")])

        assert broker.down() is True
        stopped = broker.status()
        assert not stopped.running and not stopped.answering
        assert not broker.pid_path.exists()
        assert not Path(f"/proc/{first.pid}").exists()
        assert broker.down() is False  # nothing left to stop: fine

        second = LocalBroker(settings).up()
        assert second.answering and second.pid != first.pid
        assert broker.cluster_id() == cluster_id
        assert count_messages(settings.kafka, settings.kafka.topics.quotes) == 3
    finally:
        broker.down()
    assert not broker.status().running


def test_stale_pid_file_is_detected_and_cleared(kafka_settings: Settings, tmp_path: Path) -> None:
    broker = LocalBroker(kafka_settings.with_overrides(f"state_dir={tmp_path}"))
    broker.home.mkdir(parents=True)
    session_pid = LocalBroker(kafka_settings).status().pid
    # A live non-Kafka process (this one), and a live Kafka that belongs to another state dir.
    for pid in (os.getpid(), session_pid):
        broker.pid_path.write_text(f"{pid}\n")
        assert broker.status().running is False
        assert broker.down() is False
        assert not broker.pid_path.exists()
    assert LocalBroker(kafka_settings).status().running  # the session broker was left alone


def test_up_refuses_a_port_taken_by_another_process(kafka_settings: Settings, tmp_path: Path) -> None:
    # Same ports as the session broker, but another state dir: that broker is not ours to use.
    broker = LocalBroker(kafka_settings.with_overrides(f"state_dir={tmp_path}"))
    with pytest.raises(BrokerError, match="19192 on localhost is taken"):
        broker.up(timeout=10)
    assert not broker.status().running


def test_replay_stops_on_sigterm_with_what_was_sent_on_the_topic_and_the_rest_in_a_file(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = _private_topics(kafka_settings)
    ensure_topics(settings.kafka)
    lines = [f'{{"event_id": "r{n}", "symbol": "S{n % 5}"}}' for n in range(3000)]
    source = tmp_path / "paced.jsonl"
    source.write_text("".join(f"{line}\n" for line in lines))
    sets = [
        f"state_dir={settings.state_dir}",
        f"kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"kafka.topics.quotes={settings.kafka.topics.quotes}",
    ]
    command = [sys.executable, "-m", "surveillance.cli", *[a for s in sets for a in ("--set", s)]]
    replay = subprocess.Popen(
        [*command, "replay", "--file", str(source), "--rate", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while count_messages(settings.kafka, settings.kafka.topics.quotes) < 200:  # under way
        assert replay.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    replay.send_signal(signal.SIGTERM)
    output, _ = replay.communicate(timeout=60)
    text = " ".join(output.split())
    assert replay.returncode == 0, output[-3000:]
    assert "SIGTERM: stopping after the records in flight" in text and "stopped on request" in text
    unsent = sorted((Path(settings.state_dir) / "replay").glob("paced.unsent.*.jsonl"))
    assert len(unsent) == 1
    left = unsent[0].read_text().splitlines()
    on_topic = count_messages(settings.kafka, settings.kafka.topics.quotes)
    assert 200 <= on_topic < len(lines) and on_topic + len(left) == len(lines)
    assert left == lines[on_topic:]  # exactly the records after the last one sent, in order
