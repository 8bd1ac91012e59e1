"""The ``alerts`` Delta table behind the alerts topic: appended off the detection query's critical path.

A detection micro-batch ends once its alerts are on the topic (acks=all): the topic is the durable record.
:class:`AlertTableAppender` appends them to the table from a background thread, several batches per commit
when they queue up, each row keyed by the detection query's ``stream_id`` and ``batch_id``.

A crash can leave batches that Spark committed (so they are never replayed) but whose append never ran.
At start, :func:`recover_alert_rows` takes them back from the topic: every record carries its stream and
batch in headers, and the records of batches after the table's last one, up to the checkpoint's last
committed batch, are appended once (one row per ``alert_id``). A batch Spark did not commit is replayed by
the query itself and appended then. So the table is exactly once while the topic is at least once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from surveillance.config import KafkaSettings
from surveillance.lakehouse import ALERTS, write_table
from surveillance.sinks.kafka_alerts import BATCH_HEADER, JSON_OPTIONS, STREAM_HEADER

log = logging.getLogger(__name__)

_TOPIC_FIELDS = [name for name in ALERTS.schema.fieldNames() if name not in ("stream_id", "batch_id")]


@dataclass(frozen=True)
class TopicAlert:
    """One record of the alerts topic, as :func:`read_alert_records` returns it."""

    alert_id: str
    stream_id: str | None
    batch_id: int | None
    value: str


def recover_alert_rows(
    records: Iterable[TopicAlert], stream_id: str, after_batch: int, up_to_batch: int
) -> list[TopicAlert]:
    """The topic's alerts of ``stream_id`` in batches ``after_batch < batch <= up_to_batch``, once per
    ``alert_id`` (a re-sent batch repeats its records), in topic order."""
    seen: set[str] = set()
    kept = []
    for record in records:
        if record.stream_id != stream_id or record.batch_id is None:
            continue
        if not after_batch < record.batch_id <= up_to_batch or record.alert_id in seen:
            continue
        seen.add(record.alert_id)
        kept.append(record)
    return kept


def read_alert_records(kafka: KafkaSettings, since_ms: int, timeout_s: float = 60) -> list[TopicAlert]:
    """Every alerts-topic record with a Kafka timestamp at or after ``since_ms``, to the topic's end."""
    consumer = KafkaConsumer(**kafka.client_options(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [
            TopicPartition(kafka.topics.alerts, p)
            for p in consumer.partitions_for_topic(kafka.topics.alerts) or ()
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        starts = consumer.offsets_for_times({tp: since_ms for tp in partitions})
        pending = {}
        for tp in partitions:
            start = starts.get(tp)
            if start is not None and start.offset < end[tp]:
                consumer.seek(tp, start.offset)
                pending[tp] = end[tp]
        records: list[TopicAlert] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the alerts topic to its end in {timeout_s:.0f} s")
            for tp, messages in consumer.poll(timeout_ms=1000).items():
                for message in messages:
                    if message.offset < pending.get(tp, -1):
                        records.append(_topic_alert(message.headers or [], message.value))
                if consumer.position(tp) >= pending.get(tp, 0):
                    pending.pop(tp, None)
        return records
    finally:
        consumer.close()


def _topic_alert(headers: Sequence[tuple[str, bytes]], value: bytes) -> TopicAlert:
    named = {key: raw.decode() for key, raw in headers if raw is not None}
    batch = named.get(BATCH_HEADER)
    return TopicAlert(
        named.get("alert_id", ""), named.get(STREAM_HEADER), int(batch) if batch else None, value.decode()
    )


def rows_from_topic(spark: SparkSession, records: Sequence[TopicAlert]) -> DataFrame:
    """Recovered topic records as ``alerts`` rows (their JSON parsed back, stream and batch from headers)."""
    schema = ", ".join(
        f"`{f.name}` {f.dataType.simpleString()}" for f in ALERTS.schema.fields if f.name in _TOPIC_FIELDS
    )
    frame = spark.createDataFrame(
        [(r.value, r.stream_id, r.batch_id) for r in records], "value string, stream_id string, batch_id long"
    )
    parsed = frame.select(F.from_json("value", schema, JSON_OPTIONS).alias("alert"), "stream_id", "batch_id")
    return parsed.select("alert.*", "stream_id", "batch_id").select(*ALERTS.schema.fieldNames())


class AlertTableAppender:
    """Appends detection batches' alert rows to the ``alerts`` table from one background thread.

    ``submit`` returns at once; batches that queue up while an append runs go in the next one, together.
    ``hook(moment, batch_ids)`` runs just before (``"before"``) and after (``"after"``) each append: the
    crash tests' hook. An append that fails is logged and retried with the next ones, and ``close`` waits
    for everything queued.
    """

    def __init__(
        self,
        spark: SparkSession,
        location: str,
        hook: Callable[[str, list[int]], None] | None = None,
    ) -> None:
        self.spark = spark
        self.location = location
        self._hook = hook
        self._queue: queue.Queue[tuple[int, list[tuple]] | None] = queue.Queue()
        self._failed: list[tuple[int, list[tuple]]] = []
        self.appended_seconds: list[float] = []
        self._thread = threading.Thread(target=self._run, name="alerts-table", daemon=True)
        self._thread.start()

    def submit(self, batch_id: int, rows: list[tuple]) -> None:
        """Queue one batch's rows (tuples in the table's column order)."""
        self._queue.put((batch_id, rows))

    def close(self) -> None:
        """Append what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()
        if self._failed:
            log.error("alerts of batches %s could not be appended", [b for b, _ in self._failed])

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batches = [*self._failed]
            self._failed = []
            while item is not None:
                batches.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            if batches:
                self._append(batches)

    def _append(self, batches: list[tuple[int, list[tuple]]]) -> None:
        ids = [batch_id for batch_id, _ in batches]
        if self._hook is not None:
            self._hook("before", ids)
        started = time.perf_counter()
        try:
            rows = [row for _, batch_rows in batches for row in batch_rows]
            frame = self.spark.createDataFrame(rows, ALERTS.schema)
            write_table(frame.write.format("delta").mode("append"), self.location)
            self.appended_seconds.append(time.perf_counter() - started)
        except Exception as exc:  # kept and retried with the next batches; the topic has them meanwhile
            log.warning("alerts of batches %s not appended yet: %s", ids, exc)
            self._failed = batches
            time.sleep(1)
            return
        if self._hook is not None:
            self._hook("after", ids)
