"""The alerts API and web console: FastAPI over the lakehouse (delta-rs + DuckDB), no JVM.

Reads: alerts with filters and cursor pages, an alert with its quotes and case history, symbols, bars,
data quality, health. Writes: analysts' actions to the append-only ``alert_actions`` table. Live: new
alerts from the alerts topic as Server-Sent Events. Every /v1 route needs an API key (auth.py).
"""

import asyncio
import base64
import binascii
import gc
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from kafka.errors import KafkaError
from pydantic import BaseModel, Field, model_validator

from surveillance.config import Settings, interval_seconds
from surveillance.observability.api_metrics import ApiMetrics, BacklogCollector, DriftCollector
from surveillance.serving.actions_table import ActionLog, ActionRecord
from surveillance.serving.alert_status import (
    ACTIONS,
    NOTE_REQUIRED,
    STATUSES,
    CaseState,
    TransitionError,
    allowed_actions,
)
from surveillance.serving.auth import ApiKeys, Principal
from surveillance.serving.delta_files import TableNotReadable
from surveillance.serving.lakehouse_reader import AlertFilters, Lakehouse, Position
from surveillance.serving.live_feed import (
    AlertTail,
    BadPosition,
    NoAlertsTopic,
    parse_position,
    position_frame,
    sse_frames,
)
from surveillance.serving.report_routes import add_report_routes, report_workers

log = logging.getLogger(__name__)

RULES = ("price_jump", "return_zscore", "volume_spike", "model")
Rule = Literal["price_jump", "return_zscore", "volume_spike", "model"]
Severity = Literal["low", "medium", "high"]
Confidence = Literal["low", "high"]
Status = Literal["open", "acknowledged", "assigned", "escalated", "closed"]
ActionName = Literal["acknowledge", "assign", "escalate", "close", "reopen"]
ALERT_ID = r"^[0-9a-f]{32}$"
# Event times a cursor may carry, in microseconds since the epoch: what a datetime holds (years 1 to 9999).
CURSOR_MICROS = (-62_135_596_800_000_000, 253_402_300_799_999_998)
SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._\-=^/]{0,31}$"
STATIC = resources.files("surveillance.serving") / "static"
assert set(STATUSES) == set(Status.__args__) and set(ACTIONS) == set(ActionName.__args__)  # type: ignore[attr-defined]


# Response bodies (they make the OpenAPI document, which schemathesis checks every response against) --


class ErrorBody(BaseModel):
    detail: str


class Alert(BaseModel):
    alert_id: str
    symbol: str
    event_time: datetime
    event_id: str | None = None
    rule: str
    score: float | None = None
    threshold: float | None = None
    severity: str | None = None
    confidence: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    detected_at: datetime | None = None
    alert_date: date | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_kafka_timestamp: datetime | None = None
    episode_id: str | None = None
    status: Status
    assignee: str | None = None


class AlertPage(BaseModel):
    alerts: list[Alert]
    count: int = Field(description="alerts in this page")
    next_cursor: str | None = Field(description="pass as `cursor`, with the same filters, for the next page")


class Quote(BaseModel):
    event_id: str | None
    event_time: datetime
    price: float | None
    bid: float | None
    ask: float | None
    volume: int | None
    is_late: bool | None
    dq_warnings: list[str] | None


class Action(BaseModel):
    action_id: str
    alert_id: str
    action: str
    status_before: str
    status_after: str
    assignee: str | None
    note: str
    actor: str
    role: str
    acted_at: datetime


class Window(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime


class AlertDetail(BaseModel):
    alert: Alert
    quotes: list[Quote]
    window: Window
    actions: list[Action]
    status: Status
    assignee: str | None
    allowed_actions: list[str]


class ActionRequest(BaseModel):
    action: ActionName
    note: str = Field("", max_length=4000)
    assignee: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _complete(self) -> "ActionRequest":
        # Checked here, so FastAPI answers 422 in its documented shape.
        if self.action in NOTE_REQUIRED and not self.note.strip():
            raise ValueError(f"{self.action} needs a note saying why (field note)")
        if self.action == "assign" and not (self.assignee and self.assignee.strip()):
            raise ValueError("assign needs an assignee (field assignee)")
        return self


class ActionResult(BaseModel):
    action: Action
    status: Status
    assignee: str | None
    allowed_actions: list[str]


class SymbolInfo(BaseModel):
    symbol: str
    quotes: int
    alerts: int
    last_quote: datetime | None


class Symbols(BaseModel):
    symbols: list[SymbolInfo]


class Bar(BaseModel):
    bar_start: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: int | None
    vwap: float | None
    trade_count: int | None


class Bars(BaseModel):
    symbol: str
    bars: list[Bar]


class FailedExpectation(BaseModel):
    suite: str | None
    expectation: str | None
    severity: str | None
    unexpected_count: int | None
    element_count: int | None


class QualityBatch(BaseModel):
    stream_id: str | None
    batch_id: int | None
    run_time: datetime | None
    expectations: int
    status: Literal["ok", "warning", "error"]
    failed: list[FailedExpectation]


class Quality(BaseModel):
    batches: list[QualityBatch]


class TableHealth(BaseModel):
    reachable: bool
    version: int | None = None
    files: int | None = None
    last_commit: datetime | None = None
    error: str | None = None


class QueryHealth(BaseModel):
    query_name: str
    batch_id: int | None
    finished_at: datetime | None
    seconds_since_batch: float | None
    max_event_time: datetime | None
    event_time_lag_seconds: float | None
    kafka_lag_records: int | None = Field(
        None,
        description="quotes in the topic the query has not committed: end offsets minus the offsets of "
        "its last committed batch (null when its checkpoint is not on this machine or Kafka is away)",
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    tables: dict[str, TableHealth]
    queries: list[QueryHealth]
    checked_at: datetime


class WhoAmI(BaseModel):
    name: str
    role: str


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
    403: {"model": ErrorBody, "description": "the key's role may not do this"},
    503: {"model": ErrorBody, "description": "a table the answer needs cannot be read"},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "a parameter that cannot be used (named in detail), or a body that is not JSON",
        404: "no such alert or symbol",
        409: "the alert's status does not allow this action",
    }
    return {
        **AUTH_ERRORS,
        **{code: {"model": ErrorBody, "description": descriptions[code]} for code in codes},
    }


# The application -------------------------------------------------------------------------------------


class Services:
    """What the routes share: settings, keys, the lakehouse reader and the action log."""

    def __init__(self, settings: Settings, locations: dict[str, str], keys: ApiKeys) -> None:
        self.settings = settings
        self.keys = keys
        self.lakehouse = Lakehouse(
            locations,
            interval_seconds(settings.serving.refresh_interval),
            cache_bytes=settings.serving.cache_mb << 20,
            duckdb_setup=settings.serving.duckdb_setup,
        )
        self.actions = ActionLog(locations["alert_actions"])
        # Live clients block a thread each in Kafka polls: their own pool, so they never starve the
        # threads the other routes run on.
        live_clients = settings.serving.live.max_clients
        self.live_threads = ThreadPoolExecutor(live_clients + 1, thread_name_prefix="live-feed")
        self.live_slots = threading.BoundedSemaphore(live_clients)
        self.reports = report_workers(settings, locations)
        self.started = time.monotonic()
        self.backlog: tuple[float, dict[str, dict[int, int]]] | None = None
        self.metrics = ApiMetrics()
        self.metrics.add_collector(
            BacklogCollector(lambda: _kafka_backlog(self), settings.kafka.topics.quotes)
        )
        if "drift_results" in locations:
            self.metrics.add_collector(DriftCollector(locations["drift_results"]))

    def warm_up(self) -> None:
        """Read the snapshots, footers and symbol lists once, so the first requests are not the slow ones."""
        self.actions.refresh()
        for name in self.lakehouse.tables:
            try:
                self.lakehouse.snapshot(name)
            except TableNotReadable as exc:
                log.warning("not readable yet: %s", exc)
        try:
            self.lakehouse.warm()
            self.lakehouse.symbols()
            self.lakehouse.list_alerts(AlertFilters(), None, 1)
        except TableNotReadable:
            pass


def create_app(settings: Settings, locations: dict[str, str], keys: ApiKeys, warm: bool = True) -> FastAPI:
    """The FastAPI application for the lakehouse at ``locations`` (paths or URIs delta-rs opens)."""
    services = Services(settings, locations, keys)
    serving = settings.serving
    max_window = interval_seconds(serving.max_quote_window)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Reports the last process left: running ones are marked failed, queued ones built.
        await asyncio.to_thread(services.reports.recover)
        if warm:
            await asyncio.to_thread(services.warm_up)
        # What warm-up built lives as long as the process: keep the collector from walking it again
        # and again (its full passes were the slowest requests' extra milliseconds).
        gc.collect()
        gc.freeze()
        yield
        # Open live feeds end with the process; their consumers close as their threads finish.
        services.live_threads.shutdown(wait=False, cancel_futures=True)
        services.reports.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="Market surveillance API",
        version="1.0.0",
        description="Alerts, their evidence and case handling, read from the surveillance lakehouse. "
        "Send an API key as `X-API-Key` (or `Authorization: Bearer`).",
    )
    app.state.services = services
    app.middleware("http")(services.metrics.middleware)
    if serving.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=serving.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "Last-Event-ID"],
        )

    @app.exception_handler(TableNotReadable)
    async def _unreadable(request: Request, exc: TableNotReadable) -> JSONResponse:
        return JSONResponse({"detail": f"a table cannot be read: {exc}"}, status_code=503)

    def principal(
        x_api_key: Annotated[str | None, Header(description="an API key")] = None,
        authorization: Annotated[str | None, Header(description="`Bearer <API key>`")] = None,
    ) -> Principal:
        presented = x_api_key
        if presented is None and authorization and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        found = services.keys.authenticate(presented)
        if found is None:
            raise HTTPException(
                401,
                "an API key is required (header X-API-Key)" if not presented else "unknown API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    def reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.may("read"):
            raise HTTPException(403, f"role {who.role} may not read")
        return who

    def actor(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.may("act"):
            raise HTTPException(403, f"role {who.role} may not act on alerts; an analyst key is needed")
        return who

    Reader = Annotated[Principal, Depends(reader)]

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics (no key: scraped by Prometheus; counts and timings, never data)."""
        body, content_type = services.metrics.exposition()
        return Response(body, media_type=content_type)

    add_report_routes(app, settings, services.reports, Reader, AUTH_ERRORS)

    # Alerts ------------------------------------------------------------------------------------

    def page(
        symbol: str | None,
        rule: str | None,
        severity: str | None,
        confidence: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> AlertPage:
        since_utc, until_utc = _query_time(since, "since"), _query_time(until, "until")
        if since_utc is not None and until_utc is not None and since_utc >= until_utc:
            raise HTTPException(400, "until must be later than since (parameter until)")
        if symbol is not None:
            _known_symbol(services, symbol)
        fingerprint = _fingerprint(symbol, rule, severity, confidence, status, since_utc, until_utc)
        after = _decode_cursor(cursor, fingerprint) if cursor else None
        only, leave_out = _status_sets(services.actions, status)
        filters = AlertFilters(symbol, rule, severity, confidence, since_utc, until_utc, only, leave_out)
        rows, more = services.lakehouse.list_alerts(filters, after, limit)
        alerts = [_with_case(services.actions, row) for row in rows]
        next_cursor = _encode_cursor(rows[-1], fingerprint) if more and rows else None
        return AlertPage(alerts=alerts, count=len(alerts), next_cursor=next_cursor)

    limit_query = Query(ge=1, le=serving.max_limit, description="alerts per page")
    symbol_query = Query(pattern=SYMBOL, description="one symbol")
    since_query = Query(description="event time from (ISO 8601; UTC when no offset), inclusive")
    until_query = Query(description="event time until (ISO 8601), exclusive")
    cursor_query = Query(max_length=512, description="next_cursor of the previous page")

    @app.get("/v1/alerts", response_model=AlertPage, responses=_errors(400, 404), tags=["alerts"])
    def list_alerts(
        who: Reader,
        symbol: Annotated[str | None, symbol_query] = None,
        rule: Rule | None = None,
        severity: Severity | None = None,
        confidence: Confidence | None = None,
        status: Status | None = None,
        since: Annotated[datetime | None, since_query] = None,
        until: Annotated[datetime | None, until_query] = None,
        limit: Annotated[int, limit_query] = serving.default_limit,
        cursor: Annotated[str | None, cursor_query] = None,
    ) -> Response:
        """Alerts newest first (event time), filtered, a page at a time."""
        return _json(page(symbol, rule, severity, confidence, status, since, until, limit, cursor))

    @app.get(
        "/alerts", response_model=AlertPage, responses=_errors(400, 404), tags=["legacy"], deprecated=True
    )
    def legacy_alerts(
        who: Reader,
        limit: Annotated[int, limit_query] = serving.default_limit,
        cursor: Annotated[str | None, cursor_query] = None,
    ) -> Response:
        """The newest alerts (the old system's path; /v1/alerts has the filters)."""
        return _json(page(None, None, None, None, None, None, None, limit, cursor))

    @app.get(
        "/alerts/{symbol}",
        response_model=AlertPage,
        responses=_errors(400, 404),
        tags=["legacy"],
        deprecated=True,
    )
    def legacy_symbol_alerts(
        who: Reader,
        symbol: Annotated[str, PathParam(pattern=SYMBOL)],
        limit: Annotated[int, limit_query] = serving.default_limit,
        cursor: Annotated[str | None, cursor_query] = None,
    ) -> Response:
        """One symbol's newest alerts (the old system's path)."""
        return _json(page(symbol, None, None, None, None, None, None, limit, cursor))

    @app.get(
        "/v1/alerts/live",
        tags=["alerts"],
        responses={
            **_errors(400),
            200: {"content": {"text/event-stream": {}}, "description": "alert events"},
        },
        response_class=StreamingResponse,
    )
    async def live_alerts(
        request: Request,
        who: Reader,
        last_event_id: Annotated[str | None, Header(max_length=2000)] = None,
    ) -> StreamingResponse:
        """New alerts as Server-Sent Events (event `alert`). Reconnect with `Last-Event-ID` to resume."""
        try:
            resume = parse_position(last_event_id) if last_event_id else None
        except BadPosition as exc:
            raise HTTPException(400, f"{exc} (header Last-Event-ID)") from exc
        heartbeat = interval_seconds(serving.live.heartbeat)
        if not services.live_slots.acquire(blocking=False):
            raise HTTPException(
                503, f"{serving.live.max_clients} live clients already (serving.live.max_clients)"
            )
        loop = asyncio.get_running_loop()
        try:
            tail = await loop.run_in_executor(
                services.live_threads, AlertTail, settings.kafka, resume, serving.live.dedup_lookback
            )
        except BaseException as exc:
            services.live_slots.release()
            if isinstance(exc, NoAlertsTopic):
                raise HTTPException(503, str(exc)) from exc
            if isinstance(exc, KafkaError):
                raise HTTPException(
                    503, f"Kafka at {settings.kafka.bootstrap_servers} cannot be reached: {exc}"
                ) from exc
            raise

        async def frames() -> Any:
            last_sent = time.monotonic()
            try:
                # The position at once: a client that drops before its first alert resumes from here.
                yield "retry: 2000\n" + position_frame(tail.current_position())
                while not await request.is_disconnected():
                    events = await loop.run_in_executor(services.live_threads, tail.poll, 1.0)
                    for frame in sse_frames(events, lambda alert: _live_alert(services.actions, alert)):
                        yield frame
                        last_sent = time.monotonic()
                    if time.monotonic() - last_sent >= heartbeat:
                        # Records passed over (resent duplicates, foreign records) move the position too.
                        yield position_frame(tail.current_position(), "ping")
                        last_sent = time.monotonic()
            finally:
                # Not awaited: a cancelled stream cannot wait; the close runs on a live thread.
                services.live_threads.submit(tail.close)
                services.live_slots.release()

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/alerts/{alert_id}", response_model=AlertDetail, responses=_errors(404), tags=["alerts"])
    def alert_detail(
        who: Reader,
        alert_id: Annotated[str, PathParam(pattern=ALERT_ID, description="32 hex characters")],
        window_seconds: Annotated[
            int, Query(ge=1, le=max_window, description="quotes shown each side of the alert")
        ] = interval_seconds(serving.quote_window),
    ) -> Response:
        """The alert, its evidence, its symbol's quotes around it, its status and its whole history."""
        row = services.lakehouse.find_alert(alert_id)
        if row is None:
            raise HTTPException(404, f"no alert {alert_id} (parameter alert_id)")
        moment = _naive_utc(row["event_time"])
        quotes = services.lakehouse.quotes_around(row["symbol"], moment, window_seconds)
        services.actions.refresh()
        state = services.actions.state(alert_id)
        spread = timedelta(seconds=window_seconds)
        return _json(
            AlertDetail(
                alert=_with_case(services.actions, row),
                quotes=[Quote(**q) for q in quotes],
                window=Window(**{"from": row["event_time"] - spread, "to": row["event_time"] + spread}),
                actions=[_action(r) for r in services.actions.history(alert_id)],
                status=state.status,
                assignee=state.assignee,
                allowed_actions=allowed_actions(state),
            )
        )

    @app.post(
        "/v1/alerts/{alert_id}/actions",
        response_model=ActionResult,
        status_code=201,
        responses=_errors(400, 404, 409),
        tags=["alerts"],
    )
    def act_on_alert(
        body: ActionRequest,
        who: Annotated[Principal, Depends(actor)],
        alert_id: Annotated[str, PathParam(pattern=ALERT_ID, description="32 hex characters")],
    ) -> ActionResult:
        """Acknowledge, assign, escalate, close or reopen the alert; recorded in alert_actions."""
        row = services.lakehouse.find_alert(alert_id)
        if row is None:
            raise HTTPException(404, f"no alert {alert_id} (parameter alert_id)")
        try:
            record, state = services.actions.record(
                alert_id,
                body.action,
                body.note.strip(),
                actor=who.name,
                role=who.role,
                assignee=body.assignee,
                alert_symbol=row["symbol"],
                alert_event_time=row["event_time"],
            )
        except TransitionError as exc:
            raise HTTPException(409, str(exc)) from exc
        return ActionResult(
            action=_action(record),
            status=state.status,
            assignee=state.assignee,
            allowed_actions=allowed_actions(state),
        )

    # Symbols, bars, quality, health --------------------------------------------------------------

    @app.get("/v1/symbols", response_model=Symbols, responses=_errors(), tags=["market"])
    def symbols(who: Reader) -> Response:
        """Every symbol with quotes or alerts, with their counts."""
        return _json(
            Symbols(symbols=[SymbolInfo(**entry) for entry in services.lakehouse.symbols().values()])
        )

    @app.get("/v1/symbols/{symbol}/bars", response_model=Bars, responses=_errors(400, 404), tags=["market"])
    def bars(
        who: Reader,
        symbol: Annotated[str, PathParam(pattern=SYMBOL)],
        since: Annotated[datetime | None, Query(description="bar start from (ISO 8601), inclusive")] = None,
        until: Annotated[datetime | None, Query(description="bar start until (ISO 8601), exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1440,
    ) -> Bars:
        """The symbol's one-minute bars (gold), oldest first."""
        since_utc, until_utc = _query_time(since, "since"), _query_time(until, "until")
        if since_utc is not None and until_utc is not None and since_utc >= until_utc:
            raise HTTPException(400, "until must be later than since (parameter until)")
        _known_symbol(services, symbol)
        rows = services.lakehouse.bars(symbol, since_utc, until_utc, limit)
        return Bars(symbol=symbol, bars=[Bar(**row) for row in rows])

    @app.get("/v1/quality", response_model=Quality, responses=_errors(), tags=["operations"])
    def quality(who: Reader, batches: Annotated[int, Query(ge=1, le=500)] = 20) -> Quality:
        """The data-quality verdicts of the last micro-batches, newest first."""
        return Quality(batches=[QualityBatch(**b) for b in services.lakehouse.quality(batches)])

    @app.get("/v1/health", response_model=Health, responses=_errors(), tags=["operations"])
    def health(who: Reader) -> Health:
        """Whether each table can be read, each query's last batch and how far behind it is."""
        return _health(services)

    @app.get("/v1/whoami", response_model=WhoAmI, responses=_errors(), tags=["operations"])
    def whoami(who: Reader) -> WhoAmI:
        """The key's name and role (the console shows them)."""
        return WhoAmI(name=who.name, role=who.role)

    # The console ---------------------------------------------------------------------------------

    def static_file(name: str, media_type: str | None = None) -> FileResponse:
        with resources.as_file(STATIC / name) as path:
            return FileResponse(Path(path), media_type=media_type)

    @app.get("/", include_in_schema=False)
    def console_index() -> FileResponse:
        return static_file("index.html")

    @app.get("/alert.html", include_in_schema=False)
    def console_alert() -> FileResponse:
        return static_file("alert.html")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        import plotly

        return FileResponse(
            Path(plotly.__file__).parent / "package_data" / "plotly.min.js", media_type="text/javascript"
        )

    @app.get("/static/{name}", include_in_schema=False)
    def console_static(name: Annotated[str, PathParam(pattern=r"^[a-z]+\.(js|css)$")]) -> FileResponse:
        if not (STATIC / name).is_file():
            raise HTTPException(404, f"no file {name}")
        return static_file(name, "text/javascript" if name.endswith(".js") else "text/css")

    return app


# Helpers -------------------------------------------------------------------------------------------


def _json(body: BaseModel) -> Response:
    """The body serialized once, by pydantic (FastAPI would validate a returned model a second time);
    the route's response_model still documents it."""
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _query_time(moment: datetime | None, parameter: str) -> datetime | None:
    """A time from the query as naive UTC; one that has no UTC equivalent is the client's error."""
    try:
        return _naive_utc(moment)
    except (OverflowError, ValueError) as exc:
        raise HTTPException(400, f"{moment} is out of range in UTC (parameter {parameter})") from exc


def _known_symbol(services: Services, symbol: str) -> None:
    if symbol not in services.lakehouse.symbols():
        raise HTTPException(404, f"unknown symbol {symbol!r} (parameter symbol): no quotes or alerts for it")


def _fingerprint(*filters: Any) -> str:
    return hashlib.sha256(json.dumps([str(f) for f in filters]).encode()).hexdigest()[:16]


def _encode_cursor(row: dict[str, Any], fingerprint: str) -> str:
    moment = _naive_utc(row["event_time"])
    micros = (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    raw = json.dumps([micros, row["alert_id"], fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, alert_id, seen = json.loads(raw)
        if not (type(micros) is int and isinstance(alert_id, str) and isinstance(seen, str)):
            raise ValueError("shape")
        if not (CURSOR_MICROS[0] <= micros <= CURSOR_MICROS[1] and re.match(ALERT_ID, alert_id)):
            raise ValueError("range")
    except (ValueError, binascii.Error, TypeError) as exc:
        raise HTTPException(400, "not a cursor this API wrote (parameter cursor)") from exc
    if seen != fingerprint:
        raise HTTPException(
            400, "the cursor belongs to other filters: repeat the filters it came with (parameter cursor)"
        )
    return Position(micros, alert_id)


def _status_sets(actions: ActionLog, status: str | None) -> tuple[frozenset[str] | None, frozenset[str]]:
    if status is None:
        return None, frozenset()
    actions.refresh()
    states = actions.states()
    if status == "open":
        return None, frozenset(a for a, s in states.items() if s.status != "open")
    return frozenset(a for a, s in states.items() if s.status == status), frozenset()


def _with_case(actions: ActionLog, row: dict[str, Any]) -> Alert:
    state: CaseState = actions.state(row["alert_id"])
    return Alert(
        **{k: v for k, v in row.items() if k in Alert.model_fields},
        status=state.status,
        assignee=state.assignee,
    )


def _live_alert(actions: ActionLog, alert: dict[str, Any]) -> dict[str, Any]:
    """A topic record's alert in the API's form (details parsed, status from the actions)."""
    details = alert.get("details")
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            details = {"unparsed": details}
    row = {**alert, "details": details or {}}
    return _with_case(actions, row).model_dump(mode="json")


def _action(record: ActionRecord) -> Action:
    return Action(**{k: getattr(record, k) for k in Action.model_fields})


def _health(services: Services) -> Health:
    tables: dict[str, TableHealth] = {}
    for name in services.lakehouse.tables:
        try:
            snapshot = services.lakehouse.snapshot(name)
            tables[name] = TableHealth(
                reachable=True,
                version=snapshot.version,
                files=len(snapshot.files),
                last_commit=snapshot.commit_time,
            )
        except TableNotReadable as exc:
            tables[name] = TableHealth(reachable=False, error=str(exc))
    now = datetime.now(UTC)
    queries = []
    if tables.get("stream_progress", TableHealth(reachable=False)).reachable:
        for batch in services.lakehouse.last_batches():
            finished, newest = batch["finished_at"], batch["max_event_time"]
            queries.append(
                QueryHealth(
                    query_name=batch["query_name"],
                    batch_id=batch["batch_id"],
                    finished_at=finished,
                    seconds_since_batch=(now - finished).total_seconds() if finished else None,
                    max_event_time=newest,
                    event_time_lag_seconds=(finished - newest).total_seconds()
                    if finished and newest
                    else None,
                )
            )
    backlog = {query: sum(partitions.values()) for query, partitions in _kafka_backlog(services).items()}
    queries = [q.model_copy(update={"kafka_lag_records": backlog.get(q.query_name)}) for q in queries]
    status: Literal["ok", "degraded"] = "ok" if all(t.reachable for t in tables.values()) else "degraded"
    return Health(status=status, tables=tables, queries=queries, checked_at=now)


def _kafka_backlog(services: Services) -> dict[str, dict[int, int]]:
    """{query: {partition: quotes not yet committed}}, for queries whose checkpoint is a local folder;
    cached 2 s."""
    cached = services.backlog
    if cached is not None and time.monotonic() - cached[0] < 2.0:
        return cached[1]
    from surveillance.checkpoints import committed_offsets, query_checkpoints
    from surveillance.kafka.admin import topic_end_offsets

    backlog: dict[str, dict[int, int]] = {}
    # Checkpoints on this machine's disk; one not written yet means nothing committed: with
    # startingOffsets=earliest every record in the topic is still to come.
    before_start = services.settings.stream.starting_offsets == "earliest"
    local = {
        q: c
        for q, c in query_checkpoints(services.settings).items()
        if Path(c).is_dir() or (before_start and "://" not in c and Path(c).is_absolute())
    }
    if local:
        try:
            ends = topic_end_offsets(services.settings.kafka, services.settings.kafka.topics.quotes)
        except Exception as exc:  # Kafka away or the topic gone: health says so through nulls
            log.info("no Kafka end offsets for health: %s", exc)
            ends = None
        if ends is not None:
            for query, checkpoint in local.items():
                committed = committed_offsets(checkpoint)
                backlog[query] = {p: max(0, end - committed.get(p, 0)) for p, end in ends.items()}
    services.backlog = (time.monotonic(), backlog)
    return backlog
