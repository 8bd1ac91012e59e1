"""The API's reports: ``POST /v1/reports`` (sync: the file; async: a task), its status and its files.

Reports are built by :class:`surveillance.reporting.tasks.ReportWorkers` (two at a time by default, a
bounded queue, state in the report_tasks table) from the same content and formats as ``surveil report``.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations (the key's among them).
import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from surveillance.config import Settings
from surveillance.reporting.content import RendererMissing, ReportError, ReportRequest
from surveillance.reporting.delivery import DeliveryError
from surveillance.reporting.formats.registry import media_type_of, report_format
from surveillance.reporting.run import default_name, email_report, make_report, naive_utc, report_request
from surveillance.reporting.tasks import QueueFull, ReportWorkers, TaskState, request_of

log = logging.getLogger(__name__)

TASK_ID = r"^[0-9a-f]{32}$"
EMAIL = r"^[^@\s,;<>]{1,64}@[^@\s,;<>]{1,255}$"
SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._\-=^/]{0,31}$"
Rule = Literal["price_jump", "return_zscore", "volume_spike", "model"]


class ReportAsk(BaseModel):
    format: Literal["pdf", "csv", "html"]
    since: datetime = Field(description="event time from (ISO 8601; UTC when no offset), inclusive")
    until: datetime = Field(description="event time until (ISO 8601), exclusive")
    symbols: list[Annotated[str, Field(pattern=SYMBOL)]] = Field(default_factory=list, max_length=200)
    rules: list[Rule] = Field(default_factory=list)
    mode: Literal["sync", "async"] = "async"
    email: list[Annotated[str, Field(pattern=EMAIL)]] = Field(
        default_factory=list, max_length=20, description="recipients; the files are attached (or linked)"
    )


class ReportFile(BaseModel):
    name: str
    bytes: int | None
    url: str


class ReportTask(BaseModel):
    task_id: str
    status: Literal["queued", "running", "done", "failed"]
    format: str
    since: str
    until: str
    symbols: list[str]
    rules: list[str]
    requested_by: str
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    files: list[ReportFile] = Field(default_factory=list)
    email: list[str] = Field(default_factory=list)
    email_status: str | None = None
    email_attempts: int = 0
    email_error: str | None = None


def report_workers(settings: Settings, locations: dict[str, str]) -> ReportWorkers:
    """Workers building the API's reports into reports.dir (under state_dir when relative)."""
    root = Path(settings.reports.dir)
    if not root.is_absolute():
        root = Path(settings.state_dir) / root
    workers: ReportWorkers

    def build(task: TaskState, out_dir: Path) -> list[Path]:
        request = request_of(task, settings)
        path = out_dir / default_name(request, report_format(task.format).extension)
        return make_report(locations, request, task.format, path).files

    def deliver(task: TaskState, files: list[Path]) -> None:
        base = settings.reports.email.link_base_url.rstrip("/")
        links = [f"{base}/v1/reports/{task.task_id}/download?file={f.name}" for f in files] if base else []
        try:
            delivery = email_report(
                settings,
                task.email,
                request_of(task, settings),
                files,
                links,
                on_failure=lambda attempt, error: workers.log.append(
                    task, "email_failed", attempt=attempt, message=error
                ),
            )
        except DeliveryError as exc:
            workers.log.append(task, "email_failed", message=str(exc))
            return
        workers.log.append(task, "email_sent", attempt=delivery.attempts)

    workers = ReportWorkers(settings, build, deliver, root)
    return workers


def _public(workers: ReportWorkers, task: TaskState) -> ReportTask:
    files = []
    for name in task.files:
        path = workers.files_dir / task.task_id / name
        files.append(
            ReportFile(
                name=name,
                bytes=path.stat().st_size if path.is_file() else None,
                url=f"/v1/reports/{task.task_id}/download?file={name}",
            )
        )
    return ReportTask(
        task_id=task.task_id,
        status=task.status,  # type: ignore[arg-type]
        format=task.format,
        since=task.request["since"],
        until=task.request["until"],
        symbols=task.request["symbols"],
        rules=task.request["rules"],
        requested_by=task.requested_by,
        queued_at=task.queued_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        error=task.error,
        files=files,
        email=task.email,
        email_status=task.email_status,
        email_attempts=task.email_attempts,
        email_error=task.email_error,
    )


def add_report_routes(
    app: FastAPI, settings: Settings, workers: ReportWorkers, reader: Any, errors: dict[int | str, Any]
) -> None:
    """The /v1/reports routes on ``app``; ``reader`` is the dependency that admits a key that may read."""

    @app.post(
        "/v1/reports",
        tags=["reports"],
        status_code=202,
        response_model=ReportTask,
        responses={
            **errors,
            200: {
                "description": "mode sync: the report file (header X-Report-Task names its task)",
                "content": {"application/pdf": {}, "text/csv": {}, "text/html": {}},
            },
            400: {"description": "a range or filter that cannot make a report (named in detail)"},
            429: {"description": "the workers and the queue are full: try again later"},
        },
    )
    async def create_report(ask: ReportAsk, who: reader) -> Any:
        """Build a report: `sync` answers with the file; `async` answers at once with the task to follow."""
        if ask.email and not settings.reports.email.host:
            raise HTTPException(400, "e-mail is off on this server (reports.email.host) (parameter email)")
        try:
            since, until = naive_utc(ask.since), naive_utc(ask.until)
            request: ReportRequest = report_request(
                settings, since, until, tuple(ask.symbols), tuple(ask.rules)
            )
        except ReportError as exc:
            raise HTTPException(400, f"{exc} (parameters since, until)") from exc
        try:
            task, future = workers.submit(ask.format, request, list(ask.email), who.name)
        except QueueFull as exc:
            return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "30"})
        if ask.mode == "async":
            return JSONResponse(_public(workers, task).model_dump(mode="json"), status_code=202)
        try:
            files = await asyncio.wrap_future(future)
        except RendererMissing as exc:
            raise HTTPException(503, str(exc)) from exc
        except ReportError as exc:
            raise HTTPException(400, str(exc)) from exc
        return FileResponse(
            files[0],
            media_type=media_type_of(files[0]),
            filename=files[0].name,
            headers={"X-Report-Task": task.task_id},
        )

    def known(task_id: str) -> TaskState:
        task = workers.log.get(task_id)
        if task is None:
            raise HTTPException(404, f"no report task {task_id} (parameter task_id)")
        return task

    @app.get(
        "/v1/reports/status/{task_id}",
        tags=["reports"],
        response_model=ReportTask,
        responses={**errors, 404: {"description": "no such task"}},
    )
    def report_status(
        who: reader,
        task_id: Annotated[str, PathParam(pattern=TASK_ID)],
    ) -> ReportTask:
        """A report task: queued, running, done (with its files) or failed (with the error)."""
        return _public(workers, known(task_id))

    @app.get(
        "/v1/reports/{task_id}/download",
        tags=["reports"],
        response_class=FileResponse,
        responses={
            **errors,
            200: {"content": {"application/pdf": {}, "text/csv": {}, "text/html": {}}},
            404: {"description": "no such task or file"},
            409: {"description": "the report is not done"},
        },
    )
    def download_report(
        who: reader,
        task_id: Annotated[str, PathParam(pattern=TASK_ID)],
        file: Annotated[str | None, Query(max_length=200, description="one of the task's files")] = None,
    ) -> FileResponse:
        """A finished report's file (the main one unless `file` names another, e.g. the CSV summary)."""
        task = known(task_id)
        if task.status != "done":
            raise HTTPException(
                409, f"the report is {task.status}" + (f": {task.error}" if task.error else "")
            )
        path = workers.file(task, file)
        if path is None:
            raise HTTPException(
                404, f"the report has no file {file!r} (parameter file): {', '.join(task.files)}"
            )
        return FileResponse(path, media_type=media_type_of(path), filename=path.name)
