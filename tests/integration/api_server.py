"""The API as its own process (uvicorn, as `surveil api` runs it) on a free port, for the serving tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from surveillance.config import Settings


@dataclass
class RunningApi:
    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_overrides(settings: Settings) -> list[str]:
    """What the API process needs of the test's settings: tables, broker, alerts topic."""
    return [
        f"state_dir={settings.state_dir}",
        f"lakehouse.root={settings.lakehouse.root}",
        f"stream.checkpoint_dir={settings.stream.checkpoint_dir}",
        f"kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"kafka.topics.alerts={settings.kafka.topics.alerts}",
        f"kafka.topics.quotes={settings.kafka.topics.quotes}",
        # Tests look at new commits at once.
        "serving.refresh_interval=1 second",
        "serving.live.heartbeat=2 seconds",
    ]


@contextmanager
def running_api(
    settings: Settings, env: dict[str, str], log: Path, probe_key: str, extra: Sequence[str] = ()
) -> Iterator[RunningApi]:
    """`python -m surveillance.cli api` with ``env`` (the keys) and ``extra`` settings, until the block
    ends."""
    port = free_port()
    command = [sys.executable, "-m", "surveillance.cli", "api", "--port", str(port)]
    for assignment in [*api_overrides(settings), *extra]:
        command += ["--set", assignment]
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT)
    api = RunningApi(f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with {process.returncode}:\n{api.output()}")
            try:
                if httpx.get(f"{api.base}/v1/whoami", headers={"X-API-Key": probe_key}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not come up:\n{api.output()}")
            time.sleep(0.3)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
