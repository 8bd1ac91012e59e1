"""``make bench``: how fast Spark can read Kafka here, how close the full pipeline gets, and alert latency.

(a) raw read: the preloaded topic into Spark's ``noop`` sink; the ceiling on this machine.
(b) pipeline: the same topic through the whole foreachBatch (bronze, silver, gold, alerts) from empty tables.
(c) latency: quotes replayed at a fixed rate into a running stream; for each alert, its Kafka timestamp
    minus the triggering quote's Kafka timestamp; p50/p95/p99.
Rates are computed from Spark's own per-batch durations (rows / time inside triggers), so JVM start-up and
query planning before the first batch are not counted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from surveillance.config import Settings, resolve_local_path
from surveillance.demo import local_run_settings, train_champion, wipe_run_state
from surveillance.ingestion.generator import generate_quotes, write_jsonl
from surveillance.ingestion.replay import replay_file
from surveillance.kafka.admin import ensure_topics
from surveillance.kafka.broker import LocalBroker
from surveillance.models.registry import alias_version
from surveillance.pipeline.stream import read_quotes, start_stream, wait_for
from surveillance.spark import get_spark

BENCH_OVERRIDES = (
    "state_dir=.state/bench",
    "lakehouse.root=.state/bench/lakehouse",
    "kafka.bootstrap_servers=localhost:9292",
    "kafka.local_broker.port=9292",
    "kafka.local_broker.controller_port=9293",
    "kafka.topics.quotes=bench_quotes",
    "kafka.topics.alerts=bench_alerts",
)


@dataclass
class BenchResult:
    events: int
    raw_read_events_per_s: float
    pipeline_events_per_s: float
    pipeline_batches: int
    pipeline_median_batch_s: float
    ratio_pipeline_to_raw: float
    latency_input_rate: float
    latency_alerts: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    # The champion model the stream scored with in (b) and (c): "<detector> v<version>", or "off".
    model_scoring: str = "off"


def _rate(progress: list[dict]) -> tuple[float, int, float]:
    rows = sum(p["numInputRows"] for p in progress)
    busy_ms = [p["durationMs"].get("triggerExecution", 0) for p in progress if p["numInputRows"]]
    seconds = sum(busy_ms) / 1000
    return (
        (rows / seconds if seconds else 0.0),
        len(busy_ms),
        float(np.median(busy_ms) / 1000) if busy_ms else 0.0,
    )


def _bench_settings(base: Settings, name: str) -> Settings:
    return base.with_overrides(
        f"stream.checkpoint_dir={base.state_dir}/checkpoints/{name}", f"stream.query_name={name}"
    )


def measure_raw_read(settings: Settings) -> float:
    """Events/s of Spark's Kafka source into the noop sink (availableNow over the whole topic)."""
    spark = get_spark(settings)
    query = (
        read_quotes(spark, settings)
        .writeStream.format("noop")
        .option("checkpointLocation", resolve_local_path(settings.stream.checkpoint_dir))
        .trigger(availableNow=True)
        .start()
    )
    wait_for(query)
    return _rate(query.recentProgress)[0]


def measure_pipeline(settings: Settings) -> tuple[float, int, float]:
    """Events/s of the full pipeline over the whole topic, from empty tables."""
    spark = get_spark(settings)
    query = start_stream(spark, settings, once=True)
    wait_for(query)
    return _rate(query.recentProgress)


def measure_latency(settings: Settings, rate: float, seconds: int, workdir: Path) -> list[float]:
    """Seconds from each triggering quote's Kafka timestamp to its alert's Kafka timestamp."""
    symbols = 10
    per_minute = max(1, int(rate * 60 / symbols))
    quotes = generate_quotes(
        symbols=symbols,
        minutes=max(2, seconds // 60 + 1),
        seed=11,
        inject_anomalies=True,
        ticks_per_minute=per_minute,
    )
    path = write_jsonl(quotes, workdir / "latency.jsonl")
    consumer = KafkaConsumer(
        settings.kafka.topics.alerts,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
        **settings.kafka.client_options(),
    )
    consumer.poll(timeout_ms=1000)  # join the topic before anything is published
    spark = get_spark(settings)
    query = start_stream(spark, settings, once=False)
    sender = threading.Thread(
        target=replay_file, args=(path, settings.kafka), kwargs={"rate": rate, "progress": False}, daemon=True
    )
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    sender.start()
    try:
        while time.monotonic() < deadline + 15:
            for message in consumer:
                alert = json.loads(message.value)
                source = np.datetime64(alert["source_kafka_timestamp"].replace("Z", ""))
                quote_ms = source.astype("datetime64[ms]").astype(np.int64)
                latencies.append((message.timestamp - int(quote_ms)) / 1000)
            if time.monotonic() > deadline and not sender.is_alive():
                break
    finally:
        query.stop()
        consumer.close()
    return latencies


def run_bench(
    events: int = 200_000,
    latency_rate: float = 500.0,
    latency_seconds: int = 60,
    out: Path = Path("reports/bench.json"),
    env: str | None = None,
    overrides: Sequence[str] = (),
    console: Console | None = None,
) -> BenchResult:
    """Run (a), (b) and (c) on a fresh broker and lakehouse; print a table and write JSON."""
    console = console or Console(stderr=True)
    settings = local_run_settings(env, BENCH_OVERRIDES, overrides)
    broker = LocalBroker(settings)
    broker.down()
    # Each measurement has its own checkpoint and lakehouse under the bench's state dir.
    wipe_run_state(settings)
    shutil.rmtree(resolve_local_path(f"{settings.state_dir}/checkpoints"), ignore_errors=True)
    shutil.rmtree(resolve_local_path(f"{settings.state_dir}/lakehouse_latency"), ignore_errors=True)
    try:
        broker.up()
        ensure_topics(settings.kafka)
        with tempfile.TemporaryDirectory() as tmp:
            symbols = 20
            minutes = max(1, events // (symbols * 30))
            console.print(f"preloading ~{events:,} quotes into {settings.kafka.topics.quotes}...")
            generated = generate_quotes(symbols=symbols, minutes=minutes, seed=5, inject_anomalies=True)
            loaded = replay_file(
                write_jsonl(generated, Path(tmp) / "bench.jsonl"), settings.kafka, progress=True
            )
            console.print("(a) raw Kafka read into noop...")
            raw = measure_raw_read(
                _bench_settings(settings, "bench_raw").with_overrides("stream.max_offsets_per_trigger=null")
            )
            model_scoring = "off"
            if settings.models.scoring.enabled:
                console.print("training the anomaly models (the stream scores with the champion)...")
                train_champion(settings, console)
                champion = alias_version(settings)
                model_scoring = f"{champion.tags.get('detector', '?')} v{champion.version}"
            console.print("(b) full pipeline...")
            pipe_rate, batches, median_batch = measure_pipeline(_bench_settings(settings, "bench_pipeline"))
            console.print(f"(c) latency at {latency_rate:.0f} events/s for {latency_seconds}s...")
            latency_settings = _bench_settings(settings, "bench_latency").with_overrides(
                "kafka.topics.quotes=bench_latency_quotes",
                "stream.trigger_interval=1 second",
                f"lakehouse.root={settings.state_dir}/lakehouse_latency",
            )
            ensure_topics(latency_settings.kafka)
            latencies = measure_latency(latency_settings, latency_rate, latency_seconds, Path(tmp))
    finally:
        broker.down()
    pct = (lambda q: float(np.percentile(latencies, q))) if latencies else (lambda q: None)
    result = BenchResult(
        events=loaded.sent,
        raw_read_events_per_s=raw,
        pipeline_events_per_s=pipe_rate,
        pipeline_batches=batches,
        pipeline_median_batch_s=median_batch,
        ratio_pipeline_to_raw=pipe_rate / raw if raw else 0.0,
        latency_input_rate=latency_rate,
        latency_alerts=len(latencies),
        latency_p50_s=pct(50),
        latency_p95_s=pct(95),
        latency_p99_s=pct(99),
        model_scoring=model_scoring,
    )
    _print(result, settings, Console())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2))
    console.print(f"written {out}")
    return result


def _print(result: BenchResult, settings: Settings, console: Console) -> None:
    table = Table(
        title=f"Benchmark ({result.events:,} events, {settings.spark.master}, "
        f"maxOffsetsPerTrigger={settings.stream.max_offsets_per_trigger})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("(a) raw Kafka read -> noop", f"{result.raw_read_events_per_s:,.0f} events/s")
    table.add_row("(b) full pipeline", f"{result.pipeline_events_per_s:,.0f} events/s")
    table.add_row(
        "    batches / median batch time",
        f"{result.pipeline_batches} / {result.pipeline_median_batch_s:.2f} s",
    )
    table.add_row("(b)/(a)", f"{result.ratio_pipeline_to_raw:.3f}")
    table.add_row("    model scoring in (b), (c)", result.model_scoring)
    table.add_row("(c) input rate", f"{result.latency_input_rate:,.0f} events/s")
    table.add_row("    alerts measured", str(result.latency_alerts))
    for name in ("p50", "p95", "p99"):
        value = getattr(result, f"latency_{name}_s")
        table.add_row(f"    quote -> alert latency {name}", "n/a" if value is None else f"{value:.2f} s")
    console.print(table)
