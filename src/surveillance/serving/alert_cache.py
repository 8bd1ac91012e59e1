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
ALERT_COLUMNS = (
    "alert_id",
    "symbol",
    "event_time",
    "event_id",
    "rule",
    "score",
    "threshold",
    "severity",
    "confidence",
    "details",
    "detected_at",
    "source_partition",
    "source_offset",
    "source_kafka_timestamp",
    "episode_id",
)


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
        # union_by_name: files from before a column existed (episode_id) read it as NULL.
        select = ", ".join(f"epoch_us({c})::BIGINT AS {c}" if c in TIME_COLUMNS else c for c in ALERT_COLUMNS)
        sql = f"SELECT {select} FROM read_parquet(?, union_by_name = true, hive_partitioning = false)"
        return cursor.sql(sql, params=[[data_file.uri]]).to_arrow_table().combine_chunks()

    def forget_except(self, live: set[str]) -> None:
        with self._lock:
            for uri in [u for u in self._tables if u not in live]:
                self._bytes -= self._tables.pop(uri).nbytes

    @property
    def size_bytes(self) -> int:
        return self._bytes


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
