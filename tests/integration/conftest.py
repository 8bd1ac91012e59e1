"""Fixtures for pipeline tests: a fresh topic pair, lakehouse and checkpoint per test, on the real broker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

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
        path.write_text("".join(f"{line}\n" for line in lines))
        result = replay_file(path, self.settings.kafka, progress=False)
        assert result.failed == 0, result.first_error
        return result.sent

    def run_once(self) -> None:
        wait_for(start_stream(self.spark, self.settings, once=True))

    def table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.locations[name])

    def pandas(self, name: str) -> pd.DataFrame:
        return self.table(name).toPandas()


@pytest.fixture
def pipeline(kafka_settings: Settings, spark: SparkSession, tmp_path: Path) -> Pipeline:
    """A pipeline on its own topics (4 quote partitions), tables and checkpoint."""
    suffix = uuid.uuid4().hex[:8]
    settings = kafka_settings.with_overrides(
        f"lakehouse.root={tmp_path}/lakehouse",
        f"stream.checkpoint_dir={tmp_path}/checkpoint",
        f"kafka.topics.quotes=quotes_{suffix}",
        f"kafka.topics.alerts=alerts_{suffix}",
        "stream.max_offsets_per_trigger=4000",
    )
    ensure_topics(settings.kafka)
    return Pipeline(settings, spark, tmp_path)


@pytest.fixture(scope="session")
def dirty_quotes() -> GeneratedQuotes:
    """The ~15,000-quote acceptance data set: anomalies plus malformed, duplicate, extra-field, late lines."""
    return generate_quotes(symbols=8, minutes=60, seed=7, inject_anomalies=True, dirty=True)
