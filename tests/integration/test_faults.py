"""Faults a production stream meets, other than a crash: being stopped, ... (make test-chaos).

Each case runs ``surveil stream`` as its own process and audits the tables with delta-rs afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from stream_process import alert_ids_on_topic, run_stream, stream_command

from surveillance.ingestion.generator import GeneratedQuotes

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_sigterm_stops_both_query_processes_cleanly_and_a_restart_finishes(
    pipeline: Pipeline, dirty_quotes: GeneratedQuotes, tmp_path: Path
) -> None:
    # `surveil stream` as a service runs it: no --once, both queries in their own processes (conf/local.yml).
    pipeline.settings = pipeline.settings.with_overrides("stream.max_offsets_per_trigger=5000")
    sent = pipeline.send(dirty_quotes)
    command = [arg for arg in stream_command(pipeline.settings) if arg != "--once"]
    log = tmp_path / "stream.log"
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )
    progress_log = Path(pipeline.locations["stream_progress"]) / "_delta_log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if progress_log.exists() and len(list(progress_log.glob("*.json"))) >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, f"the stream ended before it was stopped:\n{log.read_text()[-4000:]}"

    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"no stop within 120 s of SIGTERM:\n{log.read_text()[-4000:]}") from None
    stderr = log.read_text()
    assert code == 0, stderr[-4000:]
    assert stderr.count("SIGTERM: stopping the queries") == 2  # forwarded once to each query's process
    assert "Traceback" not in stderr and "reentrant call" not in stderr, stderr[-4000:]

    assert run_stream(pipeline.settings) == 0
    bronze = pipeline.pandas("bronze_quotes")
    alerts = pipeline.pandas("alerts")
    assert len(bronze) == sent and not bronze.duplicated(["partition", "offset"]).any()
    assert not alerts.alert_id.duplicated().any()
    assert set(alert_ids_on_topic(pipeline.settings)) == set(alerts.alert_id)
