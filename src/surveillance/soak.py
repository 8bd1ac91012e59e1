"""``make soak``: both queries under a steady input for a long while, sampled each minute: does anything grow?

A short benchmark says how fast a batch is; a soak says whether it stays that fast. ``surveil soak`` starts
its own broker and a fresh lakehouse and checkpoints (``.state/soak``), launches ``surveil stream`` as its
own process (both queries, as a user runs it), replays generated quotes with injected anomalies at
``--rate`` quotes/s for ``--minutes``, and every ``--every`` seconds records and prints one sample:

* the quotes sent so far, each query's committed offsets (from its checkpoint) and lag (topic end minus
  committed);
* the median and max duration of each query's batches recorded in ``stream_progress`` since the previous
  sample (read here with delta-rs, outside the stream: a batch's ``step_seconds["total"]``, the wall time
  of its ``foreachBatch`` body; Spark's offset and commit log writes around it are not in it);
* quote -> alert latency p50 / p99 of the alerts that came back since the previous sample (each alert's
  Kafka timestamp minus its quote's, as ``make bench`` measures it);
* memory: the resident set of the stream's process tree from ``/proc``, per query process: its Python
  driver, its JVM (in local mode the executor runs inside the driver JVM: one figure is both), and its
  Spark Python workers summed;
* each table's ``_delta_log``: files and bytes.

At the end it says, per series, whether it is flat or growing (:func:`slope_trend`, :func:`lag_trend`) and
writes every sample, the verdicts, the settings and the machine to ``reports/soak.json``. SIGINT/SIGTERM
stop it early: the stream is stopped with SIGTERM and what was sampled is written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from surveillance.bench import (
    _bench_settings,
    alert_latency,
    alerts_consumer,
    committed_offsets,
    launch_stream,
    quotes_topic_end,
    stop_stream,
    stream_log,
    wait_for_first_commit,
    write_paced_quotes,
)
from surveillance.checkpoints import detection_checkpoint
from surveillance.config import Settings, resolve_local_path
from surveillance.demo import local_run_settings, train_champion, wipe_run_state
from surveillance.ingestion.replay import ReplayResult, replay_file
from surveillance.kafka.admin import ensure_topics
from surveillance.kafka.broker import LocalBroker
from surveillance.lakehouse import is_table_name, table_locations
from surveillance.models.registry import alias_version

# Its own state, ports and topics: a soak never touches the demo's, the bench's or a local run's.
SOAK_OVERRIDES = (
    "state_dir=.state/soak",
    "lakehouse.root=.state/soak/lakehouse",
    # Named here so that wiping the previous soak never reaches .state/checkpoints (a local run's).
    "stream.checkpoint_dir=.state/soak/checkpoints/quotes_to_lakehouse",
    "kafka.bootstrap_servers=localhost:9392",
    "kafka.local_broker.port=9392",
    "kafka.local_broker.controller_port=9393",
    "kafka.topics.quotes=soak_quotes",
    "kafka.topics.alerts=soak_alerts",
)
# A series is "growing" when its least-squares line rises over the run by more than this share of its
# mean ("falling" when it drops by as much); minute-to-minute noise moves the line far less.
SLOPE_THRESHOLD = 0.2
# A lag is "growing" when the mean of the last third of the samples exceeds LAG_GROWTH_FACTOR times the
# first third's plus a slack of this many seconds of input: what one batch normally holds (as bench's (c)
# judges it: a detection batch a few seconds of input, a lakehouse batch up to a minute at low rates).
LAG_GROWTH_FACTOR = 1.5
LAG_SLACK_S = {"detection": 2.0, "lakehouse": 60.0}
# Samples of the first two minutes (JVM warm-up, the model loading into the Python workers, the first
# full batches) are left out of the trends, unless fewer than MIN_TREND_SAMPLES would remain.
TREND_WARMUP_S = 120.0
MIN_TREND_SAMPLES = 3
QUERIES = ("detection", "lakehouse")
PROC = Path("/proc")


# --- pure pieces: the distribution of a window, the trends, memory by process, the Delta log -----------


@dataclass(frozen=True)
class Distribution:
    """Count, median, 99th percentile and max of some seconds (None when there were none)."""

    count: int
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


def distribution(values: Sequence[float]) -> Distribution:
    """The distribution of a window's values (linear-interpolated percentiles, as bench reports them)."""
    if not values:
        return Distribution(0)
    return Distribution(
        count=len(values),
        p50=float(np.percentile(values, 50)),
        p99=float(np.percentile(values, 99)),
        max=float(max(values)),
    )


def batch_seconds(row: Mapping[str, Any]) -> float | None:
    """A stream_progress row's batch duration: its ``step_seconds["total"]``, else finished - started."""
    steps = dict(row.get("step_seconds") or ())  # a map arrives from Arrow as (key, value) pairs
    if steps.get("total") is not None:
        return float(steps["total"])
    started, finished = row.get("started_at"), row.get("finished_at")
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()


def durations_by_query(rows: Iterable[Mapping[str, Any]], roles: Mapping[str, str]) -> dict[str, list[float]]:
    """{query role: batch seconds} of stream_progress rows; ``roles`` maps a query's name to its role."""
    durations: dict[str, list[float]] = {}
    for row in rows:
        seconds = batch_seconds(row)
        if seconds is not None:
            role = roles.get(row["query_name"], row["query_name"])
            durations.setdefault(role, []).append(seconds)
    return durations


@dataclass(frozen=True)
class Trend:
    """A series' verdict and the figures it rests on (per minute; means over the samples used)."""

    verdict: str  # slope: flat | growing | falling; lag: bounded | growing; or "too few samples"
    rule: str
    samples: int
    slope_per_minute: float | None = None
    mean: float | None = None
    change_over_run: float | None = None  # the fitted line's rise from the first sample to the last
    first_third_mean: float | None = None
    last_third_mean: float | None = None


def _known(minutes: Sequence[float], values: Sequence[float | None]) -> tuple[list[float], list[float]]:
    pairs = [(t, float(v)) for t, v in zip(minutes, values, strict=True) if v is not None]
    return [t for t, _ in pairs], [v for _, v in pairs]


def slope_trend(
    minutes: Sequence[float], values: Sequence[float | None], threshold: float = SLOPE_THRESHOLD
) -> Trend:
    """Flat, growing or falling: the least-squares slope times the run's span against the mean."""
    rule = f"least-squares rise over the run vs. mean, threshold {threshold:.0%}"
    t, y = _known(minutes, values)
    t_mean = statistics.fmean(t) if t else 0.0
    spread = sum((ti - t_mean) ** 2 for ti in t)
    if len(y) < MIN_TREND_SAMPLES or spread == 0:
        return Trend("too few samples", rule, len(y))
    y_mean = statistics.fmean(y)
    slope = sum((ti - t_mean) * (yi - y_mean) for ti, yi in zip(t, y, strict=True)) / spread
    change = slope * (max(t) - min(t))
    if y_mean:
        relative = change / abs(y_mean)
    else:  # an all-zero series is flat; a rise from a zero mean is a rise
        relative = 0.0 if change == 0 else float("inf") if change > 0 else float("-inf")
    verdict = "growing" if relative > threshold else "falling" if relative < -threshold else "flat"
    return Trend(verdict, rule, len(y), slope_per_minute=slope, mean=y_mean, change_over_run=change)


def lag_trend(values: Sequence[float | None], slack: float, factor: float = LAG_GROWTH_FACTOR) -> Trend:
    """Bounded or growing: the last third's mean against ``factor`` times the first third's plus
    ``slack`` (a lag that merely swings with batch boundaries stays bounded)."""
    rule = f"last third's mean > {factor} x first third's + {slack:,.0f}"
    known = [float(v) for v in values if v is not None]
    if len(known) < MIN_TREND_SAMPLES:
        return Trend("too few samples", rule, len(known))
    third = len(known) // 3
    first, last = statistics.fmean(known[:third]), statistics.fmean(known[-third:])
    verdict = "growing" if last > factor * first + slack else "bounded"
    return Trend(
        verdict,
        rule,
        len(known),
        mean=statistics.fmean(known),
        first_third_mean=first,
        last_third_mean=last,
    )


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    argv: tuple[str, ...]
    rss_kib: int | None


# The field of memory_by_role each kind of process adds to.
KIND_FIELDS = {
    "python": "python_kib",
    "jvm": "jvm_kib",
    "python_worker": "python_workers_kib",
    "other": "other_kib",
}


def process_kind(argv: Sequence[str]) -> str:
    """jvm, python_worker (Spark's ``pyspark.daemon`` and the workers it forks), python, or other."""
    if not argv:
        return "other"
    if Path(argv[0]).name == "java":
        return "jvm"
    if any(arg.startswith("pyspark.") for arg in argv):
        return "python_worker"
    return "python" if "python" in Path(argv[0]).name else "other"


def _query_role(argv: Sequence[str]) -> str | None:
    # `surveil stream` starts each query's process with --settings-json <state>/processes/<role>.json.
    if "--settings-json" in argv[:-1]:
        return Path(argv[list(argv).index("--settings-json") + 1]).stem
    return None


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """Every process below ``root``, given {pid: parent pid}, parents before their children."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        below = sorted(pid for parent in frontier for pid in children.get(parent, ()))
        found += below
        frontier = below
    return found


def memory_by_role(root: int, processes: Mapping[int, ProcessInfo]) -> dict[str, dict[str, int]]:
    """KiB of resident memory of a ``surveil stream`` tree, by role and kind of process.

    The roles: ``stream`` (the process launched, and anything it runs that is no query process) and each
    query process (``detection``, ``lakehouse``) with everything below it. The kinds: ``python_kib`` (the
    Python driver), ``jvm_kib`` (the driver JVM, which in local mode is the executor too),
    ``python_workers_kib`` (summed: a forked worker's shared pages count in each), ``other_kib``; and
    ``python_workers``, how many there are.
    """
    role_of: dict[int, str] = {root: "stream"}
    for pid in descendants(root, {p: info.parent for p, info in processes.items()}):
        info = processes[pid]
        parent_role = role_of.get(info.parent, "stream")
        own = _query_role(info.argv) if info.parent == root else None
        role_of[pid] = own or parent_role
    memory: dict[str, dict[str, int]] = {}
    for pid, role in role_of.items():
        info = processes.get(pid)
        if info is None or info.rss_kib is None:  # gone meanwhile, or a kernel thread
            continue
        kind = process_kind(info.argv)
        figures = memory.setdefault(role, {**dict.fromkeys(KIND_FIELDS.values(), 0), "python_workers": 0})
        figures[KIND_FIELDS[kind]] += info.rss_kib
        figures["python_workers"] += kind == "python_worker"
    return memory


def rss_kib(pid: int, proc: Path = PROC) -> int | None:
    """A process's resident set size in KiB (VmRSS of /proc/<pid>/status); None once it is gone."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None  # a kernel thread, or a zombie


def parent_pids(proc: Path = PROC) -> dict[int, int]:
    """{pid: parent pid} of every process, from /proc/<pid>/stat."""
    parents = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def command_line(pid: int, proc: Path = PROC) -> tuple[str, ...]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def process_tree_memory(root: int, proc: Path = PROC) -> dict[str, dict[str, int]]:
    """:func:`memory_by_role` of the live process tree under ``root``, read from /proc."""
    parents = parent_pids(proc)
    tree = [root, *descendants(root, parents)]
    processes = {
        pid: ProcessInfo(parents.get(pid, 0), command_line(pid, proc), rss_kib(pid, proc)) for pid in tree
    }
    return memory_by_role(root, processes)


@dataclass(frozen=True)
class LogSize:
    files: int
    bytes: int


def delta_log_size(table: Path) -> LogSize | None:
    """Files and bytes under a Delta table's ``_delta_log`` (commits, checkpoints, CRCs); None without
    one."""
    log = table / "_delta_log"
    if not log.is_dir():
        return None
    files = size = 0
    for folder, _, names in os.walk(log):
        for name in names:
            try:
                size += (Path(folder) / name).stat().st_size
            except FileNotFoundError:  # removed by a checkpoint's cleanup meanwhile
                continue
            files += 1
    return LogSize(files, size)


def machine_info() -> dict[str, Any]:
    """Cores, memory and system of this machine, for the report."""
    memory_kib = None
    meminfo = PROC / "meminfo"
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_kib": memory_kib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


# --- the samples and what they say ----------------------------------------------------------------------


@dataclass
class QuerySample:
    committed: int  # quotes-topic offsets (summed over partitions) of the query's last committed batch
    lag: int  # topic end - committed
    batches: Distribution  # seconds of its batches recorded in stream_progress since the previous sample


@dataclass
class SoakSample:
    elapsed_s: float  # since the replay began
    events_sent: int  # quotes in the topic, from its end offsets
    queries: dict[str, QuerySample]
    latency: Distribution  # quote -> alert seconds of the alerts received since the previous sample
    memory: dict[str, dict[str, int]]  # role -> kind -> KiB (see memory_by_role)
    delta_log: dict[str, LogSize]  # table -> its _delta_log
    load_1m: float  # the machine's load average: anything else running shows here

    @property
    def minute(self) -> float:
        return self.elapsed_s / 60


def trend_series(samples: Sequence[SoakSample]) -> dict[str, list[float | None]]:
    """Each series the trends are judged on, one value per sample (None: nothing measured then)."""
    series: dict[str, list[float | None]] = {}
    tables = sorted({table for sample in samples for table in sample.delta_log})

    def add(name: str, value: float | None) -> None:
        series.setdefault(name, []).append(value)

    for sample in samples:
        for query in QUERIES:
            figures = sample.queries.get(query)
            add(f"{query}.lag", figures.lag if figures else None)
            add(f"{query}.batch_median_s", figures.batches.p50 if figures else None)
            add(f"{query}.batch_max_s", figures.batches.max if figures else None)
        add("latency.p50_s", sample.latency.p50)
        add("latency.p99_s", sample.latency.p99)
        for role in ("stream", *QUERIES):
            kinds = sample.memory.get(role, {})
            for kind in ("python_kib", "jvm_kib", "python_workers_kib"):
                add(f"memory.{role}.{kind}", kinds.get(kind))
        for table in tables:
            size = sample.delta_log.get(table)
            add(f"delta_log.{table}.files", size.files if size else None)
            add(f"delta_log.{table}.bytes", size.bytes if size else None)
    return series


def trends(samples: Sequence[SoakSample], rate: float) -> dict[str, Trend]:
    """The verdict of every series over the samples after the warm-up (all of them if too few remain)."""
    settled = [s for s in samples if s.elapsed_s >= TREND_WARMUP_S]
    used = settled if len(settled) >= MIN_TREND_SAMPLES else list(samples)
    minutes = [s.minute for s in used]
    verdicts = {}
    for name, values in trend_series(used).items():
        if name.startswith("memory.") and not any(values):
            continue  # a role or kind of process this run did not have (no JVM in the launcher)
        query, _, measure = name.partition(".")
        if measure == "lag":
            verdicts[name] = lag_trend(values, slack=LAG_SLACK_S[query] * rate)
        else:
            verdicts[name] = slope_trend(minutes, values)
    return verdicts


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class SoakReport:
    settings: dict[str, Any]
    machine: dict[str, Any]
    started_at: str
    finished_at: str | None = None
    stopped_by: str = "completed"  # completed | SIGINT | SIGTERM | why it ended early
    model_scoring: str = "off"
    stream_log: str | None = None
    replay: dict[str, Any] | None = None
    samples: list[SoakSample] = field(default_factory=list)
    trends: dict[str, Trend] = field(default_factory=dict)
    trend_rules: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.stopped_by in ("completed", "SIGINT", "SIGTERM")

    def to_json(self) -> str:
        document = asdict(self)
        for written, sample in zip(document["samples"], self.samples, strict=True):
            written["minute"] = round(sample.minute, 3)
        return json.dumps(document, indent=2, default=str)


class _StopSignals:
    """SIGINT/SIGTERM: the first asks the soak to stop; a second kills the stream's process group."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = threading.Event()
        self.name: str | None = None
        self.stream: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            self.name = name
            self.requested.set()
            self.console.print(f"{name}: stopping the stream and writing what was sampled (again to force)")
            return
        if self.stream is not None and self.stream.poll() is None:
            self.console.print(f"{name} again: killing the stream's processes")
            os.killpg(self.stream.pid, signal.SIGKILL)
        else:
            raise KeyboardInterrupt


class _Sampler:
    """Everything one sample reads, outside the stream: checkpoints, the topic's end, the alerts topic,
    stream_progress (delta-rs), /proc and the tables' logs."""

    def __init__(
        self, settings: Settings, stream: subprocess.Popen[bytes], consumer: Any, console: Console
    ) -> None:
        self.settings = settings
        self.warn = console.print
        self.stream = stream
        self.consumer = consumer
        self.checkpoints = {
            "detection": detection_checkpoint(settings),
            "lakehouse": settings.stream.checkpoint_dir,
        }
        self.roles = {settings.detection.query_name: "detection", settings.stream.query_name: "lakehouse"}
        self.locations = {
            name: Path(location)
            for name, location in table_locations(settings).items()
            if not is_table_name(location)
        }
        self.topic_start = quotes_topic_end(settings)
        self.latencies: list[float] = []
        self._progress: Any = None  # a delta-rs DeltaTable, once stream_progress exists
        self._seen_batches: set[tuple[str, str, int]] = set()

    def drain_alerts(self, timeout_ms: int) -> None:
        """Take the alerts that arrived (waiting up to ``timeout_ms``) and keep their latencies."""
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            self.latencies += [alert_latency(message)[1] for message in records]

    def _new_batches(self) -> dict[str, list[float]]:
        # Every batch once, in the sample that first sees it: the detection query appends its rows every
        # detection.progress_interval (10 s), so a window by finish time would miss its latest batches.
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        columns = ["query_name", "stream_id", "batch_id", "started_at", "finished_at", "step_seconds"]
        try:
            if self._progress is None:
                self._progress = DeltaTable(str(self.locations["stream_progress"]))
            else:
                self._progress.update_incremental()
            rows = self._progress.to_pyarrow_table(columns=columns).to_pylist()
        except TableNotFoundError:
            return {}
        except Exception as exc:  # telemetry: one failed read must not end a long run (next sample retries)
            self.warn(f"could not read stream_progress: {exc}")
            return {}
        fresh = [
            r for r in rows if (r["query_name"], r["stream_id"], r["batch_id"]) not in self._seen_batches
        ]
        self._seen_batches.update((r["query_name"], r["stream_id"], r["batch_id"]) for r in fresh)
        return durations_by_query(fresh, self.roles)

    def sample(self, elapsed_s: float) -> SoakSample:
        end = quotes_topic_end(self.settings)
        durations = self._new_batches()
        queries = {}
        for query, checkpoint in self.checkpoints.items():
            committed = committed_offsets(checkpoint)
            queries[query] = QuerySample(
                committed, max(0, end - committed), distribution(durations.get(query, []))
            )
        logs = {name: delta_log_size(path) for name, path in self.locations.items()}
        latencies, self.latencies = self.latencies, []
        return SoakSample(
            elapsed_s=round(elapsed_s, 1),
            events_sent=end - self.topic_start,
            queries=queries,
            latency=distribution(latencies),
            memory=process_tree_memory(self.stream.pid),
            delta_log={name: size for name, size in logs.items() if size is not None},
            load_1m=os.getloadavg()[0],
        )


# The printed line: (header, width, text of a sample).
def _mb(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _query_columns(query: str, short: str) -> list[tuple[str, int, Any]]:
    def figures(s: SoakSample) -> QuerySample:
        return s.queries[query]

    def memory(s: SoakSample) -> dict[str, int]:
        return s.memory.get(query, {})

    return [
        (f"{short} committed", 13, lambda s: f"{figures(s).committed:,}"),
        (f"{short} lag", 10, lambda s: f"{figures(s).lag:,}"),
        (f"{short} batch s", 11, lambda s: f"{_s(figures(s).batches.p50)}/{_s(figures(s).batches.max)}"),
        (
            f"{short} MB py+jvm/wrk",
            19,
            lambda s: (
                f"{_mb(memory(s).get('python_kib'))}+{_mb(memory(s).get('jvm_kib'))}"
                f"/{_mb(memory(s).get('python_workers_kib'))}"
            ),
        ),
    ]


COLUMNS: list[tuple[str, int, Any]] = [
    ("min", 5, lambda s: f"{s.minute:.1f}"),
    ("sent", 11, lambda s: f"{s.events_sent:,}"),
    *_query_columns("detection", "det"),
    *_query_columns("lakehouse", "lake"),
    ("alerts", 7, lambda s: f"{s.latency.count:,}"),
    ("latency p50/p99", 15, lambda s: f"{_s(s.latency.p50)}/{_s(s.latency.p99)}"),
    (
        "delta log files/MB",
        18,
        lambda s: (
            f"{sum(x.files for x in s.delta_log.values()):,}"
            f"/{sum(x.bytes for x in s.delta_log.values()) / 2**20:,.1f}"
        ),
    ),
]


def sample_line(sample: SoakSample) -> str:
    """A sample as one line, its columns right-aligned under :func:`header_line`'s."""
    return "  ".join(text(sample).rjust(max(width, len(name))) for name, width, text in COLUMNS)


def header_line() -> str:
    return "  ".join(name.rjust(max(width, len(name))) for name, width, _ in COLUMNS)


class _Stopped(Exception):
    """A stop was asked for before the sampling began."""


def run_soak(
    minutes: float = 30,
    rate: float = 1_000,
    every: float = 60,
    out: Path = Path("reports/soak.json"),
    env: str | None = None,
    overrides: Sequence[str] = (),
    console: Console | None = None,
) -> SoakReport:
    """Run the soak (see the module's docstring); print a line per sample and the trends, write JSON."""
    if minutes <= 0 or rate <= 0 or every <= 0:
        raise ValueError("--minutes, --rate and --every must be positive")
    try:  # stream_progress is read with delta-rs: no Spark session in the soak's own process
        import deltalake  # noqa: F401
    except ImportError:
        raise SystemExit(
            "surveil soak reads stream_progress with delta-rs: pip install -e '.[dev]'"
        ) from None
    console = console or Console(stderr=True)
    base = local_run_settings(env, SOAK_OVERRIDES, overrides)
    settings = _bench_settings(base, "soak")
    report = _new_report(settings, minutes, rate, every, overrides)
    broker = LocalBroker(settings)
    # A fresh run: the previous soak's broker data, tables and checkpoints go (nothing outside .state/soak).
    broker.down()
    wipe_run_state(base)
    shutil.rmtree(resolve_local_path(f"{base.state_dir}/checkpoints"), ignore_errors=True)
    stream: subprocess.Popen[bytes] | None = None
    consumer = None
    sender: threading.Thread | None = None
    stop_sending = threading.Event()
    replayed: list[ReplayResult | BaseException] = []
    with _StopSignals(console) as signals, tempfile.TemporaryDirectory() as tmp:
        try:
            broker.up()
            ensure_topics(settings.kafka)
            if signals.requested.is_set():
                raise _Stopped
            quotes = _prepare_input(settings, report, rate, minutes, Path(tmp), console)
            if signals.requested.is_set():
                raise _Stopped
            consumer = alerts_consumer(settings)
            log = stream_log(settings, "soak")
            report.stream_log = str(log)
            console.print(f"starting surveil stream (log: {log})...")
            stream = signals.stream = launch_stream(settings, log)
            wait_for_first_commit(settings, stream, log, stop=signals.requested)
            if signals.requested.is_set():
                raise _Stopped
            sampler = _Sampler(settings, stream, consumer, console)

            def send() -> None:
                try:
                    replayed.append(
                        replay_file(quotes, settings.kafka, rate=rate, progress=False, stop=stop_sending)
                    )
                except BaseException as exc:  # kept for the report; the sampling goes on
                    replayed.append(exc)

            sender = threading.Thread(target=send, name="soak-replay", daemon=True)
            console.print(
                f"replaying at {rate:,.0f} quotes/s for {minutes:g} min, a sample every {every:g} s"
            )
            _sample_until_done(report, sampler, sender, signals, every, minutes * 60, log)
        except _Stopped:
            pass
        except BaseException as exc:
            report.stopped_by = f"error: {type(exc).__name__}: {exc}"
            raise
        finally:
            if signals.requested.is_set():
                report.stopped_by = signals.name or "signal"
            stop_sending.set()
            if sender is not None and sender.is_alive():  # the records in flight are acknowledged
                sender.join(timeout=30)
            if stream is not None:
                console.print("stopping surveil stream...")
                stop_stream(stream)
            if consumer is not None:
                consumer.close()
            broker.down()
            report.replay = _replay_summary(replayed)
            _finish(report, rate, out, console)
    return report


def _new_report(
    settings: Settings, minutes: float, rate: float, every: float, overrides: Sequence[str]
) -> SoakReport:
    return SoakReport(
        settings={
            "minutes": minutes,
            "rate_events_per_s": rate,
            "every_s": every,
            "overrides": list(overrides),
            "resolved": json.loads(settings.to_json()),
        },
        machine=machine_info(),
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        trend_rules={
            "warmup_s": TREND_WARMUP_S,
            "min_samples": MIN_TREND_SAMPLES,
            "slope_threshold": SLOPE_THRESHOLD,
            "lag_growth_factor": LAG_GROWTH_FACTOR,
            "lag_slack_s_of_input": LAG_SLACK_S,
        },
    )


def _prepare_input(
    settings: Settings, report: SoakReport, rate: float, minutes: float, folder: Path, console: Console
) -> Path:
    """Train the champion (as bench does, when the detection query scores with it) and write the quotes."""
    if settings.models.scoring.enabled:
        console.print("training the anomaly models (the detection query scores with the champion)...")
        train_champion(settings, console)
        champion = alias_version(settings)
        report.model_scoring = f"{champion.tags.get('detector', '?')} v{champion.version}"
    # A minute more than the run, so the input never runs out before the last sample.
    console.print(f"generating about {rate * (minutes + 1) * 60:,.0f} quotes...")
    return write_paced_quotes(rate, (minutes + 1) * 60, folder / "soak.jsonl")


def _sample_until_done(
    report: SoakReport,
    sampler: _Sampler,
    sender: threading.Thread,
    signals: _StopSignals,
    every: float,
    seconds: float,
    log: Path,
) -> None:
    """Start the replay; a sample every ``every`` s until ``seconds`` have passed, a stop is asked for,
    or the stream exits. Between samples, take in the alerts as they come."""
    print(header_line(), flush=True)
    begun = time.monotonic()
    sender.start()
    next_sample, deadline = begun + every, begun + seconds
    while not signals.requested.is_set():
        if sampler.stream.poll() is not None:
            report.stopped_by = f"surveil stream exited with {sampler.stream.returncode} (see {log})"
            return
        until_due = min(next_sample, deadline) - time.monotonic()
        sampler.drain_alerts(timeout_ms=max(1, int(min(0.5, until_due) * 1000)))
        now = time.monotonic()
        if now >= next_sample or now >= deadline:
            sample = sampler.sample(now - begun)
            report.samples.append(sample)
            print(sample_line(sample), flush=True)
            next_sample += every
            if now >= deadline:
                return


def _finish(report: SoakReport, rate: float, out: Path, console: Console) -> None:
    """The trends of what was sampled, printed and written with every sample to ``out``."""
    report.finished_at = dt.datetime.now(dt.UTC).isoformat()
    report.trends = trends(report.samples, rate)
    _print_trends(report, Console())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json())
    console.print(f"written {out} ({len(report.samples)} samples; stopped by: {report.stopped_by})")


def _replay_summary(replayed: list[ReplayResult | BaseException]) -> dict[str, Any] | None:
    if not replayed:
        return None
    result = replayed[0]
    if isinstance(result, BaseException):
        return {"error": f"{type(result).__name__}: {result}"}
    return {
        "sent": result.sent,
        "failed": result.failed,
        "elapsed_s": result.elapsed_s,
        "first_error": result.first_error,
        "stopped_on_request": result.stopped_on_request,
    }


def _trend_figures(trend: Trend) -> str:
    if trend.slope_per_minute is not None:
        return (
            f"mean {trend.mean:,.2f}, slope {trend.slope_per_minute:+,.3f}/min, "
            f"rise over the run {trend.change_over_run:+,.2f}"
        )
    if trend.first_third_mean is not None:
        return f"first third {trend.first_third_mean:,.0f}, last third {trend.last_third_mean:,.0f}"
    return ""


def _print_trends(report: SoakReport, console: Console) -> None:
    samples = len(report.samples)
    table = Table(
        title=f"Soak trends ({samples} samples; those of the first {TREND_WARMUP_S:.0f} s left out)"
    )
    for column in ("series", "verdict", "figures", "rule"):
        table.add_column(column)
    for name, trend in report.trends.items():
        table.add_row(
            name,
            trend.verdict,
            _trend_figures(trend),
            f"{trend.rule} ({trend.samples} samples)",
            style="red" if trend.verdict == "growing" else None,
        )
    console.print(table)
