"""Reports through the real API over tables the real stream wrote: the PDF's numbers equal the tables'
(read with delta-rs), the CSV equals the alerts of the range, the HTML renders in Chromium, background
tasks move through their states, survive a SIGKILL of the API, and refuse work beyond the queue, and a
report is e-mailed through a real SMTP server (STARTTLS, login, one transient refusal)."""

from __future__ import annotations

import io
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import pytest
from api_server import RunningApi, running_api
from deltalake import DeltaTable
from smtp_server import PASSWORD, USER, MailServer, smtp_server

from surveillance.system_packages import ensure_program

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration

KEY = secrets.token_urlsafe(24)
REPORTS = Path(__file__).resolve().parents[2] / "reports"


@dataclass
class ReportsApi:
    pipeline: Pipeline
    api: RunningApi
    mail: MailServer
    since: datetime
    until: datetime

    def post(self, **body: Any) -> httpx.Response:
        body = {"since": f"{self.since.isoformat()}Z", "until": f"{self.until.isoformat()}Z", **body}
        return httpx.post(f"{self.api.base}/v1/reports", json=body, headers={"X-API-Key": KEY}, timeout=120)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.api.base}{path}", params=params, headers={"X-API-Key": KEY}, timeout=60)

    def table(self, name: str) -> pd.DataFrame:
        return DeltaTable(self.pipeline.locations[name]).to_pandas()

    def wait(self, task_id: str, until: Any, seconds: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            status = self.get(f"/v1/reports/status/{task_id}").json()
            if until(status):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.1)


def _utc(series: pd.Series) -> pd.Series:
    return series.dt.tz_convert("UTC").dt.tz_localize(None) if series.dt.tz is not None else series


def api_env() -> dict[str, str]:
    return {
        "SURVEIL_API_KEYS": f"rita:viewer:{KEY}",
        "SURVEIL_SMTP_USER": USER,
        "SURVEIL_SMTP_PASSWORD": PASSWORD,
    }


def email_settings(mail: MailServer) -> list[str]:
    return [
        f"reports.email.host={mail.host}",
        f"reports.email.port={mail.port}",
        "reports.email.sender=surveillance@desk.example",
        f"reports.email.ca_file={mail.ca_file}",
        "reports.email.retry_delay=1 second",
    ]


@pytest.fixture(scope="module")
def reports_api(
    written_lakehouse: Pipeline, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReportsApi]:
    workdir = tmp_path_factory.mktemp("reports_api")
    silver = DeltaTable(written_lakehouse.locations["silver_quotes"]).to_pandas()
    times = _utc(silver.event_time)
    first = times.min().to_pydatetime().replace(hour=0, minute=0, second=0, microsecond=0)
    last = times.max().to_pydatetime()
    with smtp_server(workdir) as mail:
        extra = [f"reports.dir={workdir}/reports", *email_settings(mail)]
        with running_api(written_lakehouse.settings, api_env(), workdir / "api.log", KEY, extra) as api:
            yield ReportsApi(
                written_lakehouse, api, mail, first, last.replace(microsecond=0) + timedelta(seconds=1)
            )


def _tokens_follow(tokens: list[str], *sequence: str) -> bool:
    n = len(sequence)
    return any(tuple(tokens[i : i + n]) == sequence for i in range(len(tokens) - n + 1))


def test_pdf_numbers_equal_the_tables(reports_api: ReportsApi) -> None:
    from pypdf import PdfReader

    response = reports_api.post(format="pdf", mode="sync")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf" and response.headers["x-report-task"]
    pdf = REPORTS / "surveillance_report_test.pdf"
    pdf.parent.mkdir(parents=True, exist_ok=True)
    pdf.write_bytes(response.content)
    pages = PdfReader(io.BytesIO(response.content)).pages
    texts = [page.extract_text() for page in pages]
    assert all(f"page {n} of {len(pages)}" in text for n, text in enumerate(texts, start=1))
    tokens = " ".join(texts).split()

    since, until = reports_api.since, reports_api.until
    silver = reports_api.table("silver_quotes")
    silver = silver[(_utc(silver.event_time) >= since) & (_utc(silver.event_time) < until)]
    alerts = reports_api.table("alerts")
    alerts = alerts[(_utc(alerts.event_time) >= since) & (_utc(alerts.event_time) < until)]
    bars = reports_api.table("gold_bars_1m")
    bars = bars[(_utc(bars.bar_start) >= since) & (_utc(bars.bar_start) < until)]
    batches = set(zip(silver.stream_id, silver.batch_id, strict=True))

    def of_batches(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[[key in batches for key in zip(frame.stream_id, frame.batch_id, strict=True)]]

    bronze, quarantine = (
        of_batches(reports_api.table("bronze_quotes")),
        of_batches(reports_api.table("quarantine_quotes")),
    )
    for table, count in {
        "bronze_quotes": len(bronze),
        "silver_quotes": len(silver),
        "quarantine_quotes": len(quarantine),
        "gold_bars_1m": len(bars),
        "alerts": len(alerts),
    }.items():
        assert count > 0 and _tokens_follow(tokens, table, f"{count:,}"), (table, count)
    for (rule, severity, confidence), count in (
        alerts.groupby(["rule", "severity", "confidence"]).size().items()
    ):
        assert _tokens_follow(tokens, rule, severity, confidence, f"{count:,}"), (rule, severity, confidence)
    for reason, count in quarantine.reason.value_counts().items():
        if " " not in reason:  # a reason of several words wraps in its cell
            assert _tokens_follow(tokens, reason, f"{count:,}"), reason
    assert f"{len(alerts):,} alerts in all." in " ".join(tokens)
    # A person looks at the first page and a chart page.
    pdftoppm = ensure_program("pdftoppm", ["poppler-utils"], "rendering the PDF's pages")
    subprocess.run(
        [
            pdftoppm,
            "-png",
            "-r",
            "80",
            "-f",
            "1",
            "-l",
            "1",
            str(pdf),
            str(REPORTS / "surveillance_report_page"),
        ],
        check=True,
    )
    assert list(REPORTS.glob("surveillance_report_page-*1.png"))


def test_async_csv_equals_the_alerts_of_the_range(reports_api: ReportsApi) -> None:
    response = reports_api.post(format="csv", mode="async")
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] in ("queued", "running") and task["requested_by"] == "rita"
    done = reports_api.wait(task["task_id"], lambda s: s["status"] in ("done", "failed"))
    assert done["status"] == "done", done
    assert done["started_at"] and done["finished_at"] and len(done["files"]) == 2
    alerts_file = reports_api.get(done["files"][0]["url"].split("?")[0], file=done["files"][0]["name"])
    assert alerts_file.status_code == 200 and alerts_file.headers["content-type"].startswith("text/csv")
    read = pd.read_csv(io.BytesIO(alerts_file.content), dtype=str, keep_default_na=False)
    alerts = reports_api.table("alerts")
    alerts = alerts.assign(t=_utc(alerts.event_time))
    alerts = alerts[(alerts.t >= reports_api.since) & (alerts.t < reports_api.until)]
    assert list(read.alert_id) == list(alerts.sort_values(["t", "alert_id"], ascending=False).alert_id)
    summary = reports_api.get(f"/v1/reports/{task['task_id']}/download", file=done["files"][1]["name"])
    assert "section,key,value" in summary.text
    # The task's history, read from its table with delta-rs: queued, running, done.
    history = DeltaTable(str(Path(reports_api.api.log).parent / "reports" / "report_tasks")).to_pandas()
    mine = history[history.task_id == task["task_id"]].sort_values("at")
    assert list(mine.event) == ["queued", "running", "done"]
    # Unknown tasks and files.
    assert reports_api.get(f"/v1/reports/status/{'0' * 32}").status_code == 404
    assert reports_api.get(f"/v1/reports/{task['task_id']}/download", file="nope.csv").status_code == 404
    bad = reports_api.post(format="csv", symbols=["NOPE"], mode="sync")
    assert bad.status_code == 400 and "symbols" in bad.text


def test_html_report_renders_in_chromium(reports_api: ReportsApi, tmp_path: Path) -> None:
    from browser import check_html_pages

    response = reports_api.post(format="html", mode="sync")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = tmp_path / "surveillance_report.html"
    page.write_bytes(response.content)
    found = check_html_pages({"surveillance_report": page}, REPORTS / "pages", tmp_path / "chromium")
    assert found["surveillance_report"] >= 2  # alerts by rule, and at least one symbol's price


def test_report_is_emailed_with_a_retry(reports_api: ReportsApi) -> None:
    inbox = reports_api.mail.inbox
    inbox.refuse_next = 1
    before = len(inbox.messages)
    task = reports_api.post(format="csv", mode="async", email=["compliance@desk.example"]).json()
    status = reports_api.wait(
        task["task_id"], lambda s: s["email_status"] is not None or s["status"] == "failed"
    )
    assert status["status"] == "done" and status["email_status"] == "sent" and status["email_attempts"] == 2
    message: EmailMessage = inbox.messages[before]
    assert message["To"] == "compliance@desk.example" and "Surveillance report" in message["Subject"]
    attached = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    for file in status["files"]:
        downloaded = reports_api.get(f"/v1/reports/{task['task_id']}/download", file=file["name"]).content
        body = attached[file["name"]]
        assert (body.encode() if isinstance(body, str) else body) == downloaded


@dataclass
class Client:
    base: str
    body: dict[str, Any]

    def post(self, fmt: str) -> httpx.Response:
        return httpx.post(
            f"{self.base}/v1/reports",
            json={**self.body, "format": fmt},
            headers={"X-API-Key": KEY},
            timeout=60,
        )

    def status(self, task_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.base}/v1/reports/status/{task_id}", headers={"X-API-Key": KEY}).json()

    def download(self, task_id: str) -> httpx.Response:
        return httpx.get(f"{self.base}/v1/reports/{task_id}/download", headers={"X-API-Key": KEY}, timeout=60)


def test_queue_limit_and_a_killed_api(written_lakehouse: Pipeline, tmp_path: Path) -> None:
    """One worker, one place in the queue: a third report is a 429. SIGKILL while a report is built: after
    the restart it is failed (interrupted), the queued one is built, and a finished one still downloads."""
    extra = [f"reports.dir={tmp_path}/reports", "reports.workers=1", "reports.queue_limit=1"]
    silver = DeltaTable(written_lakehouse.locations["silver_quotes"]).to_pandas()
    since = _utc(silver.event_time).min().floor("D")
    body = {"since": f"{since.isoformat()}Z", "until": f"{(since + pd.Timedelta(days=1)).isoformat()}Z"}
    body["mode"] = "async"
    env = {"SURVEIL_API_KEYS": f"rita:viewer:{KEY}"}
    with running_api(written_lakehouse.settings, env, tmp_path / "api.log", KEY, extra) as api:
        client = Client(api.base, body)
        finished = client.post("csv").json()["task_id"]
        while client.status(finished)["status"] != "done":
            time.sleep(0.1)
        before = client.download(finished).content
        first, second = client.post("pdf"), client.post("pdf")
        assert (first.status_code, second.status_code) == (202, 202)
        third = client.post("pdf")
        assert third.status_code == 429 and third.headers["retry-after"] and "try again later" in third.text
        interrupted, waiting = first.json()["task_id"], second.json()["task_id"]
        while client.status(interrupted)["status"] != "running":
            time.sleep(0.02)
        assert client.status(waiting)["status"] == "queued"
        api.process.kill()
        api.process.wait(timeout=30)
    with running_api(written_lakehouse.settings, env, tmp_path / "api.log", KEY, extra) as api:
        client = Client(api.base, body)
        gone = client.status(interrupted)
        assert gone["status"] == "failed" and "interrupted" in gone["error"]
        deadline = time.monotonic() + 120
        while (now := client.status(waiting))["status"] != "done":
            assert time.monotonic() < deadline and now["status"] != "failed", now
            time.sleep(0.2)
        again = client.download(finished)
        assert again.status_code == 200 and again.content == before
        assert client.download(waiting).content.startswith(b"%PDF")
