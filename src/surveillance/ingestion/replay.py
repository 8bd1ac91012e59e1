"""Replay a JSONL or CSV file of quotes into Kafka, optionally throttled, counting every outcome.

JSONL lines go out byte for byte (only the line terminator is removed): a malformed line must reach the
topic unchanged so that the pipeline's quarantine, not the replayer, deals with it. CSV rows are turned
into contract JSON. The file is read as a stream, so its size does not matter.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from surveillance.config import KafkaSettings
from surveillance.kafka.admin import access_problem

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)
FLOAT_COLUMNS = frozenset({"price", "bid", "ask"})
INT_COLUMNS = frozenset({"volume"})
_PROGRESS_EVERY = 500  # records between progress-bar refreshes


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: acknowledged and failed sends, skipped blank lines, time taken, the first error."""

    sent: int
    failed: int
    skipped_blank: int
    elapsed_s: float
    first_error: str | None = None
    stopped_early: bool = False  # the broker could not be reached: the rest of the file was not attempted
    # Record numbers (1-based, blank lines counted: a JSONL file's line numbers) the broker never
    # acknowledged, and the first one not attempted after a stop (None: every record was attempted).
    failed_records: tuple[int, ...] = ()
    not_attempted_from: int | None = None
    unsent_file: Path | None = None  # every record not sent, as sent, to replay as it is
    stopped_on_request: bool = False  # a stop (SIGTERM/SIGINT) ended the sending: not an error

    @property
    def attempted(self) -> int:
        """Records handed to the producer (always ``sent + failed``)."""
        return self.sent + self.failed

    @property
    def ok(self) -> bool:
        """True when every attempted record was acknowledged and the whole file was read."""
        return self.failed == 0 and not self.stopped_early


def file_format(path: Path) -> str:
    """'jsonl' or 'csv' from the file's extension; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    known = ", ".join((*JSONL_SUFFIXES, *CSV_SUFFIXES))
    raise ValueError(f"cannot replay {path}: unknown extension {suffix or '(none)'!r} (use one of {known})")


def iter_lines(stream: Iterable[bytes]) -> Iterator[bytes]:
    """Each line of a binary stream minus its terminator (``\\n`` or ``\\r\\n``); all other bytes are kept."""
    for raw in stream:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        yield line[:-1] if line.endswith(b"\r") and raw.endswith(b"\n") else line


def is_blank(line: bytes | str) -> bool:
    """True for an empty or whitespace-only line (skipped, never sent)."""
    return not line.strip()


def key_for_line(line: bytes) -> bytes | None:
    """The UTF-8 ``symbol`` of a line that is a JSON object with a string symbol, else None (no key)."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    symbol = doc.get("symbol") if isinstance(doc, dict) else None
    return symbol.encode("utf-8") if isinstance(symbol, str) else None


def iter_csv_rows(stream: Iterable[bytes], encoding: str = "utf-8-sig") -> Iterator[dict[str, str]]:
    """Rows of a binary CSV stream as ``{header: cell}`` dicts (cells beyond the header are dropped)."""
    reader = csv.reader(codecs.iterdecode(stream, encoding))
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip() for name in header]
    for cells in reader:
        yield dict(zip(header, cells, strict=False))


def _typed(name: str, cell: str) -> Any:
    # A cell that does not parse stays text, so the pipeline (not the replayer) rejects the quote.
    if name in FLOAT_COLUMNS:
        try:
            number = float(cell)
        except ValueError:
            return cell
        return number if math.isfinite(number) else cell
    if name in INT_COLUMNS:
        try:
            return int(cell)
        except ValueError:
            pass
        try:
            number = float(cell)
        except ValueError:
            return cell
        if not math.isfinite(number):
            return cell
        return int(number) if number.is_integer() else number
    return cell


def csv_row_to_json(row: Mapping[str, str | None]) -> str:
    """A CSV row as compact contract JSON: price/bid/ask as floats, volume as int, empty cells omitted."""
    doc = {name: _typed(name, cell.strip()) for name, cell in row.items() if name and cell and cell.strip()}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def csv_row_key(row: Mapping[str, str | None]) -> bytes | None:
    """The row's symbol as the message key (None when the cell is empty)."""
    symbol = (row.get("symbol") or "").strip()
    return symbol.encode("utf-8") if symbol else None


class RateLimiter:
    """Paces calls to ``rate`` per second on a fixed schedule (no drift); ``None`` means no limit."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of events per second, got {rate!r}")
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._start: float | None = None
        self._count = 0

    def wait(self) -> None:
        """Block until the next event is due."""
        if self.rate is None:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._count / self.rate
        if due > now:
            self._sleep(due - now)
        self._count += 1


class _Tally:
    """Thread-safe counts: producer callbacks run on the producer's I/O thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempted = self.sent = self.failed = 0
        self.first_error: str | None = None
        self.failed_records: dict[int, bytes] = {}  # record number -> the value not sent
        self.pending: dict[int, bytes] = {}  # sent, not yet acknowledged
        self.last_ack = time.monotonic()
        self._closed = False

    def sending(self, record: int, value: bytes) -> None:
        with self._lock:
            self.attempted += 1
            self.pending[record] = value

    def ok(self, record: int, _metadata: Any = None) -> None:
        with self._lock:
            self.last_ack = time.monotonic()
            if not self._closed and self.pending.pop(record, None) is not None:
                self.sent += 1

    def fail(self, record: int, error: BaseException | str) -> None:
        with self._lock:
            value = self.pending.pop(record, None)
            if not self._closed and value is not None:
                self.failed += 1
                self.failed_records[record] = value
                if self.first_error is None:
                    self.first_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"

    def note(self, error: str) -> None:
        """Remember an error that is not about one record (kept only if it is the first)."""
        with self._lock:
            self.first_error = self.first_error or error

    def close(self) -> None:
        """Count anything still unacknowledged as failed and ignore callbacks from now on."""
        with self._lock:
            if self.pending and not self._closed:
                self.failed += len(self.pending)
                self.failed_records.update(self.pending)
                if self.first_error is None:
                    self.first_error = (
                        f"{len(self.pending)} record(s) not acknowledged when the producer was flushed"
                    )
                self.pending.clear()
            self._closed = True


class _StallWatch:
    """Says, every ``every_s``, that records wait for the broker while none has been acknowledged."""

    def __init__(self, tally: _Tally, retry_for_s: float, say: Callable[[str], None], every_s: float = 5.0):
        self.tally, self.retry_for_s, self.say, self.every_s = tally, retry_for_s, say, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-stall-watch", daemon=True)

    def __enter__(self) -> _StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            waiting = len(self.tally.pending)
            silent = time.monotonic() - self.tally.last_ack
            if waiting and silent >= self.every_s:
                self.say(
                    f"waiting for the broker: {waiting:,} record(s) unacknowledged, none for {silent:.0f} s "
                    f"(each is retried for up to {self.retry_for_s:.0f} s)"
                )


def file_records(handle: IO[bytes], kind: str) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(value, key) per line or row; value None for a blank line or row (skipped and counted)."""
    if kind == "jsonl":
        for line in iter_lines(handle):
            yield (None, None) if is_blank(line) else (line, key_for_line(line))
    else:
        for row in iter_csv_rows(handle):
            if not any(cell and cell.strip() for cell in row.values()):
                yield None, None
            else:
                yield csv_row_to_json(row).encode("utf-8"), csv_row_key(row)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]replay[/bold] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[sent]} sent · {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays free for the command's own output
        disable=not enabled,
    )


def connected_producer(
    kafka: KafkaSettings, retry_for_s: float, say: Callable[[str], None]
) -> tuple[Any | None, str | None]:
    """A producer whose records are retried for ``retry_for_s``; a broker not reachable yet is waited
    for as long (a replay started during an outage begins when it ends). (None, why) if it never was."""
    window_ms = int(retry_for_s * 1000)
    deadline = time.monotonic() + retry_for_s
    while True:
        try:
            producer = KafkaProducer(
                **kafka.client_options(),
                acks="all",
                enable_idempotence=True,  # a retried send is written once
                linger_ms=5,
                delivery_timeout_ms=window_ms,
                max_block_ms=window_ms,  # a send waits this long for metadata (an unreachable broker)
                request_timeout_ms=min(30_000, window_ms),
                bootstrap_timeout_ms=min(5_000, window_ms),
            )
            return producer, None
        except (KafkaConnectionError, KafkaTimeoutError) as exc:
            problem = access_problem(kafka, exc)
            if problem.reachable:  # a broker answers but refuses us (TLS trust, SASL login): no waiting
                return None, str(problem)
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"no broker reachable at {kafka.bootstrap_servers} for {retry_for_s:.0f} s: {exc}"
                return None, why
            say(f"waiting for the broker at {kafka.bootstrap_servers} ({exc}); up to {left:.0f} s more")
            time.sleep(min(2.0, left))


def replay_file(
    path: Path,
    kafka: KafkaSettings,
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    *,
    producer: Any | None = None,
    retry_for_s: float = 120.0,
    unsent_out: Path | None = None,
    say: Callable[[str], None] | None = None,
    stall_every_s: float = 5.0,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Send every line (JSONL) or row (CSV) of ``path`` to ``topic`` (default: the quotes topic).

    Through a broker outage each record is retried for up to ``retry_for_s`` (the idempotent producer
    sends it once however often it retries), and ``say`` hears every ``stall_every_s`` what waits. Records
    that still failed, and after a stop those never attempted, are listed in the result and written as
    they were sent to ``unsent_out``. Once ``stop`` is set, no further record is sent: the ones in flight
    are acknowledged (or reported failed), the rest reported not attempted.
    """
    path = Path(path)
    kind = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file to replay: {path}")
    limiter = RateLimiter(rate)
    topic = topic or kafka.topics.quotes
    own_producer = producer is None
    console = Console(stderr=True)
    started = time.monotonic()
    tally = _Tally()
    skipped = 0
    not_attempted: list[bytes] = []
    not_attempted_from: int | None = None
    stopped_on_request = False
    if own_producer:
        producer, unreachable = connected_producer(kafka, retry_for_s, say or console.print)
        if producer is None:  # nothing is attempted: the whole file is reported (and written) unsent
            tally.note(unreachable or "no broker")
            not_attempted_from = 1
    try:
        with (
            path.open("rb") as handle,
            _progress_bar(progress) as bar,
            _StallWatch(tally, retry_for_s, say or console.print, stall_every_s),
        ):
            task = bar.add_task(path.name, total=path.stat().st_size, sent=0, failed=0)
            for count, (value, key) in enumerate(file_records(handle, kind), start=1):
                if value is None:
                    skipped += 1
                    continue
                if not_attempted_from is None and stop is not None and stop.is_set():
                    not_attempted_from, stopped_on_request = count, True
                if not_attempted_from is not None:
                    not_attempted.append(value)
                    continue
                limiter.wait()
                tally.sending(count, value)
                try:
                    future = producer.send(topic, value=value, key=key)
                except KafkaTimeoutError as exc:
                    # No metadata within the retry window: the broker stayed unreachable and every
                    # further send would block just as long; the rest of the file is not attempted.
                    tally.fail(count, exc)
                    not_attempted_from = count + 1
                    continue
                except Exception as exc:  # e.g. a record too large: count it and carry on
                    tally.fail(count, exc)
                    continue
                future.add_callback(tally.ok, count)
                future.add_errback(lambda error, n=count: tally.fail(n, error))
                if count % _PROGRESS_EVERY == 0:
                    bar.update(task, completed=handle.tell(), sent=tally.sent, failed=tally.failed)
            try:
                if producer is not None:
                    producer.flush()
            except KafkaTimeoutError as exc:
                tally.note(f"flush timed out: {exc}")  # close() counts what is still unacknowledged
            tally.close()
            bar.update(task, completed=path.stat().st_size, sent=tally.sent, failed=tally.failed)
    finally:
        tally.close()
        if own_producer and producer is not None:
            producer.close()
    failed = dict(sorted(tally.failed_records.items()))
    written = None
    if unsent_out is not None and (failed or not_attempted):
        written = Path(unsent_out)
        written.write_bytes(b"".join(value + b"\n" for value in [*failed.values(), *not_attempted]))
    return ReplayResult(
        sent=tally.sent,
        failed=tally.failed,
        skipped_blank=skipped,
        elapsed_s=round(time.monotonic() - started, 3),
        first_error=tally.first_error,
        stopped_early=not_attempted_from is not None and not stopped_on_request,
        failed_records=tuple(failed),
        not_attempted_from=not_attempted_from if not_attempted else None,
        unsent_file=written,
        stopped_on_request=stopped_on_request and bool(not_attempted),
    )


def record_ranges(numbers: Iterable[int]) -> str:
    """``1-3, 7, 9-10`` for 1, 2, 3, 7, 9, 10: record numbers, said briefly."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
