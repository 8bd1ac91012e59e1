"""Data quality through the real broker, stream and Delta: routing by severity, dq_results, confidence,
late and out-of-order accounting, schema evolution, and the status and report built from the tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from surveillance.quality.report import load_dq_status, print_dq_status, write_dq_report

if TYPE_CHECKING:
    from conftest import Pipeline

pytestmark = pytest.mark.integration


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _quote(event_id: str, symbol: str, at: dt.datetime, price: float, **fields: object) -> str:
    spread = price * 0.0002
    doc = {
        "event_id": event_id,
        "symbol": symbol,
        "event_time": _iso(at),
        "price": price,
        "volume": 100,
        "bid": round(price - spread, 4),
        "ask": round(price + spread, 4),
    }
    doc.update(fields)
    return json.dumps(doc, separators=(",", ":"))


def _steady(symbol: str, start: dt.datetime, count: int, price: float = 100.0) -> list[str]:
    return [_quote(f"{symbol}-{n:03d}", symbol, start + dt.timedelta(seconds=n), price) for n in range(count)]


def test_quality_routes_rows_records_results_and_feeds_detection(
    full_pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline = full_pipeline
    # Fresh event times, and the staleness check on (the local overlay turns it off for old samples).
    pipeline.settings = pipeline.settings.with_overrides(
        "quality.suites.silver_quotes.event_lag_within_bounds.severity=warn"
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(seconds=90)
    lines = _steady("ACME", start, 30)
    # A 10 % jump on a crossed quote, then back down from it: both moves rest on an unreliable price.
    lines.append(_quote("ACME-jump", "ACME", start + dt.timedelta(seconds=30), 110.0, bid=110.05, ask=109.95))
    lines.append(_quote("ACME-back", "ACME", start + dt.timedelta(seconds=31), 100.0))
    # An ordinary 10 % jump on a sound quote.
    lines += _steady("BOLT", start, 30)
    lines.append(_quote("BOLT-jump", "BOLT", start + dt.timedelta(seconds=30), 110.0))
    # A stale feed (an hour old), jumping: stale quotes are unreliable too.
    old = now - dt.timedelta(hours=1)
    lines += _steady("DYNE", old, 30)
    lines.append(_quote("DYNE-jump", "DYNE", old + dt.timedelta(seconds=30), 110.0))
    # A wide book without a jump, one quote arriving out of order, two error rows, an in-batch duplicate.
    lines.append(_quote("EMBR-wide", "EMBR", start, 50.0, bid=47.0, ask=53.0))
    lines.append(_quote("EMBR-late", "EMBR", start - dt.timedelta(seconds=5), 50.0))
    lines.append(_quote("bad-symbol", "acme inc", start, 100.0))
    lines.append(_quote("bad-price", "ACME", start + dt.timedelta(seconds=40), -100.0))
    lines.append(lines[0])
    sent = pipeline.send_lines(lines)
    pipeline.run_once()

    bronze, silver = pipeline.pandas("bronze_quotes"), pipeline.pandas("silver_quotes")
    quarantine, alerts = pipeline.pandas("quarantine_quotes"), pipeline.pandas("alerts")
    assert len(bronze) == sent
    assert len(silver) == sent - 3  # two error rows, one duplicate

    # error rows: quarantined with the expectations they broke; warn rows flow on, flagged.
    reasons = {
        json.loads(r.raw_value)["event_id"]: (r.reason, list(r.failed_expectations))
        for r in quarantine.itertuples()
    }
    assert reasons == {
        "bad-symbol": ("expectations: symbol_in_universe", ["symbol_in_universe"]),
        "bad-price": (
            "expectations: price_positive_finite, bid_positive_finite, ask_positive_finite",
            ["price_positive_finite", "bid_positive_finite", "ask_positive_finite"],
        ),
    }
    warnings = {r.event_id: sorted(r.dq_warnings) for r in silver.itertuples() if len(r.dq_warnings)}
    assert warnings["ACME-jump"] == ["bid_not_above_ask"]
    assert warnings["EMBR-wide"] == ["spread_within_bound"]
    assert warnings["ACME-000"] == ["event_id_unique_in_batch"]
    assert all(warnings[f"DYNE-{n:03d}"] == ["event_lag_within_bounds"] for n in range(30))
    assert set(warnings) == {"ACME-jump", "EMBR-wide", "ACME-000", "DYNE-jump"} | {
        f"DYNE-{n:03d}" for n in range(30)
    }
    assert set(silver[silver.is_out_of_order].event_id) == {"EMBR-late"}

    # Detection: jumps on or from unreliable quotes keep low confidence, with the reasons as evidence.
    jumps = alerts[alerts.rule == "price_jump"].set_index("event_id")
    assert set(jumps.index) == {"ACME-jump", "ACME-back", "BOLT-jump", "DYNE-jump"}
    assert jumps.loc["BOLT-jump", "confidence"] == "high"
    for event_id, own, previous in (
        ("ACME-jump", ["bid_not_above_ask"], []),
        ("ACME-back", [], ["bid_not_above_ask"]),
        ("DYNE-jump", ["event_lag_within_bounds"], ["event_lag_within_bounds"]),
    ):
        evidence = json.loads(jumps.loc[event_id, "details"])
        assert jumps.loc[event_id, "confidence"] == "low", event_id
        assert (evidence["dq_warnings"], evidence["previous_dq_warnings"]) == (own, previous), event_id

    # dq_results: every expectation of both suites once for the batch, with GX's counts.
    results = pipeline.pandas("dq_results")
    silver_results = results[results.suite == "silver_quotes"].set_index("expectation")
    active = [n for n, s in pipeline.settings.quality.suites.silver_quotes.items() if s.severity != "off"]
    assert sorted(silver_results.index) == sorted(active)
    assert (silver_results.element_count.dropna() == sent).all()  # every record passed the contract
    counts = silver_results.unexpected_count
    # The negative price's book is crossed too: counted, though that row is quarantined for its price.
    assert counts["bid_not_above_ask"] == 2 and counts["spread_within_bound"] == 1
    assert counts["symbol_in_universe"] == 1 and counts["price_positive_finite"] == 1
    assert counts["event_lag_within_bounds"] == 31 and counts["event_id_unique_in_batch"] == 2
    assert (
        silver_results.loc["price_not_null", "success"]
        and not silver_results.loc["bid_not_above_ask", "success"]
    )
    bars_results = results[results.suite == "gold_bars_1m"]
    assert (
        len(bars_results) == len(pipeline.settings.quality.suites.gold_bars_1m) and bars_results.success.all()
    )
    assert (bars_results.element_count == len(pipeline.pandas("gold_bars_1m"))).all()
    drift = results[results.suite == "contract"].iloc[0]
    assert drift.success and json.loads(drift.observed_value) == {}

    progress = pipeline.pandas("stream_progress")
    progress = progress[progress.query_name == pipeline.settings.stream.query_name].iloc[0]
    assert progress.quarantine_rows == 2 and progress.duplicate_rows == 1 and progress.out_of_order_rows == 1
    assert progress.dq_warning_rows == len(warnings) and progress.validation_seconds > 0

    # Status and report read the same tables.
    status = load_dq_status(pipeline.spark, pipeline.locations)
    console = Console(record=True, width=240)
    print_dq_status(status, console)
    text = console.export_text()
    assert "symbol_in_universe 1" in text and "bid_not_above_ask 2" in text
    page, docs = write_dq_report(pipeline.spark, pipeline.locations, tmp_path / "dq")
    assert "Expectation pass rates" in page.read_text() and docs.exists()
    assert len(list((tmp_path / "dq" / "gx" / "validations").rglob("*.html"))) == 2  # one per suite
    # As a reader opens them: headless Chromium, no script error, every figure drawn.
    from browser import check_html_pages

    validations = sorted((tmp_path / "dq" / "gx" / "validations").rglob("*.html"))
    pages = {"dq_report": page, "gx_data_docs": docs} | {
        f"gx_validation_{n}": p for n, p in enumerate(validations)
    }
    screenshots = Path(__file__).resolve().parents[2] / "reports" / "pages" / "data_quality"
    # GX's Data Docs load jQuery and Bootstrap from CDNs (none reachable here): their widgets stay inert
    # offline, their content does not.
    found = check_html_pages(
        pages, screenshots, tmp_path / "chromium", offline_cdn=frozenset({"gx_data_docs"})
    )
    assert found["dq_report"] >= 2
    assert all(suite in docs.read_text() for suite in ("silver_quotes", "gold_bars_1m"))


def test_late_and_out_of_order_across_batches_and_restarts(pipeline: Pipeline) -> None:
    base = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
    pipeline.send_lines(_steady("ACME", base, 40) + _steady("BOLT", base, 5))
    pipeline.run_once()
    # A new run (a restart): the high-water marks come back from stream_progress.
    newest = base + dt.timedelta(seconds=39)
    pipeline.send_lines(
        [
            _quote("ACME-later", "ACME", newest + dt.timedelta(seconds=1), 100.0),
            _quote("ACME-recent", "ACME", newest - dt.timedelta(seconds=30), 100.0),  # out of order, in time
            _quote("ACME-old", "ACME", newest - dt.timedelta(minutes=20), 100.0),  # beyond the watermark
            _quote("BOLT-next", "BOLT", base + dt.timedelta(seconds=10), 100.0),  # BOLT's own order holds
        ],
        name="second.jsonl",
    )
    pipeline.run_once()

    progress = pipeline.pandas("stream_progress").sort_values("batch_id")
    progress = progress[progress.query_name == pipeline.settings.stream.query_name]
    assert list(progress.batch_id) == [0, 1]
    first, second = progress.iloc[0], progress.iloc[1]
    assert (first.late_rows, first.out_of_order_rows) == (0, 0)
    assert (second.late_rows, second.out_of_order_rows) == (1, 2)
    assert second.symbol_max_event_time["BOLT"] == (base + dt.timedelta(seconds=10)).replace(tzinfo=None)
    silver = pipeline.pandas("silver_quotes").set_index("event_id")
    assert silver.loc["ACME-old", "is_late"] and silver.loc["ACME-old", "is_out_of_order"]
    assert not silver.loc["ACME-recent", "is_late"] and silver.loc["ACME-recent", "is_out_of_order"]
    assert not silver.loc["BOLT-next", "is_out_of_order"]


def test_schema_evolution_adds_new_fields_only_when_asked(pipeline: Pipeline) -> None:
    base = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
    pipeline.send_lines([_quote("a1", "ACME", base, 100.0, venue="XNAS")], name="one.jsonl")
    pipeline.run_once()
    silver = pipeline.table("silver_quotes")
    assert "venue" not in silver.columns and silver.count() == 1
    drift = pipeline.pandas("dq_results").query("suite == 'contract'").iloc[0]
    assert not drift.success and json.loads(drift.observed_value) == {"venue": "STRING"}

    pipeline.settings = pipeline.settings.with_overrides("schema.evolve=true")
    pipeline.send_lines(
        [
            _quote(
                "a2",
                "ACME",
                base + dt.timedelta(seconds=1),
                100.0,
                venue="XNYS",
                odd_lot=True,
                **{"bad key": 1},
            ),
            _quote("a3", "ACME", base + dt.timedelta(seconds=2), 100.0),
            _quote("a4", "ACME", base + dt.timedelta(seconds=3), 100.0).replace(
                '"price":100.0', '"price":"100.0"'
            ),
        ],
        name="two.jsonl",
    )
    pipeline.run_once()

    bronze = pipeline.pandas("bronze_quotes")
    assert len(bronze) == 4 and any('"bad key":1' in value for value in bronze.value)  # bronze keeps it all
    silver = pipeline.pandas("silver_quotes").set_index("event_id")
    assert {"venue", "odd_lot"} <= set(silver.columns) and "bad key" not in silver.columns
    assert silver.loc["a2", "venue"] == "XNYS" and bool(silver.loc["a2", "odd_lot"])
    assert silver.loc["a1"].isna()["venue"] and silver.loc["a3"].isna()["venue"]  # older rows read NULL
    quarantine = pipeline.pandas("quarantine_quotes")
    assert list(quarantine.reason) == ["price_not_number"]
    drift = pipeline.pandas("dq_results").query("suite == 'contract' and batch_id == 1").iloc[0]
    assert json.loads(drift.result)["not_addable"] == ["bad key"]
