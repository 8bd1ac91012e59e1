"""A Delta table's live data files, from delta-rs, with what the log says about each: partition values,
row count and per-column min/max. Queries pick files from these (partition pruning, file skipping) and
hand only those to DuckDB.

Data files are immutable, so a snapshot is replaced, never edited, and is safe to share across threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

STATS_PRECISION = timedelta(milliseconds=1)


@dataclass(frozen=True)
class DataFile:
    uri: str  # what DuckDB opens: a local path, or the object-store URI
    path: str  # relative to the table root, as in the log
    rows: int
    partition: dict[str, Any]
    minimum: dict[str, Any]
    maximum: dict[str, Any]

    def may_hold(self, column: str, low: Any = None, high: Any = None) -> bool:
        """False only when the file's statistics prove no row has ``low <= column <= high``."""
        lo, hi = self.minimum.get(column), self.maximum.get(column)
        if isinstance(hi, datetime):
            # Delta keeps timestamp statistics in milliseconds: the true maximum may be up to 999 µs later.
            hi = hi + STATS_PRECISION
        if low is not None and hi is not None and _comparable(hi, low) < low:
            return False
        return not (high is not None and lo is not None and _comparable(lo, high) > high)


def _comparable(stat: Any, bound: Any) -> Any:
    # The log's timestamps are UTC-aware; the bounds are naive UTC.
    if isinstance(stat, datetime) and isinstance(bound, datetime) and stat.tzinfo and not bound.tzinfo:
        return stat.replace(tzinfo=None)
    return stat


@dataclass(frozen=True)
class Snapshot:
    location: str
    version: int
    files: tuple[DataFile, ...]
    loaded_at: float
    commit_time: datetime | None = None
    partition_columns: tuple[str, ...] = field(default=())

    def select(self, column: str, low: Any = None, high: Any = None) -> list[DataFile]:
        return [f for f in self.files if f.may_hold(column, low, high)]

    def by_partition_descending(self, files: list[DataFile], column: str) -> list[tuple[Any, list[DataFile]]]:
        """Files grouped by one partition column's value, newest (largest) first."""
        groups: dict[Any, list[DataFile]] = {}
        for data_file in files:
            groups.setdefault(data_file.partition.get(column), []).append(data_file)
        return sorted(groups.items(), key=lambda item: (item[0] is not None, item[0]), reverse=True)


class TableNotReadable(RuntimeError):
    """The table does not exist (yet) or cannot be opened at its location."""


class DeltaFiles:
    """Follows one Delta table: at most every ``refresh_seconds`` a request looks for new commits."""

    def __init__(
        self, location: str, refresh_seconds: float, storage_options: dict[str, str] | None = None
    ) -> None:
        self.location = location
        self.refresh_seconds = refresh_seconds
        self.storage_options = storage_options
        self._table: Any = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        current = self._snapshot
        if current is not None and time.monotonic() - current.loaded_at < self.refresh_seconds:
            return current
        # One request looks for new commits; the others meanwhile answer from the snapshot they have.
        if not self._lock.acquire(blocking=current is None):
            return current  # type: ignore[return-value]
        try:
            current = self._snapshot
            if current is not None and time.monotonic() - current.loaded_at < self.refresh_seconds:
                return current
            self._snapshot = self._load(current)
            return self._snapshot
        finally:
            self._lock.release()

    def _load(self, previous: Snapshot | None) -> Snapshot:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            if self._table is None:
                self._table = DeltaTable(self.location, storage_options=self.storage_options)
            else:
                self._table.update_incremental()
        except (TableNotFoundError, OSError) as exc:
            self._table = None
            raise TableNotReadable(f"{self.location}: {exc}") from exc
        version = self._table.version()
        if previous is not None and previous.version == version:
            return Snapshot(
                previous.location,
                version,
                previous.files,
                time.monotonic(),
                previous.commit_time,
                previous.partition_columns,
            )
        partition_columns = tuple(self._table.metadata().partition_columns)
        files = _data_files(self._table, partition_columns)
        return Snapshot(
            self.location, version, files, time.monotonic(), _commit_time(self._table), partition_columns
        )


def _data_files(table: Any, partition_columns: tuple[str, ...]) -> tuple[DataFile, ...]:
    actions = pa.table(table.get_add_actions(flatten=True))
    columns = {name: actions.column(name).to_pylist() for name in actions.column_names}
    root = _table_root(table.table_uri)
    files = []
    for i, path in enumerate(columns["path"]):
        partition = {
            c: _partition_value(columns.get(f"partition.{c}", [None] * (i + 1))[i]) for c in partition_columns
        }
        minimum = {k[4:]: v[i] for k, v in columns.items() if k.startswith("min.") and v[i] is not None}
        maximum = {k[4:]: v[i] for k, v in columns.items() if k.startswith("max.") and v[i] is not None}
        files.append(
            DataFile(
                uri=_join(root, path),
                path=path,
                rows=int(columns["num_records"][i] or 0),
                partition=partition,
                minimum=minimum,
                maximum=maximum,
            )
        )
    return tuple(files)


def _partition_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def _commit_time(table: Any) -> datetime | None:
    from datetime import UTC

    history = table.history(1)
    stamp = history[0].get("timestamp") if history else None
    return datetime.fromtimestamp(stamp / 1000, UTC) if stamp else None


def _table_root(uri: str) -> str:
    # Local tables come back as file:// URIs; DuckDB wants the plain path.
    if uri.startswith("file://"):
        return unquote(uri[len("file://") :]).rstrip("/")
    return uri.rstrip("/")


def _join(root: str, relative: str) -> str:
    if "://" in relative:
        return relative
    return f"{root}/{unquote(relative)}"
