"""End to end on the real broker and real Delta: produce -> stream --once -> every layer checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable
from kafka import KafkaConsumer

from surveillance.ingestion.contract import quote_to_json
from surveillance.ingestion.generator import GeneratedQuotes
from surveillance.kafka.admin import count_messages
from surveillance.lakehouse import PUBLIC_TABLES

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration


def test_dirty_replay_end_to_end(
    full_pipeline: Pipeline, dirty_quotes: GeneratedQuotes, expected_bars: Callable
) -> None:
    pipeline = full_pipeline
    sent = pipeline.send(dirty_quotes)
    assert sent == len(dirty_quotes.raw_lines)
    pipeline.run_once()

    manifest, labels, quotes = dirty_quotes.manifest, dirty_quotes.labels, dirty_quotes.quotes
    bronze = pipeline.pandas("bronze_quotes")
    silver = pipeline.pandas("silver_quotes")
    quarantine = pipeline.pandas("quarantine_quotes")
    alerts = pipeline.pandas("alerts")

    # Bronze: every line, byte for byte, once.
    assert len(bronze) == sent
    assert sorted(bronze.value) == sorted(dirty_quotes.raw_lines)
    assert not bronze.duplicated(["partition", "offset"]).any()

    # Silver: exactly the valid quotes, once each, typed.
    assert not silver.event_id.duplicated().any()
    assert set(silver.event_id) == set(quotes.event_id)
    merged = silver.merge(quotes, on="event_id", suffixes=("", "_expected"))
    assert np.allclose(merged.price, merged.price_expected)
    assert (merged.volume == merged.volume_expected).all()
    assert (merged.symbol == merged.symbol_expected).all()
    assert (merged.event_time == merged.event_time_expected.dt.tz_localize(None)).all()

    # Quarantine: every malformed line, with the reason it deserves; nothing else.
    malformed = manifest[manifest.kind == "malformed"]
    expected_reasons = sorted(
        zip(
            malformed.line_no.map(lambda n: dirty_quotes.raw_lines[n]), malformed.expected_reason, strict=True
        )
    )
    assert sorted(zip(quarantine.raw_value, quarantine.reason, strict=True)) == expected_reasons
    assert len(quarantine) + len(silver) + int((manifest.kind == "duplicate").sum()) == sent

    # The unknown extra field is accepted.
    extra = set(manifest[manifest.kind == "extra_field"].event_id)
    assert extra and extra <= set(silver.event_id)

    # Very late events are kept, and only late arrivals are flagged late.
    late_ids = set(manifest[manifest.kind == "late"].event_id)
    assert late_ids <= set(silver.event_id)
    flagged = set(silver[silver.is_late].event_id)
    assert flagged and flagged <= late_ids

    # Every injected jump alerted as price_jump on its own event_id; no price_jump on an ordinary tick.
    jumps = alerts[alerts.rule == "price_jump"]
    assert set(jumps.event_id) == set(labels[labels.anomaly_type == "price_jump"].event_id)
    assert not alerts.alert_id.duplicated().any()
    spikes = set(alerts[alerts.rule == "volume_spike"].event_id)
    assert set(labels[labels.anomaly_type == "volume_spike"].event_id) <= spikes
    evidence = json.loads(jumps.iloc[0].details)
    assert {"previous_price", "previous_event_id", "return", "dq_warnings"} <= set(evidence)

    # Every alert belongs to an episode: one symbol's alerts, each within the merge gap of the one before;
    # a longer pause between two of a symbol's alerts starts a new episode.
    gap = pd.Timedelta(seconds=pipeline.settings.models.evaluation.merge_gap_seconds)
    assert alerts.episode_id.notna().all()
    for _, episode in alerts.groupby("episode_id"):
        assert episode.symbol.nunique() == 1
        assert (episode.event_time.sort_values().diff().dropna() <= gap).all()
    ordered = alerts.sort_values(["symbol", "event_time"])
    for _, alerts_of_symbol in ordered.groupby("symbol"):
        pauses = alerts_of_symbol.event_time.diff() > gap
        assert (alerts_of_symbol.episode_id != alerts_of_symbol.episode_id.shift())[pauses].all()
    assert (jumps.confidence == "high").all()  # no book fault sits near an anomaly

    # Book faults flow on, flagged by the warn expectations; late quotes are also out of order.
    warned = {row.event_id: list(row.dq_warnings) for row in silver.itertuples() if len(row.dq_warnings)}
    crossed = set(manifest[manifest.kind == "crossed"].event_id)
    wide = set(manifest[manifest.kind == "wide_spread"].event_id)
    assert {e for e, w in warned.items() if "bid_not_above_ask" in w} == crossed
    assert {e for e, w in warned.items() if "spread_within_bound" in w} == wide
    assert late_ids <= set(silver[silver.is_out_of_order].event_id)

    # dq_results: each micro-batch's suites, whose counts add up to what the data holds.
    results = pipeline.pandas("dq_results")
    progress = pipeline.pandas("stream_progress")
    progress = progress[progress.query_name == pipeline.settings.stream.query_name]
    assert set(results.batch_id) == set(progress.batch_id)
    per_expectation = results[results.suite == "silver_quotes"].groupby("expectation").unexpected_count.sum()
    assert per_expectation["bid_not_above_ask"] == len(crossed)
    assert per_expectation["spread_within_bound"] == len(wide)
    assert per_expectation["price_positive_finite"] == int(
        manifest.detail.isin(["price_negative", "price_zero"]).sum()
    )
    assert results[results.suite == "gold_bars_1m"].success.all()
    drift = results[results.suite == "contract"]
    assert {"venue"} == set().union(*(json.loads(v) for v in drift.observed_value))
    assert progress.quarantine_rows.sum() == len(quarantine) and progress.silver_rows.sum() == len(silver)

    # Gold bars equal an independent pandas computation over the valid quotes that are not late (a late
    # quote stays in silver, flagged; its minute's bar was closed before it came).
    gold = pipeline.pandas("gold_bars_1m").sort_values(["symbol", "bar_start"], ignore_index=True)
    expected = expected_bars(quotes[~quotes.event_id.isin(flagged)])
    assert len(gold) == len(expected)
    assert (gold.symbol == expected.symbol).all() and (gold.bar_start == expected.bar_start).all()
    for column in ("open", "high", "low", "close", "vwap"):
        assert np.allclose(gold[column], expected[column], equal_nan=True), column
    assert (gold.volume == expected.volume).all() and (gold.trade_count == expected.trade_count).all()

    # Alerts also went to the alerts topic, once each, with the alert as JSON.
    assert count_messages(pipeline.settings.kafka, pipeline.settings.kafka.topics.alerts) == len(alerts)
    consumer = KafkaConsumer(
        pipeline.settings.kafka.topics.alerts,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        **pipeline.settings.kafka.client_options(),
    )
    records = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert {record["alert_id"] for record in records} == set(alerts.alert_id)
    # The topic's records carry the same episode as the table's rows.
    episodes = dict(zip(alerts.alert_id, alerts.episode_id, strict=True))
    assert all(record["episode_id"] == episodes[record["alert_id"]] for record in records)

    # The tables are standard Delta: delta-rs reads the same rows without Spark.
    for name in PUBLIC_TABLES:
        rows = DeltaTable(pipeline.locations[name]).to_pyarrow_table().num_rows
        assert rows == pipeline.table(name).count(), name


def test_resent_events_appear_once_across_batches_and_restarts(
    pipeline, dirty_quotes: GeneratedQuotes
) -> None:
    clean = [line for line in dirty_quotes.raw_lines[:3000]]
    pipeline.send_lines(clean, "first.jsonl")
    pipeline.run_once()
    silver_before = pipeline.table("silver_quotes").count()
    alerts_before = sorted(r.alert_id for r in pipeline.table("alerts").select("alert_id").collect())

    # A restart with nothing new changes nothing.
    pipeline.run_once()
    assert pipeline.table("silver_quotes").count() == silver_before

    # The same lines again, in a later run: bronze keeps them all, silver and alerts do not grow.
    pipeline.send_lines(clean, "again.jsonl")
    pipeline.run_once()
    assert pipeline.table("bronze_quotes").count() == 2 * len(clean)
    assert pipeline.table("silver_quotes").count() == silver_before
    assert sorted(r.alert_id for r in pipeline.table("alerts").select("alert_id").collect()) == alerts_before
    progress = pipeline.pandas("stream_progress")
    assert progress.duplicate_rows.sum() >= silver_before


def test_price_jump_state_carries_across_runs(pipeline: Pipeline, dirty_quotes: GeneratedQuotes) -> None:
    """The previous price of a jump is processed in one run, the jump itself in the next."""
    jump = dirty_quotes.labels[dirty_quotes.labels.anomaly_type == "price_jump"].iloc[0]
    mine = dirty_quotes.quotes[dirty_quotes.quotes.symbol == jump.symbol].reset_index(drop=True)
    position = int(mine.index[mine.event_id == jump.event_id][0])
    lines = [quote_to_json(row) for row in mine.to_dict("records")]
    pipeline.send_lines(lines[:position], "before.jsonl")
    pipeline.run_once()
    assert pipeline.table("alerts").where("rule = 'price_jump'").count() == 0
    pipeline.send_lines(lines[position : position + 5], "after.jsonl")
    pipeline.run_once()
    got = [r.event_id for r in pipeline.table("alerts").where("rule = 'price_jump'").collect()]
    assert got == [jump.event_id]


def test_late_quote_restates_its_bar_with_quotes_from_earlier_batches(pipeline: Pipeline) -> None:
    def quote(event_id: str, second: int, price: float) -> str:
        return quote_to_json(
            {
                "event_id": event_id,
                "symbol": "ACME",
                "event_time": f"2026-11-20T14:31:{second:02d}.000Z",
                "price": price,
                "volume": 10,
                "bid": price - 0.01,
                "ask": price + 0.01,
            }
        )

    pipeline.send_lines([quote("a", 10, 100.0), quote("c", 30, 100.2)], "first.jsonl")
    pipeline.run_once()
    # A later batch whose newest quote (:20) is older than one already in silver (:30).
    pipeline.send_lines([quote("b", 20, 100.1)], "late.jsonl")
    pipeline.run_once()
    bar = pipeline.table("gold_bars_1m").collect()
    assert len(bar) == 1
    assert (bar[0].trade_count, bar[0].open, bar[0].close, bar[0].high) == (3, 100.0, 100.2, 100.2)
