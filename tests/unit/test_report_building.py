"""Reports without Spark, on small Delta tables written with delta-rs: the CSV's quoting (commas, quotes,
newlines, non-ASCII in evidence) round-trips through pandas, the counts equal the tables', formats are
a registry, the task log survives a restart, and e-mail goes through a real SMTP server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake
from smtp_server import PASSWORD, USER, smtp_server

from surveillance.config import load_settings
from surveillance.locations import TABLE_NAMES
from surveillance.reporting.content import (
    ReportContent,
    ReportError,
    ReportRequest,
    ReportSource,
    build_report,
)
from surveillance.reporting.delivery import DeliveryError, send_report
from surveillance.reporting.formats import FORMATS, ReportFormat, report_format
from surveillance.reporting.run import day_range
from surveillance.reporting.tasks import ReportWorkers
from surveillance.serving.actions_table import ActionLog
from surveillance.serving.synthetic import build_synthetic_lakehouse

TORTURE = [
    'commas, "double quotes", and a\nnewline',
    "café – naïve – 日本語 – 🚨",
    '","\r\n""',
    "",
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reports_lake")
    build_synthetic_lakehouse(root, alerts=400, quotes=4000, days=2, symbols=5, files_per_day=2)
    alerts = DeltaTable(str(root / "alerts")).to_pyarrow_table()
    details = alerts["details"].to_pylist()
    for i, text in enumerate(TORTURE):
        details[i * 7] = json.dumps(
            {"note": text, "nested": {"x": [1, "a,b"]}, 'key "q"': text, "price": 1.5}
        )
    alerts = alerts.set_column(alerts.schema.get_field_index("details"), "details", pa.array(details))
    write_deltalake(str(root / "alerts"), alerts, mode="overwrite", partition_by=["alert_date"])
    log = ActionLog(str(root / "alert_actions"))
    write_deltalake(str(root / "alert_actions"), pa.Table.from_pylist([], schema=_actions_schema()))
    for alert_id in alerts["alert_id"].to_pylist()[:3]:
        log.record(alert_id, "acknowledge", "seen", "amy", "analyst")
    return root


def _actions_schema() -> pa.Schema:
    from surveillance.serving.actions_table import ACTIONS_SCHEMA

    return ACTIONS_SCHEMA


def locations(root: Path) -> dict[str, str]:
    return {name: str(root / name) for name in TABLE_NAMES}


def whole_range(root: Path) -> ReportRequest:
    times = DeltaTable(str(root / "silver_quotes")).to_pyarrow_table()["event_time"]
    first = pc.min(times).as_py().replace(tzinfo=None)
    last = pc.max(times).as_py().replace(tzinfo=None)
    return ReportRequest(first, last + timedelta(seconds=1))


def content_of(root: Path, request: ReportRequest | None = None) -> ReportContent:
    return build_report(ReportSource(locations(root)), request or whole_range(root))


def test_csv_round_trips_evidence_that_needs_quoting(lake: Path, tmp_path: Path) -> None:
    content = content_of(lake)
    alerts_csv, summary_csv = report_format("csv").render(content, tmp_path / "r.csv")
    raw = alerts_csv.read_bytes()
    raw.decode("utf-8")
    assert raw.startswith(b"alert_id,symbol,event_time,") and raw.endswith(b"\r\n")
    read = pd.read_csv(alerts_csv, dtype=str, keep_default_na=False, encoding="utf-8")
    table = DeltaTable(str(lake / "alerts")).to_pandas()
    expected = table.assign(t=table.event_time).sort_values(["t", "alert_id"], ascending=False)
    assert list(read.alert_id) == list(expected.alert_id)
    stored = dict(zip(table.alert_id, table.details, strict=True))
    for row in read.itertuples(index=False):
        assert json.loads(row.details_json) == json.loads(stored[row.alert_id])
    tortured = read[read["details.note"] != ""]
    assert sorted(tortured["details.note"]) == sorted(TORTURE[:3])
    assert sorted(tortured['details.key "q"']) == sorted(TORTURE[:3])
    assert set(tortured["details.nested"]) == {'{"x":[1,"a,b"]}'}
    # Case status from alert_actions; the rest open.
    assert (read.status == "acknowledged").sum() == 3 and (read.status == "open").sum() == len(read) - 3
    summary = pd.read_csv(summary_csv, dtype=str, keep_default_na=False)
    assert list(summary.columns) == ["section", "key", "value"]
    layer = dict(
        zip(summary[summary.section == "layer"].key, summary[summary.section == "layer"].value, strict=True)
    )
    assert layer["alerts"] == str(len(table))
    assert layer["silver_quotes"] == str(len(DeltaTable(str(lake / "silver_quotes")).to_pandas()))
    by_rule = summary[summary.section == "alerts"]
    counts = table.groupby(["rule", "severity", "confidence"]).size()
    assert {k: int(v) for k, v in zip(by_rule.key, by_rule.value, strict=True)} == {
        "/".join(k): int(v) for k, v in counts.items()
    }
    status = dict(
        zip(summary[summary.section == "status"].key, summary[summary.section == "status"].value, strict=True)
    )
    assert status == {"open": str(len(table) - 3), "acknowledged": "3"}
    assert set(content.missing_tables) == {"bronze_quotes", "quarantine_quotes", "gold_bars_1m", "dq_results"}


def test_filters_and_ranges(lake: Path, tmp_path: Path) -> None:
    full = whole_range(lake)
    table = DeltaTable(str(lake / "alerts")).to_pandas()
    t = table.event_time.dt.tz_convert(None)
    middle = full.since + (full.until - full.since) / 2
    request = ReportRequest(full.since, middle, ("AAB",), ("price_jump", "model"))
    path = report_format("csv").render(content_of(lake, request), tmp_path / "f.csv")[0]
    read = pd.read_csv(path, dtype=str, keep_default_na=False)
    wanted = table[(t < middle) & (table.symbol == "AAB") & table.rule.isin(["price_jump", "model"])]
    assert sorted(read.alert_id) == sorted(wanted.alert_id) and len(wanted) > 0
    with pytest.raises(ReportError, match="ZZZ"):
        content_of(lake, ReportRequest(full.since, full.until, ("ZZZ",)))
    with pytest.raises(ReportError, match="empty"):
        ReportRequest(full.until, full.since)
    empty = content_of(lake, ReportRequest(datetime(2001, 1, 1), datetime(2001, 1, 2)))
    assert empty.alert_total == 0 and empty.layer_counts["alerts"] == 0
    path = report_format("csv").render(empty, tmp_path / "empty.csv")[0]
    assert pd.read_csv(path).empty


def test_a_format_is_one_class(lake: Path, tmp_path: Path) -> None:
    class Markdown(ReportFormat):
        name = "markdown"
        media_type = "text/markdown"
        extension = "md"

        def render(self, content: ReportContent, path: Path) -> list[Path]:
            path.write_text(f"# Report\n\n{content.alert_total} alerts\n")
            return [path]

    try:
        (written,) = report_format("markdown").render(content_of(lake), tmp_path / "r.md")
        assert written.read_text().endswith(f"{len(DeltaTable(str(lake / 'alerts')).to_pandas())} alerts\n")
    finally:
        FORMATS.pop("markdown")
    with pytest.raises(ReportError, match="csv, html, pdf"):
        report_format("docx")


def test_day_range() -> None:
    today = datetime(2026, 12, 7).date()
    assert day_range("yesterday", today) == (datetime(2026, 12, 6), datetime(2026, 12, 7))
    assert day_range("2026-11-20", today) == (datetime(2026, 11, 20), datetime(2026, 11, 21))
    with pytest.raises(ReportError, match="YYYY-MM-DD"):
        day_range("last week", today)


def test_task_log_survives_a_restart(tmp_path: Path) -> None:
    settings = load_settings(overrides=["reports.workers=1", "reports.queue_limit=1"])
    request = ReportRequest(datetime(2026, 1, 1), datetime(2026, 1, 2))
    built: list[str] = []

    def build(task: object, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "r.csv"
        path.write_text("a\r\n")
        built.append(task.task_id)  # type: ignore[attr-defined]
        return [path]

    workers = ReportWorkers(settings, build, lambda task, files: None, tmp_path)
    done, future = workers.submit("csv", request, [], "amy")
    future.result(timeout=30)
    assert workers.log.get(done.task_id).status == "done"
    # What a killed process leaves: one task running, one queued.
    running = workers.log.new(
        "pdf",
        {"since": "2026-01-01T00:00:00", "until": "2026-01-02T00:00:00", "symbols": [], "rules": []},
        [],
        "amy",
    )
    workers.log.append(running, "running")
    queued = workers.log.new("csv", running.request, [], "val")
    workers.shutdown()

    again = ReportWorkers(settings, build, lambda task, files: None, tmp_path)
    assert again.log.get(done.task_id).status == "done" and again.file(again.log.get(done.task_id), None)
    again.recover()
    again._pool.shutdown(wait=True)
    assert again.log.get(running.task_id).status == "failed"
    assert "interrupted" in again.log.get(running.task_id).error
    assert again.log.get(queued.task_id).status == "done" and built == [done.task_id, queued.task_id]


def test_queue_limit(tmp_path: Path) -> None:
    import threading

    settings = load_settings(overrides=["reports.workers=1", "reports.queue_limit=1"])
    request = ReportRequest(datetime(2026, 1, 1), datetime(2026, 1, 2))
    release = threading.Event()

    def slow(task: object, out_dir: Path) -> list[Path]:
        release.wait(30)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "r.csv").write_text("a\r\n")
        return [out_dir / "r.csv"]

    workers = ReportWorkers(settings, slow, lambda task, files: None, tmp_path)
    first = workers.submit("csv", request, [], "amy")
    second = workers.submit("csv", request, [], "amy")
    from surveillance.reporting.tasks import QueueFull

    with pytest.raises(QueueFull, match="try again later"):
        workers.submit("csv", request, [], "amy")
    release.set()
    first[1].result(timeout=30), second[1].result(timeout=30)
    workers.submit("csv", request, [], "amy")[1].result(timeout=30)
    workers.shutdown()


def test_email_through_a_real_smtp_server(tmp_path: Path) -> None:
    attachment = tmp_path / "report.pdf"
    attachment.write_bytes(bytes(range(256)) * 40)
    env = {"SURVEIL_SMTP_USER": USER, "SURVEIL_SMTP_PASSWORD": PASSWORD}
    with smtp_server(tmp_path) as server:
        email = load_settings(
            overrides=[
                f"reports.email.host={server.host}",
                f"reports.email.port={server.port}",
                "reports.email.sender=surveillance@desk.example",
                f"reports.email.ca_file={server.ca_file}",
                "reports.email.retry_delay=1 second",
            ]
        ).reports.email
        # The server says "try again later" once: the second attempt delivers.
        server.inbox.refuse_next = 1
        failures: list[tuple[int, str]] = []
        sent = send_report(
            email,
            ["compliance@desk.example"],
            "Report",
            "attached",
            [attachment],
            environ=env,
            on_failure=lambda n, e: failures.append((n, e)),
        )
        assert sent.attempts == 2 and sent.attached and failures[0][0] == 1 and "451" in failures[0][1]
        (message,) = server.inbox.messages
        (part,) = list(message.iter_attachments())
        assert part.get_filename() == "report.pdf" and part.get_content() == attachment.read_bytes()
        # Too large to attach: linked; and without a link base, refused with the reason.
        small = email.model_copy(update={"max_attachment_mb": 0.001})
        linked = send_report(
            small, ["c@desk.example"], "Report", "big", [attachment], ["https://desk/r.pdf"], environ=env
        )
        assert (
            not linked.attached and "https://desk/r.pdf" in server.inbox.messages[-1].get_body().get_content()
        )
        with pytest.raises(DeliveryError, match="link_base_url"):
            send_report(small, ["c@desk.example"], "Report", "big", [attachment], environ=env)
        # Nobody listening: every attempt fails, each recorded.
        import socket

        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            nobody = closed.getsockname()[1]
        failures.clear()
        with pytest.raises(DeliveryError, match="2 attempts"):
            send_report(
                email.model_copy(update={"attempts": 2, "port": nobody}),
                ["c@desk.example"],
                "R",
                "x",
                [attachment],
                environ=env,
                on_failure=lambda n, e: failures.append((n, e)),
            )
        assert [n for n, _ in failures] == [1, 2]
