"""The replayer's pure helpers, and replay_file against a fake producer (no broker)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from kafka.future import Future

from surveillance.config import KafkaSettings
from surveillance.ingestion.generator import generate_quotes, write_csv, write_jsonl
from surveillance.ingestion.replay import (
    RateLimiter,
    ReplayResult,
    csv_row_key,
    csv_row_to_json,
    file_format,
    is_blank,
    iter_csv_rows,
    iter_lines,
    key_for_line,
    record_ranges,
    replay_file,
)

# --- line iteration -------------------------------------------------------------------------------


def test_iter_lines_keeps_every_byte_but_the_terminator() -> None:
    raw = (
        b'{"a": 1}  \n'  # trailing spaces are content
        b"  \t\n"  # whitespace-only
        b"\n"  # empty
        b'{"b":2}\r\n'  # CRLF terminator
        b"bro\rken\xff\xfe{\n"  # a lone CR and invalid UTF-8 stay
        b"[1,2]"  # no final newline
    )
    assert list(iter_lines(io.BytesIO(raw))) == [
        b'{"a": 1}  ',
        b"  \t",
        b"",
        b'{"b":2}',
        b"bro\rken\xff\xfe{",
        b"[1,2]",
    ]


def test_iter_lines_of_an_empty_stream() -> None:
    assert list(iter_lines(io.BytesIO(b""))) == []


@pytest.mark.parametrize(("line", "blank"), [(b"", True), (b" \t\r", True), (b"{}", False), (" x ", False)])
def test_is_blank(line: bytes | str, blank: bool) -> None:
    assert is_blank(line) is blank


# --- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b'{"symbol":"ACME","price":1}', b"ACME"),
        (b'  {"symbol": "\\u00c9TAT"}  ', "ÉTAT".encode()),
        ('{"symbol":"ÜBER"}'.encode(), "ÜBER".encode()),
        (b'{"symbol":"ACME","price":NaN}', b"ACME"),  # lenient for the key: the pipeline judges the value
        (b'[{"symbol":"ACME"}]', None),
        (b'{"symbol":42}', None),
        (b'{"price":1}', None),
        (b'{"symbol":"ACME",', None),
        (b"\xff\xfe\x00", None),
        (b"", None),
    ],
)
def test_key_for_line(line: bytes, key: bytes | None) -> None:
    assert key_for_line(line) == key


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_row_to_json_types_numbers_and_omits_empty_cells() -> None:
    row = {
        "event_id": "ACME-1",
        "symbol": "ACME",
        "event_time": "2026-11-20T14:30:00.123Z",
        "price": "101.25",
        "volume": "300",
        "bid": "",
        "ask": " 101.3 ",
        "venue": "XNAS",
    }
    assert csv_row_to_json(row) == (
        '{"event_id":"ACME-1","symbol":"ACME","event_time":"2026-11-20T14:30:00.123Z",'
        '"price":101.25,"volume":300,"ask":101.3,"venue":"XNAS"}'
    )


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({"price": "100"}, {"price": 100.0}),
        ({"price": "abc"}, {"price": "abc"}),  # kept as text: silver quarantines it as price_not_number
        ({"price": "nan"}, {"price": "nan"}),  # never a NaN literal (not JSON)
        ({"volume": "12.0"}, {"volume": 12}),
        ({"volume": "12.5"}, {"volume": 12.5}),
        ({"volume": "-5"}, {"volume": -5}),
        ({"volume": "many"}, {"volume": "many"}),
        ({"event_id": "007"}, {"event_id": "007"}),  # other columns stay strings
        ({"price": None}, {}),
    ],
)
def test_csv_cell_typing(cells: dict[str, str | None], expected: dict[str, Any]) -> None:
    text = csv_row_to_json(cells)
    assert json.loads(text) == expected
    assert "NaN" not in text
    if "price" in expected and isinstance(expected["price"], float):
        assert isinstance(json.loads(text)["price"], float)


def test_csv_row_key() -> None:
    assert csv_row_key({"symbol": " ACME "}) == b"ACME"
    assert csv_row_key({"symbol": ""}) is None
    assert csv_row_key({"price": "1"}) is None


def test_iter_csv_rows_handles_bom_quotes_short_and_long_rows() -> None:
    raw = '\ufeffevent_id,symbol,note\nA-1,ACME,"has, comma"\nA-2,BOLT\nA-3,CRUX,x,extra\n\n'.encode()
    rows = list(iter_csv_rows(io.BytesIO(raw)))
    assert rows == [
        {"event_id": "A-1", "symbol": "ACME", "note": "has, comma"},
        {"event_id": "A-2", "symbol": "BOLT"},
        {"event_id": "A-3", "symbol": "CRUX", "note": "x"},
        {},  # the blank line: replay counts it as skipped
    ]
    assert list(iter_csv_rows(io.BytesIO(b""))) == []


# --- file types and pacing ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.csv", "csv")])
def test_file_format(name: str, kind: str) -> None:
    assert file_format(Path(name)) == kind


@pytest.mark.parametrize("name", ["a.json", "a.txt", "a"])
def test_file_format_refuses_unknown_extensions(name: str) -> None:
    with pytest.raises(ValueError, match="unknown extension"):
        file_format(Path(name))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_paces_on_a_fixed_schedule() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        limiter.wait()
    assert clock.now == pytest.approx(102.0)  # 9 events at 4/s: the last is due 2 s after the first
    clock.now += 10  # a slow consumer: no sleeping to catch up, no burst beyond the schedule either
    limiter.wait()
    assert clock.now == pytest.approx(112.0)


def test_rate_limiter_without_rate_never_sleeps() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.wait()
    assert clock.sleeps == []


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf")])
def test_rate_limiter_rejects_bad_rates(rate: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate)


# --- replay_file with a fake producer -------------------------------------------------------------


class FakeProducer:
    """Records sends; resolves futures at once (or on flush) with success, or a chosen error."""

    def __init__(self, fail_every: int = 0, raise_on: set[int] | None = None, defer: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.fail_every, self.raise_on, self.defer = fail_every, raise_on or set(), defer
        self.pending: list[tuple[Future, int]] = []
        self.flushed = self.closed = False

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Future:
        n = len(self.sent) + 1
        if n in self.raise_on:
            self.sent.append((topic, value, key))
            raise MessageSizeTooLargeError("too big")
        self.sent.append((topic, value, key))
        future = Future()
        if self.defer:
            self.pending.append((future, n))
        else:
            self._resolve(future, n)
        return future

    def _resolve(self, future: Future, n: int) -> None:
        if self.fail_every and n % self.fail_every == 0:
            future.failure(NotLeaderForPartitionError("leader moved"))
        else:
            future.success(object())

    def flush(self, timeout: float | None = None) -> None:
        for future, n in self.pending:
            self._resolve(future, n)
        self.pending.clear()
        self.flushed = True

    def close(self) -> None:
        self.closed = True


def _replay(path: Path, producer: FakeProducer, **kwargs: Any) -> ReplayResult:
    return replay_file(path, KafkaSettings(), progress=False, producer=producer, **kwargs)


def test_replay_jsonl_sends_the_dirty_sample_byte_for_byte(tmp_path: Path) -> None:
    gen = generate_quotes(symbols=3, minutes=5, inject_anomalies=True, dirty=True)
    path = write_jsonl(gen, tmp_path / "q.jsonl")
    producer = FakeProducer()
    result = _replay(path, producer)
    assert result.sent == len(gen.raw_lines) and result.failed == 0 and result.ok
    assert [value for _, value, _ in producer.sent] == [line.encode("utf-8") for line in gen.raw_lines]
    assert {topic for topic, _, _ in producer.sent} == {"quotes"}
    for _, value, key in producer.sent:
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        symbol = doc.get("symbol") if isinstance(doc, dict) else None
        assert key == (symbol.encode() if isinstance(symbol, str) else None)
    assert producer.flushed and not producer.closed  # a producer passed in belongs to the caller


def test_replay_skips_blank_lines_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "q.ndjson"
    path.write_bytes(b'{"symbol":"A"}\n\n   \n{broken\r\n[1]')
    producer = FakeProducer()
    result = _replay(path, producer, topic="other")
    assert (result.sent, result.failed, result.skipped_blank) == (3, 0, 2)
    assert producer.sent == [
        ("other", b'{"symbol":"A"}', b"A"),
        ("other", b"{broken", None),
        ("other", b"[1]", None),
    ]


def test_replay_counts_failures_from_callbacks_and_from_send(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(f'{{"symbol":"S{n}"}}\n' for n in range(10)))
    result = _replay(path, FakeProducer(fail_every=4, raise_on={2}))
    assert result.attempted == 10 and result.sent + result.failed == 10
    assert result.failed == 3  # send #2 raised, #4 and #8 failed in the errback
    assert (result.first_error or "").startswith("MessageSizeTooLargeError")
    assert not result.ok


def test_replay_counts_acknowledgements_that_arrive_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"symbol":"A"}\n' * 7)
    result = _replay(path, FakeProducer(defer=True, fail_every=7))
    assert (result.sent, result.failed) == (6, 1)


def test_replay_stops_when_the_broker_cannot_be_reached(tmp_path: Path) -> None:
    class Unreachable(FakeProducer):
        def send(self, topic: str, value: bytes, key: bytes | None = None) -> Future:
            self.sent.append((topic, value, key))
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    path = tmp_path / "q.jsonl"
    path.write_text('{"symbol":"A"}\n' * 50)
    producer = Unreachable()
    result = _replay(path, producer)
    assert len(producer.sent) == 1 and result.stopped_early and not result.ok
    assert (result.sent, result.failed) == (0, 1) and "metadata" in (result.first_error or "")


def test_replay_csv_sends_contract_json_keyed_by_symbol(tmp_path: Path) -> None:
    gen = generate_quotes(symbols=2, minutes=2)
    path = write_csv(gen, tmp_path / "q.csv")
    with path.open("a") as handle:
        handle.write(",,,,,,\n")  # an all-empty row is skipped
    producer = FakeProducer()
    result = _replay(path, producer)
    assert (result.sent, result.skipped_blank) == (len(gen.quotes), 1)
    assert [value.decode() for _, value, _ in producer.sent] == gen.raw_lines
    assert [key for _, _, key in producer.sent] == [s.encode() for s in gen.quotes.symbol]


def test_replay_throttles_to_the_rate(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"symbol":"A"}\n' * 6)
    result = _replay(path, FakeProducer(), rate=50.0)
    assert result.sent == 6 and result.elapsed_s >= 0.09  # 5 gaps of 20 ms


def test_replay_refuses_unknown_extensions_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("{}\n")
    with pytest.raises(ValueError, match="unknown extension"):
        _replay(tmp_path / "q.txt", FakeProducer())
    with pytest.raises(FileNotFoundError):
        _replay(tmp_path / "missing.jsonl", FakeProducer())
    with pytest.raises(ValueError, match="rate"):
        (tmp_path / "q.jsonl").write_text("{}\n")
        _replay(tmp_path / "q.jsonl", FakeProducer(), rate=0)


def test_replay_with_progress_bar_runs(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"symbol":"A"}\n' * 1200)
    result = replay_file(path, KafkaSettings(), progress=True, producer=FakeProducer())
    assert result.sent == 1200


def test_replay_lists_and_writes_every_record_not_sent(tmp_path: Path) -> None:
    # Record 2 raises, 4 and 8 fail in the errback, then the broker is gone for good at record 9.
    class GoneAtNine(FakeProducer):
        def send(self, topic: str, value: bytes, key: bytes | None = None) -> Future:
            if len(self.sent) == 8:
                self.sent.append((topic, value, key))
                raise KafkaTimeoutError("Failed to update metadata after 120.0 secs.")
            return super().send(topic, value, key)

    path = tmp_path / "q.jsonl"
    lines = [f'{{"symbol":"S{n}"}}' for n in range(1, 13)]
    path.write_text("".join(f"{line}\n" for line in lines))
    result = _replay(path, GoneAtNine(fail_every=4, raise_on={2}), unsent_out=tmp_path / "unsent.jsonl")
    assert result.failed_records == (2, 4, 8, 9) and result.not_attempted_from == 10
    assert (result.sent, result.failed, result.stopped_early) == (5, 4, True)
    assert result.unsent_file is not None
    unsent = result.unsent_file.read_text().splitlines()
    assert unsent == [lines[n - 1] for n in (2, 4, 8, 9, 10, 11, 12)]
    assert record_ranges(result.failed_records) == "2, 4, 8-9"


def test_replay_says_what_waits_while_nothing_is_acknowledged(tmp_path: Path) -> None:
    class Silent(FakeProducer):
        def flush(self, timeout: float | None = None) -> None:
            time.sleep(0.35)  # the broker away: nothing acknowledged for a while
            super().flush(timeout)

    path = tmp_path / "q.jsonl"
    path.write_text('{"symbol":"A"}\n' * 3)
    said: list[str] = []
    result = _replay(path, Silent(defer=True), say=said.append, stall_every_s=0.1)
    assert result.sent == 3 and result.ok
    assert said and said[0].startswith("waiting for the broker: 3 record(s) unacknowledged")


def test_a_stop_request_ends_the_sending_and_reports_the_rest_unsent(tmp_path: Path) -> None:
    stop = threading.Event()

    class StopsAfterFive(FakeProducer):  # the signal handler sets the event while record 5 is sent
        def send(self, topic: str, value: bytes, key: bytes | None = None) -> Future:
            future = super().send(topic, value, key)
            if len(self.sent) == 5:
                stop.set()
            return future

    path = tmp_path / "q.jsonl"
    path.write_text("".join(f'{{"symbol":"S{n}"}}\n' for n in range(12)))
    producer = StopsAfterFive(defer=True)  # acknowledged only on the final flush: none is abandoned
    result = _replay(path, producer, stop=stop, unsent_out=tmp_path / "unsent.jsonl")
    assert len(producer.sent) == 5 and producer.flushed
    assert (result.sent, result.failed) == (5, 0) and result.stopped_on_request
    assert result.ok and not result.stopped_early  # a requested stop is not a failure...
    assert result.not_attempted_from == 6  # ...but what was not sent is said, and kept to replay
    assert (tmp_path / "unsent.jsonl").read_text().splitlines() == [
        f'{{"symbol":"S{n}"}}' for n in range(5, 12)
    ]
