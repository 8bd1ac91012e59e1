"""The streaming job as its own process (``python -m surveillance.cli stream``), as in production: the
suites that crash, kill and stop it share these."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType

from surveillance.checkpoints import detection_checkpoint
from surveillance.config import Settings
from surveillance.kafka.admin import topic_end_offsets
from surveillance.pipeline.stream import CRASH_ENV

_SECURITY_KEYS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username_env",
    "sasl_password_env",
    "ssl_ca_location",
)


def stream_overrides(settings: Settings) -> list[str]:
    """``--set`` assignments that give a new process the test's settings (broker and its security, topics,
    tables, suites)."""
    return [
        f"state_dir={settings.state_dir}",
        f"kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"kafka.topics.quotes={settings.kafka.topics.quotes}",
        f"kafka.topics.alerts={settings.kafka.topics.alerts}",
        *(
            f"kafka.{key}={getattr(settings.kafka, key)}"
            for key in _SECURITY_KEYS
            if getattr(settings.kafka, key) is not None
        ),
        f"lakehouse.root={settings.lakehouse.root}",
        f"stream.checkpoint_dir={settings.stream.checkpoint_dir}",
        f"stream.max_offsets_per_trigger={settings.stream.max_offsets_per_trigger}",
        f"detection.max_offsets_per_trigger={settings.detection.max_offsets_per_trigger}",
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        f"quality.enabled={str(settings.quality.enabled).lower()}",
        *(
            f"quality.suites.{suite}.{name}.severity={spec.severity}"
            for suite in ("silver_quotes", "gold_bars_1m")
            for name, spec in getattr(settings.quality.suites, suite).items()
        ),
    ]


def stream_command(settings: Settings) -> list[str]:
    """``surveil stream --once`` with these settings, as a command line."""
    sets = [arg for value in stream_overrides(settings) for arg in ("--set", value)]
    return [sys.executable, "-m", "surveillance.cli", *sets, "stream", "--once"]


def run_stream(settings: Settings, crash_at: str | None = None, timeout: float = 600) -> int:
    """Run :func:`stream_command` to its end (or to the crash point ``crash_at``); its exit code."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    done = subprocess.run(stream_command(settings), env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode not in (0, 86):
        raise AssertionError(f"stream exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.returncode


def alert_ids_on_topic(settings: Settings) -> list[str]:
    """Every alert_id on the alerts topic, re-sends included."""
    consumer = KafkaConsumer(
        settings.kafka.topics.alerts,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        **settings.kafka.client_options(),
    )
    ids = [json.loads(message.value)["alert_id"] for message in consumer]
    consumer.close()
    return ids


def query_processes_alive(settings: Settings) -> list[int]:
    """Pids of running query processes of this pipeline (``surveil stream``'s children, by their settings
    files under the state dir): none may outlive their parent."""
    marker = f"{settings.state_dir}/processes/"
    alive = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "--settings-json" in cmdline:
            alive.append(int(proc.name))
    return alive


def checkpoint_entries(settings: Settings) -> set[tuple[str, str, str]]:
    """(query, "offsets" | "commits", batch) of both queries' checkpoints: a batch is started when its
    offsets are written and done when its commit is."""
    checkpoints = {"lakehouse": settings.stream.checkpoint_dir, "detection": detection_checkpoint(settings)}
    return {
        (query, kind, entry.name)
        for query, folder in checkpoints.items()
        for kind in ("offsets", "commits")
        for entry in (Path(folder) / kind).glob("[0-9]*")
    }


def batches_in_flight(settings: Settings) -> list[str]:
    """The queries with a micro-batch started and not committed: work under way."""
    entries = checkpoint_entries(settings)
    return sorted(
        {q for q, kind, batch in entries if kind == "offsets" and (q, "commits", batch) not in entries}
    )


def committed_offsets(checkpoint: str) -> dict[int, int]:
    """Per quotes partition, the end offset of the last micro-batch the checkpoint records as committed."""
    commits = [int(p.name) for p in (Path(checkpoint) / "commits").glob("[0-9]*")]
    if not commits:
        return {}
    # An offsets file: a version line, the batch's metadata, then one line per source (topic -> offsets).
    lines = (Path(checkpoint) / "offsets" / str(max(commits))).read_text().splitlines()
    source = json.loads(lines[2])
    return {int(part): int(offset) for offsets in source.values() for part, offset in offsets.items()}


def caught_up(settings: Settings) -> bool:
    """Whether both queries have committed every record on the quotes topic."""
    end = topic_end_offsets(settings.kafka, settings.kafka.topics.quotes)
    return all(
        committed_offsets(folder) == end
        for folder in (settings.stream.checkpoint_dir, detection_checkpoint(settings))
    )


def set_topic_config(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    """Alter a topic's configuration (e.g. ``max.message.bytes``); only the keys given change."""
    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        admin.close()


@contextmanager
def unwritable(directory: Path) -> Iterator[str]:
    """No file can be created in ``directory`` inside this block (a disk gone read-only under one table):
    its mode for a user; for root, whom modes do not stop, the immutable attribute. Yields how."""
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield "chmod 555"
        finally:
            directory.chmod(mode)
        return
    if shutil.which("chattr") is None:  # Debian's e2fsprogs; the test installs what it needs
        subprocess.run(["apt-get", "install", "-y", "-q", "e2fsprogs"], check=True, capture_output=True)
    subprocess.run(["chattr", "+i", str(directory)], check=True, capture_output=True)
    try:
        yield "chattr +i"
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True, capture_output=True)
