"""``surveil maintain`` alongside a running ``surveil stream``: compaction and VACUUM lose nothing and stop
nothing; a short-retention VACUUM (allowed explicitly, stream stopped) leaves every table readable."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable
from stream_process import caught_up, stream_command, stream_overrides

from surveillance.ingestion.generator import generate_quotes

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _maintain(pipeline: Pipeline, *extra: str) -> subprocess.CompletedProcess[str]:
    sets = [arg for value in stream_overrides(pipeline.settings) for arg in ("--set", value)]
    command = [sys.executable, "-m", "surveillance.cli", *sets, *extra, "maintain"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _operations(location: str) -> list[str]:
    return [entry["operation"] for entry in DeltaTable(location).history()]


def test_maintenance_while_the_stream_writes_loses_nothing_and_stops_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.settings = pipeline.settings.with_overrides(
        "stream.max_offsets_per_trigger=500", "detection.max_offsets_per_trigger=500"
    )
    generated = generate_quotes(symbols=4, minutes=15, seed=23, inject_anomalies=True, dirty=True)
    half = len(generated.raw_lines) // 2
    sent = pipeline.send_lines(generated.raw_lines[:half], "first.jsonl")
    log = tmp_path / "stream.log"
    command = [arg for arg in stream_command(pipeline.settings) if arg != "--once"]
    stream = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not caught_up(pipeline.settings):
            assert stream.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        # Maintenance runs while the second half is being written: small batches, many commits.
        sent += pipeline.send_lines(generated.raw_lines[half:], "second.jsonl")
        maintained = _maintain(pipeline)
        assert maintained.returncode == 0, maintained.stdout[-3000:] + maintained.stderr[-3000:]
        assert stream.poll() is None, f"the stream stopped during maintenance:\n{log.read_text()[-4000:]}"
        deadline = time.monotonic() + 300
        while not caught_up(pipeline.settings):
            assert stream.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        stream.send_signal(signal.SIGTERM)
        assert stream.wait(120) == 0, log.read_text()[-4000:]
    finally:
        if stream.poll() is None:
            stream.kill()
    locations = pipeline.locations
    for name in ("bronze_quotes", "silver_quotes", "alerts"):
        assert "OPTIMIZE" in _operations(locations[name]), name  # compacted while the stream appended
    assert "OPTIMIZE" not in _operations(locations["gold_bars_1m"])  # MERGEd by the stream: left alone

    def counts() -> dict[str, int]:
        return {
            name: len(DeltaTable(locations[name]).to_pandas())
            for name in ("bronze_quotes", "silver_quotes", "quarantine_quotes", "gold_bars_1m", "alerts")
        }

    before = counts()
    bronze = DeltaTable(locations["bronze_quotes"]).to_pandas()
    assert before["bronze_quotes"] == sent and not bronze.duplicated(["partition", "offset"]).any()
    assert set(DeltaTable(locations["silver_quotes"]).to_pandas().event_id) == set(generated.quotes.event_id)

    # With the stream stopped, a VACUUM of everything unreferenced (explicitly allowed) deletes the files
    # the compaction replaced, and every table still reads the same.
    short = ["--set", "lakehouse.maintenance.vacuum_retention=0 hours"]
    short += ["--set", "lakehouse.maintenance.allow_short_vacuum_retention=true"]
    refused = _maintain(pipeline, "--set", "lakehouse.maintenance.vacuum_retention=0 hours")
    assert refused.returncode == 2 and "under 7 days" in " ".join(refused.stderr.split())
    bronze_dir = Path(locations["bronze_quotes"])
    on_disk = len(list(bronze_dir.rglob("*.parquet")))
    vacuumed = _maintain(pipeline, *short)
    assert vacuumed.returncode == 0, vacuumed.stdout[-3000:] + vacuumed.stderr[-3000:]
    active = len(DeltaTable(str(bronze_dir)).file_uris())
    assert len(list(bronze_dir.rglob("*.parquet"))) == active < on_disk  # only the replaced ones went
    assert counts() == before
