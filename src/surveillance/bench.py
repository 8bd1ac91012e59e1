"""``make bench``: how fast Spark can read Kafka here, how close each path gets, and alert latency.

(a) raw read: the preloaded topic into Spark's ``noop`` sink; the ceiling on this machine.
(b) lakehouse path: the same topic through the lakehouse query alone (bronze, quarantine, silver, gold,
    dq_results, stream_progress) from empty tables.
(c) latency: quotes replayed at fixed rates into a running ``surveil stream`` (both queries); for each
    alert, its Kafka timestamp minus the triggering quote's Kafka timestamp; the consumer lag at the end.
(d) the seeds' design as a peer on the preloaded topic: one kafka-python consumer, ``json.loads``, a dict of
    last prices (> 5 % jump) and a rolling z-score over 20 prices per symbol; it writes nothing anywhere.
(g) the per-step profile: median seconds per step and Spark jobs per batch, per query, from stream_progress.
Rates of Spark queries are computed from Spark's own per-batch durations (rows / time inside triggers), so
JVM start-up and query planning before the first batch are not counted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from pyspark.sql import functions as F
from rich.console import Console
from rich.table import Table

from surveillance.checkpoints import committed_offsets as partition_offsets
from surveillance.checkpoints import detection_checkpoint
from surveillance.config import Settings, resolve_local_path
from surveillance.demo import local_run_settings, train_champion, wipe_run_state
from surveillance.ingestion.generator import DEFAULT_START, generate_quotes, write_jsonl
from surveillance.ingestion.replay import replay_file
from surveillance.kafka.admin import ensure_topics, topic_end_offsets
from surveillance.kafka.broker import LocalBroker
from surveillance.lakehouse import ensure_tables, read_table, table_locations, write_table
from surveillance.models.registry import alias_version
from surveillance.pipeline.stream import read_quotes, start_stream, wait_for
from surveillance.spark import get_spark

GROWTH_ROWS = 2_000_000
# The bench's parts, by the letters of its table; ``--only`` runs a subset (a tuning loop, not a report).
PARTS = ("raw", "lakehouse", "latency", "peer", "cold", "growth")
# Seconds of input at the measured rate before latencies count.
LATENCY_WARMUP_S = 30
BENCH_OVERRIDES = (
    "state_dir=.state/bench",
    "lakehouse.root=.state/bench/lakehouse",
    # Its own checkpoints: the wipe before a run must never reach a normal local run's (.state/checkpoints).
    "stream.checkpoint_dir=.state/bench/checkpoints/quotes_to_lakehouse",
    "kafka.bootstrap_servers=localhost:9292",
    "kafka.local_broker.port=9292",
    "kafka.local_broker.controller_port=9293",
    "kafka.topics.quotes=bench_quotes",
    "kafka.topics.alerts=bench_alerts",
)


@dataclass
class LatencyRun:
    input_events_per_s: float  # the rate asked for
    sent_events_per_s: float  # quotes that reached the topic per second of the run (what the replay achieved)
    alerts: int
    # With no alert of a measured quote back by the end, every latency exceeds this many seconds.
    latency_above_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None
    lag_end: int  # quotes in the topic the detection query had not processed when the replay ended
    lag_growing: bool
    # The same for the lakehouse query beside it: whether the lakehouse keeps up at this rate.
    lakehouse_lag_end: int = 0
    lakehouse_lag_growing: bool = False


@dataclass
class BenchResult:
    events: int
    latency: list[LatencyRun]
    profile: dict[str, dict[str, float]]  # query -> {step: median seconds, "spark_jobs": median}
    raw_read_events_per_s: float | None = None
    lakehouse_events_per_s: float | None = None
    lakehouse_batches: int | None = None
    lakehouse_median_batch_s: float | None = None
    ratio_lakehouse_to_raw: float | None = None
    peer_events_per_s: float | None = None
    ratio_lakehouse_to_peer: float | None = None
    cold_start_s: float | None = None  # launching `surveil stream` -> its lakehouse query's first commit
    cold_start_detection_s: float | None = None  # ... -> its detection query's first commit
    cost_growth_ratio: float | None = None  # median batch over GROWTH_ROWS silver rows / over empty tables
    batch_s_empty_tables: float | None = None
    batch_s_full_tables: float | None = None
    # The champion model the detection query scored with in (c): "<detector> v<version>", or "off".
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
    # Each measurement's checkpoints in their own folder (the detection query's sits beside the lakehouse's).
    return base.with_overrides(
        f"stream.checkpoint_dir={base.state_dir}/checkpoints/{name}/quotes_to_lakehouse"
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


def measure_lakehouse(settings: Settings) -> tuple[float, int, float]:
    """Events/s of the lakehouse query alone over the whole topic, from empty tables."""
    spark = get_spark(settings)
    job = start_stream(spark, settings.with_overrides("detection.enabled=false"), once=True)
    wait_for(job)
    return _rate(job.lakehouse.recentProgress)


def measure_peer(settings: Settings, events: int) -> float:
    """Events/s of the seeds' design: a kafka-python loop with a dict of last prices and a z-score."""
    consumer = KafkaConsumer(
        settings.kafka.topics.quotes,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        **settings.kafka.client_options(),
    )
    last: dict[str, float] = {}
    windows: dict[str, deque[float]] = {}
    seen = jumps = spikes = 0
    started = None
    for message in consumer:
        started = started or time.perf_counter()
        seen += 1
        try:
            quote = json.loads(message.value)
            symbol, price = quote["symbol"], float(quote["price"])
        except (ValueError, KeyError, TypeError):
            continue
        previous = last.get(symbol)
        if previous and abs(price - previous) / previous > 0.05:
            jumps += 1
        window = windows.setdefault(symbol, deque(maxlen=20))
        if len(window) == 20:
            mean = statistics.fmean(window)
            stdev = statistics.pstdev(window)
            if stdev and abs(price - mean) / stdev > 3:
                spikes += 1
        window.append(price)
        last[symbol] = price
        if seen >= events:
            break
    elapsed = time.perf_counter() - started if started else 0.0
    consumer.close()
    return seen / elapsed if elapsed else 0.0


def committed_offsets(checkpoint: str) -> int:
    """Quotes-topic offsets a query has committed (sum over partitions), read from its checkpoint."""
    return sum(partition_offsets(checkpoint).values())


def quotes_topic_end(settings: Settings) -> int:
    """Quotes written to the quotes topic so far: its end offsets, summed over partitions."""
    return sum(topic_end_offsets(settings.kafka, settings.kafka.topics.quotes).values())


def _topic_lag(settings: Settings, checkpoint: str | None = None) -> int:
    """Quotes in the topic a query (by default the detection query) has not committed yet."""
    return max(
        0, quotes_topic_end(settings) - committed_offsets(checkpoint or detection_checkpoint(settings))
    )


def stream_log(settings: Settings, name: str) -> Path:
    """Where a bench's ``surveil stream`` writes its log: under the state dir, kept after the run."""
    logs = Path(resolve_local_path(f"{settings.state_dir}/logs"))
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name}.log"


def launch_stream(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``surveil stream`` in a new process with these settings, as a user starts it."""
    resolved = log.with_suffix(".settings.json")
    resolved.write_text(settings.to_json())
    command = ["stream", "--settings-json", str(resolved), "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "surveillance.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )


def stop_stream(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean stop of every query), SIGKILL to its process group after 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def write_paced_quotes(rate: float, seconds: float, path: Path, seed: int = 11) -> Path:
    """Generated quotes (20 symbols, injected anomalies) for ``seconds`` of replay at ``rate`` quotes/s:
    each event-time minute holds what the replay sends in a minute of wall time."""
    symbols = 20
    quotes = generate_quotes(
        symbols=symbols,
        minutes=max(2, -(-int(seconds) // 60)),
        seed=seed,
        inject_anomalies=True,
        ticks_per_minute=max(1, int(rate * 60 / symbols)),
    )
    return write_jsonl(quotes, path)


def alerts_consumer(settings: Settings) -> KafkaConsumer:
    """A consumer of the alerts topic from its end, already joined: it sees every alert sent after."""
    consumer = KafkaConsumer(
        settings.kafka.topics.alerts,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
        **settings.kafka.client_options(),
    )
    consumer.poll(timeout_ms=1000)  # join the topic before anything is published
    return consumer


def alert_latency(message: ConsumerRecord) -> tuple[int, float]:
    """(the alerted quote's Kafka timestamp in ms, seconds from it to the alert's own Kafka timestamp)."""
    alert = json.loads(message.value)
    source = np.datetime64(alert["source_kafka_timestamp"].replace("Z", ""))
    quote_ms = int(source.astype("datetime64[ms]").astype(np.int64))
    return quote_ms, (message.timestamp - quote_ms) / 1000


def wait_for_first_commit(
    settings: Settings,
    stream: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float = 300,
    stop: threading.Event | None = None,
) -> None:
    """Until a launched ``surveil stream``'s lakehouse query has committed its first batch (on the empty
    topic); by then the detection query is past its first batch too. Returns early once ``stop`` is set."""
    started = time.monotonic()
    lakehouse_commits = Path(resolve_local_path(settings.stream.checkpoint_dir)) / "commits"
    while not (lakehouse_commits.exists() and any(lakehouse_commits.iterdir())):
        if stop is not None and stop.is_set():
            return
        if stream.poll() is not None or time.monotonic() - started > timeout_s:
            raise RuntimeError(f"surveil stream committed no batch (see {log})")
        time.sleep(0.5)


def measure_latency(settings: Settings, rate: float, seconds: int, workdir: Path) -> LatencyRun:
    """Quote -> alert latency with both queries running (``surveil stream`` in its own process, as a user
    runs it), at ``rate`` quotes/s for ``seconds`` after ``LATENCY_WARMUP_S`` at that rate."""
    path = write_paced_quotes(rate, LATENCY_WARMUP_S + seconds, workdir / f"latency_{int(rate)}.jsonl")
    consumer = alerts_consumer(settings)
    log = stream_log(settings, f"latency_{int(rate)}")
    stream = launch_stream(settings, log)
    # Warm-up: both queries past their first batches (on the empty topic) before quotes arrive.
    wait_for_first_commit(settings, stream, log)
    time.sleep(10)
    replayed = []
    sender = threading.Thread(
        target=lambda: replayed.append(replay_file(path, settings.kafka, rate=rate, progress=False)),
        daemon=True,
    )
    latencies: list[float] = []
    lags: list[int] = []
    lakehouse_lags: list[int] = []
    topic_start = quotes_topic_end(settings)
    begun = time.monotonic()
    deadline = begun + LATENCY_WARMUP_S + seconds
    # Alerts on quotes sent in the warm-up are not counted: the first batches with data load the model
    # into the Python workers and start the lakehouse's first full batch.
    measured_from_ms = int((time.time() + LATENCY_WARMUP_S) * 1000)
    sender.start()
    try:
        while sender.is_alive() or time.monotonic() < deadline:
            for message in consumer:
                quote_ms, latency_s = alert_latency(message)
                if quote_ms >= measured_from_ms:
                    latencies.append(latency_s)
            if time.monotonic() - begun > LATENCY_WARMUP_S:
                lags.append(_topic_lag(settings))
                lakehouse_lags.append(_topic_lag(settings, settings.stream.checkpoint_dir))
            if time.monotonic() > deadline + 150:  # a replay that cannot reach the rate ends here
                break
        lag_end = _topic_lag(settings)
        lakehouse_lag_end = _topic_lag(settings, settings.stream.checkpoint_dir)
        # From the topic, not the replay's report: at rates the replay cannot reach, it is still sending.
        topic_end = quotes_topic_end(settings)
        sent_rate = (topic_end - topic_start) / (time.monotonic() - begun)
        measured_for_s = time.time() - measured_from_ms / 1000
    finally:
        stop_stream(stream)
        consumer.close()
    half = lags[len(lags) // 2 :] or [0]
    lakehouse_half = lakehouse_lags[len(lakehouse_lags) // 2 :] or [0]
    pct = (lambda q: float(np.percentile(latencies, q))) if latencies else (lambda q: None)
    return LatencyRun(
        input_events_per_s=rate,
        sent_events_per_s=sent_rate,
        alerts=len(latencies),
        latency_above_s=None if latencies else measured_for_s,
        p50_s=pct(50),
        p95_s=pct(95),
        p99_s=pct(99),
        max_s=max(latencies) if latencies else None,
        lag_end=lag_end,
        lag_growing=lag_end > max(half[0], 2 * rate),
        lakehouse_lag_end=lakehouse_lag_end,
        # A lakehouse batch can hold ~a minute of input at low rates: growing means past that and rising.
        lakehouse_lag_growing=lakehouse_lag_end > max(lakehouse_half[0], 60 * rate),
    )


def measure_cold_start(settings: Settings) -> tuple[float, float]:
    """Seconds from launching ``surveil stream`` (a new process) to the first committed batch of its
    detection query, and of its lakehouse query."""
    checkpoints = {"detection": detection_checkpoint(settings), "lakehouse": settings.stream.checkpoint_dir}
    commits = {query: Path(resolve_local_path(path)) / "commits" for query, path in checkpoints.items()}
    first: dict[str, float] = {}
    started = time.monotonic()
    log = stream_log(settings, "cold_start")
    process = launch_stream(settings, log)
    try:
        while time.monotonic() - started < 600 and process.poll() is None and len(first) < len(commits):
            for query, folder in commits.items():
                if query not in first and folder.exists() and any(p.name.isdigit() for p in folder.iterdir()):
                    first[query] = time.monotonic() - started
            time.sleep(0.1)
        if len(first) < len(commits):
            missing = ", ".join(sorted(set(commits) - set(first)))
            raise RuntimeError(f"surveil stream's {missing} query committed no batch (see {log})")
        return first["detection"], first["lakehouse"]
    finally:
        stop_stream(process)


def prefill_silver(settings: Settings, rows: int) -> None:
    """Append ``rows`` silver quotes of the 30 days before the bench's data (as a long-running table has)."""
    spark = get_spark(settings)
    locations = table_locations(settings)
    ensure_tables(spark, locations)
    start = DEFAULT_START - dt.timedelta(days=30)
    step_us = int(30 * 86400 * 1e6 / rows)
    filler = spark.range(rows).select(
        F.concat(F.lit("old-"), F.col("id").cast("string")).alias("event_id"),
        F.concat(F.lit("SYM"), (F.col("id") % 20).cast("string")).alias("symbol"),
        F.timestamp_micros(F.lit(int(start.timestamp() * 1e6)) + F.col("id") * step_us).alias("event_time"),
        (F.lit(100.0) + F.col("id") % 7).alias("price"),
        F.lit(10).cast("long").alias("volume"),
        F.lit(99.9).alias("bid"),
        F.lit(100.1).alias("ask"),
    )
    silver = filler.select(
        *filler.columns[:7],
        F.to_date("event_time").alias("event_date"),
        F.lit(False).alias("is_late"),
        F.lit(False).alias("is_out_of_order"),
        F.array().cast("array<string>").alias("dq_warnings"),
        F.lit(0).alias("kafka_partition"),
        F.col("event_time").cast("long").alias("kafka_offset"),
        F.col("event_time").alias("kafka_timestamp"),
        F.col("event_time").alias("ingested_at"),
        F.lit("prefill").alias("stream_id"),
        F.lit(0).cast("long").alias("batch_id"),
    )
    # Written in many commits and files, as a stream would have left it.
    for part in range(20):
        chunk = silver.where(F.abs(F.hash("event_id")) % 20 == part)
        write_table(chunk.write.format("delta").mode("append"), locations["silver_quotes"])


def measure_cost_growth(settings: Settings, rows: int) -> tuple[float, float]:
    """Median lakehouse batch seconds over one topic into empty tables, then into a silver of ``rows``."""
    empty = _bench_settings(settings, "bench_growth_empty").with_overrides(
        f"lakehouse.root={settings.state_dir}/lakehouse_growth_empty", "detection.enabled=false"
    )
    full = _bench_settings(settings, "bench_growth_full").with_overrides(
        f"lakehouse.root={settings.state_dir}/lakehouse_growth_full", "detection.enabled=false"
    )
    prefill_silver(full, rows)
    medians = []
    for run in (empty, full):
        job = start_stream(get_spark(run), run, once=True)
        wait_for(job)
        medians.append(_rate(job.lakehouse.recentProgress)[2])
    return medians[0], medians[1]


def step_profile(settings: Settings) -> dict[str, dict[str, float]]:
    """Median seconds per step and Spark jobs per batch of each query, from its stream_progress rows."""
    spark = get_spark(settings)
    progress = read_table(spark, table_locations(settings)["stream_progress"]).toPandas()
    profile: dict[str, dict[str, float]] = {}
    for query, rows in progress.groupby("query_name"):
        busy = rows[rows.silver_rows.fillna(0) > 0]
        steps = pd.DataFrame(list(busy.step_seconds.dropna().map(dict)))
        medians = {name: float(steps[name].median()) for name in steps.columns}
        profile[str(query)] = {**medians, "spark_jobs": float(busy.spark_jobs.median()), "batches": len(busy)}
    return profile


def run_bench(
    events: int = 500_000,
    latency_rates: Sequence[float] = (1_000.0, 10_000.0),
    latency_seconds: int = 120,
    out: Path = Path("reports/bench.json"),
    env: str | None = None,
    overrides: Sequence[str] = (),
    console: Console | None = None,
    only: Sequence[str] = PARTS,
) -> BenchResult:
    """Run (a)-(g) (or the ``only`` parts) on a fresh broker and lakehouse; print a table, write JSON."""
    console = console or Console(stderr=True)
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown bench parts {unknown}: choose among {', '.join(PARTS)}")
    settings = local_run_settings(env, BENCH_OVERRIDES, overrides)
    broker = LocalBroker(settings)
    broker.down()
    # Each measurement has its own checkpoint and lakehouse under the bench's state dir.
    wipe_run_state(settings)
    shutil.rmtree(resolve_local_path(f"{settings.state_dir}/checkpoints"), ignore_errors=True)
    for lakehouse in Path(resolve_local_path(settings.state_dir)).glob("lakehouse_*"):
        shutil.rmtree(lakehouse, ignore_errors=True)
    latency: list[LatencyRun] = []
    try:
        broker.up()
        ensure_topics(settings.kafka)
        with tempfile.TemporaryDirectory() as tmp:
            symbols = 20
            minutes = max(1, events // (symbols * 30))
            preloaded = 0
            if {"raw", "peer", "lakehouse", "cold"} & set(only):
                console.print(f"preloading ~{events:,} quotes into {settings.kafka.topics.quotes}...")
                generated = generate_quotes(symbols=symbols, minutes=minutes, seed=5, inject_anomalies=True)
                preloaded = replay_file(
                    write_jsonl(generated, Path(tmp) / "bench.jsonl"), settings.kafka, progress=True
                ).sent
            raw = peer = lake_rate = median_batch = cold_start = cold_start_detection = None
            batches = None
            empty_batch_s = full_batch_s = None
            profile: dict[str, dict[str, float]] = {}
            if "raw" in only:
                console.print("(a) raw Kafka read into noop...")
                raw = measure_raw_read(
                    _bench_settings(settings, "bench_raw").with_overrides(
                        "stream.max_offsets_per_trigger=null"
                    )
                )
            if "peer" in only:
                console.print("(d) the seeds' design (kafka-python loop)...")
                peer = measure_peer(settings, min(preloaded, 200_000))
            model_scoring = "off"
            if settings.models.scoring.enabled and "latency" in only:
                console.print("training the anomaly models (the detection query scores with the champion)...")
                train_champion(settings, console)
                champion = alias_version(settings)
                model_scoring = f"{champion.tags.get('detector', '?')} v{champion.version}"
            if "lakehouse" in only:
                console.print("(b) lakehouse path...")
                lakehouse_settings = _bench_settings(settings, "bench_lakehouse")
                lake_rate, batches, median_batch = measure_lakehouse(lakehouse_settings)
                profile.update(step_profile(lakehouse_settings))
            if "cold" in only:
                console.print("(e) cold start of surveil stream...")
                cold_settings = _bench_settings(settings, "bench_cold").with_overrides(
                    f"lakehouse.root={settings.state_dir}/lakehouse_cold"
                )
                cold_start_detection, cold_start = measure_cold_start(cold_settings)
            if "growth" in only:
                console.print(f"(f) per-batch cost over {GROWTH_ROWS:,} silver rows against empty tables...")
                growth_settings = settings.with_overrides("kafka.topics.quotes=bench_growth_quotes")
                ensure_topics(growth_settings.kafka)
                growth = generate_quotes(symbols=20, minutes=100, seed=6, inject_anomalies=True)
                replay_file(
                    write_jsonl(growth, Path(tmp) / "growth.jsonl"), growth_settings.kafka, progress=False
                )
                empty_batch_s, full_batch_s = measure_cost_growth(growth_settings, GROWTH_ROWS)
            for rate in latency_rates if "latency" in only else ():
                console.print(f"(c) latency at {rate:,.0f} events/s for {latency_seconds}s, both queries...")
                latency_settings = _bench_settings(settings, f"bench_latency_{int(rate)}").with_overrides(
                    f"kafka.topics.quotes=bench_latency_quotes_{int(rate)}",
                    f"lakehouse.root={settings.state_dir}/lakehouse_latency_{int(rate)}",
                )
                ensure_topics(latency_settings.kafka)
                latency.append(measure_latency(latency_settings, rate, latency_seconds, Path(tmp)))
                profile.update({f"{q} @ {rate:,.0f}/s": v for q, v in step_profile(latency_settings).items()})
    finally:
        broker.down()
    result = BenchResult(
        events=preloaded,
        raw_read_events_per_s=raw,
        lakehouse_events_per_s=lake_rate,
        lakehouse_batches=batches,
        lakehouse_median_batch_s=median_batch,
        ratio_lakehouse_to_raw=lake_rate / raw if raw and lake_rate else None,
        peer_events_per_s=peer,
        ratio_lakehouse_to_peer=lake_rate / peer if peer and lake_rate else None,
        latency=latency,
        profile=profile,
        cold_start_s=cold_start,
        cold_start_detection_s=cold_start_detection,
        cost_growth_ratio=full_batch_s / empty_batch_s if empty_batch_s else None,
        batch_s_empty_tables=empty_batch_s,
        batch_s_full_tables=full_batch_s,
        model_scoring=model_scoring,
    )
    _print(result, settings, Console())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2))
    console.print(f"written {out}")
    return result


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _rate_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} events/s"


def _ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print(result: BenchResult, settings: Settings, console: Console) -> None:
    table = Table(title=f"Benchmark ({result.events:,} events, {settings.spark.master})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("(a) raw Kafka read -> noop", _rate_text(result.raw_read_events_per_s))
    table.add_row("(b) lakehouse path", _rate_text(result.lakehouse_events_per_s))
    table.add_row(
        "    batches / median batch time",
        f"{result.lakehouse_batches} / {_seconds(result.lakehouse_median_batch_s)}",
    )
    table.add_row("(b)/(a)", _ratio_text(result.ratio_lakehouse_to_raw))
    table.add_row("(d) seeds' design (kafka-python loop)", _rate_text(result.peer_events_per_s))
    table.add_row("(b)/(d)", _ratio_text(result.ratio_lakehouse_to_peer))
    table.add_row("    model scoring in (c)", result.model_scoring)
    table.add_row(
        "(e) cold start: launch -> first committed batch",
        f"detection {_seconds(result.cold_start_detection_s)}, lakehouse {_seconds(result.cold_start_s)}",
    )
    table.add_row(
        f"(f) median batch, {GROWTH_ROWS:,} silver rows / empty",
        f"{_seconds(result.batch_s_full_tables)} / {_seconds(result.batch_s_empty_tables)} = "
        f"{result.cost_growth_ratio or 0:.2f}",
    )
    for run in result.latency:
        table.add_row(
            f"(c) at {run.input_events_per_s:,.0f} events/s",
            f"sent {run.sent_events_per_s:,.0f}/s, {run.alerts} alerts",
        )
        if run.latency_above_s is not None:
            table.add_row("    quote -> alert", f"none back within the run: > {run.latency_above_s:.0f} s")
        for name in ("p50", "p95", "p99", "max") if run.latency_above_s is None else ():
            table.add_row(f"    quote -> alert {name}", _seconds(getattr(run, f"{name}_s")))
        table.add_row(
            "    lag at the end", f"{run.lag_end:,} ({'growing' if run.lag_growing else 'bounded'})"
        )
        table.add_row(
            "    lakehouse query's lag at the end",
            f"{run.lakehouse_lag_end:,} ({'growing' if run.lakehouse_lag_growing else 'bounded'})",
        )
    console.print(table)
    steps = Table(title="(g) per-step profile: median seconds per batch with data, Spark jobs per batch")
    steps.add_column("query")
    steps.add_column("steps")
    for query, figures in result.profile.items():
        shown = ", ".join(
            f"{name} {value:.2f}"
            for name, value in sorted(figures.items(), key=lambda kv: -kv[1])
            if name not in ("spark_jobs", "batches")
        )
        steps.add_row(
            query,
            f"{shown} | jobs {figures.get('spark_jobs', 0):.0f} | batches {figures.get('batches', 0):.0f}",
        )
    console.print(steps)
