"""What a surveillance report says, defined once for every format (PDF, CSV, HTML).

Read without Spark: delta-rs names each table's data files whose statistics can hold the range, DuckDB
reads them. The headline counts, the top alerts, the charts' data, the data-quality pass rates and the
models that scored the range are gathered here; the alerts of the range (possibly millions) stay a query
(:meth:`ReportSource.copy_alerts_csv`) that a format streams to disk.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from surveillance.serving.actions_table import ActionLog
from surveillance.serving.delta_files import DeltaFiles, TableNotReadable

SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}
# The columns every alert row of a report has, before its evidence (``details.*``) and case columns.
ALERT_COLUMNS = (
    "alert_id",
    "symbol",
    "event_time",
    "rule",
    "severity",
    "confidence",
    "score",
    "threshold",
    "event_id",
    "detected_at",
    "episode_id",
)
# The time column a report's range applies to, per table.
RANGE_COLUMNS = {"silver_quotes": "event_time", "gold_bars_1m": "bar_start", "alerts": "event_time"}
# Tables with no event time (raw records, verdicts) are read for the micro-batches that carried the range's
# quotes; this column, within the time those batches ran, names their files.
BATCH_COLUMNS = {"bronze_quotes": "ingested_at", "quarantine_quotes": "ingested_at", "dq_results": "run_time"}
BATCH_SLACK = timedelta(minutes=10)
MAX_CHART_POINTS = 1500


class ReportError(ValueError):
    """A report that cannot be made as asked (bad range, unknown symbol, ...): the message says why."""


class RendererMissing(ReportError):
    """What draws the charts (Kaleido and a Chromium) is not on this machine: the server's problem."""


@dataclass(frozen=True)
class ReportRequest:
    """A report's range (naive UTC, ``until`` exclusive) and filters."""

    since: datetime
    until: datetime
    symbols: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    top_alerts: int = 25
    chart_symbols: int = 6

    def __post_init__(self) -> None:
        if self.since >= self.until:
            raise ReportError(f"the range is empty: from {self.since} must be before to {self.until}")
        if not 1 <= self.top_alerts <= 1000:
            raise ReportError("top_alerts must be between 1 and 1,000")
        if not 1 <= self.chart_symbols <= 50:
            raise ReportError("chart_symbols must be between 1 and 50")

    def describe(self) -> dict[str, Any]:
        return {
            "from": f"{self.since.isoformat()}Z",
            "to": f"{self.until.isoformat()}Z",
            "symbols": list(self.symbols) or "all",
            "rules": list(self.rules) or "all",
        }


@dataclass
class SymbolChart:
    """One symbol's price over the range (bars, coarsened to at most MAX_CHART_POINTS) and its alerts."""

    symbol: str
    bar_minutes: int
    bars: pd.DataFrame  # bar_start, low, high, close
    alerts: pd.DataFrame  # event_time, rule, severity, price, alert_id


@dataclass
class ReportContent:
    request: ReportRequest
    generated_at: datetime
    code_version: str
    layer_counts: dict[str, int | None]
    quarantine_by_reason: list[tuple[str, int]]
    alerts_by_rule: list[dict[str, Any]]  # rule, severity, confidence, alerts
    alerts_by_status: list[tuple[str, int]]
    top_alerts: list[dict[str, Any]]
    charts: list[SymbolChart]
    dq_pass_rates: list[dict[str, Any]]
    models: list[dict[str, Any]]  # model_name, model_version, alerts
    missing_tables: list[str]
    source: ReportSource = field(repr=False)

    @property
    def alert_total(self) -> int:
        return sum(row["alerts"] for row in self.alerts_by_rule)

    def summary_rows(self) -> list[dict[str, Any]]:
        """Every headline count as (section, key, value) rows: the summary CSV, and what a test compares."""
        rows = [{"section": "layer", "key": k, "value": v} for k, v in self.layer_counts.items()]
        rows += [{"section": "quarantine_reason", "key": r, "value": n} for r, n in self.quarantine_by_reason]
        rows += [
            {
                "section": "alerts",
                "key": f"{a['rule']}/{a['severity']}/{a['confidence']}",
                "value": a["alerts"],
            }
            for a in self.alerts_by_rule
        ]
        rows += [{"section": "status", "key": s, "value": n} for s, n in self.alerts_by_status]
        rows += [
            {"section": "dq_pass_rate", "key": f"{d['suite']}/{d['expectation']}", "value": d["pass_rate"]}
            for d in self.dq_pass_rates
        ]
        rows += [
            {"section": "model", "key": f"{m['model_name']} v{m['model_version']}", "value": m["alerts"]}
            for m in self.models
        ]
        produced = {
            **self.request.describe(),
            "generated_at": f"{self.generated_at.isoformat()}",
            "code_version": self.code_version,
        }
        rows += [
            {"section": "report", "key": k, "value": ",".join(v) if isinstance(v, list) else v}
            for k, v in produced.items()
        ]
        return rows


class ReportSource:
    """The lakehouse's tables as DuckDB reads them: only the files a range can touch."""

    def __init__(self, locations: dict[str, str], storage_options: dict[str, str] | None = None) -> None:
        import duckdb

        self.locations = locations
        self._tables = {
            name: DeltaFiles(locations[name], 0, storage_options) for name in (*RANGE_COLUMNS, *BATCH_COLUMNS)
        }
        self._batches_of: ReportRequest | None = None
        self._batch_window: tuple[datetime, datetime] | None = None
        self.actions = ActionLog(locations["alert_actions"], storage_options)
        self.duck = duckdb.connect(":memory:", config={"threads": 2})
        self.duck.execute("SET TimeZone = 'UTC'")
        self.missing: set[str] = set()

    def files(
        self, table: str, since: datetime, until: datetime, symbols: tuple[str, ...] = (), column: str = ""
    ) -> list[str]:
        """The data files of ``table`` whose statistics can hold rows of [since, until) (and symbols)."""
        try:
            snapshot = self._tables[table].snapshot()
        except TableNotReadable:
            self.missing.add(table)
            return []
        chosen = snapshot.select(column or RANGE_COLUMNS[table], since, until)
        if symbols:
            chosen = [f for f in chosen if any(f.may_hold("symbol", s, s) for s in symbols)]
        return [f.uri for f in chosen]

    def relation(self, table: str, request: ReportRequest) -> str | None:
        """SQL for the table's rows of the range (and the request's symbols and rules where the table has
        them), values written as literals so that COPY can use it too; None when no file can hold any."""
        if table in BATCH_COLUMNS:
            return self._batch_relation(table, request)
        with_symbols = table in ("silver_quotes", "gold_bars_1m", "alerts")
        files = self.files(table, request.since, request.until, request.symbols if with_symbols else ())
        if not files:
            return None
        column = RANGE_COLUMNS[table]
        where = [
            f"CAST({column} AS TIMESTAMP) >= {_literal(request.since)}",
            f"CAST({column} AS TIMESTAMP) < {_literal(request.until)}",
        ]
        if with_symbols and request.symbols:
            where.append(f"symbol IN ({', '.join(_literal(s) for s in request.symbols)})")
        if table == "alerts" and request.rules:
            where.append(f"rule IN ({', '.join(_literal(r) for r in request.rules)})")
        listed = ", ".join(_literal(f) for f in files)
        return (
            f"(SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false) "
            f"WHERE {' AND '.join(where)})"
        )

    def _batch_relation(self, table: str, request: ReportRequest) -> str | None:
        window = self._range_batches(request)
        if window is None:
            return None
        files = self.files(
            table, window[0] - BATCH_SLACK, window[1] + BATCH_SLACK, column=BATCH_COLUMNS[table]
        )
        if not files:
            return None
        listed = ", ".join(_literal(f) for f in files)
        return (
            f"(SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false) "
            "SEMI JOIN range_batches USING (stream_id, batch_id))"
        )

    def _range_batches(self, request: ReportRequest) -> tuple[datetime, datetime] | None:
        """The micro-batches that wrote the range's silver quotes (all symbols), as the table
        ``range_batches``; the time they ran (first and last ingestion), or None."""
        unfiltered = ReportRequest(request.since, request.until)
        if self._batches_of == unfiltered:
            return self._batch_window
        self._batches_of, self._batch_window = unfiltered, None
        relation = self.relation("silver_quotes", unfiltered)
        batches = (
            self.duck.sql(
                "SELECT stream_id, batch_id, min(CAST(ingested_at AS TIMESTAMP)) AS first, "
                f"max(CAST(ingested_at AS TIMESTAMP)) AS last FROM {relation} GROUP BY ALL"
            ).to_arrow_table()
            if relation is not None
            else None
        )
        if batches is None or batches.num_rows == 0:
            return None
        self.duck.register("range_batches", batches.select(["stream_id", "batch_id"]))
        first, last = _window(batches)
        self._batch_window = (first, last)
        return self._batch_window

    def rows(self, table: str, request: ReportRequest, sql: str, params: list[Any] | None = None) -> Any:
        """Run ``sql`` with ``{t}`` standing for :meth:`relation`; None when no file can hold a row."""
        relation = self.relation(table, request)
        if relation is None:
            return None
        return self.duck.execute(sql.replace("{t}", relation), params or [])

    def case_states(self) -> pa.Table:
        """alert_id → status, assignee, from the alert_actions table (alerts without actions are open)."""
        self.actions.refresh()
        states = self.actions.states()
        return pa.table(
            {
                "alert_id": pa.array(list(states), pa.string()),
                "status": pa.array([s.status for s in states.values()], pa.string()),
                "assignee": pa.array([s.assignee for s in states.values()], pa.string()),
            }
        )

    def evidence_keys(self, request: ReportRequest) -> list[str]:
        """The top-level keys of the range's alert evidence, sorted: the CSV's ``details.*`` columns."""
        result = self.rows(
            "alerts",
            request,
            "SELECT DISTINCT unnest(json_keys(details)) AS k FROM {t} WHERE json_valid(details) ORDER BY k",
        )
        return [] if result is None else [row[0] for row in result.fetchall()]

    def alerts_query(self, request: ReportRequest, keys: list[str]) -> str:
        """The alerts of the range, newest first, evidence flattened into ``details.<key>`` columns (nested
        values as JSON text), with their case status. ``{t}`` and ``case_states`` are bound by the caller."""
        evidence = "".join(
            f', json_extract_string(a.details, \'$."{_json_key(k)}"\') AS "details.{_sql_ident(k)}"'
            for k in keys
        )
        times = ("event_time", "detected_at")
        columns = ", ".join(
            f"strftime(CAST(a.{c} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%fZ') AS {c}" if c in times else f"a.{c}"
            for c in ALERT_COLUMNS
        )
        return (
            f"SELECT {columns}, coalesce(c.status, 'open') AS status, c.assignee{evidence}, "
            "a.details AS details_json "
            "FROM {t} a LEFT JOIN case_states c USING (alert_id) "
            "ORDER BY a.event_time DESC, a.alert_id DESC"
        )

    def copy_alerts_csv(self, request: ReportRequest, path: Path) -> int:
        """Write the alerts of the range to ``path`` as RFC 4180 CSV (UTF-8, header, CRLF); the row count."""
        keys = self.evidence_keys(request)
        self.duck.register("case_states", self.case_states())
        query = self.alerts_query(request, keys)
        relation = self.relation("alerts", request)
        if relation is None:
            header = [*ALERT_COLUMNS, "status", "assignee", "details_json"]
            path.write_bytes((",".join(header) + "\r\n").encode())
            return 0
        self.duck.execute(
            f"COPY ({query.replace('{t}', relation)}) TO {_literal(str(path))} (FORMAT csv, HEADER, "
            "DELIMITER ',', QUOTE '\"', ESCAPE '\"', NEW_LINE '\r\n')"
        )
        (count,) = self.duck.execute(f"SELECT count(*) FROM {relation}").fetchone()
        return int(count)


def _window(batches: pa.Table) -> tuple[datetime, datetime]:
    import pyarrow.compute as pc

    first = pc.min(batches["first"]).as_py()
    last = pc.max(batches["last"]).as_py()
    return first.replace(tzinfo=None), last.replace(tzinfo=None)


def _literal(value: str | datetime) -> str:
    """A SQL literal (quotes doubled: DuckDB strings have no other escapes)."""
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    return "'" + str(value).replace("'", "''") + "'"


def _json_key(key: str) -> str:
    return key.replace("\\", "\\\\").replace('"', '\\"').replace("'", "''")


def _sql_ident(key: str) -> str:
    return key.replace('"', '""')


def code_version() -> str:
    """The package version, and the git commit when run from a checkout."""
    try:
        release = version("surveillance")
    except PackageNotFoundError:
        from surveillance import __version__ as release
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{release}+{commit}" if commit else release


def build_report(source: ReportSource, request: ReportRequest) -> ReportContent:
    """Everything a report shows for ``request``, from the tables at ``source``."""
    if request.symbols:
        _check_symbols(source, request)
    content = ReportContent(
        request=request,
        generated_at=datetime.now(UTC).replace(microsecond=0),
        code_version=code_version(),
        layer_counts=_layer_counts(source, request),
        quarantine_by_reason=_quarantine(source, request),
        alerts_by_rule=_alerts_by_rule(source, request),
        alerts_by_status=_alerts_by_status(source, request),
        top_alerts=_top_alerts(source, request),
        charts=[],
        dq_pass_rates=_dq_pass_rates(source, request),
        models=_models(source, request),
        missing_tables=[],
        source=source,
    )
    content.charts = _charts(source, request, content.alerts_by_rule)
    content.missing_tables = sorted(source.missing)
    return content


def _check_symbols(source: ReportSource, request: ReportRequest) -> None:
    unfiltered = ReportRequest(request.since, request.until)
    known: set[str] = set()
    for table in ("silver_quotes", "alerts"):
        result = source.rows(table, unfiltered, "SELECT DISTINCT symbol FROM {t}")
        if result is not None:
            known |= {row[0] for row in result.fetchall()}
    unknown = sorted(set(request.symbols) - known)
    if unknown:
        raise ReportError(
            f"no quotes or alerts in the range for symbol(s) {', '.join(unknown)} (parameter symbols)"
        )


def _count(source: ReportSource, table: str, request: ReportRequest) -> int | None:
    result = source.rows(table, request, "SELECT count(*) FROM {t}")
    if result is None:
        return None if table in source.missing else 0
    return int(result.fetchone()[0])


def _layer_counts(source: ReportSource, request: ReportRequest) -> dict[str, int | None]:
    # Bronze and quarantine hold raw records (no symbol, no trusted event time): their counts are those of
    # the micro-batches that carried the range's quotes, every symbol.
    return {
        "bronze_quotes": _count(source, "bronze_quotes", request),
        "silver_quotes": _count(source, "silver_quotes", request),
        "quarantine_quotes": _count(source, "quarantine_quotes", request),
        "gold_bars_1m": _count(source, "gold_bars_1m", request),
        "alerts": _count(source, "alerts", request),
    }


def _quarantine(source: ReportSource, request: ReportRequest) -> list[tuple[str, int]]:
    sql = "SELECT reason, count(*) FROM {t} GROUP BY reason ORDER BY 2 DESC, 1"
    result = source.rows("quarantine_quotes", request, sql)
    return [] if result is None else [(str(r), int(n)) for r, n in result.fetchall()]


def _alerts_by_rule(source: ReportSource, request: ReportRequest) -> list[dict[str, Any]]:
    sql = (
        "SELECT rule, severity, confidence, count(*) AS alerts FROM {t} "
        "GROUP BY ALL ORDER BY rule, severity, confidence"
    )
    result = source.rows("alerts", request, sql)
    if result is None:
        return []
    return [{"rule": r, "severity": s, "confidence": c, "alerts": int(n)} for r, s, c, n in result.fetchall()]


def _alerts_by_status(source: ReportSource, request: ReportRequest) -> list[tuple[str, int]]:
    source.duck.register("case_states", source.case_states())
    sql = (
        "SELECT coalesce(c.status, 'open') AS status, count(*) FROM {t} a "
        "LEFT JOIN case_states c USING (alert_id) GROUP BY 1 ORDER BY 2 DESC, 1"
    )
    result = source.rows("alerts", request, sql)
    return [] if result is None else [(s, int(n)) for s, n in result.fetchall()]


def _top_alerts(source: ReportSource, request: ReportRequest) -> list[dict[str, Any]]:
    """The range's most serious alerts: severity, then high confidence, then score beyond threshold."""
    sql = (
        "SELECT alert_id, symbol, CAST(event_time AS TIMESTAMP) AS event_time, rule, severity, confidence, "
        "score, threshold, event_id, details FROM {t} ORDER BY "
        "CASE severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END DESC, "
        "(confidence = 'high') DESC, abs(score) / nullif(abs(threshold), 0) DESC NULLS LAST, "
        "event_time DESC, alert_id LIMIT ?"
    )
    result = source.rows("alerts", request, sql, [request.top_alerts])
    if result is None:
        return []
    names = [d[0] for d in result.description]
    alerts = []
    for row in result.fetchall():
        alert = dict(zip(names, row, strict=True))
        try:
            alert["details"] = json.loads(alert["details"]) if alert["details"] else {}
        except ValueError:
            alert["details"] = {"unparsed": alert["details"]}
        alerts.append(alert)
    return alerts


def _dq_pass_rates(source: ReportSource, request: ReportRequest) -> list[dict[str, Any]]:
    sql = (
        "SELECT suite, expectation, severity, count(*) AS batches, "
        "count(*) FILTER (WHERE success) AS passed, "
        "sum(coalesce(unexpected_count, 0)) AS unexpected, sum(coalesce(element_count, 0)) AS elements "
        "FROM {t} GROUP BY ALL ORDER BY suite, expectation"
    )
    result = source.rows("dq_results", ReportRequest(request.since, request.until), sql)
    if result is None:
        return []
    rates = []
    for suite, expectation, severity, batches, passed, unexpected, elements in result.fetchall():
        rates.append(
            {
                "suite": suite,
                "expectation": expectation,
                "severity": severity,
                "batches": int(batches),
                "passed": int(passed),
                "pass_rate": round(passed / batches, 6) if batches else None,
                "unexpected": int(unexpected),
                "elements": int(elements),
            }
        )
    return rates


def _models(source: ReportSource, request: ReportRequest) -> list[dict[str, Any]]:
    sql = (
        "SELECT json_extract_string(details, '$.model_name') AS name, "
        "json_extract_string(details, '$.model_version') AS version, count(*) FROM {t} "
        "WHERE rule = 'model' AND json_valid(details) GROUP BY ALL ORDER BY 3 DESC"
    )
    result = source.rows("alerts", request, sql)
    if result is None:
        return []
    return [
        {"model_name": name or "unknown", "model_version": version_ or "?", "alerts": int(n)}
        for name, version_, n in result.fetchall()
    ]


def _charts(source: ReportSource, request: ReportRequest, by_rule: list[dict[str, Any]]) -> list[SymbolChart]:
    """The requested symbols, or those with the most alerts in the range (then any with bars)."""
    symbols = list(request.symbols[: request.chart_symbols])
    if not symbols:
        result = source.rows(
            "alerts",
            request,
            "SELECT symbol FROM {t} GROUP BY symbol ORDER BY count(*) DESC, symbol LIMIT ?",
            [request.chart_symbols],
        )
        symbols = [row[0] for row in result.fetchall()] if result is not None else []
    if not symbols:
        result = source.rows(
            "gold_bars_1m",
            request,
            "SELECT DISTINCT symbol FROM {t} ORDER BY symbol LIMIT ?",
            [request.chart_symbols],
        )
        symbols = [row[0] for row in result.fetchall()] if result is not None else []
    # Bars as fine as the data's extent allows (a report over a month of one day's data stays one-minute).
    extent = source.rows(
        "gold_bars_1m",
        request,
        "SELECT min(CAST(bar_start AS TIMESTAMP)), max(CAST(bar_start AS TIMESTAMP)) FROM {t}",
    )
    first, last = extent.fetchone() if extent is not None else (None, None)
    span = (last - first) if first is not None and last is not None else timedelta(0)
    minutes = max(1, math.ceil(span / timedelta(minutes=1) / MAX_CHART_POINTS))
    charts = []
    for symbol in symbols:
        one = ReportRequest(request.since, request.until, (symbol,), request.rules)
        # Coarser bars for a long range: low of lows, high of highs, the last close.
        bars_sql = (
            "SELECT time_bucket(INTERVAL (?) MINUTE, CAST(bar_start AS TIMESTAMP)) AS bar_start, "
            "min(low) AS low, max(high) AS high, arg_max(close, bar_start) AS close "
            "FROM {t} GROUP BY 1 ORDER BY 1"
        )
        bars = source.rows("gold_bars_1m", one, bars_sql.replace("(?)", f"{minutes}"))
        bars_frame = (
            bars.fetchdf()
            if bars is not None
            else pd.DataFrame(columns=["bar_start", "low", "high", "close"])
        )
        alerts = source.rows(
            "alerts",
            one,
            "SELECT CAST(event_time AS TIMESTAMP) AS event_time, rule, severity, alert_id, event_id, "
            "TRY_CAST(json_extract_string(details, '$.price') AS DOUBLE) AS price "
            "FROM {t} ORDER BY event_time",
        )
        alerts_frame = (
            alerts.fetchdf()
            if alerts is not None
            else pd.DataFrame(columns=["event_time", "rule", "severity", "alert_id", "event_id", "price"])
        )
        alerts_frame = _with_quote_prices(source, one, alerts_frame)
        charts.append(SymbolChart(symbol, minutes, bars_frame, alerts_frame))
    return charts


def _with_quote_prices(source: ReportSource, request: ReportRequest, alerts: pd.DataFrame) -> pd.DataFrame:
    """Each alert's price: its quote's in silver (the evidence holds it for model alerts only)."""
    if alerts.empty:
        return alerts
    source.duck.register("chart_alerts", pa.Table.from_pandas(alerts[["event_id"]], preserve_index=False))
    prices = source.rows(
        "silver_quotes",
        request,
        "SELECT q.event_id, q.price AS quote_price FROM {t} q JOIN chart_alerts USING (event_id)",
    )
    if prices is None:
        return alerts
    found = prices.fetchdf().drop_duplicates("event_id")
    merged = alerts.merge(found, on="event_id", how="left")
    merged["price"] = merged["quote_price"].fillna(merged["price"])
    return merged.drop(columns=["quote_price"])
