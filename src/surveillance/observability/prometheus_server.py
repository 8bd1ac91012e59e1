"""`surveil monitor up | down | status`: a real Prometheus (Debian's package) on loopback, scraping the
stream's query processes and the API, with the project's alerting rules. Its state lives under
``<state_dir>/monitor`` (configuration, data, log, pid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from surveillance.config import Settings, interval_seconds, resolve_local_path
from surveillance.system_packages import ensure_program

RULES = Path(__file__).resolve().parents[3] / "monitoring" / "prometheus" / "rules.yml"


class MonitorError(RuntimeError):
    """Prometheus could not be started or reached; the message says why."""


@dataclass(frozen=True)
class MonitorStatus:
    running: bool
    url: str
    pid: int | None
    targets: list[dict[str, Any]]
    rules: int


def stream_targets(settings: Settings) -> list[str]:
    """Where the stream's query processes serve metrics: the lakehouse query on metrics.port, the
    detection query on the next port (each query runs in its own process on one machine)."""
    metrics = settings.metrics
    return [f"{metrics.host}:{metrics.port}", f"{metrics.host}:{metrics.port + 1}"]


def ingest_target(settings: Settings) -> str:
    """Where `surveil ingest` serves its metrics (``ingest.metrics_port``, else ``metrics.port + 2``)."""
    from surveillance.providers.run import ingest_metrics_port

    return f"{settings.metrics.host}:{ingest_metrics_port(settings)}"


def scrape_config(settings: Settings, rules: Path = RULES) -> dict[str, Any]:
    interval = f"{interval_seconds(settings.monitor.scrape_interval)}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)] if rules.exists() else [],
        "scrape_configs": [
            {"job_name": "surveil_stream", "static_configs": [{"targets": stream_targets(settings)}]},
            {
                "job_name": "surveil_api",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"{settings.serving.host}:{settings.serving.port}"]}],
            },
            # `surveil ingest`, where one runs: a target down is an alert only once it has been up.
            {"job_name": "surveil_ingest", "static_configs": [{"targets": [ingest_target(settings)]}]},
        ],
    }


class Prometheus:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = Path(resolve_local_path(settings.state_dir)) / "monitor"
        self.url = f"http://{settings.monitor.host}:{settings.monitor.port}"
        self.pid_file = self.folder / "prometheus.pid"
        self.log = self.folder / "prometheus.log"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def up(self, timeout_s: float = 60) -> MonitorStatus:
        """Install Prometheus if missing, write its configuration, start (or reload) it, wait until ready."""
        binary = ensure_program("prometheus", ["prometheus"], "surveil monitor")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.settings), sort_keys=False))
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)  # re-read the configuration
        else:
            monitor = self.settings.monitor
            command = [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--storage.tsdb.retention.time={monitor.retention}",
                f"--web.listen-address={monitor.host}:{monitor.port}",
                "--web.enable-lifecycle",
            ]
            with open(self.log, "ab") as sink:
                process = subprocess.Popen(
                    command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Ready, and its targets discovered (a status right after start would list none).
            if self._ready() and self.api("/api/v1/targets").get("activeTargets"):
                return self.status()
            if self._pid() is None:
                raise MonitorError(f"Prometheus exited at start; its log: {self.log}\n{self._tail()}")
            time.sleep(0.3)
        raise MonitorError(
            f"Prometheus was not ready at {self.url} within {timeout_s:.0f} s; log: {self.log}"
        )

    def down(self, timeout_s: float = 30) -> bool:
        """Stop it (its data stays); False when it was not running."""
        pid = self._pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._pid() is not None:
            time.sleep(0.2)
        if self._pid() is not None:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> MonitorStatus:
        pid = self._pid()
        if pid is None or not self._ready():
            return MonitorStatus(False, self.url, pid, [], 0)
        targets = self.api("/api/v1/targets").get("activeTargets", [])
        groups = self.api("/api/v1/rules").get("groups", [])
        return MonitorStatus(
            True,
            self.url,
            pid,
            [
                {
                    "job": t["labels"].get("job"),
                    "instance": t["labels"].get("instance"),
                    "health": t.get("health"),
                    "error": t.get("lastError") or "",
                }
                for t in targets
            ],
            sum(len(g.get("rules", [])) for g in groups),
        )

    def api(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise MonitorError(f"{path}: {body}")
        return body["data"]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
