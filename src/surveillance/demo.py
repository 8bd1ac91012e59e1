"""``make demo``: a fresh broker and lakehouse, the sample replayed, streamed, summarised and plotted."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from surveillance.config import Settings, load_settings, resolve_local_path
from surveillance.ingestion.replay import replay_file
from surveillance.kafka.admin import ensure_topics
from surveillance.kafka.broker import LocalBroker
from surveillance.lakehouse import read_table, table_locations
from surveillance.models.registry import DEFAULT_STORE
from surveillance.pipeline.backfill import event_range
from surveillance.pipeline.runner import backfill_with_progress, run_stream
from surveillance.quality.report import configured_suites, load_dq_status, print_dq_status, write_dq_report
from surveillance.reporting.summary import print_summary, summarize, wide_console
from surveillance.spark import get_spark

# The demo keeps its own state and broker ports so it never collides with a `surveil kafka up` broker
# or with tables of a longer-lived local run.
DEMO_OVERRIDES = (
    "state_dir=.state/demo",
    "lakehouse.root=.state/demo/lakehouse",
    "stream.checkpoint_dir=.state/demo/checkpoints/quotes_to_lakehouse",
    "kafka.bootstrap_servers=localhost:9192",
    "kafka.local_broker.port=9192",
    "kafka.local_broker.controller_port=9193",
    # Several micro-batches rather than one, so the demo shows state carried across batches and the
    # watermark flagging the sample's very late quotes.
    "stream.max_offsets_per_trigger=5000",
)


def local_run_settings(env: str | None, own: Sequence[str], overrides: Sequence[str]) -> Settings:
    """Settings for a self-contained local run (demo, bench): its own broker and state."""
    if (env or "local") != "local":
        raise SystemExit("demo and bench start their own local broker: use --env local (the default)")
    return load_settings(env="local", overrides=[*own, *overrides])


def wipe_run_state(settings: Settings) -> None:
    """Delete what a previous demo/bench run left: its broker data, tables, checkpoints and (when it is the
    default local one) MLflow store; nothing else."""
    from surveillance.checkpoints import detection_checkpoint

    owned = [f"{settings.state_dir}/kafka", settings.lakehouse.root, settings.stream.checkpoint_dir]
    owned.append(detection_checkpoint(settings))
    if settings.models.tracking_uri is None:
        owned.append(f"{settings.state_dir}/{DEFAULT_STORE}")
    for path in owned:
        shutil.rmtree(resolve_local_path(path), ignore_errors=True)


def train_champion(settings: Settings, console: Console) -> None:
    """Compare the detectors and register the best as the champion (the stream then scores with it)."""
    from surveillance.models.compare import compare_detectors
    from surveillance.models.report import print_comparison

    with console.status("comparing detectors...") as status:
        comparison = compare_detectors(settings, on_progress=status.update)
    print_comparison(comparison, wide_console(), overall_only=True)


def run_demo(
    sample: Path,
    env: str | None = None,
    overrides: Sequence[str] = (),
    reports: Path = Path("reports"),
    keep_kafka: bool = False,
    monitor: bool = False,
    console: Console | None = None,
) -> None:
    """Run the whole pipeline once on ``sample`` and leave a summary and the reports (``monitor``: with
    Prometheus scraping the stream's metrics, left running)."""
    console = console or Console(stderr=True)
    settings = local_run_settings(env, DEMO_OVERRIDES, overrides)
    if not sample.exists():
        raise SystemExit(f"sample {sample} not found (run from the project root)")
    broker = LocalBroker(settings)
    broker.down()
    wipe_run_state(settings)
    try:
        console.rule("1/7 Kafka")
        status = broker.up()
        topics = ensure_topics(settings.kafka)
        console.print(f"broker {status.bootstrap} (pid {status.pid}), topics {topics}")

        console.rule(f"2/7 replay {sample}")
        result = replay_file(sample, settings.kafka, progress=True)
        console.print(
            f"sent {result.sent:,} messages, {result.failed} failed, {result.skipped_blank} blank skipped"
        )
        if result.failed:
            raise SystemExit(f"replay failed: {result.first_error}")

        if settings.models.scoring.enabled:
            console.rule("3/7 anomaly models: train, compare in MLflow, register the champion")
            train_champion(settings, console)

        prometheus_url = None
        if monitor:
            from surveillance.observability.prometheus_server import Prometheus

            prometheus_url = Prometheus(settings).up().url
            console.print(f"Prometheus at {prometheus_url}, scraping the stream's metrics")
        console.rule("4/7 stream (availableNow) into bronze / silver / gold / alerts")
        run_stream(settings, once=True, console=console)

        console.rule("5/7 summary")
        spark = get_spark(settings)
        locations = table_locations(settings)
        print_summary(summarize(spark, locations), wide_console())

        print_dq_status(load_dq_status(spark, locations, last=5), wide_console())

        console.rule("6/7 backfill the sample's days from bronze (the stream's code, in batch)")
        days = sorted(
            row["event_date"]
            for row in read_table(spark, locations["silver_quotes"]).select("event_date").distinct().collect()
        )
        if days:
            # The sample's very late quotes arrived after later ones: the backfill restates the alerts
            # the stream decided before they came (see README, "Backfill").
            backfill_with_progress(settings, event_range(days[0].isoformat(), days[-1].isoformat()), console)

        console.rule("7/7 reports")
        write_demo_reports(settings, spark, locations, reports, console)
        page, docs = write_dq_report(spark, locations, reports / "dq", suites=configured_suites(settings))
        console.print(f"data quality: {page.resolve()}\nGX Data Docs: {docs.resolve()}")
        console.print(f"tables: {resolve_local_path(settings.lakehouse.root)}")
        print_console_instructions(settings, console)
        if prometheus_url:
            console.print(
                f"Prometheus: {prometheus_url} (the stream's metrics as it ran; alerting rules at "
                f"{prometheus_url}/alerts); stop it with "
                f"`surveil monitor down --set state_dir={settings.state_dir}`"
            )
        # Stop Spark before Kafka, so its cached Kafka producer does not keep calling a stopped broker.
        spark.stop()
    finally:
        if not keep_kafka:
            broker.down()
            console.print("Kafka stopped")


def write_demo_reports(
    settings: Settings, spark: Any, locations: dict[str, str], reports: Path, console: Console
) -> None:
    """The surveillance report of the demo's days as PDF, CSV and HTML (read with delta-rs, as
    `surveil report` does); the PDF's charts need Chromium, installed here when missing (as root)."""
    from pyspark.sql import functions as F

    from surveillance.reporting.content import RendererMissing
    from surveillance.reporting.run import make_report, report_request
    from surveillance.serving.server import serving_locations
    from surveillance.system_packages import SystemPackageMissing, ensure_chromium

    first, last = (
        read_table(spark, locations["silver_quotes"]).agg(F.min("event_date"), F.max("event_date")).first()
    )
    if first is None:
        console.print("no quotes: no surveillance report")
        return
    since = dt.datetime(first.year, first.month, first.day)
    until = dt.datetime(last.year, last.month, last.day) + dt.timedelta(days=1)
    request = report_request(settings, since, until)
    try:
        ensure_chromium("the PDF report's charts")
    except SystemPackageMissing as exc:
        console.print(f"[yellow]{exc}[/yellow]")
    for fmt in ("pdf", "csv", "html"):
        try:
            made = make_report(
                serving_locations(settings), request, fmt, reports / f"surveillance_report.{fmt}"
            )
        except RendererMissing as exc:
            console.print(f"[yellow]no PDF: {exc}[/yellow]")
            continue
        names = ", ".join(str(p.resolve()) for p in made.files)
        console.print(f"report ({fmt}, {made.seconds:.1f} s): {names}")


def print_console_instructions(settings: Settings, console: Console) -> None:
    """How to open the analysts' console on this lakehouse (surveil api, README "Serving"), with a key made
    for this demo (a local one: it is printed, and lives only in the command below)."""
    import secrets

    serving = settings.serving
    secret = secrets.token_urlsafe(18)
    url = f"http://{serving.host}:{serving.port}"
    # The demo's own tables, checkpoints and broker, not the defaults.
    where = " ".join(
        f"--set {key}={value}"
        for key, value in (
            ("state_dir", settings.state_dir),
            ("lakehouse.root", settings.lakehouse.root),
            ("stream.checkpoint_dir", settings.stream.checkpoint_dir),
            ("kafka.bootstrap_servers", settings.kafka.bootstrap_servers),
        )
    )
    console.rule("the alerts console")
    console.print(
        "Serve the alerts API and console on this lakehouse:\n"
        f"  {serving.api_keys_env}=demo:analyst:{secret} .venv/bin/surveil api {where}\n"
        f"then open {url}/ and sign in with the key {secret} (API documentation: {url}/docs).\n"
        "The live feed of new alerts needs Kafka running: `surveil demo --keep-kafka` leaves it up."
    )
