"""The streaming job and backfills from a terminal: live progress, a clean stop on Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pyspark.sql.streaming import StreamingQuery
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from surveillance.config import Settings, resolve_local_path
from surveillance.kafka.admin import check_access, topic_end_offsets
from surveillance.kafka.errors import BrokerAccessError
from surveillance.models.scoring import preload_mlflow
from surveillance.observability.metrics import watch_queries
from surveillance.pipeline.backfill import STEPS, BackfillReport, EventRange, run_backfill
from surveillance.pipeline.stream import StreamingJob, processed_offsets, start_stream, wait_for
from surveillance.quality.validation import preload_great_expectations
from surveillance.spark import get_spark, running_on_cluster

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _check_brokers(settings: Settings, console: Console) -> None:
    """Fail at once, with the reason, when the brokers answer but refuse us (TLS trust, SASL login):
    Spark would retry that for ever. Brokers that do not answer yet may come: the stream waits for them."""
    try:
        check_access(settings.kafka)
    except BrokerAccessError as exc:
        if exc.reachable:
            raise
        console.print(f"[yellow]{exc}; starting anyway: the stream waits for the brokers")


def run_stream(
    settings: Settings, once: bool = False, console: Console | None = None, show_progress: bool = True
) -> int:
    """Start the streaming job and block until it stops (``once``: when everything available is done);
    the process exit code (a query's failure raises, here or in a query's process).

    With ``stream.processes: 2`` and both queries enabled, each query runs in its own process
    (:func:`run_query_processes`); otherwise, and always under spark-submit or on Databricks (whose one
    driver is given), both run here, in one Spark application.
    """
    console = console or Console(stderr=True)
    _check_brokers(settings, console)
    both = settings.stream.enabled and settings.detection.enabled
    if settings.stream.processes == 2 and both and not running_on_cluster():
        return run_query_processes(settings, once, console=console)
    # From here on a stop is clean whenever it comes: one during Spark's start (seconds on a laptop, more
    # for a niced query process behind a busy one) is honoured as soon as the query has started.
    stop_requested = threading.Event()
    previous = _on_stop_signals(stop_requested, console)
    query: StreamingQuery | StreamingJob | None = None
    stop_metrics: Callable[[], None] = lambda: None  # noqa: E731 - replaced once the queries run
    try:
        # The imports overlap Spark's start-up (a restart waits for both).
        if settings.quality.enabled and settings.stream.enabled:
            preload_great_expectations()
        if settings.models.scoring.enabled and settings.detection.enabled:
            preload_mlflow()
        spark = get_spark(settings)
        # With availableNow the query stops at the offsets that exist when it starts: that is the total.
        total = (
            sum(topic_end_offsets(settings.kafka, settings.kafka.topics.quotes).values()) if once else None
        )
        query = start_stream(spark, settings, once=once)
        job = query
        stop_metrics = watch_queries(
            settings, lambda: job.queries if isinstance(job, StreamingJob) else [job]
        )
        with _progress(console, disable=not show_progress) as progress:
            task = progress.add_task(query.name, total=None, batches="")

            stalls = StallReporter(settings.kafka.bootstrap_servers, console.print)

            def show(q: StreamingQuery) -> None:
                stalls.check(query.queries if isinstance(query, StreamingJob) else [query])
                last = q.lastProgress or {}
                rate = last.get("processedRowsPerSecond") or 0.0
                progress.update(
                    task,
                    completed=processed_offsets(q),
                    total=total,
                    batches=f"batch {last.get('batchId', '-')} | {rate:,.0f} rows/s",
                )

            wait_for(query, show, stop_requested=stop_requested)
    finally:
        stop_metrics()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if query is not None and query.isActive:
            query.stop()
    if stop_requested.is_set():
        console.print("stopped on request: every query stopped, its checkpoint intact")
    return 0


class StallReporter:
    """Says what a query waits for when one step of its trigger lasts (``after_s``, then every
    ``every_s``): e.g. offsets from a Kafka broker that went away, which Spark's Kafka source retries
    without a word while the query looks merely idle."""

    def __init__(
        self,
        bootstrap_servers: str,
        say: Callable[[str], None],
        after_s: float = 15.0,
        every_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap, self.say, self.after_s, self.every_s, self.clock = (
            bootstrap_servers,
            say,
            after_s,
            every_s,
            clock,
        )
        self._since: dict[str, tuple[str, float, float]] = {}  # query -> (message, since, last said)

    def check(self, queries: list[StreamingQuery]) -> None:
        now = self.clock()
        for query in queries:
            status = query.status or {}
            message = status.get("message", "")
            name = query.name or query.id
            if not status.get("isTriggerActive"):
                self._since.pop(name, None)
                continue
            seen, since, said = self._since.get(name, (None, now, now))
            if seen != message:
                self._since[name] = (message, now, now)
                continue
            if now - since >= self.after_s and now - said >= self.every_s:
                hint = ""
                if "kafka" in message.lower():
                    hint = f"; the Kafka brokers at {self.bootstrap} may be unreachable, Spark retries"
                self.say(f"{name}: waiting, {message!r} for {now - since:.0f} s{hint}")
                self._since[name] = (message, since, now)


def _on_stop_signals(stop_requested: threading.Event, console: Console) -> dict[int, object]:
    """SIGTERM and SIGINT set ``stop_requested`` (the wait loop stops the queries); a second one forces
    the exit. Returns the handlers they replace."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop_requested.is_set():
            console.print(f"{signal.Signals(signum).name} again: exiting without waiting for the queries")
            os._exit(128 + signum)
        console.print(f"{signal.Signals(signum).name}: stopping the queries (send it again to force)")
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    # A query's process starts with them blocked (_child_setup): one that came during its start-up waited,
    # pending, for this handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return previous


def query_process_settings(settings: Settings) -> dict[str, Settings]:
    """The settings of each query's own process: the detection query alone, the lakehouse query alone."""
    return {
        # Each process serves its own metrics: the detection query on the port after the lakehouse's.
        "detection": settings.with_overrides(
            "stream.enabled=false", "stream.processes=1", f"metrics.port={settings.metrics.port + 1}"
        ),
        "lakehouse": settings.with_overrides("detection.enabled=false", "stream.processes=1"),
    }


def run_query_processes(
    settings: Settings, once: bool = False, poll_s: float = 0.5, console: Console | None = None
) -> int:
    """Run the detection and the lakehouse queries in two ``surveil stream`` processes until both stop.

    On one machine the two queries share its cores: Spark's FAIR pools order the tasks it starts, but a
    started lakehouse task (or a GX run in the shared Python driver) keeps its core until it ends. In its
    own process at niceness ``stream.lakehouse_nice``, the lakehouse (its JVM, its Python workers) gets
    the cores only when the detection process leaves them idle. SIGTERM and SIGINT reach both; when one
    process fails, the other is stopped. Returns 0, or the exit code of the first process that failed.
    """
    console = console or Console(stderr=True)
    folder = Path(resolve_local_path(settings.state_dir)) / "processes"
    folder.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for role, child in query_process_settings(settings).items():
        resolved = folder / f"{role}.json"
        resolved.write_text(child.to_json())
        command = [sys.executable, "-m", "surveillance.cli", "stream", "--settings-json", str(resolved)]
        if once:
            command.append("--once")
        if role == "detection":
            command.append("--no-progress")  # one progress display: the lakehouse's
        nice = settings.stream.lakehouse_nice if role == "lakehouse" else 0
        # Their own process group, so that a terminal's Ctrl-C reaches them once (forwarded from here), but
        # not their own session: with the kernel's autogroup scheduling each session is one group sharing
        # the CPU equally with the others, and niceness would order nothing between the two queries.
        children[role] = subprocess.Popen(command, process_group=0, preexec_fn=lambda n=nice: _child_setup(n))

    signalled: set[str] = set()

    def forward(signum: int, frame: FrameType | None) -> None:
        # A second signal from outside is passed on (it forces the exit); the stop of the other query
        # after one failed is sent only to a process not yet asked to stop (twice would force it).
        outside = frame is not None
        for role, process in children.items():
            if process.poll() is None and (outside or role not in signalled):
                signalled.add(role)
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed: list[str] = []
    try:
        while any(process.poll() is None for process in children.values()):
            for role, process in children.items():
                if process.poll() not in (None, 0) and role not in failed:
                    failed.append(role)
                    forward(signal.SIGTERM, None)  # the other query stops too
            time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed += [role for role, p in children.items() if p.returncode not in (0, None) and role not in failed]
    for role in failed:
        console.print(f"[red]the {role} query's process exited with {children[role].returncode}")
    return exit_code(children[failed[0]].returncode) if failed else 0


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it: killed by signal N (-N) is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _child_setup(nice: int) -> None:
    """In a query's process before it runs: its niceness, the stop signals held until its handler is in
    place (so that a stop during its interpreter's start is clean, not a kill), and on Linux the parent's
    death ends it too (a SIGKILLed ``surveil stream`` leaves no query running behind it)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if nice:
        os.nice(nice)
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _progress(console: Console, detail: str = "batches", disable: bool = False) -> Progress:
    """A progress bar with a task's ``detail`` field beside the count."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[{detail}]}}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=disable,
    )


def backfill_with_progress(
    settings: Settings, range_: EventRange, console: Console | None = None
) -> BackfillReport:
    """Run a backfill with a step-by-step progress display, then print what it found and changed."""
    console = console or Console(stderr=True)
    if settings.quality.enabled:
        preload_great_expectations()
    spark = get_spark(settings)
    with _progress(console, detail="step") as progress:
        task = progress.add_task(f"backfill {range_}", total=len(STEPS), step="starting")

        def on_step(step: str) -> None:
            progress.update(task, completed=STEPS.index(step), step=step)

        report = run_backfill(spark, settings, range_, on_step)
        progress.update(task, completed=len(STEPS), step="done")
    print_backfill_report(report, console)
    return report


def print_backfill_report(report: BackfillReport, console: Console) -> None:
    """The backfill's figures and, per table, the rows it inserted, updated and deleted."""
    console.print(
        f"{report.run_id}: {report.range}, bronze read from {report.bronze_from_date}, "
        f"{report.seconds:.1f} s\n"
        f"quotes in range {report.quotes_in_range:,} | silver {report.silver_rows:,} | "
        f"bars {report.bar_rows:,} | alerts {report.alert_rows:,} | newly quarantined "
        f"{report.quarantined_rows:,} | model {report.model_version or 'none'}"
    )
    table = Table("table", "inserted", "updated", "deleted", "unchanged")
    for name, change in report.changes.items():
        table.add_row(
            name, *(f"{n:,}" for n in (change.inserted, change.updated, change.deleted, change.unchanged))
        )
    console.print(table)
    if not report.changed:
        console.print("nothing changed: the lakehouse already held exactly these rows")
