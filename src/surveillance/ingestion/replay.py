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
from kafka.errors import KafkaTimeoutError
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
        self._closed = False

    def ok(self, _metadata: Any = None) -> None:
        with self._lock:
            if not self._closed:
                self.sent += 1

    def fail(self, error: BaseException | str) -> None:
        with self._lock:
            if not self._closed:
                self.failed += 1
                if self.first_error is None:
                    self.first_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"

    def note(self, error: str) -> None:
        """Remember an error that is not about one record (kept only if it is the first)."""
        with self._lock:
            self.first_error = self.first_error or error

    def close(self) -> None:
        """Count anything still unacknowledged as failed and ignore callbacks from now on."""
        with self._lock:
            pending = self.attempted - self.sent - self.failed
            if pending > 0:
                self.failed += pending
                if self.first_error is None:
                    self.first_error = f"{pending} record(s) not acknowledged when the producer was flushed"
            self._closed = True


def _records(handle: IO[bytes], kind: str) -> Iterator[tuple[bytes | None, bytes | None]]:
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


def replay_file(
    path: Path,
    kafka: KafkaSettings,
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    *,
    producer: Any | None = None,
) -> ReplayResult:
    """Send every line (JSONL) or row (CSV) of ``path`` to ``topic`` (default: the quotes topic)."""
    path = Path(path)
    kind = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file to replay: {path}")
    limiter = RateLimiter(rate)
    topic = topic or kafka.topics.quotes
    own_producer = producer is None
    if own_producer:
        producer = KafkaProducer(**kafka.client_options(), acks="all", linger_ms=5)
    tally = _Tally()
    skipped = 0
    stopped_early = False
    started = time.monotonic()
    try:
        with path.open("rb") as handle, _progress_bar(progress) as bar:
            task = bar.add_task(path.name, total=path.stat().st_size, sent=0, failed=0)
            for count, (value, key) in enumerate(_records(handle, kind), start=1):
                if value is None:
                    skipped += 1
                    continue
                limiter.wait()
                tally.attempted += 1
                try:
                    future = producer.send(topic, value=value, key=key)
                except KafkaTimeoutError as exc:
                    # No metadata within max_block_ms: the broker is unreachable and every further send
                    # would block just as long, so stop here instead of hanging for the rest of the file.
                    tally.fail(exc)
                    stopped_early = True
                    break
                except Exception as exc:  # e.g. a record too large: count it and carry on
                    tally.fail(exc)
                    continue
                future.add_callback(tally.ok)
                future.add_errback(tally.fail)
                if count % _PROGRESS_EVERY == 0:
                    bar.update(task, completed=handle.tell(), sent=tally.sent, failed=tally.failed)
            try:
                producer.flush()
            except KafkaTimeoutError as exc:
                tally.note(f"flush timed out: {exc}")  # close() counts what is still unacknowledged
            tally.close()
            bar.update(task, completed=path.stat().st_size, sent=tally.sent, failed=tally.failed)
    finally:
        tally.close()
        if own_producer:
            producer.close()
    return ReplayResult(
        sent=tally.sent,
        failed=tally.failed,
        skipped_blank=skipped,
        elapsed_s=round(time.monotonic() - started, 3),
        first_error=tally.first_error,
        stopped_early=stopped_early,
    )
