"""``surveil api bench``: latency of the API's endpoints under concurrent clients, on a large lakehouse.

The API runs as its own process (uvicorn, as `surveil api` runs it) over a synthetic lakehouse of a
million alerts and ten million silver quotes (synthetic.py). Clients are httpx with asyncio, each sending
its next request as soon as the last one is answered. Printed as a table; written as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from surveillance.config import Settings
from surveillance.serving.synthetic import build_synthetic_lakehouse

TARGET_P99_MS = 100.0


@dataclass
class EndpointResult:
    name: str
    requests: int
    errors: int
    per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_lakehouse(root: Path, alerts: int, quotes: int, rebuild: bool, console: Console) -> dict[str, Any]:
    """The synthetic lakehouse at ``root``, written unless one of the same size is there."""
    manifest = root / "manifest.json"
    if not rebuild and manifest.exists():
        described = json.loads(manifest.read_text())
        if described.get("alerts") == alerts and described.get("quotes") == quotes:
            return described
    started = time.perf_counter()
    with console.status(f"writing a synthetic lakehouse: {alerts:,} alerts, {quotes:,} silver quotes..."):
        built = build_synthetic_lakehouse(root, alerts=alerts, quotes=quotes)
    described = {**built.as_dict(), "seconds_to_build": round(time.perf_counter() - started, 1)}
    manifest.write_text(json.dumps(described, indent=2))
    return described


def _sample_alerts(root: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """Alerts picked across the whole history, read straight from the table (not through the API, so
    the API has not seen them before they are asked for)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(root / "alerts")).to_pyarrow_table(columns=["alert_id", "symbol", "event_time"])
    rows = np.random.default_rng(seed).choice(table.num_rows, size=min(count, table.num_rows), replace=False)
    return table.take(rows).to_pylist()


def start_api(settings: Settings, root: Path, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, settings.serving.api_keys_env: f"bench:analyst:{key}"}
    command = [
        sys.executable,
        "-m",
        "surveillance.cli",
        "api",
        "--set",
        f"lakehouse.root={root}",
        "--set",
        "lakehouse.schema=null",
        "--port",
        str(port),
    ]
    log = open(root / "api.log", "wb")  # noqa: SIM115 - the server's whole life
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_until_up(base: str, key: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/v1/health", headers={"X-API-Key": key}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the API did not answer within {timeout_s:.0f} s")


async def _load(
    base: str, key: str, make_path: Callable[[random.Random], str], clients: int, seconds: float, seed: int
) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=30
    ) as client:

        async def one_client(index: int) -> None:
            nonlocal errors
            rng = random.Random(seed * 1000 + index)
            while time.monotonic() < deadline:
                path = make_path(rng)
                started = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return latencies, errors


def _endpoints(
    base: str, key: str, sample: list[dict[str, Any]], days: list[str]
) -> dict[str, Callable[[random.Random], str]]:
    import httpx

    symbols = sorted({a["symbol"] for a in sample})
    # A second page per symbol, fetched once: its cursor is what a client sends for "load more".
    cursors = {}
    for symbol in symbols[:20]:
        body = httpx.get(
            f"{base}/v1/alerts", params={"symbol": symbol}, headers={"X-API-Key": key}, timeout=30
        ).json()
        cursors[symbol] = body["next_cursor"]

    def hour_range(rng: random.Random) -> str:
        day = rng.choice(days)
        hour = rng.randint(14, 19)
        return f"/v1/alerts?since={day}T{hour:02d}:00:00Z&until={day}T{hour:02d}:59:59Z"

    return {
        "GET /v1/alerts?symbol=": lambda rng: f"/v1/alerts?symbol={rng.choice(symbols)}",
        "GET /v1/alerts?symbol=&cursor= (page 2)": lambda rng: (
            lambda s: f"/v1/alerts?symbol={s}&cursor={cursors[s]}"
        )(rng.choice(list(cursors))),
        "GET /v1/alerts?rule=&severity=&confidence=": lambda rng: (
            f"/v1/alerts?rule={rng.choice(['price_jump', 'model'])}&severity=high&confidence=low"
        ),
        "GET /v1/alerts?since=&until= (an hour)": hour_range,
        "GET /v1/alerts/{alert_id} (+ quotes ±5 min)": lambda rng: (
            f"/v1/alerts/{rng.choice(sample)['alert_id']}"
        ),
        "GET /v1/symbols": lambda rng: "/v1/symbols",
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def run_api_bench(
    settings: Settings,
    lakehouse: Path,
    rebuild: bool,
    alerts: int,
    quotes: int,
    clients: int,
    seconds: float,
    out: Path,
    console: Console,
) -> dict[str, Any]:
    """Build (or reuse) the lakehouse, start the API, load each endpoint in turn; print and write."""
    root = lakehouse.resolve()
    root.mkdir(parents=True, exist_ok=True)
    described = ensure_lakehouse(root, alerts, quotes, rebuild, console)
    sample = _sample_alerts(root, 5000, seed=5)
    first = np.datetime64(described["first_day"], "D")
    days = [str(first + np.timedelta64(d, "D")) for d in range(int(described["days"]))]
    key = secrets.token_urlsafe(24)
    process, base = start_api(settings, root, key)
    results: list[EndpointResult] = []
    rss_mb = None
    try:
        started = time.perf_counter()
        wait_until_up(base, key, process)
        console.print(f"API up at {base} in {time.perf_counter() - started:.1f} s (warm-up included)")
        for name, make_path in _endpoints(base, key, sample, days).items():
            with console.status(f"{name}: {clients} clients for {seconds:.0f} s..."):
                latencies, errors = asyncio.run(
                    _load(base, key, make_path, clients, seconds, seed=len(results))
                )
            ms = np.asarray(latencies) * 1000
            results.append(
                EndpointResult(
                    name,
                    len(ms),
                    errors,
                    round(len(ms) / seconds, 1),
                    *(round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)),
                    round(float(ms.max()), 1),
                )
            )
        rss_mb = _rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    table = Table(title=f"API latency: {clients} concurrent clients, {seconds:.0f} s per endpoint")
    for column in (
        "endpoint",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "p99 ≤ 100",
    ):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.requests:,}",
            str(r.errors),
            f"{r.per_second:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            "yes" if r.p99_ms <= TARGET_P99_MS else "NO",
        )
    console.print(table)
    console.print(f"the API process held {rss_mb} MB resident (decoded alerts files included)")
    files = {name: sum(1 for _ in (root / name).rglob("*.parquet")) for name in ("alerts", "silver_quotes")}
    report = {
        "lakehouse": {**described, "parquet_files": files},
        "clients": clients,
        "seconds_per_endpoint": seconds,
        "cpu_count": os.cpu_count(),
        "api_resident_mb": rss_mb,
        "target_p99_ms": TARGET_P99_MS,
        "endpoints": [asdict(r) for r in results],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"figures written to {out}")
    return report
