"""Background reports: a durable task log (the ``report_tasks`` Delta table, append-only) and the workers.

Every change of a task is a row (queued, running, done, failed, email_sent, email_failed); a task's state
is its rows replayed, so it survives a restart of the API. At start, a task the last process left running
is marked failed (it was interrupted) and one still queued is queued again: none stays "running" forever.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from surveillance.config import Settings
from surveillance.reporting.content import ReportError, ReportRequest

log = logging.getLogger(__name__)

US = pa.timestamp("us", tz="UTC")
TASK_SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("event", pa.string()),
        ("at", US),
        ("format", pa.string()),
        ("request", pa.string()),  # JSON: since, until, symbols, rules
        ("email", pa.string()),  # JSON list of recipients
        ("requested_by", pa.string()),
        ("files", pa.string()),  # JSON list of file names (done)
        ("message", pa.string()),  # the error (failed, email_failed)
        ("attempt", pa.int32()),
    ]
)
FINAL = ("done", "failed")


class QueueFull(RuntimeError):
    """More reports asked for than the workers and the queue hold."""


@dataclass
class TaskState:
    task_id: str
    format: str
    request: dict[str, Any]
    email: list[str]
    requested_by: str
    status: str = "queued"
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)
    email_status: str | None = None  # sent | failed | None (none asked for, or not yet)
    email_attempts: int = 0
    email_error: str | None = None

    def apply(self, row: dict[str, Any]) -> None:
        event = row["event"]
        if event == "queued":
            self.status, self.queued_at, self.started_at, self.error = "queued", row["at"], None, None
        elif event == "running":
            self.status, self.started_at = "running", row["at"]
        elif event == "done":
            self.status, self.finished_at = "done", row["at"]
            self.files = json.loads(row["files"] or "[]")
        elif event == "failed":
            self.status, self.finished_at, self.error = "failed", row["at"], row["message"]
        elif event == "email_sent":
            self.email_status, self.email_attempts, self.email_error = "sent", row["attempt"] or 0, None
        elif event == "email_failed":
            self.email_attempts = row["attempt"] or self.email_attempts
            self.email_error = row["message"]
            if row["attempt"] is None:  # the final verdict, not one attempt
                self.email_status = "failed"


class TaskLog:
    """The report_tasks table at ``location``: read once at start, then appended to (one API process)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self._load()

    def _load(self) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            rows = DeltaTable(self.location).to_pyarrow_table().to_pylist()
        except TableNotFoundError:
            return
        for row in sorted(rows, key=lambda r: r["at"]):
            self._remember(row)

    def _remember(self, row: dict[str, Any]) -> None:
        task = self._tasks.get(row["task_id"])
        if task is None:
            task = self._tasks[row["task_id"]] = TaskState(
                row["task_id"],
                row["format"],
                json.loads(row["request"]),
                json.loads(row["email"] or "[]"),
                row["requested_by"],
            )
        task.apply(row)

    def append(self, task: TaskState, event: str, **values: Any) -> None:
        from deltalake import write_deltalake

        row = {
            "task_id": task.task_id,
            "event": event,
            "at": datetime.now(UTC),
            "format": task.format,
            "request": json.dumps(task.request),
            "email": json.dumps(task.email),
            "requested_by": task.requested_by,
            "files": json.dumps(values["files"]) if "files" in values else None,
            "message": values.get("message"),
            "attempt": values.get("attempt"),
        }
        with self._lock:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
            write_deltalake(self.location, pa.Table.from_pylist([row], schema=TASK_SCHEMA), mode="append")
            self._remember(row)

    def new(self, fmt: str, request: dict[str, Any], email: list[str], requested_by: str) -> TaskState:
        task = TaskState(uuid.uuid4().hex, fmt, request, email, requested_by)
        self.append(task, "queued")
        return self._tasks[task.task_id]

    def get(self, task_id: str) -> TaskState | None:
        return self._tasks.get(task_id)

    def unfinished(self) -> list[TaskState]:
        return [t for t in self._tasks.values() if t.status not in FINAL]


BuildReport = Callable[[TaskState, Path], list[Path]]
Deliver = Callable[[TaskState, list[Path]], None]


class ReportWorkers:
    """At most ``workers`` reports built at once, ``queue_limit`` more waiting; beyond that QueueFull."""

    def __init__(self, settings: Settings, build: BuildReport, deliver: Deliver, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.log = TaskLog(str(root / "report_tasks"))
        self.capacity = settings.reports.workers + settings.reports.queue_limit
        self._pool = ThreadPoolExecutor(settings.reports.workers, thread_name_prefix="report")
        self._build, self._deliver = build, deliver
        self._pending = 0
        self._lock = threading.Lock()

    def recover(self) -> None:
        """What the last process left: running → failed (interrupted), queued → queued again."""
        for task in self.log.unfinished():
            if task.status == "running":
                self.log.append(
                    task, "failed", message="interrupted: the API stopped while the report was built"
                )
            else:
                with self._lock:
                    self._pending += 1
                self._pool.submit(self._run, task)

    def submit(
        self, fmt: str, request: ReportRequest, email: list[str], requested_by: str
    ) -> tuple[TaskState, Future]:
        """Queue a report; the future gives its files (or raises what failed it). A synchronous request
        waits on the future: it takes a worker like any other."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(
                    f"{self._pending} reports are being built or waiting (reports.workers + "
                    f"reports.queue_limit = {self.capacity}): try again later"
                )
            self._pending += 1
        try:
            task = self.log.new(fmt, describe(request), email, requested_by)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return task, self._pool.submit(self._run, task)

    def _run(self, task: TaskState) -> list[Path]:
        try:
            return self._execute(task)
        finally:
            with self._lock:
                self._pending -= 1

    def _execute(self, task: TaskState) -> list[Path]:
        self.log.append(task, "running")
        try:
            files = self._build(task, self.files_dir / task.task_id)
        except Exception as exc:
            message = str(exc) if isinstance(exc, ReportError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "report %s failed: %s", task.task_id, message, exc_info=not isinstance(exc, ReportError)
            )
            self.log.append(task, "failed", message=message)
            raise
        self.log.append(task, "done", files=[f.name for f in files])
        if task.email:
            self._deliver(task, files)
        return files

    def file(self, task: TaskState, name: str | None) -> Path | None:
        """One of a finished task's files (the main one by default), or None."""
        if task.status != "done" or not task.files:
            return None
        wanted = name or task.files[0]
        if wanted not in task.files:
            return None
        path = self.files_dir / task.task_id / wanted
        return path if path.is_file() else None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def describe(request: ReportRequest) -> dict[str, Any]:
    return {
        "since": request.since.isoformat(),
        "until": request.until.isoformat(),
        "symbols": list(request.symbols),
        "rules": list(request.rules),
    }


def request_of(task: TaskState, settings: Settings) -> ReportRequest:
    asked = task.request
    return ReportRequest(
        datetime.fromisoformat(asked["since"]),
        datetime.fromisoformat(asked["until"]),
        tuple(asked["symbols"]),
        tuple(asked["rules"]),
        settings.reports.top_alerts,
        settings.reports.chart_symbols,
    )
