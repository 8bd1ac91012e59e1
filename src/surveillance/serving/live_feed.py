"""The live alert feed: the alerts Kafka topic, tailed for one client, as Server-Sent Events.

Each event's id is the feed's position after it: the next offset of every partition (``0:1284,1:77``).
A client that reconnects sends it back as ``Last-Event-ID`` and the feed resumes there, so nothing still
in the topic is missed. The publisher is at least once (a batch it is unsure of is sent again, same
alert_id), so the feed drops alert_ids it has already delivered, and on a resume first reads the
``lookback`` records before the position to learn which ones the client already has.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from surveillance.config import KafkaSettings

log = logging.getLogger(__name__)
_POSITION = re.compile(r"^\d{1,6}:\d{1,19}(,\d{1,6}:\d{1,19})*$")
SEEN_CAPACITY = 50_000
MAX_OFFSET = (1 << 63) - 1  # Kafka offsets are signed 64-bit


class NoAlertsTopic(RuntimeError):
    """The alerts topic does not exist (yet): nothing has been published."""


class BadPosition(ValueError):
    """A Last-Event-ID that is not a position this feed wrote."""


def parse_position(text: str) -> dict[int, int]:
    """``0:12,1:7`` → {0: 12, 1: 7}."""
    if not _POSITION.match(text.strip()):
        raise BadPosition("Last-Event-ID must look like '0:1284' or '0:1284,1:77' (partition:next offset)")
    position = {int(p): int(o) for p, o in (part.split(":") for part in text.strip().split(","))}
    if any(offset > MAX_OFFSET for offset in position.values()):
        raise BadPosition(f"Last-Event-ID offsets must not exceed {MAX_OFFSET}")
    return position


def format_position(position: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(position.items()))


@dataclass(frozen=True)
class FeedEvent:
    id: str
    alert: dict[str, Any]


class AlertTail:
    """One client's tail of the alerts topic (blocking; the API runs it in a worker thread).

    A Kafka consumer is not thread-safe: polling and closing, which the API may run on different
    threads, take turns.
    """

    def __init__(self, kafka: KafkaSettings, resume: dict[int, int] | None, lookback: int) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._lock = threading.Lock()
        self._closed = False
        self.topic = kafka.topics.alerts
        self.consumer = KafkaConsumer(
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            consumer_timeout_ms=1000,
            **kafka.client_options(),
        )
        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
        if not partitions:
            self.consumer.close()
            raise NoAlertsTopic(f"the alerts topic {self.topic!r} does not exist (yet)")
        self.partitions = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(self.partitions)
        self.seen: OrderedDict[str, None] = OrderedDict()
        ends = self.consumer.end_offsets(self.partitions)
        begins = self.consumer.beginning_offsets(self.partitions)
        if resume is None:
            self.position = {tp.partition: ends[tp] for tp in self.partitions}
        else:
            # A partition the client never saw starts at its beginning: nothing in it is missed.
            self.position = {tp.partition: resume.get(tp.partition, begins[tp]) for tp in self.partitions}
            self._learn_delivered(begins, lookback)
        for tp in self.partitions:
            self.consumer.seek(tp, max(begins[tp], self.position[tp.partition]))

    def _learn_delivered(self, begins: dict[Any, int], lookback: int) -> None:
        if lookback <= 0:
            return
        targets = {}
        for tp in self.partitions:
            stop = self.position[tp.partition]
            start = max(begins[tp], stop - lookback)
            if start < stop:
                self.consumer.seek(tp, start)
                targets[tp] = stop
        while targets:
            polled = self.consumer.poll(timeout_ms=1000, max_records=5000)
            if not polled:
                break
            for tp, records in polled.items():
                for record in records:
                    if tp in targets and record.offset < targets[tp]:
                        self._mark_seen(_alert_id(record))
                if tp in targets and (not records or records[-1].offset + 1 >= targets[tp]):
                    targets.pop(tp)
                    self.consumer.pause(tp)
        self.consumer.resume(*self.partitions)

    def _mark_seen(self, alert_id: str | None) -> bool:
        """Whether the alert is new to this client (remembering it)."""
        if alert_id is None:
            return True
        if alert_id in self.seen:
            self.seen.move_to_end(alert_id)
            return False
        self.seen[alert_id] = None
        while len(self.seen) > SEEN_CAPACITY:
            self.seen.popitem(last=False)
        return True

    def current_position(self) -> str:
        """Where the feed stands: what a client that reconnects now should send as Last-Event-ID."""
        return format_position(self.position)

    def poll(self, timeout_s: float) -> list[FeedEvent]:
        """The new alerts that arrived within ``timeout_s`` (possibly none), in topic order per partition."""
        with self._lock:
            if self._closed:
                return []
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=500)
        events: list[FeedEvent] = []
        for tp, records in sorted(polled.items(), key=lambda item: item[0].partition):
            for record in records:
                self.position[tp.partition] = record.offset + 1
                try:
                    alert = json.loads(record.value)
                except (TypeError, ValueError):
                    continue  # not an alert this project wrote: the position still moves past it
                if not isinstance(alert, dict) or not self._mark_seen(alert.get("alert_id")):
                    continue
                events.append(FeedEvent(format_position(self.position), alert))
        return events

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.consumer.close()


def _alert_id(record: Any) -> str | None:
    for name, value in record.headers or ():
        if name == "alert_id":
            return value.decode()
    try:
        return json.loads(record.value).get("alert_id")
    except (TypeError, ValueError, AttributeError):
        return None


def sse_frames(events: list[FeedEvent], public: Any) -> Iterator[str]:
    """Server-Sent Event frames for events, ``public`` turning a topic alert into the API's form.

    A record the API cannot show (a producer of another version) is logged and passed over with an
    id-only frame, so the client's position still moves past it."""
    for event in events:
        try:
            data = json.dumps(public(event.alert), default=str)
        except Exception:  # one odd record must not end the client's feed
            log.exception("live feed: alert %r cannot be shown", event.alert.get("alert_id"))
            yield position_frame(event.id)
            continue
        yield f"id: {event.id}\nevent: alert\ndata: {data}\n\n"


def position_frame(position: str, comment: str = "") -> str:
    """A frame with no event: it moves the client's Last-Event-ID (and, as a comment, keeps the line busy)."""
    return f"id: {position}\n" + (f": {comment}\n" if comment else "") + "\n"
