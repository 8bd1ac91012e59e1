"""Alert episodes: one definition for the stream (batch by batch, on the driver) and the backfill (per symbol
in Spark), and the alert_episodes view over a real Delta alerts table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from surveillance.detection.episodes import (
    OpenEpisode,
    alert_episodes,
    assign_episodes,
    ensure_episodes_view,
    episode_id,
    open_episodes_from,
    read_open_episodes,
    with_episodes,
)
from surveillance.lakehouse import ALERTS

GAP = 30_000_000  # 30 s
T0 = 1_790_000_000_000_000


def alerts(*rows: tuple[str, float, str]) -> pd.DataFrame:
    """(symbol, seconds after T0, event_id) rows."""
    return pd.DataFrame(
        {
            "symbol": [row[0] for row in rows],
            "event_micros": [T0 + round(row[1] * 1e6) for row in rows],
            "event_id": [row[2] for row in rows],
        }
    )


def test_alerts_close_together_share_an_episode_and_a_pause_starts_a_new_one() -> None:
    found = alerts(("A", 0, "a1"), ("A", 20, "a2"), ("A", 45, "a3"), ("A", 200, "a4"), ("B", 21, "b1"))
    ids, after = assign_episodes(found, {}, GAP)
    assert ids[0] == ids[1] == ids[2] == episode_id("A", "a1")  # each within 30 s of the one before
    assert ids[3] == episode_id("A", "a4") != ids[0]
    assert ids[4] == episode_id("B", "b1")
    assert after == {
        "A": OpenEpisode(episode_id("A", "a4"), T0 + 200_000_000),
        "B": OpenEpisode(episode_id("B", "b1"), T0 + 21_000_000),
    }


def test_rules_and_the_model_on_one_quote_share_its_episode_in_any_input_order() -> None:
    found = alerts(("A", 10, "a2"), ("A", 0, "a1"), ("A", 10, "a2"), ("A", 10, "a2"))
    ids, _ = assign_episodes(found, {}, GAP)
    assert set(ids) == {episode_id("A", "a1")}


def test_an_open_episode_continues_in_the_next_batch_and_batches_do_not_matter() -> None:
    rng = np.random.default_rng(5)
    times = np.sort(rng.uniform(0, 3600, 300))
    symbols = rng.choice(["A", "B", "C"], 300)
    every = alerts(*[(s, t, f"{s}-{n:04d}") for n, (s, t) in enumerate(zip(symbols, times, strict=True))])
    at_once, _ = assign_episodes(every, {}, GAP)
    batched, state = [], {}
    for part in np.array_split(np.arange(len(every)), 7):
        ids, state = assign_episodes(every.iloc[part].reset_index(drop=True), state, GAP)
        batched.extend(ids)
    assert list(at_once) == batched
    assert 3 < len(set(batched)) < 300


def test_a_late_alert_joins_an_open_episode_only_within_the_gap() -> None:
    open_ = {"A": OpenEpisode("ep-open", T0 + 100_000_000)}
    ids, after = assign_episodes(alerts(("A", 80, "late")), open_, GAP)
    assert ids[0] == "ep-open" and after["A"] == open_["A"]  # the episode's latest alert stays
    ids, after = assign_episodes(alerts(("A", 10, "very-late")), open_, GAP)
    assert ids[0] == episode_id("A", "very-late")


def test_open_episodes_from_rows_take_each_symbols_latest() -> None:
    rows = pd.DataFrame(
        {
            "symbol": ["A", "A", "B", "C"],
            "episode_id": ["e1", "e2", "e3", None],
            "event_micros": [5, 9, 7, 3],
        }
    )
    assert open_episodes_from(rows) == {"A": OpenEpisode("e2", 9), "B": OpenEpisode("e3", 7)}


def _alert_rows(spark: SparkSession, found: pd.DataFrame, episodes: list[str | None]) -> object:
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    rows = []
    for (symbol, micros, event_id), episode in zip(found.itertuples(index=False), episodes, strict=True):
        event_time = dt.datetime.fromtimestamp(micros / 1e6, dt.UTC)
        rows.append(
            (
                f"alert-{event_id}",
                symbol,
                event_time,
                event_id,
                "price_jump" if event_id.endswith("1") else "model",
                0.12,
                0.05,
                "high" if event_id.endswith("1") else "low",
                "high",
                "{}",
                now,
                event_time.date(),
                0,
                1,
                now,
                "s",
                1,
                episode,
            )
        )
    return spark.createDataFrame(rows, ALERTS.schema)


def test_the_backfill_form_equals_the_stream_form(spark: SparkSession) -> None:
    found = alerts(("A", 0, "a1"), ("A", 20, "a2"), ("A", 90, "a3"), ("B", 5, "b1"), ("B", 6, "b2"))
    start = {"B": OpenEpisode("ep-before", T0)}
    expected, _ = assign_episodes(found, start, GAP)
    frame = with_episodes(_alert_rows(spark, found, [None] * len(found)), start, GAP).toPandas()
    got = dict(zip(frame.event_id, frame.episode_id, strict=True))
    assert [got[event_id] for event_id in found.event_id] == list(expected)
    assert got["b1"] == got["b2"] == "ep-before"


def test_the_alert_episodes_view_and_the_open_episodes_of_a_table(
    spark: SparkSession, tmp_path: Path
) -> None:
    found = alerts(("A", 0, "a1"), ("A", 20, "a2"), ("A", 90, "a3"), ("B", 5, "b1"))
    ids, _ = assign_episodes(found, {}, GAP)
    location = str(tmp_path / "alerts")
    frame = _alert_rows(spark, found, list(ids))
    legacy = _alert_rows(spark, alerts(("C", 1, "c1")), [None])  # written before episodes existed
    frame.unionByName(legacy).write.format("delta").save(location)

    view = alert_episodes(spark, location).toPandas().set_index("episode_id")
    first = view.loc[episode_id("A", "a1")]
    assert (first.symbol, first.quote_count, first.alert_count) == ("A", 2, 2)
    assert list(first.rules) == ["model", "price_jump"] and first.peak_severity == "high"
    assert first.peak_score_ratio == pytest.approx(0.12 / 0.05)
    assert (first.end_time - first.start_time).total_seconds() == pytest.approx(20)
    assert view.loc["alert-c1"].alert_count == 1  # its own episode
    assert len(view) == 4

    open_ = read_open_episodes(spark, location)
    assert open_ == {
        "A": OpenEpisode(episode_id("A", "a3"), T0 + 90_000_000),
        "B": OpenEpisode(episode_id("B", "b1"), T0 + 5_000_000),
    }
    assert read_open_episodes(spark, location, until_micros=T0 + 50_000_000)["A"].episode_id == episode_id(
        "A", "a1"
    )
    # A restarting query whose last committed batch is 0 leaves out what its batch 1 appended: batch 1
    # runs again and must find the episodes as it first did. Another query's alerts stay.
    assert read_open_episodes(spark, location, committed=("s", 0)) == {}
    assert read_open_episodes(spark, location, committed=("s", 1)) == open_
    assert read_open_episodes(spark, location, committed=("another", 0)) == open_


def test_with_named_tables_the_view_lives_beside_the_alerts_table(
    spark: SparkSession, tmp_path: Path
) -> None:
    found = alerts(("A", 0, "a1"), ("A", 20, "a2"), ("B", 5, "b1"))
    ids, _ = assign_episodes(found, {}, GAP)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS episodes_test LOCATION '{tmp_path}/db'")
    try:
        _alert_rows(spark, found, list(ids)).write.format("delta").saveAsTable("episodes_test.alerts")
        assert ensure_episodes_view(spark, "episodes_test.alerts") == "episodes_test.alert_episodes"
        rows = spark.table("episodes_test.alert_episodes").orderBy("symbol").collect()
        assert [(row.symbol, row.alert_count) for row in rows] == [("A", 2), ("B", 1)]
        assert ensure_episodes_view(spark, str(tmp_path / "alerts")) is None  # a path: read, not a view
    finally:
        spark.sql("DROP DATABASE IF EXISTS episodes_test CASCADE")


def test_an_alerts_table_from_before_episodes_counts_each_alert_once(
    spark: SparkSession, tmp_path: Path
) -> None:
    found = alerts(("A", 0, "a1"), ("A", 20, "a2"))
    location = str(tmp_path / "old_alerts")
    _alert_rows(spark, found, [None, None]).drop("episode_id").write.format("delta").save(location)
    view = alert_episodes(spark, location).toPandas()
    assert sorted(view.episode_id) == ["alert-a1", "alert-a2"] and (view.alert_count == 1).all()
