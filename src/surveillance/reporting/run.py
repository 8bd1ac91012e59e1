"""Making a report: the content for a range, rendered by a format, to files; and e-mailing them.

Shared by ``surveil report`` (the command line, cron, a Databricks job) and the API's /v1/reports.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from surveillance.config import Settings
from surveillance.reporting.content import ReportError, ReportRequest, ReportSource, build_report
from surveillance.reporting.delivery import Delivery, send_report
from surveillance.reporting.formats import report_format

log = logging.getLogger(__name__)


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


def report_locations(settings: Settings) -> dict[str, str]:
    """Every table's storage location for delta-rs: paths as configured; a table named in a catalog by
    serving.table_paths, else by asking Spark where it is (DESCRIBE DETAIL, on Databricks or a cluster).
    A table that cannot be located is reported missing, not guessed."""
    from surveillance.locations import is_table_name, table_locations

    locations = table_locations(settings)
    paths = {n: settings.serving.table_paths.get(n, location) for n, location in locations.items()}
    named = [n for n, path in paths.items() if is_table_name(path)]
    if named:
        from surveillance.spark import get_spark

        spark = get_spark(settings)
        for name in named:
            try:
                paths[name] = spark.sql(f"DESCRIBE DETAIL {locations[name]}").first()["location"]
            except Exception as exc:  # not created yet, or no permission: the report says it is missing
                log.warning("table %s (%s) cannot be located: %s", name, locations[name], exc)
    return paths


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
