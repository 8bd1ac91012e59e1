"""``surveil``: the command line. Each command parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from surveillance.config import ConfigError, Settings, load_settings
from surveillance.kafka.errors import BrokerAccessError

console = Console(stderr=True)


def _overrides(args: argparse.Namespace) -> list[str]:
    # --set may be given before and after the command name; both lists count, in that order.
    return [*(args.set or []), *(getattr(args, "set_after", None) or [])]


def _env(args: argparse.Namespace) -> str | None:
    return getattr(args, "env_after", None) or args.env


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(env=_env(args), overrides=_overrides(args))


def cmd_setup(args: argparse.Namespace) -> int:
    from surveillance.kafka.broker import ensure_broker_jars
    from surveillance.spark import build_class_archive, class_archive_is_current, get_spark

    settings = _settings(args)
    with console.status("resolving the Kafka broker's jars (Maven Central, cached)..."):
        jars = ensure_broker_jars(settings.kafka.local_broker.kafka_version)
    console.print(f"Kafka broker jars: {jars}")
    with console.status("resolving Spark's Delta and Kafka connector jars (Ivy, cached)..."):
        spark = get_spark(settings.with_overrides("spark.master=local[1]"), app_name="surveil-setup")
        spark.range(1).count()
        spark.stop()
    console.print("Spark, Delta and the Kafka connector are ready")
    if settings.spark.class_archive and not class_archive_is_current():
        with console.status("writing the driver JVM's class-data archive (a faster start of every run)..."):
            archive = build_class_archive(settings)
        console.print(f"class-data archive: {archive}")
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    from surveillance.kafka.admin import check_access, ensure_topics
    from surveillance.kafka.broker import LocalBroker

    settings = _settings(args)
    broker = LocalBroker(settings)
    if args.action == "up":
        with console.status("starting Kafka (KRaft, loopback)..."):
            status = broker.up()
            check_access(settings.kafka)  # as the pipeline connects: its TLS trust, its SASL user
            topics = ensure_topics(settings.kafka)
        console.print(f"Kafka is up at {status.bootstrap} (pid {status.pid}); topics: {topics}")
    elif args.action == "down":
        stopped = broker.down()
        console.print("Kafka stopped" if stopped else "Kafka was not running")
    else:
        status = broker.status()
        print(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(status).items()}, indent=2)
        )
        return 0 if status.running else 3
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from surveillance.cluster import ClusterError, LocalSparkCluster, spark_submit_command

    settings = _settings(args)
    cluster = LocalSparkCluster(settings)
    try:
        if args.action == "up":
            with console.status("starting a Spark standalone cluster (master and workers, loopback)..."):
                status = cluster.up()
            console.print(
                f"Spark master at {status.master_url} ({status.workers_alive} workers, {status.cores} cores, "
                f"{status.memory_mb:,} MB); web UI {status.web_url}; logs in {status.log_dir}"
            )
        elif args.action == "down":
            console.print("Spark cluster stopped" if cluster.down() else "the Spark cluster was not running")
        elif args.action == "status":
            status = cluster.status()
            print(json.dumps(vars(status), indent=2))
            return 0 if status.running else 3
        else:  # submit: one of jobs/ through spark-submit, the configuration given to this command passed on
            if not args.job:
                raise ClusterError(
                    "cluster submit: name the job (stream, backfill, maintain, compare_models)"
                )
            master = args.master or cluster.master_url
            passed = [item for value in _overrides(args) for item in ("--set", value)]
            if _env(args):
                passed += ["--env", _env(args)]
            job_args = [arg for arg in args.job_args if arg != "--"]
            command = spark_submit_command(master, args.job, [*job_args, *passed])
            console.print("$ " + " ".join(command))
            return subprocess.call(command)
    except ClusterError as exc:
        console.print(f"[red]{exc}")
        return 2
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from surveillance.ingestion.generator import (
        ANOMALY_TYPES,
        BASIC_ANOMALY_TYPES,
        generate_quotes,
        write_csv,
        write_jsonl,
        write_labels,
    )

    # Naming the types asks for them: --anomaly-types implies --inject-anomalies.
    chosen = args.anomaly_types
    if chosen is None:
        kinds = list(BASIC_ANOMALY_TYPES)
    elif chosen.strip().lower() == "all":
        kinds = list(ANOMALY_TYPES)
    else:
        kinds = [kind.strip() for kind in chosen.split(",") if kind.strip()]
    try:
        generated = generate_quotes(
            symbols=args.symbols,
            minutes=args.minutes,
            seed=args.seed,
            inject_anomalies=args.inject_anomalies or chosen is not None,
            dirty=args.dirty,
            anomaly_types=kinds,
            first_symbol=args.first_symbol,
        )
    except ValueError as exc:
        raise SystemExit(f"generate: {exc}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        if args.dirty:
            raise SystemExit("--dirty needs a .jsonl output (malformed lines cannot be written as CSV rows)")
        write_csv(generated, out)
    elif out.suffix == ".jsonl":
        write_jsonl(generated, out)
    else:
        raise SystemExit(f"--out must end in .jsonl or .csv, not {out.suffix!r}")
    written = write_labels(generated, out)
    console.print(f"wrote {len(generated.quotes):,} quotes to {out}; labels: {written}")
    return 0


def _stop_on_signals(stop: threading.Event, doing: str) -> dict[int, Any]:
    """SIGTERM/SIGINT set ``stop`` (a second one exits at once); the previous handlers, to restore."""

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            console.print(f"{name} again: exiting without waiting for acknowledgements")
            os._exit(128 + signum)
        console.print(f"{name}: {doing} (send it again to force)")
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def cmd_replay(args: argparse.Namespace) -> int:
    import datetime as dt

    from surveillance.config import resolve_local_path
    from surveillance.ingestion.replay import record_ranges, replay_file

    settings = _settings(args)
    source = Path(args.file)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    unsent = Path(resolve_local_path(settings.state_dir)) / "replay" / f"{source.stem}.unsent.{stamp}.jsonl"
    unsent.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous = _stop_on_signals(stop, "stopping after the records in flight")
    try:
        result = replay_file(
            source,
            settings.kafka,
            topic=args.topic,
            rate=args.rate,
            progress=True,
            retry_for_s=args.retry_for,
            unsent_out=unsent,
            stop=stop,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(
        f"sent {result.sent:,} messages ({result.skipped_blank} blank lines skipped, {result.failed} failed) "
        f"in {result.elapsed_s:.1f}s"
    )
    if result.ok and not result.stopped_on_request:
        return 0
    if result.stopped_on_request and not result.failed:
        console.print(
            f"stopped on request: records from {result.not_attempted_from} on were not sent; they are in "
            f"{result.unsent_file} (replay it to send them)"
        )
        return 0
    if result.failed_records:
        console.print(f"[red]not acknowledged: records {record_ranges(result.failed_records)}")
    if result.not_attempted_from is not None:
        console.print(f"[red]not attempted: from record {result.not_attempted_from} to the end of the file")
    console.print(f"[red]first error: {result.first_error}")
    if result.unsent_file is not None:
        console.print(f"every record not sent is in {result.unsent_file} (replay it to send them)")
    return 1


def _log_line(message: str) -> None:
    # One unwrapped line each, as written (a feed's messages hold brackets): fit for a service's log.
    console.print(message, soft_wrap=True, markup=False, highlight=False)


def cmd_ingest(args: argparse.Namespace) -> int:
    from surveillance.providers.base import available_providers
    from surveillance.providers.run import run_ingest

    if args.list:
        for name, point in sorted(available_providers().items()):
            print(f"{name}\t{point.value}")
        return 0
    if not args.provider:
        console.print("[red]--provider NAME is required (surveil ingest --list shows those installed)")
        return 2
    settings = _settings(args)
    stop = threading.Event()
    previous = _stop_on_signals(stop, "stopping after the quotes already handed over")
    options: dict[str, Any] = {}
    if args.file:
        options["file"] = args.file
    if args.rate:
        options["rate"] = args.rate
    try:
        result = run_ingest(
            settings,
            args.provider,
            _names(args.symbols),
            topic=args.topic,
            options=options,
            stop=stop,
            say=_log_line,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result.unsent_file is not None:
        _log_line(f"quotes Kafka never acknowledged are in {result.unsent_file} (surveil replay sends them)")
    if result.error:
        console.print(Text(result.error, style="red"), soft_wrap=True)
    return result.exit_code


def cmd_stream(args: argparse.Namespace) -> int:
    from surveillance.pipeline.runner import run_stream

    if args.settings_json:  # a child of `surveil stream` running one of its queries
        settings = Settings.from_json(Path(args.settings_json).read_text())
    else:
        settings = _settings(args)
    return run_stream(settings, once=args.once, console=console, show_progress=not args.no_progress)


def cmd_backfill(args: argparse.Namespace) -> int:
    from surveillance.pipeline.backfill import event_range
    from surveillance.pipeline.runner import backfill_with_progress

    settings = _settings(args)
    try:
        range_ = event_range(args.start, args.end)
    except ValueError as exc:
        raise SystemExit(f"backfill: {exc}") from None
    backfill_with_progress(settings, range_, console=console)
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from rich.table import Table

    from surveillance.maintenance import maintain
    from surveillance.spark import get_spark

    settings = _settings(args)
    results = maintain(
        get_spark(settings),
        settings,
        tables=args.table or None,
        dry_run=args.dry_run,
        apply_properties=args.properties,
        full_vacuum=True if args.full else None,
    )
    title = "Delta maintenance" + (" (dry run: nothing changed)" if args.dry_run else "")
    table = Table(title=title)
    for column in (
        "table",
        "files before",
        "files after",
        "compacted",
        "vacuumed",
        "vacuum",
        "retention properties",
        "s",
    ):
        table.add_column(column)
    differing: dict[str, str] = {}
    short = {"delta.logRetentionDuration": "log", "delta.deletedFileRetentionDuration": "files"}
    for r in results:
        if r.properties_set:
            properties = "set: " + ", ".join(short.get(k, k) for k in r.properties_set)
        elif r.properties_differing:
            differing.update({key: new for key, (_, new) in r.properties_differing.items()})
            properties = "differ: " + ", ".join(short.get(k, k) for k in r.properties_differing)
        else:
            properties = "as configured"
        table.add_row(
            r.table, str(r.files_before), str(r.files_after), "yes" if r.compacted else "-",
            str(r.files_vacuumed), r.vacuum_mode, properties, f"{r.seconds:.1f}",
        )  # fmt: skip
    console.print(table)
    if differing:
        console.print("configured: " + ", ".join(f"{key} = {value}" for key, value in differing.items()))
        console.print(
            "retention properties differ from lakehouse.maintenance: run `surveil maintain --properties` "
            "with the stream stopped (a metadata commit fails a concurrent batch, redone at its restart)"
        )
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from surveillance.lakehouse import PUBLIC_TABLES, table_locations

    locations = table_locations(_settings(args))
    shown = {name: locations[name] for name in PUBLIC_TABLES} if not args.all else locations
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        for name, location in shown.items():
            print(f"{name:20s} {location}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from surveillance.lakehouse import table_locations
    from surveillance.reporting.summary import print_summary, summarize, wide_console
    from surveillance.spark import get_spark

    settings = _settings(args)
    spark = get_spark(settings)
    print_summary(summarize(spark, table_locations(settings)), wide_console())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from surveillance.reporting.content import ReportError
    from surveillance.reporting.formats import report_format
    from surveillance.reporting.run import (
        day_range,
        default_name,
        email_report,
        make_report,
        report_locations,
        report_request,
    )

    settings = _settings(args)
    try:
        if args.since or args.until:
            if not (args.since and args.until):
                raise ReportError("give both --from and --to (or --day)")
            since, until = _report_time(args.since, "--from"), _report_time(args.until, "--to")
        else:
            since, until = day_range(args.day or "yesterday")
        request = report_request(settings, since, until, _names(args.symbols), _names(args.rules))
        fmt = report_format(args.format)
        out = Path(args.out or "reports/")
        if args.out is None or args.out.endswith("/") or out.is_dir():
            out = out / default_name(request, fmt.extension)
        made = make_report(report_locations(settings), request, args.format, out)
    except ReportError as exc:
        console.print(f"[red]report: {exc}[/red]")
        return 2
    for path in made.files:
        console.print(f"report written to {path} ({path.stat().st_size:,} bytes)")
    console.print(
        f"{made.alerts:,} alerts; {made.seconds:.2f} s ({made.seconds_content:.2f} s reading the tables)"
    )
    if args.email:
        delivery = email_report(settings, _names(args.email), request, made.files, [])
        console.print(f"e-mailed to {', '.join(delivery.recipients)} (attempt {delivery.attempts})")
    return 0


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def _report_time(text: str, option: str) -> dt.datetime:
    """An ISO date or date-time (UTC when it has no offset)."""
    from surveillance.reporting.content import ReportError

    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReportError(f"{option} {text!r} is not an ISO 8601 date or date-time") from exc


def cmd_dq(args: argparse.Namespace) -> int:
    from surveillance.lakehouse import table_locations
    from surveillance.quality.report import (
        configured_suites,
        load_dq_status,
        print_dq_status,
        write_dq_report,
    )
    from surveillance.reporting.summary import wide_console
    from surveillance.spark import get_spark

    settings = _settings(args)
    spark = get_spark(settings)
    locations = table_locations(settings)
    if args.action == "status":
        print_dq_status(load_dq_status(spark, locations, last=args.last or 10), wide_console())
        return 0
    if args.action == "bench":
        from surveillance.quality.bench import run_dq_bench

        run_dq_bench(spark, settings, out=Path(args.out) / "dq_bench.json", console=console)
        return 0
    page, docs = write_dq_report(
        spark, locations, Path(args.out), last=args.last or 200, suites=configured_suites(settings)
    )
    console.print(f"data-quality page: {page}\nGX Data Docs: {docs}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from surveillance.models.registry import model_versions
    from surveillance.models.report import print_comparison, print_versions
    from surveillance.reporting.summary import wide_console

    settings = _settings(args)
    if args.action == "compare":
        from surveillance.models.compare import compare_detectors

        with console.status("comparing detectors...") as status:
            comparison = compare_detectors(settings, on_progress=status.update)
        print_comparison(comparison, wide_console())
        return 0
    if args.action == "evaluate":
        return _evaluate_on_real_markets(args, settings)
    models = settings.models
    print_versions(model_versions(settings), models.registered_name, models.champion_alias, wide_console())
    return 0


def _evaluate_on_real_markets(args: argparse.Namespace, settings: Any) -> int:
    """``models evaluate --real``: every configured detector (trained as ``compare`` trains it), the
    registered champion and the rules on real market data: false-alarm load and the real >5 % moves."""
    from surveillance.models.compare import fit_detector, load_real_market_data, training_split
    from surveillance.models.real_evaluation import combined, evaluate_models, evaluate_rules
    from surveillance.models.report import print_real
    from surveillance.reporting.summary import wide_console

    if not args.real:
        raise SystemExit("models evaluate: say what to evaluate on: --real (real market data)")
    data = load_real_market_data(Path(args.data) if args.data else None)
    if data is None:
        console.print(
            "no real market data here (../shared/realdata beside the project, $SURVEIL_REAL_DATA or --data): "
            "nothing to evaluate",
            style="yellow",
        )
        return 0
    gap = settings.models.evaluation.merge_gap_seconds
    with console.status("training the detectors as `models compare` does...") as status:
        fit, calibration = training_split(settings)
        models: dict[str, Any] = {}
        for name, params in settings.models.detectors.items():
            status.update(f"training {name}")
            models[name] = fit_detector(name, params, fit, calibration, settings)[1]
        champion = _champion_model(settings)
        if champion is not None:
            models[f"champion (v{champion[0]})"] = champion[1]
        status.update("scoring the real quotes")
        evaluation = evaluate_models(models, data, gap)
        if args.rules:
            from surveillance.spark import get_spark

            status.update("running the rules in Spark")
            evaluation = combined(evaluation, evaluate_rules(get_spark(settings), settings, data))
    print_real(evaluation, wide_console(), by_symbol=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(evaluation.as_dict(), indent=2, default=str))
    console.print(f"written: {out}")
    return 0


def _champion_model(settings: Any) -> tuple[str, Any] | None:
    """(version, model) of the registered champion, if any and if it scores this version's features."""
    from surveillance.models.pyfunc import model_incompatibility
    from surveillance.models.registry import alias_version, model_uri, registry_exists, use_mlflow

    if not registry_exists(settings) or (version := alias_version(settings)) is None:
        return None
    import mlflow.pyfunc

    use_mlflow(settings)
    model = mlflow.pyfunc.load_model(model_uri(settings, version.version)).unwrap_python_model()
    if model_incompatibility(model):
        console.print(f"champion version {version.version} {model_incompatibility(model)}", style="yellow")
        return None
    return str(version.version), model


def cmd_notebook(args: argparse.Namespace) -> int:
    from surveillance.notebook.runner import (
        NotebookError,
        find_notebook,
        list_notebooks,
        notebook_title,
        run_notebook,
    )

    if args.action == "list":
        for path in list_notebooks():
            print(f"{path.stem:28s} {notebook_title(path)}")
        return 0
    if not args.name:
        raise SystemExit(
            "notebook run: name a notebook, e.g. 05 or 05_surveillance_dashboard (see: notebook list)"
        )
    parameters: dict[str, str] = {}
    for item in args.param or []:
        if "=" not in item:
            raise SystemExit(f"--param expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parameters[key.strip()] = value
    # --env and --set reach the notebook as its env and overrides widgets (after any --param overrides=).
    if _env(args):
        parameters.setdefault("env", _env(args))
    if _overrides(args):
        parameters["overrides"] = "\n".join(
            filter(None, [parameters.get("overrides", ""), *_overrides(args)])
        )
    try:
        path = find_notebook(args.name)
        run = run_notebook(path, parameters, out_dir=Path(args.out) if args.out else None)
    except NotebookError as exc:
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        return 1
    console.print(
        f"{path.stem}: {run.cells_run} code cells in {run.seconds:.0f} s, {len(run.files)} files written"
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.action == "bench":
        from surveillance.serving.bench import run_api_bench

        run_api_bench(
            settings,
            lakehouse=Path(args.lakehouse),
            rebuild=args.rebuild,
            alerts=args.alerts,
            quotes=args.quotes,
            clients=args.clients,
            seconds=args.seconds,
            out=Path(args.out),
            console=console,
        )
        return 0
    from surveillance.serving.server import serve

    serve(settings, host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from surveillance.demo import run_demo

    run_demo(
        Path(args.sample),
        env=_env(args),
        overrides=_overrides(args),
        reports=Path(args.reports),
        keep_kafka=args.keep_kafka,
        monitor=args.monitor,
        console=console,
    )
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from surveillance.config import interval_seconds
    from surveillance.observability.drift import DriftError, run_drift_report
    from surveillance.reporting.content import ReportError
    from surveillance.reporting.run import day_range, naive_utc, report_locations

    settings = _settings(args)
    try:
        if args.day:
            since, until = day_range(args.day)
        elif args.since or args.until:
            if not (args.since and args.until):
                raise ReportError("give both --from and --to (or --day)")
            since = naive_utc(_report_time(args.since, "--from"))
            until = naive_utc(_report_time(args.until, "--to"))
        else:
            until = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
            since = until - dt.timedelta(seconds=interval_seconds(settings.drift.window))
        run = run_drift_report(settings, report_locations(settings), since, until)
    except (DriftError, ReportError) as exc:
        console.print(f"[red]drift: {exc}[/red]")
        return 2
    outcome = run.outcome
    table = Table("column", "test", "score", "threshold", "drift", title=f"{since} to {until} (UTC)")
    for column in outcome.columns:
        table.add_row(
            column.feature,
            column.method,
            f"{column.score:.4g}",
            f"{column.threshold:g}",
            "[red]yes[/red]" if column.drift_detected else "no",
        )
    console.print(table)
    verdict = "[red]drift detected[/red]" if outcome.drift_detected else "no drift"
    console.print(
        f"{verdict} against {run.champion.name} version {run.champion.version}'s training data "
        f"({outcome.current_rows:,} quotes vs {outcome.reference_rows:,}); report: {run.html}"
    )
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from surveillance.observability.prometheus_server import MonitorError, Prometheus

    prometheus = Prometheus(_settings(args))
    try:
        if args.action == "up":
            status = prometheus.up()
            console.print(
                f"Prometheus at {status.url} ({status.rules} alerting rules); data: {prometheus.folder}"
            )
        elif args.action == "down":
            console.print("Prometheus stopped" if prometheus.down() else "Prometheus was not running")
            return 0
        status = prometheus.status()
    except MonitorError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    if not status.running:
        console.print(f"Prometheus is not running ({status.url}): surveil monitor up")
        return 3
    table = Table("job", "instance", "health", "last error", title=f"Prometheus at {status.url}")
    for target in status.targets:
        table.add_row(target["job"], target["instance"], target["health"], target["error"])
    console.print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from surveillance.bench import PARTS, run_bench

    run_bench(
        events=args.events,
        latency_rates=args.rates,
        latency_seconds=args.latency_seconds,
        out=Path(args.out),
        env=_env(args),
        overrides=_overrides(args),
        console=console,
        only=args.only or PARTS,
    )
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from surveillance.soak import run_soak

    if min(args.minutes, args.rate, args.every) <= 0:
        raise SystemExit("soak: --minutes, --rate and --every must be positive")
    try:
        report = run_soak(
            minutes=args.minutes,
            rate=args.rate,
            every=args.every,
            out=Path(args.out),
            env=_env(args),
            overrides=_overrides(args),
            console=console,
        )
    except KeyboardInterrupt:  # a second Ctrl-C before the stream started: the report is written
        return 130
    return 0 if report.ok else 1


def _add_config_options(parser: argparse.ArgumentParser, suffix: str = "") -> None:
    parser.add_argument(
        "--env",
        choices=["local", "dev", "prod"],
        dest=f"env{suffix}",
        help="configuration overlay (default: $SURVEIL_ENV or local)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        dest=f"set{suffix}",
        help="override a configuration key, e.g. --set rules.price_jump.threshold=0.04",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``surveil`` command."""
    parser = argparse.ArgumentParser(prog="surveil", description=__doc__)
    _add_config_options(parser)
    # The same options after the command name, kept apart: a subparser would otherwise overwrite them.
    common = argparse.ArgumentParser(add_help=False)
    _add_config_options(common, suffix="_after")
    commands = parser.add_subparsers(dest="command", required=True)

    setup = commands.add_parser(
        "setup", parents=[common], help="fetch the jars (Kafka broker, Delta, connector)"
    )
    setup.set_defaults(func=cmd_setup)

    kafka = commands.add_parser("kafka", parents=[common], help="the local KRaft broker: up | down | status")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.set_defaults(func=cmd_kafka)

    cluster = commands.add_parser(
        "cluster",
        parents=[common],
        help="a Spark standalone cluster on loopback: up | down | status; submit JOB runs jobs/JOB.py on it",
    )
    cluster.add_argument("action", choices=["up", "down", "status", "submit"])
    cluster.add_argument("job", nargs="?", help="submit: stream, backfill, maintain or compare_models")
    cluster.add_argument("--master", help="submit: this master instead of the local cluster's")
    cluster.add_argument("job_args", nargs=argparse.REMAINDER, help="submit: the job's own arguments")
    cluster.set_defaults(func=cmd_cluster)

    generate = commands.add_parser("generate", parents=[common], help="synthesize labelled quotes")
    generate.add_argument("--out", required=True, help="output file (.jsonl or .csv)")
    generate.add_argument("--symbols", type=int, default=8)
    generate.add_argument("--minutes", type=int, default=60)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument(
        "--inject-anomalies", action="store_true", help="add labelled anomalies (see --anomaly-types)"
    )
    generate.add_argument(
        "--anomaly-types",
        default=None,
        help="comma list of anomaly types, or 'all' (implies --inject-anomalies; default "
        "price_jump,volume_spike): price_jump, volume_spike, flash_crash, stale_feed, spread_blowout, "
        "quote_stuffing, momentum_drift",
    )
    generate.add_argument(
        "--first-symbol", type=int, default=0, help="start at this ticker index (disjoint train/test sets)"
    )
    generate.add_argument(
        "--dirty",
        action="store_true",
        help="add malformed lines, duplicates, extra fields and very late events",
    )
    generate.set_defaults(func=cmd_generate)

    replay = commands.add_parser("replay", parents=[common], help="send a .jsonl or .csv file to Kafka")
    replay.add_argument("--file", required=True)
    replay.add_argument(
        "--rate", type=float, default=None, help="events per second (default: as fast as possible)"
    )
    replay.add_argument("--topic", default=None, help="default: kafka.topics.quotes")
    replay.add_argument(
        "--retry-for",
        type=float,
        default=120.0,
        help="seconds each record is retried through a broker outage before it counts as failed",
    )
    replay.set_defaults(func=cmd_replay)

    ingest = commands.add_parser(
        "ingest",
        parents=[common],
        help="publish a live market data feed (a provider plugin: polygon, yfinance, replay) to Kafka",
    )
    ingest.add_argument("--provider", help="the provider's name (--list shows those installed)")
    ingest.add_argument("--symbols", default=None, help="comma list, as the provider spells them")
    ingest.add_argument("--topic", default=None, help="default: kafka.topics.quotes")
    ingest.add_argument("--file", default=None, help="replay: the .jsonl or .csv file")
    ingest.add_argument("--rate", type=float, default=None, help="replay: records per second")
    ingest.add_argument("--list", action="store_true", help="list the installed providers and exit")
    ingest.set_defaults(func=cmd_ingest)

    stream = commands.add_parser("stream", parents=[common], help="run the streaming job")
    stream.add_argument("--once", action="store_true", help="process everything available, then stop")
    # Internal: how `surveil stream` starts each query's process (stream.processes: 2).
    stream.add_argument("--settings-json", default=None, help=argparse.SUPPRESS)
    stream.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    stream.set_defaults(func=cmd_stream)

    backfill = commands.add_parser(
        "backfill",
        parents=[common],
        help="recompute silver, gold and alerts for an event-time range from bronze (idempotent)",
    )
    backfill.add_argument(
        "--from",
        dest="start",
        required=True,
        help="first UTC day (YYYY-MM-DD, today, yesterday, today-N) or minute (2026-11-30T14:00Z)",
    )
    backfill.add_argument(
        "--to", dest="end", required=True, help="last UTC day (included), or the minute the range ends before"
    )
    backfill.set_defaults(func=cmd_backfill)

    maintain = commands.add_parser(
        "maintain",
        parents=[common],
        help="Delta housekeeping: compaction, VACUUM, retention (stream may run)",
    )
    maintain.add_argument(
        "--table", action="append", help="only this table (repeatable); compacted even if gold"
    )
    maintain.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    maintain.add_argument(
        "--properties", action="store_true", help="also set the retention properties where they differ"
    )
    maintain.add_argument(
        "--full", action="store_true", help="VACUUM FULL: list every file (orphans of aborted writes too)"
    )
    maintain.set_defaults(func=cmd_maintain)

    tables = commands.add_parser("tables", parents=[common], help="the lakehouse tables and their locations")
    tables.add_argument("--json", action="store_true")
    tables.add_argument("--all", action="store_true", help="include internal tables (stream_progress)")
    tables.set_defaults(func=cmd_tables)

    summary = commands.add_parser("summary", parents=[common], help="print what the lakehouse holds")
    summary.set_defaults(func=cmd_summary)

    report = commands.add_parser(
        "report", parents=[common], help="a surveillance report (pdf, csv, html) for a time range"
    )
    report.add_argument("--format", choices=["pdf", "csv", "html"], default="pdf")
    report.add_argument("--from", dest="since", help="start, ISO date or date-time (UTC without offset)")
    report.add_argument("--to", dest="until", help="end (excluded), ISO date or date-time")
    report.add_argument("--day", help="instead of --from/--to: YYYY-MM-DD, today or yesterday (the default)")
    report.add_argument("--symbols", help="comma-separated symbols (default: all)")
    report.add_argument("--rules", help="comma-separated rules (default: all)")
    report.add_argument(
        "--out",
        help="the file, or a folder ending in / (default reports/surveillance_report_<from>_<to>.<format>)",
    )
    report.add_argument("--email", help="comma-separated recipients (reports.email configures SMTP)")
    report.set_defaults(func=cmd_report)

    dq = commands.add_parser("dq", parents=[common], help="data quality: status | report | bench")
    dq.add_argument("action", choices=["status", "report", "bench"])
    dq.add_argument("--last", type=int, default=None, help="micro-batches to show (status 10, report 200)")
    dq.add_argument("--out", default="reports/dq", help="report folder")
    dq.set_defaults(func=cmd_dq)

    models = commands.add_parser(
        "models",
        parents=[common],
        help="anomaly models: compare (train, evaluate, register) | list | evaluate --real",
    )
    models.add_argument("action", choices=["compare", "list", "evaluate"])
    models.add_argument(
        "--real", action="store_true", help="evaluate: on real market data (../shared/realdata, or --data)"
    )
    models.add_argument("--data", default=None, help="evaluate --real: the real market data folder")
    models.add_argument(
        "--no-rules", dest="rules", action="store_false", help="evaluate --real: skip the rules (no Spark)"
    )
    models.add_argument(
        "--out", default="reports/models/real_markets.json", help="evaluate --real: the JSON written"
    )
    models.set_defaults(func=cmd_models)

    notebook = commands.add_parser(
        "notebook", parents=[common], help="run a Databricks notebook (notebooks/) locally: run NAME | list"
    )
    notebook.add_argument("action", choices=["run", "list"])
    notebook.add_argument(
        "name", nargs="?", help="file stem (05_surveillance_dashboard), number (05) or path"
    )
    notebook.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a widget's value, e.g. --param symbol=ACME"
    )
    notebook.add_argument(
        "--out", default=None, help="folder for its figures (default reports/notebooks/<name>)"
    )
    notebook.set_defaults(func=cmd_notebook)

    api = commands.add_parser(
        "api",
        parents=[common],
        help="the alerts API and web console (serve), or its benchmark (bench)",
        description="serve: FastAPI + uvicorn over the lakehouse (delta-rs, DuckDB; no Spark). Keys come "
        "from $SURVEIL_API_KEYS (name:role:secret, comma-separated). bench: p50/p99 per endpoint on a "
        "synthetic lakehouse of --alerts alerts and --quotes silver quotes, under --clients clients.",
    )
    api.add_argument("action", nargs="?", choices=["serve", "bench"], default="serve")
    api.add_argument("--host", help="address to listen on (default serving.host, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default serving.port, 8000)")
    api.add_argument("--lakehouse", default=".state/api_bench", help="bench: where the synthetic tables go")
    api.add_argument("--rebuild", action="store_true", help="bench: write the synthetic tables again")
    api.add_argument("--alerts", type=int, default=1_000_000, help="bench: alerts in the synthetic lakehouse")
    api.add_argument("--quotes", type=int, default=10_000_000, help="bench: silver quotes in it")
    api.add_argument("--clients", type=int, default=8, help="bench: concurrent clients")
    api.add_argument("--seconds", type=float, default=20.0, help="bench: seconds per endpoint")
    api.add_argument("--out", default="reports/api_bench.json", help="bench: where the JSON figures go")
    api.set_defaults(func=cmd_api)

    demo = commands.add_parser("demo", parents=[common], help="the whole pipeline on the sample, end to end")
    demo.add_argument("--sample", default="data/samples/quotes_sample.jsonl")
    demo.add_argument("--reports", default="reports")
    demo.add_argument("--keep-kafka", action="store_true", help="leave the demo broker running afterwards")
    demo.add_argument(
        "--monitor", action="store_true", help="with Prometheus scraping the stream (surveil monitor)"
    )
    demo.set_defaults(func=cmd_demo)

    drift = commands.add_parser(
        "drift",
        parents=[common],
        help="feature drift of a window of silver against the champion's training data",
    )
    drift.add_argument("action", choices=["report"])
    drift.add_argument("--from", dest="since", help="start, ISO date or date-time (UTC without offset)")
    drift.add_argument("--to", dest="until", help="end (excluded)")
    drift.add_argument("--day", help="instead of --from/--to: YYYY-MM-DD, today or yesterday")
    drift.set_defaults(func=cmd_drift)

    monitor = commands.add_parser(
        "monitor",
        parents=[common],
        help="Prometheus on loopback scraping the stream and the API: up | down | status",
    )
    monitor.add_argument("action", choices=["up", "down", "status"])
    monitor.set_defaults(func=cmd_monitor)

    bench = commands.add_parser("bench", parents=[common], help="throughput and latency benchmark")
    bench.add_argument("--events", type=int, default=500_000)
    bench.add_argument(
        "--rates", type=float, nargs="+", default=[1_000.0, 10_000.0], help="input rates of the latency runs"
    )
    bench.add_argument("--latency-seconds", type=int, default=120)
    bench.add_argument("--out", default="reports/bench.json")
    bench.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only these parts, for tuning: raw lakehouse latency peer cold growth",
    )
    bench.set_defaults(func=cmd_bench)

    soak = commands.add_parser(
        "soak", parents=[common], help="both queries under a steady load for a long while: what grows?"
    )
    soak.add_argument("--minutes", type=float, default=30, help="how long the input lasts")
    soak.add_argument("--rate", type=float, default=1_000.0, help="input rate, quotes per second")
    soak.add_argument("--every", type=float, default=60, help="seconds between samples")
    soak.add_argument("--out", default="reports/soak.json")
    soak.set_defaults(func=cmd_soak)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``surveil`` console command."""
    args = build_parser().parse_args(argv)
    # Warnings of the library (a topic refusing alerts, a recovery from the topic, ...) with their time.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        console.print(f"[red]configuration error[/red]\n{exc}")
        return 2
    except BrokerAccessError as exc:
        console.print(f"[red]Kafka refused the connection[/red]\n{exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
