"""Fixtures for pipeline tests: a fresh topic pair, lakehouse and checkpoint per test, on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from surveillance.config import Settings
from surveillance.ingestion.generator import GeneratedQuotes, generate_quotes, write_jsonl
from surveillance.ingestion.replay import replay_file
from surveillance.kafka.admin import ensure_topics
from surveillance.lakehouse import table_locations
from surveillance.pipeline.stream import start_stream, wait_for


@dataclass
class Pipeline:
    """One isolated pipeline: its settings and helpers to feed it, run it and read its tables."""

    settings: Settings
    spark: SparkSession
    workdir: Path

    @property
    def locations(self) -> dict[str, str]:
        return table_locations(self.settings)

    def send(self, generated: GeneratedQuotes, name: str = "quotes.jsonl") -> int:
        path = write_jsonl(generated, self.workdir / name)
        result = replay_file(path, self.settings.kafka, progress=False)
        assert result.failed == 0, result.first_error
        return result.sent

    def send_lines(self, lines: list[str], name: str = "lines.jsonl") -> int:
        path = self.workdir / name
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        result = replay_file(path, self.settings.kafka, progress=False)
        assert result.failed == 0, result.first_error
        return result.sent

    def run_once(self) -> None:
        wait_for(start_stream(self.spark, self.settings, once=True))

    def table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.locations[name])

    def pandas(self, name: str) -> pd.DataFrame:
        return self.table(name).toPandas()


def _bars_suite_off(settings: Settings) -> list[str]:
    return [
        f"quality.suites.gold_bars_1m.{name}.severity=off" for name in settings.quality.suites.gold_bars_1m
    ]


@pytest.fixture(scope="session")
def new_pipeline(kafka_settings: Settings, spark: SparkSession) -> Callable[..., Pipeline]:
    """Make a pipeline on its own topics (4 quote partitions), tables and checkpoint under a folder.

    The bars suite (seconds per micro-batch on two cores) runs only where a test asks for it
    (``bars_suite=True``): the acceptance and data-quality tests check it; the others test other things.
    """

    def make(workdir: Path, bars_suite: bool = False) -> Pipeline:
        suffix = uuid.uuid4().hex[:8]
        settings = kafka_settings.with_overrides(
            f"lakehouse.root={workdir}/lakehouse",
            f"stream.checkpoint_dir={workdir}/checkpoint",
            f"kafka.topics.quotes=quotes_{suffix}",
            f"kafka.topics.alerts=alerts_{suffix}",
            "stream.max_offsets_per_trigger=4000",
            *([] if bars_suite else _bars_suite_off(kafka_settings)),
        )
        ensure_topics(settings.kafka)
        return Pipeline(settings, spark, workdir)

    return make


@pytest.fixture(scope="session")
def written_lakehouse(
    new_pipeline: Callable[..., Pipeline],
    dirty_quotes: GeneratedQuotes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Pipeline:
    """The acceptance data through the real stream, once a session: the tables the API and report tests read
    (they add actions and reports, never quotes)."""
    pipeline = new_pipeline(tmp_path_factory.mktemp("written"))
    pipeline.send(dirty_quotes)
    pipeline.run_once()
    return pipeline


@pytest.fixture
def pipeline(new_pipeline: Callable[..., Pipeline], tmp_path: Path) -> Pipeline:
    """A fresh, isolated pipeline for one test (without the bars suite)."""
    return new_pipeline(tmp_path)


@pytest.fixture
def full_pipeline(new_pipeline: Callable[..., Pipeline], tmp_path: Path) -> Pipeline:
    """A fresh, isolated pipeline with every configured expectation suite."""
    return new_pipeline(tmp_path, bars_suite=True)


@pytest.fixture(scope="session")
def dirty_quotes() -> GeneratedQuotes:
    """The ~15,000-quote acceptance data set: anomalies plus malformed, duplicate, extra-field, late lines."""
    return generate_quotes(symbols=8, minutes=60, seed=7, inject_anomalies=True, dirty=True)


def pandas_bars(quotes: pd.DataFrame) -> pd.DataFrame:
    """The expected one-minute bars, computed independently with pandas."""
    frame = quotes.assign(event_time=quotes.event_time.dt.tz_localize(None))
    frame = frame.sort_values(["symbol", "event_time", "event_id"])
    frame["bar_start"] = frame.event_time.dt.floor("min")
    frame["notional"] = frame.price * frame.volume
    grouped = frame.groupby(["symbol", "bar_start"])
    bars = grouped.agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("volume", "sum"),
        notional=("notional", "sum"),
        trade_count=("price", "size"),
    ).reset_index()
    bars["vwap"] = np.where(bars.volume > 0, bars.notional / bars.volume.where(bars.volume > 0), np.nan)
    return bars.drop(columns="notional").sort_values(["symbol", "bar_start"], ignore_index=True)


@pytest.fixture(scope="session")
def expected_bars() -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The independent pandas computation of one-minute bars, for comparing with gold."""
    return pandas_bars
