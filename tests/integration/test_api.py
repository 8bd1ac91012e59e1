"""The alerts API on tables the real pipeline wrote: answers equal the Delta tables (read independently
with delta-rs), auth, the action flow and its audit table, the live feed from the real alerts topic,
the OpenAPI contract (schemathesis) and the console in a real headless Chromium."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import pytest
from api_server import RunningApi, running_api
from deltalake import DeltaTable

from surveillance.sinks.kafka_alerts import AlertPublisher

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration

ANALYST_SECRET = secrets.token_urlsafe(24)
VIEWER_SECRET = secrets.token_urlsafe(24)
ROTATED_SECRET = secrets.token_urlsafe(24)
REPORTS = Path(__file__).resolve().parents[2] / "reports" / "console"


@dataclass
class Served:
    pipeline: Pipeline
    api: RunningApi
    keys_file: Path

    def get(self, path: str, key: str = ANALYST_SECRET, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.api.base}{path}", params=params, headers={"X-API-Key": key}, timeout=30)

    def post(self, path: str, body: dict[str, Any], key: str = ANALYST_SECRET) -> httpx.Response:
        return httpx.post(f"{self.api.base}{path}", json=body, headers={"X-API-Key": key}, timeout=30)

    def table(self, name: str) -> pd.DataFrame:
        """A table read with delta-rs, independently of the API's reader."""
        return DeltaTable(self.pipeline.locations[name]).to_pandas()


@pytest.fixture(scope="module")
def served(written_lakehouse: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`surveil api` over tables the real stream wrote. The analyst's key comes from the environment; the
    viewer's from a secret file (rotated by one test)."""
    workdir = tmp_path_factory.mktemp("api")
    keys_file = workdir / "api_keys"
    keys_file.write_text(f"# rotated by rewriting\nval:viewer:{VIEWER_SECRET}\n")
    env = {"SURVEIL_API_KEYS": f"amy:analyst:{ANALYST_SECRET}", "SURVEIL_API_KEYS_FILE": str(keys_file)}
    with running_api(written_lakehouse.settings, env, workdir / "api.log", ANALYST_SECRET) as api:
        yield Served(written_lakehouse, api, keys_file)


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True) if series.dt.tz is None else series.dt.tz_convert("UTC")


def _walk(served: Served, limit: int, **filters: Any) -> list[dict[str, Any]]:
    """Every page of /v1/alerts with these filters, following next_cursor."""
    alerts, cursor = [], None
    while True:
        params = {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = served.get("/v1/alerts", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["alerts"]) <= limit
        alerts.extend(body["alerts"])
        cursor = body["next_cursor"]
        if cursor is None:
            return alerts


def _expected_order(frame: pd.DataFrame) -> list[str]:
    ordered = frame.assign(t=_utc(frame.event_time)).sort_values(["t", "alert_id"], ascending=False)
    return list(ordered.alert_id)


def test_pages_hold_every_alert_once_in_order(served: Served) -> None:
    alerts = served.table("alerts")
    assert len(alerts) > 20, "the acceptance data should raise alerts"
    walked = _walk(served, limit=7)
    assert [a["alert_id"] for a in walked] == _expected_order(alerts)
    # Each alert as the table holds it.
    by_id = alerts.set_index("alert_id")
    for alert in walked:
        row = by_id.loc[alert["alert_id"]]
        assert (
            alert["symbol"] == row.symbol and alert["rule"] == row.rule and alert["severity"] == row.severity
        )
        assert alert["score"] == pytest.approx(row.score)
        assert alert["details"] == json.loads(row.details)
        assert pd.Timestamp(alert["event_time"]) == _utc(pd.Series([row.event_time]))[0]
        assert alert["episode_id"] == row.episode_id


def test_filters_equal_the_table(served: Served) -> None:
    alerts = served.table("alerts")
    symbol = alerts.symbol.value_counts().index[0]
    rule = alerts.rule.value_counts().index[0]
    middle = _utc(alerts.event_time).sort_values().iloc[len(alerts) // 2]
    since = (middle - timedelta(minutes=10)).isoformat()
    until = middle.isoformat()
    t = _utc(alerts.event_time)
    cases = [
        ({"symbol": symbol}, alerts.symbol == symbol),
        ({"rule": rule}, alerts.rule == rule),
        ({"severity": "high"}, alerts.severity == "high"),
        ({"confidence": "low"}, alerts.confidence == "low"),
        ({"symbol": symbol, "rule": rule}, (alerts.symbol == symbol) & (alerts.rule == rule)),
        ({"since": since, "until": until}, (t >= pd.Timestamp(since)) & (t < pd.Timestamp(until))),
        ({"since": since}, t >= pd.Timestamp(since)),
    ]
    for filters, mask in cases:
        walked = _walk(served, limit=5, **filters)
        assert [a["alert_id"] for a in walked] == _expected_order(alerts[mask]), filters
    # The old system's paths answer the same.
    legacy = served.get(f"/alerts/{symbol}", limit=1000).json()["alerts"]
    assert [a["alert_id"] for a in legacy] == _expected_order(alerts[alerts.symbol == symbol])
    assert (
        served.get("/alerts", limit=3).json()["alerts"] == served.get("/v1/alerts", limit=3).json()["alerts"]
    )


def test_bad_input_is_a_4xx_naming_the_parameter(served: Served) -> None:
    cases = {
        "/v1/alerts?symbol=NOPE": (404, "symbol"),
        "/v1/alerts?since=yesterday": (422, "since"),
        "/v1/alerts?until=2026-13-01": (422, "until"),
        "/v1/alerts?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z": (400, "until"),
        "/v1/alerts?limit=0": (422, "limit"),
        "/v1/alerts?limit=1001": (422, "limit"),
        "/v1/alerts?cursor=not-a-cursor": (400, "cursor"),
        "/v1/alerts?rule=teleport": (422, "rule"),
        "/v1/alerts/0123456789abcdef0123456789abcdef": (404, "alert_id"),
        "/v1/alerts/not-an-id": (422, "alert_id"),
        "/v1/symbols/NOPE/bars": (404, "symbol"),
        # Valid ISO times with no UTC equivalent.
        "/v1/alerts?since=0001-01-01T00:00:00%2B01:00": (400, "since"),
        "/v1/symbols/NOPE/bars?until=9999-12-31T23:59:59-01:00": (400, "until"),
    }
    for path, (status, parameter) in cases.items():
        response = httpx.get(served.api.base + path, headers={"X-API-Key": ANALYST_SECRET})
        assert response.status_code == status, (path, response.text)
        assert parameter in response.text, (path, response.text)
    # A cursor only continues the filters it was made for.
    symbol = served.table("alerts").symbol.iloc[0]
    cursor = served.get("/v1/alerts", limit=1).json()["next_cursor"]
    response = served.get("/v1/alerts", symbol=symbol, cursor=cursor)
    assert response.status_code == 400 and "cursor" in response.text


def test_alert_detail_has_its_quotes_and_evidence(served: Served) -> None:
    alerts, silver = served.table("alerts"), served.table("silver_quotes")
    alert = alerts[alerts.rule == "price_jump"].iloc[0]
    response = served.get(f"/v1/alerts/{alert.alert_id}", window_seconds=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["alert"]["alert_id"] == alert.alert_id and body["alert"]["details"] == json.loads(
        alert.details
    )
    assert body["status"] == "open" and body["actions"] == [] and "acknowledge" in body["allowed_actions"]
    moment = _utc(pd.Series([alert.event_time]))[0]
    t = _utc(silver.event_time)
    window = silver[
        (silver.symbol == alert.symbol)
        & (t >= moment - timedelta(seconds=120))
        & (t <= moment + timedelta(seconds=120))
    ]
    assert sorted(q["event_id"] for q in body["quotes"]) == sorted(window.event_id)
    assert alert.event_id in {q["event_id"] for q in body["quotes"]}
    prices = {q["event_id"]: q["price"] for q in body["quotes"]}
    assert all(prices[e] == pytest.approx(p) for e, p in zip(window.event_id, window.price, strict=True))


def test_symbols_bars_quality_and_health(served: Served) -> None:
    silver, gold, alerts = served.table("silver_quotes"), served.table("gold_bars_1m"), served.table("alerts")
    symbols = {s["symbol"]: s for s in served.get("/v1/symbols").json()["symbols"]}
    assert set(symbols) == set(silver.symbol) | set(alerts.symbol)
    for symbol, entry in symbols.items():
        assert entry["quotes"] == int((silver.symbol == symbol).sum())
        assert entry["alerts"] == int((alerts.symbol == symbol).sum())
    symbol = gold.symbol.iloc[0]
    bars = served.get(f"/v1/symbols/{symbol}/bars").json()["bars"]
    expected = gold[gold.symbol == symbol].sort_values("bar_start")
    assert [b["close"] for b in bars] == pytest.approx(list(expected.close))
    assert [b["volume"] for b in bars] == list(expected.volume)
    quality = served.get("/v1/quality", batches=5).json()["batches"]
    dq = served.table("dq_results")
    assert quality and all(b["batch_id"] in set(dq.batch_id) for b in quality)
    health = served.get("/v1/health").json()
    assert health["status"] == "ok" and all(t["reachable"] for t in health["tables"].values())
    progress = served.table("stream_progress")
    queries = {q["query_name"]: q for q in health["queries"]}
    for name, rows in progress.groupby(progress.query_name.fillna("quotes_to_lakehouse")):
        assert queries[name]["batch_id"] == rows.loc[rows.finished_at.idxmax()].batch_id
        # Everything sent was read: no backlog.
        assert queries[name]["kafka_lag_records"] == 0
    # Quotes the stopped stream has not read show as each query's backlog.
    line = '{"event_id": "lag-%d", "symbol": "LAGX", "event_time": "2026-11-20T15:00:00Z", "price": 10.0}'
    served.pipeline.send_lines([line % i for i in range(25)], name="lag.jsonl")
    time.sleep(2.1)  # health caches the backlog for 2 s
    lagging = {q["query_name"]: q["kafka_lag_records"] for q in served.get("/v1/health").json()["queries"]}
    assert set(lagging.values()) == {25}, lagging


def test_keys_roles_and_rotation(served: Served) -> None:
    alert_id = served.table("alerts").alert_id.iloc[-1]
    assert httpx.get(served.api.base + "/v1/alerts").status_code == 401
    assert served.get("/v1/alerts", key="wrong-" + ANALYST_SECRET).status_code == 401
    bearer = httpx.get(served.api.base + "/v1/whoami", headers={"Authorization": f"Bearer {VIEWER_SECRET}"})
    assert bearer.json() == {"name": "val", "role": "viewer"}
    refused = served.post(f"/v1/alerts/{alert_id}/actions", {"action": "acknowledge"}, key=VIEWER_SECRET)
    assert refused.status_code == 403
    # Rotation: the secret file is rewritten; the old viewer key stops working, the new one works,
    # without a restart.
    served.keys_file.write_text(f"val:viewer:{ROTATED_SECRET}\n")
    assert served.get("/v1/whoami", key=VIEWER_SECRET).status_code == 401
    assert served.get("/v1/whoami", key=ROTATED_SECRET).json()["name"] == "val"
    assert served.api.process.poll() is None
    # No secret in what the server logged.
    logged = served.api.output()
    assert "GET /v1/whoami" in logged
    for secret in (ANALYST_SECRET, VIEWER_SECRET, ROTATED_SECRET):
        assert secret not in logged


def test_action_flow_and_audit_table(served: Served) -> None:
    alerts = served.table("alerts")
    alert_id = alerts.alert_id.iloc[0]
    path = f"/v1/alerts/{alert_id}/actions"
    steps = [
        ({"action": "acknowledge", "note": "looking"}, 201, "acknowledged"),
        ({"action": "acknowledge", "note": "again"}, 409, None),
        ({"action": "assign", "assignee": "bob", "note": ""}, 201, "assigned"),
        ({"action": "escalate", "note": ""}, 422, None),  # a reason is required
        ({"action": "escalate", "note": "size of the move"}, 201, "escalated"),
        ({"action": "close", "note": "confirmed with the desk"}, 201, "closed"),
        ({"action": "close", "note": "twice"}, 409, None),
        ({"action": "reopen", "note": "new information"}, 201, "open"),
    ]
    for body, status, after in steps:
        response = served.post(path, body)
        assert response.status_code == status, (body, response.text)
        if after:
            assert response.json()["status"] == after
        if status == 409:
            assert response.json()["detail"]
    detail = served.get(f"/v1/alerts/{alert_id}").json()
    assert [a["action"] for a in detail["actions"]] == [
        "acknowledge",
        "assign",
        "escalate",
        "close",
        "reopen",
    ]
    assert detail["status"] == "open" and detail["assignee"] == "bob"
    # The audit table, read with delta-rs: who, what, the note, the transition.
    audit = served.table("alert_actions")
    mine = audit[audit.alert_id == alert_id].sort_values("acted_at")
    assert list(mine.action) == ["acknowledge", "assign", "escalate", "close", "reopen"]
    assert set(mine.actor) == {"amy"} and set(mine.role) == {"analyst"}
    assert list(mine.status_after) == ["acknowledged", "assigned", "escalated", "closed", "open"]
    assert list(mine.note)[-1] == "new information"
    # The status filter follows the actions.
    served.post(path, {"action": "close", "note": "done"})
    closed = _walk(served, limit=50, status="closed")
    assert alert_id in {a["alert_id"] for a in closed}
    assert alert_id not in {a["alert_id"] for a in _walk(served, limit=500, status="open")}


def test_concurrent_actions_on_one_alert_lose_nothing(served: Served) -> None:
    alert_id = served.table("alerts").alert_id.iloc[1]
    path = f"/v1/alerts/{alert_id}/actions"
    # Ten analysts acknowledge at once: exactly one wins, the others are told why.
    with ThreadPoolExecutor(10) as pool:
        statuses = list(
            pool.map(lambda _: served.post(path, {"action": "acknowledge"}).status_code, range(10))
        )
    assert sorted(statuses) == [201] + [409] * 9
    # Twelve assignments to different people at once: all are recorded, in one order.
    names = [f"analyst{i}" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda n: served.post(path, {"action": "assign", "assignee": n}), names))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    audit = served.table("alert_actions")
    mine = audit[audit.alert_id == alert_id].sort_values("acted_at")
    assert list(mine.action).count("acknowledge") == 1
    assert sorted(mine[mine.action == "assign"].assignee) == sorted(names)
    detail = served.get(f"/v1/alerts/{alert_id}").json()
    assert detail["assignee"] == mine.assignee.iloc[-1] and len(detail["actions"]) == 13


def _read_events(base: str, want: int, last_event_id: str | None, on_open: Any) -> list[dict[str, Any]]:
    """Connect to the live feed, call ``on_open`` once it streams, and read ``want`` alert events."""
    headers = {"X-API-Key": ANALYST_SECRET}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{base}/v1/alerts/live", headers=headers, timeout=httpx.Timeout(60, read=30)
    ) as stream:
        assert stream.status_code == 200, stream.read()
        assert stream.headers["content-type"].startswith("text/event-stream")
        opened = False
        frame: dict[str, Any] = {}
        for line in stream.iter_lines():
            if not opened:
                opened = True
                on_open()
            if line == "":
                if frame.get("event") == "alert":
                    events.append({"id": frame["id"], "alert": json.loads(frame["data"])})
                    if len(events) >= want:
                        return events
                frame = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            frame[name] = value.lstrip(" ")
    return events


def test_live_feed_delivers_and_resumes_without_duplicates(served: Served) -> None:
    settings = served.pipeline.settings
    template = served.table("alerts").iloc[0].to_dict()
    publisher = AlertPublisher(settings.kafka, timeout_s=30)

    def publish(alert_id: str) -> None:
        alert = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in template.items()}
        alert.update(alert_id=alert_id, episode_id=alert_id)
        alert.pop("stream_id"), alert.pop("batch_id")
        publisher.send([(alert["symbol"], json.dumps(alert, default=str), alert_id)], "live-test", 1)

    first, second, third = (uuid.uuid4().hex for _ in range(3))
    events = _read_events(served.api.base, 1, None, lambda: publish(first))
    assert [e["alert"]["alert_id"] for e in events] == [first]
    assert events[0]["alert"]["status"] == "open" and isinstance(events[0]["alert"]["details"], dict)
    resume_at = events[0]["id"]
    # While the client is away: a new alert, the first one sent again (the publisher's retry), another.
    publish(second)
    publish(first)
    publish(third)
    resumed = _read_events(served.api.base, 2, resume_at, lambda: None)
    assert [e["alert"]["alert_id"] for e in resumed] == [second, third]
    # A bad position is refused with a reason.
    response = httpx.get(
        f"{served.api.base}/v1/alerts/live",
        headers={"X-API-Key": ANALYST_SECRET, "Last-Event-ID": "nonsense"},
    )
    assert response.status_code == 400 and "Last-Event-ID" in response.text
    response = httpx.get(
        f"{served.api.base}/v1/alerts/live",
        headers={"X-API-Key": ANALYST_SECRET, "Last-Event-ID": f"0:{1 << 63}"},
    )
    assert response.status_code == 400 and "Last-Event-ID" in response.text
    # A client that drops before its first alert still has a position to come back to.
    fourth = uuid.uuid4().hex
    position = _opening_position(served.api.base)
    publish(fourth)
    assert [e["alert"]["alert_id"] for e in _read_events(served.api.base, 1, position, lambda: None)] == [
        fourth
    ]
    publisher.producer.close()


def _opening_position(base: str) -> str:
    """The position the live feed sends as soon as a client connects (then disconnect)."""
    with httpx.stream(
        "GET", f"{base}/v1/alerts/live", headers={"X-API-Key": ANALYST_SECRET}, timeout=httpx.Timeout(60)
    ) as stream:
        assert stream.status_code == 200, stream.read()
        for line in stream.iter_lines():
            if line.startswith("id:"):
                return line.partition(":")[2].strip()
    raise AssertionError("the feed closed before sending a position")


def test_openapi_contract_holds_under_schemathesis(served: Served, tmp_path: Path) -> None:
    import subprocess
    import sys

    schema = httpx.get(served.api.base + "/openapi.json").json()
    assert {"/v1/alerts", "/v1/alerts/{alert_id}", "/v1/alerts/{alert_id}/actions", "/v1/health"} <= set(
        schema["paths"]
    )
    assert httpx.get(served.api.base + "/docs").status_code == 200
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{served.api.base}/openapi.json",
        "--header",
        f"X-API-Key: {ANALYST_SECRET}",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        "--seed",
        "20261207",
        "--max-examples",
        "25",
        "--phases",
        "examples,coverage,fuzzing",
        # An endless stream: tested above.
        "--exclude-path",
        "/v1/alerts/live",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_console_in_a_real_browser(served: Served, tmp_path: Path) -> None:
    """Open the console, sign in, filter by symbol, open an alert, see its chart, acknowledge it; the
    action is then in alert_actions. Screenshots in reports/console/ for a person to look at."""
    from browser import chromium_page

    REPORTS.mkdir(parents=True, exist_ok=True)
    alerts = served.table("alerts")
    acted = set(served.table("alert_actions").alert_id)
    symbol = alerts[~alerts.alert_id.isin(acted)].symbol.value_counts().index[0]
    errors: list[str] = []
    with chromium_page(tmp_path / "profile") as page:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(served.api.base + "/")
        page.fill("#api-key", ANALYST_SECRET)
        page.click("#sign-in")
        page.wait_for_selector("#alerts-table .alert-row")
        page.wait_for_selector("#live-status:text('live')")
        page.screenshot(path=REPORTS / "01_alert_list.png", full_page=True)

        page.fill("#filter-symbol", symbol)
        page.click("#apply-filters")
        page.wait_for_function(
            "s => { const rows = [...document.querySelectorAll('#alerts-table .alert-row')];"
            " return rows.length > 0 && rows.every(r => r.textContent.includes(s)); }",
            arg=symbol,
        )
        rows = page.locator("#alerts-table .alert-row")
        assert rows.count() == min(50, int((alerts.symbol == symbol).sum()))
        page.screenshot(path=REPORTS / "02_filtered_by_symbol.png", full_page=True)

        open_ids = [
            i
            for i in (rows.nth(n).get_attribute("data-alert-id") for n in range(rows.count()))
            if i not in acted
        ]
        alert_id = open_ids[0]
        page.locator(f"#alerts-table .alert-row[data-alert-id='{alert_id}']").click()
        page.wait_for_url(f"**/alert.html?id={alert_id}*")
        page.wait_for_selector("body[data-chart-ready='1']")
        # Plotly drew into the div: its SVG with the price line and the alert marker.
        assert page.locator("#price-chart .main-svg").count() > 0
        traces = page.evaluate("() => document.getElementById('price-chart').data.map(t => t.name)")
        assert "price" in traces and "alert" in traces
        assert page.locator("#evidence-table tr").count() > 1
        page.screenshot(path=REPORTS / "03_alert_page.png", full_page=True)

        page.fill("#action-note", "looked at in the browser test")
        page.click("#action-acknowledge")
        page.wait_for_selector("#alert-status:text('acknowledged')")
        page.wait_for_selector("#actions-table tbody tr")
        page.screenshot(path=REPORTS / "04_acknowledged.png", full_page=True)
    assert not errors, errors
    audit = served.table("alert_actions")
    mine = audit[audit.alert_id == alert_id]
    assert list(mine.action) == ["acknowledge"] and list(mine.actor) == ["amy"]
    assert list(mine.note) == ["looked at in the browser test"]
