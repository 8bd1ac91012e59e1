"""A large lakehouse for the API bench: alerts, silver quotes and gold bars written with delta-rs in the
layout the stream writes (same schemas, same partition columns, files in event-time order within a day).

The pipeline itself would need days to write a million alerts on one machine; the bench measures the
serving path, so the tables are synthesized directly. Nothing here is used by the API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

US = pa.timestamp("us", tz="UTC")
RULES = ("price_jump", "return_zscore", "volume_spike", "model")
SEVERITIES = ("low", "medium", "high")

ALERT_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()),
        ("symbol", pa.string()),
        ("event_time", US),
        ("event_id", pa.string()),
        ("rule", pa.string()),
        ("score", pa.float64()),
        ("threshold", pa.float64()),
        ("severity", pa.string()),
        ("confidence", pa.string()),
        ("details", pa.string()),
        ("detected_at", US),
        ("alert_date", pa.date32()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_kafka_timestamp", US),
        ("stream_id", pa.string()),
        ("batch_id", pa.int64()),
        ("episode_id", pa.string()),
    ]
)

SILVER_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("symbol", pa.string()),
        ("event_time", US),
        ("price", pa.float64()),
        ("volume", pa.int64()),
        ("bid", pa.float64()),
        ("ask", pa.float64()),
        ("event_date", pa.date32()),
        ("is_late", pa.bool_()),
        ("is_out_of_order", pa.bool_()),
        ("dq_warnings", pa.list_(pa.string())),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp", US),
        ("ingested_at", US),
        ("stream_id", pa.string()),
        ("batch_id", pa.int64()),
    ]
)


@dataclass(frozen=True)
class SyntheticLakehouse:
    root: Path
    alerts: int
    quotes: int
    days: int
    symbols: tuple[str, ...]
    first_day: np.datetime64

    def as_dict(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "alerts": self.alerts,
            "quotes": self.quotes,
            "days": self.days,
            "symbols": len(self.symbols),
            "first_day": str(self.first_day),
        }


def symbol_names(count: int) -> tuple[str, ...]:
    """Ticker-like names: AAA, AAB, ... (three letters, in the universe's pattern)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return tuple(letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26] for i in range(count))


def build_synthetic_lakehouse(
    root: Path,
    alerts: int = 1_000_000,
    quotes: int = 10_000_000,
    days: int = 40,
    symbols: int = 200,
    files_per_day: int = 4,
    seed: int = 7,
    first_day: str = "2026-01-05",
) -> SyntheticLakehouse:
    """Write ``alerts_table`` and ``silver_quotes`` under ``root`` (replacing them), one day at a time."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    names = symbol_names(symbols)
    start = np.datetime64(first_day, "D")
    quotes_per_day, alerts_per_day = quotes // days, alerts // days
    for table in ("silver_quotes", "alerts"):
        target = root / table
        if target.exists():
            import shutil

            shutil.rmtree(target)
    offset = 0
    for day in range(days):
        day_start = (start + np.timedelta64(day, "D")).astype("datetime64[us]")
        silver = _silver_day(rng, names, day_start, quotes_per_day, offset)
        alerts_day = _alerts_day(rng, silver, alerts_per_day)
        offset += quotes_per_day
        for piece in _time_ordered_pieces(silver, files_per_day):
            write_deltalake(str(root / "silver_quotes"), piece, mode="append", partition_by=["event_date"])
        for piece in _time_ordered_pieces(alerts_day, max(1, files_per_day // 2)):
            write_deltalake(str(root / "alerts"), piece, mode="append", partition_by=["alert_date"])
    return SyntheticLakehouse(root, alerts_per_day * days, quotes_per_day * days, days, names, start)


def _time_ordered_pieces(table: pa.Table, pieces: int) -> list[pa.Table]:
    size = -(-table.num_rows // pieces)
    return [table.slice(i * size, size) for i in range(pieces) if i * size < table.num_rows]


def _silver_day(
    rng: np.random.Generator, names: tuple[str, ...], day_start: np.datetime64, count: int, offset: int
) -> pa.Table:
    # Market hours 13:30-20:00 UTC, quotes in event-time order as a stream appends them.
    micros = np.sort(rng.integers(0, 390 * 60 * 1_000_000, count)) + 810 * 60 * 1_000_000
    times = day_start + micros.astype("timedelta64[us]")
    symbol_index = rng.integers(0, len(names), count)
    base = 20 + (np.arange(len(names)) * 37.0) % 480
    price = np.round(base[symbol_index] * np.exp(rng.normal(0, 0.01, count)), 2)
    spread = np.maximum(0.01, np.round(price * 0.0005, 2))
    ids = np.char.add("e", (offset + np.arange(count)).astype(str))
    date = np.full(count, day_start.astype("datetime64[D]"))
    ingested = times + np.timedelta64(400, "ms")
    return pa.table(
        {
            "event_id": ids,
            "symbol": np.asarray(names)[symbol_index],
            "event_time": times,
            "price": price,
            "volume": rng.integers(0, 5000, count),
            "bid": price - spread / 2,
            "ask": price + spread / 2,
            "event_date": date,
            "is_late": np.zeros(count, bool),
            "is_out_of_order": np.zeros(count, bool),
            "dq_warnings": pa.array([[]] * count, pa.list_(pa.string())),
            "kafka_partition": (symbol_index % 4).astype(np.int32),
            "kafka_offset": offset + np.arange(count),
            "kafka_timestamp": times + np.timedelta64(200, "ms"),
            "ingested_at": ingested,
            "stream_id": np.full(count, "synthetic"),
            "batch_id": (micros // 2_000_000).astype(np.int64),
        },
        schema=SILVER_SCHEMA,
    )


def _alerts_day(rng: np.random.Generator, silver: pa.Table, count: int) -> pa.Table:
    rows = np.sort(rng.choice(silver.num_rows, size=min(count, silver.num_rows), replace=False))
    picked = silver.take(pa.array(rows))
    n = picked.num_rows
    rule_index = rng.integers(0, len(RULES), n)
    rules = np.asarray(RULES)[rule_index]
    event_ids = picked["event_id"].to_numpy(zero_copy_only=False)
    import hashlib

    alert_ids = [
        hashlib.sha256(f"{r}|{e}".encode()).hexdigest()[:32] for r, e in zip(rules, event_ids, strict=True)
    ]
    score = rng.uniform(0.05, 0.3, n)
    prices = picked["price"].to_numpy()
    details = [
        json.dumps({"previous_price": round(p / (1 + s), 4), "price": p, "return": s, "dq_warnings": []})
        for p, s in zip(prices, score, strict=True)
    ]
    times = picked["event_time"]
    return pa.table(
        {
            "alert_id": alert_ids,
            "symbol": picked["symbol"],
            "event_time": times,
            "event_id": picked["event_id"],
            "rule": rules,
            "score": score,
            "threshold": np.full(n, 0.05),
            "severity": np.asarray(SEVERITIES)[rng.integers(0, 3, n)],
            "confidence": np.where(rng.random(n) < 0.9, "high", "low"),
            "details": details,
            "detected_at": picked["ingested_at"],
            "alert_date": picked["event_date"],
            "source_partition": picked["kafka_partition"],
            "source_offset": picked["kafka_offset"],
            "source_kafka_timestamp": picked["kafka_timestamp"],
            "stream_id": picked["stream_id"],
            "batch_id": picked["batch_id"],
            "episode_id": alert_ids,
        },
        schema=ALERT_SCHEMA,
    )
