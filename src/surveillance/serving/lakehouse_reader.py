"""Queries the API answers from the lakehouse, without Spark: delta-rs names the files, DuckDB reads them.

Each query opens only the files that can hold its rows: a list of alerts walks the alerts table's date
partitions newest first and stops once the page is full; an alert's quotes come from the silver files
whose event-time and symbol statistics cover the window. What never changes (a data file's symbols, the
file an alert was seen in) is cached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from surveillance.serving.alert_cache import ALERT_COLUMNS, AlertFileCache, newest, parquet_columns
from surveillance.serving.delta_files import DataFile, DeltaFiles, Snapshot, TableNotReadable

TIME_COLUMNS = frozenset({"event_time", "detected_at", "source_kafka_timestamp", "bar_start", "run_time"})
QUOTE_COLUMNS = ("event_id", "event_time", "price", "bid", "ask", "volume", "is_late", "dq_warnings")
BAR_COLUMNS = ("bar_start", "open", "high", "low", "close", "volume", "vwap", "trade_count")
MAX_QUOTES = 20_000


@dataclass(frozen=True)
class AlertFilters:
    symbol: str | None = None
    rule: str | None = None
    severity: str | None = None
    confidence: str | None = None
    since: datetime | None = None  # naive UTC, inclusive
    until: datetime | None = None  # naive UTC, exclusive
    # alert_ids to keep (a status filter resolved against the actions) or to leave out
    only_ids: frozenset[str] | None = None
    except_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last alert's (event time in microseconds, alert_id); the next page starts
    strictly after it in newest-first order."""

    event_time_us: int
    alert_id: str


class Lakehouse:
    """The tables the API reads, by logical name → location (a path or object-store URI)."""

    def __init__(
        self,
        locations: dict[str, str],
        refresh_seconds: float = 1.0,
        storage_options: dict[str, str] | None = None,
        cache_bytes: int = 1 << 30,
        duckdb_setup: Sequence[str] = (),
    ) -> None:
        import duckdb

        self.locations = locations
        self.tables = {
            name: DeltaFiles(locations[name], refresh_seconds, storage_options)
            for name in ("alerts", "silver_quotes", "gold_bars_1m", "dq_results", "stream_progress")
        }
        self._duck = duckdb.connect(":memory:", config={"threads": 2})
        # Parquet footers of immutable files: read once.
        self._duck.execute("SET enable_object_cache = true")
        for statement in duckdb_setup:
            self._duck.execute(statement)
        self._local = threading.local()
        self._file_columns: dict[str, frozenset[str]] = {}
        self._ids = AlertIdIndex()
        self._alert_files = AlertFileCache(cache_bytes)
        self._seen_versions: dict[str, int] = {}
        self._symbols_memo: tuple[tuple[int, ...], dict[str, dict[str, Any]]] | None = None
        self._file_symbols: dict[str, dict[str, tuple[int, int]]] = {}
        self._symbols_lock = threading.Lock()

    # Plumbing ------------------------------------------------------------------------------------

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._duck.cursor()
            # A cursor is a session of its own: it does not inherit the connection's time zone, and naive
            # UTC parameters compared with time-zone-aware columns must not shift by the host's zone.
            cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def _columns_of(self, files: Sequence[DataFile]) -> frozenset[str]:
        """The columns any of ``files`` holds (each file's footer read once: a data file never changes)."""
        present: set[str] = set()
        for data_file in files:
            columns = self._file_columns.get(data_file.uri)
            if columns is None:
                columns = self._file_columns[data_file.uri] = parquet_columns(data_file.uri, self._cursor())
            present |= columns
        return frozenset(present)

    def snapshot(self, table: str) -> Snapshot:
        snapshot = self.tables[table].snapshot()
        if table in ("alerts", "silver_quotes") and self._seen_versions.get(table) != snapshot.version:
            self._seen_versions[table] = snapshot.version
            self._forget_removed_files()
        return snapshot

    def _forget_removed_files(self) -> None:
        # A compaction replaces files: what was cached about the old ones is dropped.
        live = {f.uri for t in ("alerts", "silver_quotes") for f in self._current_files(t)}
        with self._symbols_lock:
            for uri in [u for u in self._file_symbols if u not in live]:
                del self._file_symbols[uri]
            every_table = {f.uri for t in self.tables for f in self._current_files(t)}
            for uri in [u for u in self._file_columns if u not in every_table]:
                del self._file_columns[uri]
        self._ids.forget_except(live)
        self._alert_files.forget_except(live)

    def _current_files(self, table: str) -> tuple[DataFile, ...]:
        current = self.tables[table]._snapshot
        return current.files if current is not None else ()

    def warm(self) -> None:
        """Build the caches of what never changes (per-file symbol counts, the alert id index)."""
        cursor = self._cursor()
        for table in ("silver_quotes", "alerts"):
            for data_file in self.snapshot(table).files:
                self._symbols_in(data_file)
                if table == "alerts":
                    self._ids.files_holding("", [data_file], cursor)
        # The newest alerts files first, as far as the cache holds them.
        newest_first = sorted(
            self.snapshot("alerts").files,
            key=lambda f: f.maximum.get("event_time") or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        budget = self._alert_files.max_bytes
        for data_file in newest_first:
            if self._alert_files.size_bytes >= budget * 0.9:
                break
            self._alert_files.table(data_file, cursor)

    def _rows(
        self, files: Sequence[DataFile], columns: Sequence[str], where: str, params: list[Any], tail: str = ""
    ) -> list[dict[str, Any]]:
        if not files:
            return []
        present = self._columns_of(files)
        # A column none of the files holds yet (added by a later release) reads as NULL.
        select = ", ".join(_select_expression(c) if c in present else f"NULL AS {c}" for c in columns)
        sql = (
            f"SELECT {select} FROM read_parquet(?, union_by_name = true, hive_partitioning = false, "
            f"filename = true) WHERE {where or 'true'} {tail}"
        )
        cursor = self._cursor()
        result = cursor.execute(sql, [[f.uri for f in files], *params])
        names = [d[0] for d in result.description]
        return [_decoded(dict(zip(names, row, strict=True))) for row in result.fetchall()]

    # Alerts --------------------------------------------------------------------------------------

    def _candidates(self, data_file: DataFile, symbol: str | None) -> int:
        """How many of the file's alerts a query could return: its rows, or its rows of ``symbol``."""
        if symbol is None:
            return data_file.rows
        return self._symbols_in(data_file).get(symbol, (0, 0))[0]

    def list_alerts(
        self, filters: AlertFilters, after: Position | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` alerts newest first (event time, then alert_id), strictly after ``after``;
        and whether more follow."""
        if filters.only_ids is not None and not filters.only_ids:
            return [], False
        snapshot = self.snapshot("alerts")
        until = filters.until
        if after is not None:
            cursor_time = _from_micros(after.event_time_us)
            until = (
                cursor_time + timedelta(microseconds=1)
                if until is None
                else min(until, cursor_time + timedelta(microseconds=1))
            )
        files = snapshot.select("event_time", filters.since, until)
        if filters.symbol is not None:
            files = [f for f in files if f.may_hold("symbol", filters.symbol, filters.symbol)]
        conditions = _alert_conditions(filters, after)
        found: list[dict[str, Any]] = []
        groups = (
            snapshot.by_partition_descending(files, "alert_date")
            if "alert_date" in snapshot.partition_columns
            else [(None, files)]
        )
        # Newest dates first, as many per query as should fill the page: a file's row count (or its
        # count of the symbol, cached) bounds what it can add; when the other filters leave less, the
        # next query takes twice as many candidates.
        index, wanted = 0, limit + 1
        while index < len(groups) and len(found) <= limit:
            chunk, candidates = [], 0
            while index < len(groups) and (not chunk or candidates < wanted):
                group = groups[index][1]
                chunk.extend(group)
                candidates += sum(self._candidates(f, filters.symbol) for f in group)
                index += 1
            wanted *= 2
            cursor = self._cursor()
            tables = [self._alert_files.table(f, cursor) for f in chunk]
            found.extend(_decoded(row) for row in newest(tables, conditions, limit + 1 - len(found)))
        return [_public_alert(row) for row in found[:limit]], len(found) > limit

    def find_alert(self, alert_id: str) -> dict[str, Any] | None:
        """The alert with this id, or None. Only the files whose id index holds its hash are read."""
        snapshot = self.snapshot("alerts")
        cursor = self._cursor()
        for data_file in self._ids.files_holding(alert_id, snapshot.files, cursor):
            rows = newest([self._alert_files.table(data_file, cursor)], {"alert_id": alert_id}, 1)
            if rows:
                return _public_alert(_decoded(rows[0]))
        return None

    # Quotes, bars, symbols ------------------------------------------------------------------------

    def quotes_around(self, symbol: str, moment: datetime, seconds: float) -> list[dict[str, Any]]:
        """The symbol's silver quotes within ``seconds`` either side of ``moment`` (naive UTC), oldest
        first."""
        low, high = moment - timedelta(seconds=seconds), moment + timedelta(seconds=seconds)
        snapshot = self.snapshot("silver_quotes")
        files = [f for f in snapshot.select("event_time", low, high) if f.may_hold("symbol", symbol, symbol)]
        return self._rows(
            files,
            QUOTE_COLUMNS,
            "symbol = ? AND event_time >= ? AND event_time <= ?",
            [symbol, low, high],
            f"ORDER BY event_time, event_id LIMIT {MAX_QUOTES}",
        )

    def bars(
        self, symbol: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[dict[str, Any]]:
        """The symbol's one-minute bars in [since, until), oldest first."""
        snapshot = self.snapshot("gold_bars_1m")
        files = [
            f for f in snapshot.select("bar_start", since, until) if f.may_hold("symbol", symbol, symbol)
        ]
        where, params = "symbol = ?", [symbol]
        if since is not None:
            where, params = where + " AND bar_start >= ?", [*params, since]
        if until is not None:
            where, params = where + " AND bar_start < ?", [*params, until]
        return self._rows(files, BAR_COLUMNS, where, params, f"ORDER BY bar_start LIMIT {limit}")

    def symbols(self) -> dict[str, dict[str, Any]]:
        """Every symbol with quotes or alerts: {symbol: {quotes, alerts, last_quote}} (per-file counts are
        cached: a data file never changes)."""
        snapshots = {}
        for table in ("silver_quotes", "alerts"):
            try:
                snapshots[table] = self.snapshot(table)
            except TableNotReadable:
                continue
        versions = tuple(snapshots[t].version if t in snapshots else -1 for t in ("silver_quotes", "alerts"))
        memo = self._symbols_memo
        if memo is not None and memo[0] == versions:
            return memo[1]
        merged: dict[str, dict[str, Any]] = {}
        for table, key in (("silver_quotes", "quotes"), ("alerts", "alerts")):
            if table not in snapshots:
                continue
            for data_file in snapshots[table].files:
                for symbol, (count, last_us) in self._symbols_in(data_file).items():
                    entry = merged.setdefault(
                        symbol, {"symbol": symbol, "quotes": 0, "alerts": 0, "last_quote": None}
                    )
                    entry[key] += count
                    if key == "quotes" and (entry["last_quote"] is None or last_us > entry["last_quote"]):
                        entry["last_quote"] = last_us
        for entry in merged.values():
            if entry["last_quote"] is not None:
                entry["last_quote"] = _from_micros(entry["last_quote"]).replace(tzinfo=UTC)
        result = dict(sorted(merged.items()))
        self._symbols_memo = (versions, result)
        return result

    def _symbols_in(self, data_file: DataFile) -> dict[str, tuple[int, int]]:
        with self._symbols_lock:
            cached = self._file_symbols.get(data_file.uri)
        if cached is None:
            sql = (
                "SELECT symbol, count(*), epoch_us(max(event_time)) "
                "FROM read_parquet(?, hive_partitioning = false) GROUP BY symbol"
            )
            cached = {
                s: (int(n), int(t or 0))
                for s, n, t in self._cursor().execute(sql, [[data_file.uri]]).fetchall()
            }
            with self._symbols_lock:
                self._file_symbols[data_file.uri] = cached
        return cached

    # Operations ----------------------------------------------------------------------------------

    def quality(self, batches: int) -> list[dict[str, Any]]:
        """The data-quality verdicts of the last ``batches`` micro-batches, newest first."""
        snapshot = self.snapshot("dq_results")
        newest = sorted(
            snapshot.files,
            key=lambda f: f.maximum.get("run_time") or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        picked, rows = [], 0
        for data_file in newest:
            picked.append(data_file)
            rows += data_file.rows
            if rows >= batches * 64:
                break
        sql_columns = (
            "stream_id",
            "batch_id",
            "suite",
            "expectation",
            "severity",
            "success",
            "element_count",
            "unexpected_count",
            "run_time",
        )
        found = self._rows(picked, sql_columns, "", [], "")
        grouped: dict[tuple[str, int], dict[str, Any]] = {}
        for row in found:
            key = (row["stream_id"], row["batch_id"])
            batch = grouped.setdefault(
                key,
                {
                    "stream_id": key[0],
                    "batch_id": key[1],
                    "run_time": row["run_time"],
                    "expectations": 0,
                    "failed": [],
                },
            )
            batch["expectations"] += 1
            batch["run_time"] = max(batch["run_time"], row["run_time"])
            if not row["success"]:
                batch["failed"].append(
                    {
                        "suite": row["suite"],
                        "expectation": row["expectation"],
                        "severity": row["severity"],
                        "unexpected_count": row["unexpected_count"],
                        "element_count": row["element_count"],
                    }
                )
        ordered = sorted(grouped.values(), key=lambda b: b["run_time"], reverse=True)[:batches]
        for batch in ordered:
            errors = [f for f in batch["failed"] if f["severity"] == "error"]
            batch["status"] = "error" if errors else ("warning" if batch["failed"] else "ok")
        return ordered

    def last_batches(self) -> list[dict[str, Any]]:
        """Each query's latest micro-batch from stream_progress (only the newest files are read)."""
        snapshot = self.snapshot("stream_progress")
        if not snapshot.files:
            return []
        latest = max(
            (f.maximum.get("finished_at") for f in snapshot.files if f.maximum.get("finished_at")),
            default=None,
        )
        files = list(snapshot.files)
        if latest is not None:
            horizon = latest.replace(tzinfo=None) - timedelta(hours=6)
            files = [f for f in files if f.may_hold("finished_at", horizon, None)]
        # query_name came with the second query; older files hold the first query's batches only.
        query_name = "query_name" if "query_name" in self._columns_of(files) else "NULL"
        sql = (
            f"SELECT coalesce({query_name}, 'quotes_to_lakehouse') AS query_name, stream_id, "
            "arg_max(batch_id, finished_at) AS batch_id, epoch_us(max(finished_at)) AS finished_at, "
            "epoch_us(arg_max(max_event_time, finished_at)) AS max_event_time, "
            "arg_max(coalesce(records_in, 0), finished_at) AS records_in "
            "FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
            "GROUP BY ALL ORDER BY finished_at DESC"
        )
        result = self._cursor().execute(sql, [[f.uri for f in files]])
        names = [d[0] for d in result.description]
        latest_by_query: dict[str, dict[str, Any]] = {}
        for row in result.fetchall():
            record = dict(zip(names, row, strict=True))
            if record["query_name"] in latest_by_query:
                continue
            for column in ("finished_at", "max_event_time"):
                record[column] = (
                    _from_micros(record[column]).replace(tzinfo=UTC) if record[column] is not None else None
                )
            latest_by_query[record["query_name"]] = record
        return list(latest_by_query.values())


class AlertIdIndex:
    """Per data file of the alerts table, the sorted 64-bit hashes of its alert_ids (8 bytes an alert).

    Built once per file (a file never changes), so finding an alert by id reads one file, not the
    alert_id column of the whole table. Hashes are DuckDB's ``hash()``, computed by the same process.
    """

    def __init__(self) -> None:
        self._by_file: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def files_holding(self, alert_id: str, files: Sequence[DataFile], cursor: Any) -> list[DataFile]:
        (wanted,) = cursor.execute("SELECT hash(?::VARCHAR)", [alert_id]).fetchone()
        wanted = np.uint64(wanted)
        found = []
        for data_file in files:
            hashes = self._hashes(data_file, cursor)
            at = int(np.searchsorted(hashes, wanted))
            if at < len(hashes) and hashes[at] == wanted:
                found.append(data_file)
        return found

    def _hashes(self, data_file: DataFile, cursor: Any) -> np.ndarray:
        hashes = self._by_file.get(data_file.uri)
        if hashes is None:
            sql = "SELECT hash(alert_id) AS h FROM read_parquet(?, hive_partitioning = false)"
            hashes = np.sort(cursor.execute(sql, [[data_file.uri]]).fetchnumpy()["h"].astype(np.uint64))
            with self._lock:
                self._by_file[data_file.uri] = hashes
        return hashes

    def forget_except(self, live: set[str]) -> None:
        """Drop the indexes of files no longer in the table (compacted away)."""
        with self._lock:
            for uri in [u for u in self._by_file if u not in live]:
                del self._by_file[uri]


def _select_expression(column: str) -> str:
    if column in TIME_COLUMNS:
        return f"epoch_us({column}) AS {column}"
    return column


def _alert_conditions(filters: AlertFilters, after: Position | None) -> dict[str, Any]:
    return {
        "symbol": filters.symbol,
        "rule": filters.rule,
        "severity": filters.severity,
        "confidence": filters.confidence,
        "since_us": _micros(filters.since),
        "until_us": _micros(filters.until),
        "only_ids": filters.only_ids,
        "except_ids": filters.except_ids,
        "after": (after.event_time_us, after.alert_id) if after is not None else None,
    }


def _micros(moment: datetime | None) -> int | None:
    """Naive UTC → microseconds since the epoch."""
    return None if moment is None else (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    """Naive UTC."""
    return datetime(1970, 1, 1) + timedelta(microseconds=int(micros))


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for column in TIME_COLUMNS & row.keys():
        if row[column] is not None:
            row[column] = _from_micros(row[column]).replace(tzinfo=UTC)
    return row


def _public_alert(row: dict[str, Any]) -> dict[str, Any]:
    alert = {column: row.get(column) for column in ALERT_COLUMNS}
    try:
        alert["details"] = json.loads(row["details"]) if row.get("details") else {}
    except ValueError:
        alert["details"] = {"unparsed": row["details"]}
    alert["alert_date"] = row["event_time"].date() if row.get("event_time") else None
    return alert
