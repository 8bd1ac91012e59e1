"""Making a report: the content for a range, rendered by a format, to files; and e-mailing them.

Shared by ``surveil report`` (the command line, cron, a Databricks job) and the API's /v1/reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from surveillance.config import Settings
from surveillance.reporting.content import ReportError, ReportRequest, ReportSource, build_report
from surveillance.reporting.delivery import Delivery, send_report
from surveillance.reporting.formats import report_format


@dataclass(frozen=True)
class MadeReport:
    files: list[Path]
    alerts: int
    seconds: float
    seconds_content: float


def report_request(
    settings: Settings,
    since: datetime,
    until: datetime,
    symbols: tuple[str, ...] = (),
    rules: tuple[str, ...] = (),
) -> ReportRequest:
    """A request with the configured top-alert and chart counts; times naive UTC."""
    return ReportRequest(
        naive_utc(since),
        naive_utc(until),
        symbols,
        rules,
        settings.reports.top_alerts,
        settings.reports.chart_symbols,
    )


def naive_utc(moment: datetime) -> datetime:
    try:
        return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError) as exc:
        raise ReportError(f"{moment} has no UTC equivalent") from exc


def day_range(day: str, today: date | None = None) -> tuple[datetime, datetime]:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC) → [that midnight, the next)."""
    today = today or datetime.now(UTC).date()
    named = {"today": today, "yesterday": today - timedelta(days=1)}
    try:
        chosen = named[day] if day in named else date.fromisoformat(day)
    except ValueError as exc:
        raise ReportError(f"--day {day!r} is not YYYY-MM-DD, today or yesterday") from exc
    start = datetime(chosen.year, chosen.month, chosen.day)
    return start, start + timedelta(days=1)


def default_name(request: ReportRequest, extension: str) -> str:
    stamp = "%Y%m%dT%H%M"
    return f"surveillance_report_{request.since.strftime(stamp)}_{request.until.strftime(stamp)}.{extension}"


def make_report(locations: dict[str, str], request: ReportRequest, fmt: str, path: Path) -> MadeReport:
    """Build the content for ``request`` from the tables at ``locations`` and render it as ``fmt`` to
    ``path`` (and companions beside it)."""
    renderer = report_format(fmt)
    started = time.perf_counter()
    content = build_report(ReportSource(locations), request)
    built = time.perf_counter()
    files = renderer.render(content, path)
    return MadeReport(files, content.alert_total, time.perf_counter() - started, built - started)


def email_report(
    settings: Settings,
    recipients: list[str],
    request: ReportRequest,
    files: list[Path],
    links: list[str],
    **kw: object,
) -> Delivery:
    asked = request.describe()
    subject = f"Surveillance report {asked['from']} to {asked['to']}"
    text = (
        f"The market surveillance report for {asked['from']} to {asked['to']} "
        f"(symbols: {', '.join(asked['symbols']) if isinstance(asked['symbols'], list) else 'all'}; "
        f"rules: {', '.join(asked['rules']) if isinstance(asked['rules'], list) else 'all'}).\n"
        f"Files: {', '.join(f.name for f in files)}."
    )
    return send_report(settings.reports.email, recipients, subject, text, files, links, **kw)  # type: ignore[arg-type]
