"""Does the market still look like the champion's training data? `surveil drift report`.

The model's features (one definition: :func:`surveillance.models.features.quote_features`) and the raw
distributions behind them (the one-quote return, the spread, the volume, the gap between quotes) of a
window of silver, against the same columns of the champion's training quotes, stored with its run in
MLflow when it was trained. Evidently tests each column (normed Wasserstein by default) and writes an HTML
report; the scores and verdicts are appended to ``drift_results`` and the report is logged to the
champion's run. The API exports the last verdict as ``surveil_drift_detected``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from surveillance.config import DriftSettings, Settings
from surveillance.models.features import MODEL_FEATURES, quote_features, with_event_micros

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "drift_reference.parquet"
# What the model reads: its features (each relative to its symbol's own recent behaviour) and the one-quote
# return. These decide the verdict.
VERDICT_COLUMNS: tuple[str, ...] = ("ret_1", *MODEL_FEATURES)
# The raw levels behind them, shown and recorded: they depend on which symbols a window holds (a cheap
# stock's spread, a busy one's volume), so they inform but do not decide.
LEVEL_COLUMNS = ("spread_bps", "log_volume", "gap_seconds")
DRIFT_COLUMNS: tuple[str, ...] = (*VERDICT_COLUMNS, *LEVEL_COLUMNS)
US = pa.timestamp("us", tz="UTC")
# The columns and types of surveillance.lakehouse.DRIFT_RESULTS (a unit test compares them).
DRIFT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("run_at", US),
        ("window_start", US),
        ("window_end", US),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("feature", pa.string()),
        ("method", pa.string()),
        ("score", pa.float64()),
        ("threshold", pa.float64()),
        ("drift_detected", pa.bool_()),
        ("reference_rows", pa.int64()),
        ("current_rows", pa.int64()),
        ("share_drifted", pa.float64()),
        ("run_drift_detected", pa.bool_()),
    ]
)


class DriftError(RuntimeError):
    """A drift check that cannot run (no champion, no reference, no quotes): the message says why."""


@dataclass(frozen=True)
class ColumnDrift:
    feature: str
    method: str
    score: float
    threshold: float
    drift_detected: bool


@dataclass(frozen=True)
class DriftOutcome:
    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    share_drifted: float
    drift_detected: bool
    report: Any  # the Evidently report (save_html)


def drift_frame(features: pd.DataFrame) -> pd.DataFrame:
    """The drift columns of scorable feature rows (``quote_features`` output): the model's features and
    the raw distributions behind them."""
    rows = features[features["scorable"]] if "scorable" in features else features
    ordered = rows.sort_values(["symbol", "event_micros"])
    mid = (ordered["ask"] + ordered["bid"]) / 2
    frame = pd.DataFrame(
        {
            "ret_1": ordered["ret_1"],
            "spread_bps": (ordered["ask"] - ordered["bid"]) / mid * 1e4,
            "log_volume": np.log1p(ordered["volume"].clip(lower=0)),
            "gap_seconds": ordered.groupby("symbol")["event_micros"].diff() / 1e6,
            **{name: ordered[name] for name in MODEL_FEATURES},
        }
    )
    return frame[list(DRIFT_COLUMNS)].replace([np.inf, -np.inf], np.nan).reset_index(drop=True)


def quotes_drift_frame(quotes: pd.DataFrame) -> pd.DataFrame:
    """Quotes (symbol, event_id, event_time, price, volume, bid, ask) → their drift columns."""
    return drift_frame(quote_features(with_event_micros(quotes)))


def measure_drift(
    reference: pd.DataFrame, current: pd.DataFrame, drift: DriftSettings, seed: int = 7
) -> DriftOutcome:
    """Evidently's data-drift preset, one test per drift column; the run drifts when at least
    ``drift.min_columns`` of the verdict columns do (``share_drifted``: of every column)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: never
    from evidently import ColumnMapping
    from evidently.metric_preset import DataDriftPreset
    from evidently.report import Report

    columns = [c for c in DRIFT_COLUMNS if reference[c].notna().any() and current[c].notna().any()]
    if not columns:
        raise DriftError("no drift column has values on both sides")
    reference = _sample(reference[columns], drift.max_rows, seed)
    current = _sample(current[columns], drift.max_rows, seed)
    report = Report(
        metrics=[
            DataDriftPreset(
                columns=columns,
                stattest=drift.stattest,
                stattest_threshold=drift.threshold,
            )
        ]
    )
    report.run(
        reference_data=reference,
        current_data=current,
        column_mapping=ColumnMapping(numerical_features=columns, categorical_features=[]),
    )
    results = report.as_dict()["metrics"]
    table = next(m["result"] for m in results if m["metric"] == "DataDriftTable")["drift_by_columns"]
    found = [
        ColumnDrift(
            name,
            str(table[name]["stattest_name"]),
            float(table[name]["drift_score"]),
            float(table[name]["stattest_threshold"]),
            bool(table[name]["drift_detected"]),
        )
        for name in columns
    ]
    share = sum(c.drift_detected for c in found) / len(found)
    deciding = sum(c.drift_detected for c in found if c.feature in VERDICT_COLUMNS)
    return DriftOutcome(found, len(reference), len(current), share, deciding >= drift.min_columns, report)


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(rows, random_state=seed) if len(frame) > rows else frame


# The champion's reference ------------------------------------------------------------------------------


def log_reference(training_rows: pd.DataFrame, max_rows: int = 100_000, seed: int = 7) -> None:
    """Store the drift columns of the training quotes with the active MLflow run (called when a model is
    logged): what `surveil drift report` compares the market with."""
    import mlflow

    reference = _sample(drift_frame(training_rows), max_rows, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / REFERENCE_ARTIFACT
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path))


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str


def champion_reference(settings: Settings) -> tuple[Champion, pd.DataFrame]:
    """The champion model version and the training reference stored with its run."""
    from surveillance.models.registry import alias_version, client, use_mlflow

    use_mlflow(settings)
    version = alias_version(settings)
    if version is None:
        raise DriftError(
            f"no champion: the alias {settings.models.champion_alias!r} of {settings.models.registered_name} "
            "is not set (surveil models compare registers one)"
        )
    champion = Champion(settings.models.registered_name, str(version.version), version.run_id)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client(settings).download_artifacts(champion.run_id, REFERENCE_ARTIFACT, folder)
        except Exception as exc:
            raise DriftError(
                f"{champion.name} version {champion.version} has no {REFERENCE_ARTIFACT} (trained before "
                f"drift monitoring): register a new champion with surveil models compare ({exc})"
            ) from exc
        return champion, pd.read_parquet(path)


# The report ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRun:
    run_id: str
    champion: Champion
    outcome: DriftOutcome
    html: Path
    rows: pa.Table


def window_quotes(locations: dict[str, str], since: datetime, until: datetime) -> pd.DataFrame:
    """Silver's quotes of [since, until) (naive UTC), read with delta-rs and DuckDB."""
    from surveillance.reporting.content import ReportRequest, ReportSource

    source = ReportSource(locations)
    relation = source.relation("silver_quotes", ReportRequest(since, until))
    if relation is None:
        return pd.DataFrame(columns=["symbol", "event_id", "event_time", "price", "volume", "bid", "ask"])
    return source.duck.sql(
        "SELECT symbol, event_id, CAST(event_time AS TIMESTAMP) AS event_time, price, volume, bid, ask "
        f"FROM {relation}"
    ).df()


def run_drift_report(
    settings: Settings, locations: dict[str, str], since: datetime, until: datetime
) -> DriftRun:
    """Compare silver's [since, until) with the champion's training reference: an Evidently HTML report
    under drift.reports_dir, logged to the champion's MLflow run, and a row per column in drift_results."""
    from deltalake import write_deltalake

    from surveillance.models.registry import client

    champion, reference = champion_reference(settings)
    quotes = window_quotes(locations, since, until)
    if quotes.empty:
        raise DriftError(f"no silver quotes between {since} and {until} (UTC)")
    current = quotes_drift_frame(quotes)
    if current.empty:
        raise DriftError("too few quotes per symbol in the window for the model's features")
    outcome = measure_drift(reference, current, settings.drift)
    run_id = uuid.uuid4().hex
    folder = Path(settings.drift.reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = "%Y%m%dT%H%M"
    html = folder / f"drift_{since.strftime(stamp)}_{until.strftime(stamp)}.html"
    outcome.report.save_html(str(html))
    try:
        client(settings).log_artifact(champion.run_id, str(html), "drift")
    except Exception as exc:  # the report and the table still hold the result
        log.warning("could not log the drift report to run %s: %s", champion.run_id, exc)
    now = datetime.now(UTC)
    rows = pa.Table.from_pylist(
        [
            {
                "run_id": run_id,
                "run_at": now,
                "window_start": since.replace(tzinfo=UTC),
                "window_end": until.replace(tzinfo=UTC),
                "model_name": champion.name,
                "model_version": champion.version,
                "feature": column.feature,
                "method": column.method,
                "score": column.score,
                "threshold": column.threshold,
                "drift_detected": column.drift_detected,
                "reference_rows": outcome.reference_rows,
                "current_rows": outcome.current_rows,
                "share_drifted": outcome.share_drifted,
                "run_drift_detected": outcome.drift_detected,
            }
            for column in outcome.columns
        ],
        schema=DRIFT_SCHEMA,
    )
    write_deltalake(locations["drift_results"], rows, mode="append")
    return DriftRun(run_id, champion, outcome, html, rows)
