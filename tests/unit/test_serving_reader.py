"""The API's reader (delta-rs file lists + DuckDB) on small Delta tables written with delta-rs: pages in
order with nothing missed or repeated (ties in event time included), filters, file skipping, quotes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import types as T

from surveillance.lakehouse import ALERT_ACTIONS, ALERTS, SILVER
from surveillance.serving.actions_table import ACTIONS_SCHEMA
from surveillance.serving.lakehouse_reader import AlertFilters, Lakehouse, Position
from surveillance.serving.synthetic import ALERT_SCHEMA, SILVER_SCHEMA, build_synthetic_lakehouse


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lake")
    build_synthetic_lakehouse(root, alerts=1500, quotes=15_000, days=3, symbols=6, files_per_day=4)
    # Ties: alerts that share an event time with others, in another file (a later micro-batch).
    alerts = DeltaTable(str(root / "alerts")).to_pyarrow_table()
    twins = alerts.slice(100, 40)
    ids = pa.array([f"{i:032x}" for i in range(40)])
    write_deltalake(
        str(root / "alerts"), twins.set_column(0, "alert_id", ids), mode="append", partition_by=["alert_date"]
    )
    return root


def reader(root: Path) -> Lakehouse:
    names = ("alerts", "silver_quotes", "gold_bars_1m", "dq_results", "stream_progress")
    return Lakehouse({n: str(root / n) for n in names}, refresh_seconds=0)


def walk(lakehouse: Lakehouse, filters: AlertFilters, limit: int) -> list[str]:
    seen, after = [], None
    while True:
        rows, more = lakehouse.list_alerts(filters, after, limit)
        assert len(rows) <= limit
        seen.extend(r["alert_id"] for r in rows)
        if not more:
            return seen
        last = rows[-1]
        micros = (last["event_time"].replace(tzinfo=None) - datetime(1970, 1, 1)) // timedelta(microseconds=1)
        after = Position(micros, last["alert_id"])


def expected(frame: pd.DataFrame) -> list[str]:
    return list(frame.sort_values(["event_time", "alert_id"], ascending=False).alert_id)


def test_pages_cover_every_alert_once_in_order(lake: Path) -> None:
    table = DeltaTable(str(lake / "alerts")).to_pandas()
    assert table.duplicated(["event_time"]).sum() >= 40
    lakehouse = reader(lake)
    for limit in (3, 100, 2000):
        assert walk(lakehouse, AlertFilters(), limit) == expected(table)


def test_filters(lake: Path) -> None:
    table = DeltaTable(str(lake / "alerts")).to_pandas()
    lakehouse = reader(lake)
    t = table.event_time.dt.tz_convert(None)
    since, until = t.quantile(0.3).to_pydatetime(), t.quantile(0.6).to_pydatetime()
    some = frozenset(table.alert_id.iloc[::50])
    cases = [
        (AlertFilters(symbol="AAB"), table.symbol == "AAB"),
        (AlertFilters(rule="model", severity="high"), (table.rule == "model") & (table.severity == "high")),
        (AlertFilters(confidence="low", symbol="AAC"), (table.confidence == "low") & (table.symbol == "AAC")),
        (AlertFilters(since=since, until=until), (t >= since) & (t < until)),
        (AlertFilters(only_ids=some), table.alert_id.isin(some)),
        (AlertFilters(except_ids=some, symbol="AAA"), ~table.alert_id.isin(some) & (table.symbol == "AAA")),
        (AlertFilters(only_ids=frozenset()), table.alert_id.isna()),
        (AlertFilters(symbol="ZZZ"), table.symbol == "ZZZ"),
    ]
    for filters, mask in cases:
        assert walk(lakehouse, filters, 13) == expected(table[mask]), filters


def test_alert_by_id_and_its_quotes(lake: Path) -> None:
    table = DeltaTable(str(lake / "alerts")).to_pandas()
    silver = DeltaTable(str(lake / "silver_quotes")).to_pandas()
    lakehouse = reader(lake)
    row = table.iloc[777]
    found = lakehouse.find_alert(row.alert_id)
    assert found is not None and (found["event_id"], found["symbol"]) == (row.event_id, row.symbol)
    assert found["details"] == json.loads(row.details)
    assert lakehouse.find_alert("f" * 32) is None
    moment = row.event_time.tz_convert(None).to_pydatetime()
    quotes = lakehouse.quotes_around(row.symbol, moment, 60)
    t = silver.event_time.dt.tz_convert(None)
    window = silver[
        (silver.symbol == row.symbol)
        & (t >= moment - timedelta(seconds=60))
        & (t <= moment + timedelta(seconds=60))
    ]
    assert [q["event_id"] for q in quotes] == list(window.sort_values(["event_time", "event_id"]).event_id)
    assert row.event_id in {q["event_id"] for q in quotes}


def test_symbols_count_every_file(lake: Path) -> None:
    silver = DeltaTable(str(lake / "silver_quotes")).to_pandas()
    table = DeltaTable(str(lake / "alerts")).to_pandas()
    symbols = reader(lake).symbols()
    assert {s: e["quotes"] for s, e in symbols.items()} == silver.symbol.value_counts().to_dict()
    assert {s: e["alerts"] for s, e in symbols.items()} == table.symbol.value_counts().to_dict()


def test_new_commits_are_seen(tmp_path: Path, lake: Path) -> None:
    import shutil

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    lakehouse = reader(copy)
    before = len(walk(lakehouse, AlertFilters(symbol="AAA"), 500))
    alerts = DeltaTable(str(copy / "alerts")).to_pyarrow_table()
    newer = alerts.slice(0, 5).set_column(
        0, "alert_id", pa.array([f"{i:032x}".replace("0", "e") for i in range(5)])
    )
    newer = newer.set_column(1, "symbol", pa.array(["AAA"] * 5))
    write_deltalake(str(copy / "alerts"), newer, mode="append", partition_by=["alert_date"])
    assert len(walk(lakehouse, AlertFilters(symbol="AAA"), 500)) == before + 5


def _arrow(spark_type: T.DataType) -> pa.DataType:
    simple = {
        T.StringType(): pa.string(),
        T.TimestampType(): pa.timestamp("us", tz="UTC"),
        T.DateType(): pa.date32(),
        T.LongType(): pa.int64(),
        T.IntegerType(): pa.int32(),
        T.DoubleType(): pa.float64(),
        T.BooleanType(): pa.bool_(),
    }
    if isinstance(spark_type, T.ArrayType):
        return pa.list_(_arrow(spark_type.elementType))
    return simple[spark_type]


@pytest.mark.parametrize(
    ("spec", "schema"), [(ALERT_ACTIONS, ACTIONS_SCHEMA), (ALERTS, ALERT_SCHEMA), (SILVER, SILVER_SCHEMA)]
)
def test_delta_rs_schemas_match_the_tables(spec: object, schema: pa.Schema) -> None:
    """What the API appends (alert_actions) and the bench synthesizes have the tables' columns and types."""
    assert [(f.name, _arrow(f.dataType)) for f in spec.schema.fields] == [(f.name, f.type) for f in schema]


def test_files_written_before_a_column_existed(tmp_path: Path, lake: Path) -> None:
    """Alerts files without episode_id (older releases) and newer ones with it are read together."""
    import shutil

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns("alerts"))
    alerts = DeltaTable(str(lake / "alerts")).to_pyarrow_table()
    older, newer = alerts.slice(0, 600), alerts.slice(600)
    write_deltalake(
        str(copy / "alerts"),
        older.drop_columns(["episode_id"]),
        mode="overwrite",
        partition_by=["alert_date"],
    )
    write_deltalake(
        str(copy / "alerts"), newer, mode="append", partition_by=["alert_date"], schema_mode="merge"
    )
    lakehouse = reader(copy)
    lakehouse.warm()
    table = DeltaTable(str(copy / "alerts")).to_pandas()
    assert table.episode_id.isna().sum() == 600
    assert walk(lakehouse, AlertFilters(), 250) == expected(table)
    old = lakehouse.find_alert(older["alert_id"][5].as_py())
    assert old is not None and old["episode_id"] is None
    new = lakehouse.find_alert(newer["alert_id"][5].as_py())
    assert new is not None and new["episode_id"] == newer["episode_id"][5].as_py()


def test_stream_progress_before_query_names(tmp_path: Path, lake: Path) -> None:
    """The first release wrote stream_progress without query_name: its batches are the quotes query's."""
    finished = pd.Timestamp("2026-12-01 10:00:00", tz="UTC")
    progress = pa.table(
        {
            "stream_id": ["s1", "s1"],
            "batch_id": pa.array([4, 5], pa.int64()),
            "finished_at": pa.array(
                [finished, finished + pd.Timedelta(seconds=2)], pa.timestamp("us", tz="UTC")
            ),
            "max_event_time": pa.array([finished, finished], pa.timestamp("us", tz="UTC")),
            "records_in": pa.array([10, 12], pa.int64()),
        }
    )
    names = ("alerts", "silver_quotes", "gold_bars_1m", "dq_results")
    write_deltalake(str(tmp_path / "stream_progress"), progress)
    locations = {n: str(lake / n) for n in names} | {"stream_progress": str(tmp_path / "stream_progress")}
    (batch,) = Lakehouse(locations, refresh_seconds=0).last_batches()
    assert (batch["query_name"], batch["batch_id"], batch["records_in"]) == ("quotes_to_lakehouse", 5, 12)


def test_naive_utc_bounds_do_not_move_with_the_host_time_zone(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server in New York compares what one in UTC does (a DuckDB cursor starts in the host zone)."""
    import time

    silver = DeltaTable(str(lake / "silver_quotes")).to_pandas()
    row = silver.iloc[4321]
    moment = row.event_time.tz_convert(None).to_pydatetime()
    in_utc = [q["event_id"] for q in reader(lake).quotes_around(row.symbol, moment, 30)]
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        in_new_york = [q["event_id"] for q in reader(lake).quotes_around(row.symbol, moment, 30)]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert row.event_id in in_utc
    assert in_new_york == in_utc


def test_timestamp_statistics_are_milliseconds() -> None:
    """Delta keeps a file's maximum timestamp in milliseconds: a bound within that must not skip the file."""
    from surveillance.serving.delta_files import DataFile

    stat = datetime(2026, 12, 1, 10, 0, 0, 123000)
    data_file = DataFile("f", "f", 1, {}, {"event_time": stat}, {"event_time": stat})
    assert data_file.may_hold("event_time", stat + timedelta(microseconds=999), None)
    assert not data_file.may_hold("event_time", stat + timedelta(milliseconds=2), None)
