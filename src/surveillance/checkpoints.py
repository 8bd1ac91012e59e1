"""Where each streaming query keeps its checkpoint, and the Kafka offsets it has committed (Spark-free:
the API's health and the bench read them)."""

from __future__ import annotations

import json
from pathlib import Path

from surveillance.config import Settings, resolve_local_path


def detection_checkpoint(settings: Settings) -> str:
    """The detection query's checkpoint: configured, or beside the lakehouse query's."""
    configured = settings.detection.checkpoint_dir
    if configured:
        return resolve_local_path(configured)
    lakehouse = resolve_local_path(settings.stream.checkpoint_dir).rstrip("/")
    return f"{lakehouse.rsplit('/', 1)[0]}/{settings.detection.query_name}"


def query_checkpoints(settings: Settings) -> dict[str, str]:
    """{query name: checkpoint location} of the enabled queries."""
    found = {}
    if settings.stream.enabled:
        found[settings.stream.query_name] = resolve_local_path(settings.stream.checkpoint_dir)
    if settings.detection.enabled:
        found[settings.detection.query_name] = detection_checkpoint(settings)
    return found


def committed_offsets(checkpoint: str) -> dict[int, int]:
    """{partition: next offset} of the quotes topic as of the query's last committed batch (read from a
    local checkpoint; empty before its first commit)."""
    folder = Path(resolve_local_path(checkpoint))
    commits = [int(p.name) for p in (folder / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not commits:
        return {}
    lines = (folder / "offsets" / str(max(commits))).read_text().splitlines()
    # "v1", the batch's metadata, then one line per source: {"topic": {"partition": offset, ...}}.
    offsets: dict[int, int] = {}
    for line in lines[2:]:
        for partitions in json.loads(line).values():
            for partition, offset in partitions.items():
                offsets[int(partition)] = offsets.get(int(partition), 0) + int(offset)
    return offsets
