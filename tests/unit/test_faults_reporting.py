"""What the stream and the alert publisher say and do while Kafka refuses them (no broker needed here)."""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import MessageSizeTooLargeError, NotEnoughReplicasError

from surveillance.config import KafkaSettings
from surveillance.pipeline.runner import StallReporter
from surveillance.sinks.kafka_alerts import AlertPublisher


def _query(name: str, message: str, active: bool = True) -> SimpleNamespace:
    return SimpleNamespace(name=name, id=name, status={"message": message, "isTriggerActive": active})


def test_a_trigger_step_that_lasts_is_said_with_what_it_waits_for() -> None:
    now = [0.0]
    said: list[str] = []
    reporter = StallReporter("k1:9092", said.append, after_s=15, every_s=15, clock=lambda: now[0])
    waiting = _query("quotes_to_alerts", "Getting offsets from KafkaV2[Subscribe[quotes]]")
    for moment in (0, 5, 14):
        now[0] = moment
        reporter.check([waiting])
    assert said == []
    now[0] = 16
    reporter.check([waiting])
    assert len(said) == 1 and "for 16 s" in said[0] and "k1:9092 may be unreachable" in said[0]
    now[0] = 20
    reporter.check([waiting])  # not again before every_s
    now[0] = 32
    reporter.check([waiting, _query("quotes_to_lakehouse", "Waiting for next trigger", active=False)])
    assert len(said) == 2 and "for 32 s" in said[1]
    now[0] = 33  # the step finished and another began: its clock starts again
    reporter.check([_query("quotes_to_alerts", "Processing new data")])
    now[0] = 40
    reporter.check([_query("quotes_to_alerts", "Processing new data")])
    assert len(said) == 2


class Delivery:
    """A sent record's outcome, as the producer's future gives it (``get`` raises a refusal)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class RefusingProducer:
    """Refuses every record (too few in-sync replicas) for its first ``refusals`` attempts."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.attempts, self.acknowledged = refusals, 0, []

    def send(self, topic: str, key: bytes, value: bytes, headers: list) -> Delivery:
        if self.attempts < self.refusals:
            return Delivery(NotEnoughReplicasError("min.insync.replicas"))
        self.acknowledged.append(dict(headers)["alert_id"])
        return Delivery(None)

    def flush(self) -> None:
        self.attempts += 1

    def close(self, timeout: float | None = None) -> None:
        pass


def _records(n: int) -> list[tuple[str, str, str]]:
    return [("AAA", json.dumps({"alert_id": f"a{i}"}), f"a{i}") for i in range(n)]


def test_alerts_the_topic_refuses_are_sent_again_with_their_alert_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("surveillance.sinks.kafka_alerts.time.sleep", lambda s: None)
    producer = RefusingProducer(refusals=3)
    publisher = AlertPublisher(
        KafkaSettings(), timeout_s=600, say_every_s=0, producer_factory=lambda: producer
    )
    with caplog.at_level(logging.WARNING):
        assert publisher.send(_records(4), "stream", 7) == 4
    assert producer.acknowledged == [b"a0", b"a1", b"a2", b"a3"]  # once each, after three refusals
    waiting = [r.getMessage() for r in caplog.records if "waiting for the alerts topic" in r.getMessage()]
    assert len(waiting) == 3 and "4 alert(s) of batch 7 not acknowledged" in waiting[0]


class FatallyRefusingProducer(RefusingProducer):
    """Once a record is refused for good (too large), fails every later send, as kafka-python's
    idempotent producer does once its transaction manager holds a fatal error."""

    def send(self, topic: str, key: bytes, value: bytes, headers: list) -> Delivery:
        return Delivery(MessageSizeTooLargeError("fatal error"))


def test_a_final_refusal_replaces_the_producer_and_the_alerts_go_out_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("surveillance.sinks.kafka_alerts.time.sleep", lambda s: None)
    made = [FatallyRefusingProducer(0), FatallyRefusingProducer(0), RefusingProducer(1)]
    factory = iter(made)
    publisher = AlertPublisher(KafkaSettings(), timeout_s=600, producer_factory=lambda: next(factory))
    assert publisher.send(_records(3), "stream", 5) == 3
    # Two final refusals replaced two dead producers; the third refused once (retriable: kept) then sent.
    assert publisher.producers_replaced == 2 and publisher.producer is made[2]
    assert made[2].acknowledged == [b"a0", b"a1", b"a2"]


def test_alerts_refused_past_the_timeout_fail_the_batch_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(n) for n in range(0, 10_000, 100))
    monkeypatch.setattr("surveillance.sinks.kafka_alerts.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("surveillance.sinks.kafka_alerts.time.sleep", lambda s: None)
    publisher: Any = AlertPublisher(
        KafkaSettings(), timeout_s=300, producer_factory=lambda: RefusingProducer(10**6)
    )
    with pytest.raises(RuntimeError, match=r"refused 2 alert\(s\) of batch 3 for \d+ s"):
        publisher.send(_records(2), "stream", 3)


# The text str() gives of a Py4JJavaError raised while Spark's stop interrupts a Delta commit (abridged).
_INTERRUPTED_SAVE = "\n".join(
    [
        "An error occurred while calling o812.save.",
        ": org.apache.spark.SparkException: Job aborted.",
        *[f"\tat org.apache.spark.sql.delta.Frame{n}.run(Frame{n}.scala:{n})" for n in range(400)],
        "Caused by: java.lang.InterruptedException",
        "\tat java.base/java.util.concurrent.locks.AbstractQueuedSynchronizer.acquire(AQS.java:1)",
        "\t... 120 more",
    ]
)


class _JavaError(Exception):
    """Stands in for py4j's Py4JJavaError: same module path and text shape, no JVM needed."""


_JavaError.__module__, _JavaError.__qualname__ = "py4j.protocol", "Py4JJavaError"


def test_a_failed_batch_reaches_spark_as_its_exception_lines_only() -> None:
    from surveillance.pipeline.batch_errors import exception_lines, is_interruption, summary

    assert exception_lines(_INTERRUPTED_SAVE) == [
        "An error occurred while calling o812.save.",
        ": org.apache.spark.SparkException: Job aborted.",
        "Caused by: java.lang.InterruptedException",
    ]
    short = summary(_JavaError(_INTERRUPTED_SAVE))
    # What Spark's classifier looks for, in a few hundred characters instead of tens of thousands.
    assert short.startswith("py4j.protocol.Py4JJavaError: An error occurred while calling o812.save.")
    assert is_interruption(short) and len(short) < 300
    assert summary(ValueError("bad price\nsecond line")) == "ValueError: bad price"
    assert not is_interruption(summary(RuntimeError("waiting for the alerts topic for 600 s")))
    long_line = exception_lines("x" * 5000)[0]
    assert len(long_line) == 400 and long_line.endswith("…")


def test_a_failing_batch_is_logged_in_full_once_and_an_interrupted_one_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from surveillance.pipeline.batch_errors import BatchFailed, reporting_batch_errors

    def interrupted(rows: Any, batch_id: int) -> None:
        raise _JavaError(_INTERRUPTED_SAVE)

    def broken(rows: Any, batch_id: int) -> None:
        raise OSError("Permission denied: /lake/silver/_delta_log/00000000000000000007.json")

    caplog.set_level(logging.DEBUG, logger="surveillance.pipeline.batch_errors")
    with pytest.raises(BatchFailed) as stopped:
        reporting_batch_errors("quotes_to_lakehouse", interrupted)(None, 7)
    assert stopped.value.__cause__ is None and stopped.value.__suppress_context__
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]

    caplog.clear()
    with pytest.raises(BatchFailed, match="OSError: Permission denied: /lake/silver"):
        reporting_batch_errors("quotes_to_lakehouse", broken)(None, 8)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "batch 8 failed" in record.getMessage()
    assert record.exc_info and isinstance(record.exc_info[1], OSError)  # the whole traceback, once

    # py4j's own log of the callback's exception is dropped: it would repeat it as a second traceback.
    py4j_log = logging.getLogger("py4j.clientserver")
    try:
        raise BatchFailed("x")
    except BatchFailed:
        dropped = py4j_log.makeRecord("py4j.clientserver", logging.ERROR, "f", 1, "m", (), sys.exc_info())
    assert not py4j_log.filter(dropped)


def test_a_query_process_killed_by_a_signal_is_reported_as_a_shell_reports_it() -> None:
    from surveillance.pipeline.runner import exit_code

    assert (exit_code(-15), exit_code(-9), exit_code(0), exit_code(2)) == (143, 137, 0, 2)
