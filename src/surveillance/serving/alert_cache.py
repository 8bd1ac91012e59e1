"""The alerts table's data files, decoded once and kept in memory (a data file never changes).

Decoding Parquet (the evidence JSON above all) is what a list query spends most of its time on; an Arrow
table in memory is filtered and ranked in a few milliseconds. The cache is bounded (least recently used
files go first); a file that is not in it is read again. Times are kept as microseconds since the epoch,
so tables written by Spark (INT96) and by delta-rs compare alike.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from surveillance.serving.delta_files import DataFile

TIME_COLUMNS = ("event_time", "detected_at", "source_kafka_timestamp")
# The columns the API reads and the DuckDB type each is decoded to, whatever wrote the file: every cached
# table has this schema, so files written before a column existed concatenate with newer ones.
ALERT_TYPES = {
    "alert_id": "VARCHAR",
    "symbol": "VARCHAR",
    "event_time": "BIGINT",
    "event_id": "VARCHAR",
    "rule": "VARCHAR",
    "score": "DOUBLE",
    "threshold": "DOUBLE",
    "severity": "VARCHAR",
    "confidence": "VARCHAR",
    "details": "VARCHAR",
    "detected_at": "BIGINT",
    "source_partition": "INTEGER",
    "source_offset": "BIGINT",
    "source_kafka_timestamp": "BIGINT",
    "episode_id": "VARCHAR",
}
ALERT_COLUMNS = tuple(ALERT_TYPES)


class AlertFileCache:
    """Decoded alerts files, least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._tables: OrderedDict[str, pa.Table] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.loads = 0

    def table(self, data_file: DataFile, cursor: Any) -> pa.Table:
        with self._lock:
            cached = self._tables.get(data_file.uri)
            if cached is not None:
                self._tables.move_to_end(data_file.uri)
                return cached
        loaded = self._load(data_file, cursor)
        with self._lock:
            if data_file.uri not in self._tables:
                self._tables[data_file.uri] = loaded
                self._bytes += loaded.nbytes
                self.loads += 1
            while self._bytes > self.max_bytes and len(self._tables) > 1:
                _, dropped = self._tables.popitem(last=False)
                self._bytes -= dropped.nbytes
        return loaded

    @staticmethod
    def _load(data_file: DataFile, cursor: Any) -> pa.Table:
        present = parquet_columns(data_file.uri, cursor)
        select = ", ".join(_decoded_column(column, column in present) for column in ALERT_COLUMNS)
        sql = f"SELECT {select} FROM read_parquet(?, hive_partitioning = false)"
        return cursor.sql(sql, params=[data_file.uri]).to_arrow_table().combine_chunks()

    def forget_except(self, live: set[str]) -> None:
        with self._lock:
            for uri in [u for u in self._tables if u not in live]:
                self._bytes -= self._tables.pop(uri).nbytes

    @property
    def size_bytes(self) -> int:
        return self._bytes


def parquet_columns(uri: str, cursor: Any) -> frozenset[str]:
    """The column names one Parquet file holds (its footer only)."""
    described = cursor.execute("DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false)", [uri])
    return frozenset(row[0] for row in described.fetchall())


def _decoded_column(column: str, present: bool) -> str:
    wanted = ALERT_TYPES[column]
    if not present:  # written before the column existed (episode_id came later): NULL, typed
        return f"CAST(NULL AS {wanted}) AS {column}"
    if column in TIME_COLUMNS:
        return f"epoch_us({column})::BIGINT AS {column}"
    return f"CAST({column} AS {wanted}) AS {column}"


def matching(table: pa.Table, conditions: dict[str, Any]) -> pa.Array | None:
    """The boolean mask of rows meeting every condition (None: all rows).

    Conditions: column → value (equality); ``since_us`` / ``until_us`` (event time, [since, until));
    ``only_ids`` / ``except_ids`` (sets of alert_id); ``after`` ((event time µs, alert_id): rows strictly
    after it in newest-first order).
    """
    masks = []
    for column in ("symbol", "rule", "severity", "confidence", "alert_id"):
        if conditions.get(column) is not None:
            masks.append(pc.equal(table[column], conditions[column]))
    if conditions.get("since_us") is not None:
        masks.append(pc.greater_equal(table["event_time"], conditions["since_us"]))
    if conditions.get("until_us") is not None:
        masks.append(pc.less(table["event_time"], conditions["until_us"]))
    if conditions.get("only_ids") is not None:
        masks.append(pc.is_in(table["alert_id"], pa.array(sorted(conditions["only_ids"]), pa.string())))
    if conditions.get("except_ids"):
        excluded = pc.is_in(table["alert_id"], pa.array(sorted(conditions["except_ids"]), pa.string()))
        masks.append(pc.invert(excluded))
    if conditions.get("after") is not None:
        micros, alert_id = conditions["after"]
        earlier = pc.less(table["event_time"], micros)
        tie = pc.and_(pc.equal(table["event_time"], micros), pc.less(table["alert_id"], alert_id))
        masks.append(pc.or_(earlier, tie))
    if not masks:
        return None
    mask = masks[0]
    for more in masks[1:]:
        mask = pc.and_(mask, more)
    return mask


def newest(tables: Sequence[pa.Table], conditions: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The ``k`` newest rows (event time, then alert_id, both descending) meeting ``conditions``."""
    kept = []
    for table in tables:
        mask = matching(table, conditions)
        kept.append(table if mask is None else table.filter(mask))
    rows = pa.concat_tables(kept) if kept else None
    if rows is None or rows.num_rows == 0 or k <= 0:
        return []
    keys = [("event_time", "descending"), ("alert_id", "descending")]
    if rows.num_rows > k:
        top = pc.select_k_unstable(rows, k, sort_keys=keys)
        rows = rows.take(top)
    rows = rows.take(pc.sort_indices(rows, sort_keys=keys))
    return rows.to_pylist()
