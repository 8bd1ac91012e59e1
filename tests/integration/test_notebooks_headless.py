"""Every notebook, headless and in order (01 -> 05), on one isolated lakehouse with the real broker.

The notebooks get what a Databricks job would pass them: the ``env`` and ``overrides`` widgets (here the
isolated pipeline's state dir, broker, topics, tables and checkpoint, plus settings that keep it fast).
Everything they touch is real: Kafka, Spark, Delta, Great Expectations, MLflow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from surveillance.config import Settings, load_settings
from surveillance.lakehouse import read_table, table_locations
from surveillance.models.registry import alias_version
from surveillance.notebook.runner import NotebookRun, list_notebooks, run_notebook
from surveillance.reporting.dashboard import busiest_symbol

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "samples" / "quotes_sample.jsonl"
# Several micro-batches on the sample, and a comparison that takes seconds (small sets, fewer trees).
FAST = (
    "stream.max_offsets_per_trigger=8000",
    "models.train.symbols=4",
    "models.train.minutes=30",
    "models.test.symbols=2",
    "models.test.first_symbol=4",
    "models.test.minutes=30",
    "models.out_of_distribution.symbols=3",
    "models.out_of_distribution.minutes=30",
    "models.evaluation.min_precision=0",
    "models.detectors.gradient_boosting.max_iter=20",
    "models.detectors.isolation_forest.n_estimators=50",
)
PARAMETERS = {"02_streaming_pipeline": {"max_minutes": "4"}}


@dataclass
class NotebookRuns:
    settings: Settings
    overrides: str
    locations: dict[str, str]
    runs: dict[str, NotebookRun]
    seconds: dict[str, float]


def overrides_for(pipeline: Settings, state_dir: Path) -> list[str]:
    """The assignments that make the notebooks' settings those of the isolated pipeline."""
    bars_suite_off = [
        f"quality.suites.gold_bars_1m.{name}.severity=off" for name in pipeline.quality.suites.gold_bars_1m
    ]
    return [
        f"state_dir={state_dir}",
        f"kafka.bootstrap_servers={pipeline.kafka.bootstrap_servers}",
        f"kafka.topics.quotes={pipeline.kafka.topics.quotes}",
        f"kafka.topics.alerts={pipeline.kafka.topics.alerts}",
        f"lakehouse.root={pipeline.lakehouse.root}",
        f"stream.checkpoint_dir={pipeline.stream.checkpoint_dir}",
        *bars_suite_off,  # as in the other pipeline tests: seconds per micro-batch on two cores
        *FAST,
    ]


@pytest.fixture(scope="module", autouse=True)
def _no_real_market_data() -> Iterator[None]:
    """Small comparisons: the real-data evaluation is the quality gate's (test_model_quality_gate)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SURVEIL_REAL_DATA", "/nonexistent/realdata")
        yield


@pytest.fixture(scope="module")
def notebooks(
    new_pipeline: Callable[..., Pipeline], spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NotebookRuns]:
    """Run 01 -> 05 once, in order, from the project root (the sample path is relative to it)."""
    workdir = tmp_path_factory.mktemp("notebooks")
    pipeline = new_pipeline(workdir)
    assignments = overrides_for(pipeline.settings, workdir / "state")
    settings = load_settings(env="local", overrides=assignments)
    assert table_locations(settings) == pipeline.locations
    overrides = "\n".join(assignments)
    runs: dict[str, NotebookRun] = {}
    seconds: dict[str, float] = {}
    with contextlib.chdir(ROOT):
        for path in list_notebooks(ROOT / "notebooks"):
            parameters = {
                "env": "local",
                "overrides": overrides,
                **PARAMETERS.get(path.stem, {}),
            }
            started = time.monotonic()
            runs[path.stem] = run_notebook(
                path, parameters, out_dir=workdir / "reports" / path.stem, spark=spark
            )
            seconds[path.stem] = round(time.monotonic() - started, 1)
    print(f"notebook seconds: {seconds}")
    yield NotebookRuns(settings, overrides, pipeline.locations, runs, seconds)


REPORTS = ROOT / "reports"


def count(spark: SparkSession, runs: NotebookRuns, table: str) -> int:
    return read_table(spark, runs.locations[table]).count()


def figure_names(run: NotebookRun) -> list[str]:
    return [path.name for path in run.files]


def test_all_five_ran(notebooks: NotebookRuns) -> None:
    assert list(notebooks.runs) == [
        "01_explore_replay",
        "02_streaming_pipeline",
        "03_data_quality",
        "04_model_comparison",
        "05_surveillance_dashboard",
    ]
    for run in notebooks.runs.values():
        assert run.files and all(path.stat().st_size > 0 for path in run.files)


def test_every_figure_page_renders_in_chromium(notebooks: NotebookRuns, tmp_path: Path) -> None:
    """Each HTML figure a notebook wrote, opened in headless Chromium: no script error, every plot drawn."""
    from browser import check_html_pages

    pages = {
        f"{stem}__{path.stem}": path
        for stem, run in notebooks.runs.items()
        for path in run.files
        if path.suffix == ".html"
    }
    found = check_html_pages(pages, REPORTS / "pages" / "notebooks", tmp_path / "chromium")
    assert pages and all(found[name] >= 1 for name in pages), found


def test_explore_replays_the_sample_and_previews_the_contract(notebooks: NotebookRuns) -> None:
    run = notebooks.runs["01_explore_replay"]
    sent = sum(1 for line in SAMPLE.read_text().splitlines() if line.strip())
    assert run.namespace["result"].sent == sent
    preview = run.namespace["preview"]
    assert preview.messages == sent
    # The contract's rejects are exactly the sample's malformed lines whose reason is a contract rule
    # (the rest break an expectation, which only the stream's suite checks).
    manifest = pd.read_csv(SAMPLE.with_name("quotes_sample.manifest.csv"))
    malformed = manifest[manifest.kind == "malformed"]
    contract = malformed[~malformed.expected_reason.str.startswith("expectations")]
    expected = contract.groupby("expected_reason").size().to_dict()
    assert dict(zip(preview.reasons.reason, preview.reasons.records, strict=True)) == expected
    assert preview.valid == sent - len(contract)
    assert run.namespace["bronze"] is None  # the stream has not run yet
    assert figure_names(run) == [
        "01_messages_per_symbol_by_the_quote_contract.html",
        "02_messages_per_minute_of_event_time.html",
        "03_rejected_by_the_quote_contract_by_reason.html",
    ]


def test_streaming_notebook_fills_the_lakehouse_and_stops(
    notebooks: NotebookRuns, spark: SparkSession
) -> None:
    run = notebooks.runs["02_streaming_pipeline"]
    query, watched = run.namespace["query"], run.namespace["watched"]
    assert watched.caught_up and watched.processed == watched.topic_end == 14_616
    assert not query.isActive and query.exception() is None
    assert query.id not in {active.id for active in spark.streams.active}
    # The sample's documented totals (data/samples/README.md).
    assert count(spark, notebooks, "bronze_quotes") == 14_616
    assert count(spark, notebooks, "silver_quotes") == 14_400
    assert count(spark, notebooks, "quarantine_quotes") == 72
    assert count(spark, notebooks, "gold_bars_1m") == 8 * 60
    progress = run.namespace["progress"]
    assert len(progress) >= 2 and progress.records_in.sum() == 14_616
    assert set(progress.stream_id) == {str(query.id)}
    assert figure_names(run) == ["01_micro_batches_records_quarantine_and_alerts.html"]


def test_data_quality_notebook_charts_the_history(notebooks: NotebookRuns) -> None:
    run = notebooks.runs["03_data_quality"]
    history = run.namespace["history"]
    assert not history.results.empty and not history.batches.empty
    assert history.reasons.records.sum() == 72
    assert not run.namespace["status"].failures.empty  # the sample's dirty lines break expectations
    assert figure_names(run) == [
        "01_expectation_pass_rates_per_micro_batch.html",
        "02_quotes_per_micro_batch_by_outcome.html",
        "03_quarantined_records_by_reason.html",
    ]


def test_model_notebook_logs_runs_and_registers_a_champion(notebooks: NotebookRuns) -> None:
    run = notebooks.runs["04_model_comparison"]
    comparison = run.namespace["comparison"]
    assert comparison.decision.promoted  # a fresh registry: the first best detector becomes champion
    champion = alias_version(notebooks.settings)
    assert champion is not None and int(champion.version) == comparison.decision.challenger_version
    runs = run.namespace["runs"]
    assert runs.latest_run_id == comparison.parent_run_id
    assert sorted(runs.detectors.detector) == sorted(notebooks.settings.models.detectors)
    # Per test set (in-distribution, out-of-distribution): every detector's PR curves, then the best's PR
    # curve and recall by type.
    assert len(figure_names(run)) == 6 and figure_names(run)[0].startswith("01_detectors_compared")


def test_model_notebook_only_shows_when_told_not_to_compare(
    notebooks: NotebookRuns, spark: SparkSession, tmp_path: Path
) -> None:
    parameters = {"overrides": notebooks.overrides, "run_comparison": "no"}
    run = run_notebook(
        ROOT / "notebooks" / "04_model_comparison.py", parameters, out_dir=tmp_path, spark=spark
    )
    assert run.namespace["comparison"] is None
    latest = notebooks.runs["04_model_comparison"].namespace["comparison"].parent_run_id
    assert run.namespace["runs"].latest_run_id == latest
    # The PR curves come back from the comparison's MLflow run, as the page MLflow stored.
    assert figure_names(run) == ["01_html.html"]
    assert "Detectors compared" in run.files[0].read_text()


def test_dashboard_notebook_draws_the_busiest_symbol(notebooks: NotebookRuns, spark: SparkSession) -> None:
    run = notebooks.runs["05_surveillance_dashboard"]
    dashboard = run.namespace["dashboard"]
    assert len(dashboard.alerts) == count(spark, notebooks, "alerts") > 0
    assert dashboard.symbol == busiest_symbol(dashboard.alerts)
    assert len(dashboard.bars) == 60 and set(dashboard.bars.symbol) == {dashboard.symbol}
    names = figure_names(run)
    assert names[0].startswith(f"01_{dashboard.symbol.lower()}_one_minute_bars")
    assert names[1].startswith("02_alert_timeline_") and names[2] == "03_alerts_by_rule_and_symbol.html"
    assert '"type":"candlestick"' in run.files[0].read_text()
