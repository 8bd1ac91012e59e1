"""Alert episodes: what an analyst reviews as one event.

A flash crash or a stuffing burst flags many consecutive quotes, often by several rules and the model at
once. Alerts of one symbol whose quotes lie within ``models.evaluation.merge_gap_seconds`` (event time) of
the episode's latest alert belong to that episode; a longer pause starts a new one. The same gap defines a
predicted event when the models are evaluated, so an episode is what the evaluation counts.

``episode_id`` is deterministic: a hash of the symbol and the first alert's ``event_id``. One definition,
:func:`assign_episodes` (pure pandas/NumPy), used by both paths:

* the detection query on the driver, on each micro-batch's alerts (few: they are collected to be sent
  anyway), carrying each symbol's open episode from batch to batch; after a restart the open episodes are
  read once from the alerts table (:func:`open_episodes_from`), so a replayed batch gets the same ids;
* a backfill on the range's alerts, per symbol in Spark, starting from the episodes open just before the
  range.

Alerts arriving in event-time order get the same episodes either way; a quote arriving later than the merge
gap after its symbol's latest alert starts an episode of its own rather than rewriting a closed one.

:data:`EPISODES_SQL` is the ``alert_episodes`` view: one row per episode (symbol, start, end, rules
involved, peak score relative to its threshold, peak severity, quote and alert counts), over the alerts
table, so it is exactly once because the table is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from surveillance.lakehouse import is_table_name, read_table, table_sql


@dataclass(frozen=True)
class OpenEpisode:
    """A symbol's latest episode: its id and the event time of its latest alert (microseconds)."""

    episode_id: str
    last_micros: int


def episode_id(symbol: str, first_event_id: str) -> str:
    """The id of the episode that begins with the alert on ``first_event_id``."""
    return hashlib.sha256(f"episode|{symbol}|{first_event_id}".encode()).hexdigest()[:32]


def assign_episodes(
    alerts: pd.DataFrame, open_episodes: Mapping[str, OpenEpisode], merge_gap_micros: int
) -> tuple[np.ndarray, dict[str, OpenEpisode]]:
    """The episode id of each alert (input order) and each symbol's open episode afterwards.

    ``alerts``: ``symbol``, ``event_micros``, ``event_id``, in any order; several alerts on one quote (rules
    and model) share its episode. Pure: ``open_episodes`` is not modified.
    """
    ids = np.empty(len(alerts), dtype=object)
    after = dict(open_episodes)
    if not len(alerts):
        return ids, after
    order = np.lexsort(
        (alerts["event_id"].to_numpy(), alerts["event_micros"].to_numpy(), alerts["symbol"].to_numpy())
    )
    symbols = alerts["symbol"].to_numpy()[order]
    micros = alerts["event_micros"].to_numpy(np.int64)[order]
    event_ids = alerts["event_id"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(symbols)], strict=True):
        symbol, times = symbols[a], micros[a:b]
        begins = np.r_[True, np.diff(times) > merge_gap_micros]
        current = after.get(symbol)
        joins = current is not None and abs(int(times[0]) - current.last_micros) <= merge_gap_micros
        begins[0] = not joins
        group = np.cumsum(begins) - 1
        firsts = np.flatnonzero(begins)
        names = [episode_id(symbol, event_ids[a + first]) for first in firsts]
        if joins:
            names.insert(0, current.episode_id)
            group = group + 1
        ids[order[a:b]] = np.array(names, dtype=object)[group]
        last = int(times[-1])
        if joins and not len(firsts):  # the batch only extended the open episode (maybe with a late alert)
            last = max(last, current.last_micros)
        after[symbol] = OpenEpisode(names[-1], last)
    return ids, after


def open_episodes_from(rows: pd.DataFrame) -> dict[str, OpenEpisode]:
    """Each symbol's latest episode from alerts rows (``symbol``, ``episode_id``, ``event_micros``)."""
    known = rows.dropna(subset=["episode_id"])
    if not len(known):
        return {}
    latest = known.sort_values(["symbol", "event_micros"], kind="mergesort").groupby("symbol").tail(1)
    return {
        row.symbol: OpenEpisode(row.episode_id, int(row.event_micros))
        for row in latest.itertuples(index=False)
    }


def read_open_episodes(
    spark: SparkSession,
    alerts_location: str,
    since_micros: int | None = None,
    until_micros: int | None = None,
    committed: tuple[str, int] | None = None,
) -> dict[str, OpenEpisode]:
    """Each symbol's latest episode in the alerts table (one aggregate, at start, never per batch).

    ``since_micros``, ``until_micros``: only alerts in [since, until) of event time (a backfill: the merge
    gap before its range). ``committed``: (stream id, last committed batch) of a restarting query: alerts
    its later batches appended are left out, since those batches run again and must find the episodes as
    they first did.
    """
    alerts = read_table(spark, alerts_location).where(F.col("episode_id").isNotNull())
    if committed is not None:
        stream_id, batch_id = committed
        replayed = (F.col("stream_id") == stream_id) & (F.col("batch_id") > batch_id)
        alerts = alerts.where(~F.coalesce(replayed, F.lit(False)))
    if since_micros is not None:
        alerts = alerts.where(F.unix_micros("event_time") >= since_micros)
    if until_micros is not None:
        alerts = alerts.where(F.unix_micros("event_time") < until_micros)
    latest = alerts.groupBy("symbol").agg(
        F.max_by("episode_id", F.struct(F.unix_micros("event_time"), "event_id")).alias("episode_id"),
        F.max(F.unix_micros("event_time")).alias("event_micros"),
    )
    return open_episodes_from(latest.toPandas())


def with_episodes(
    alerts: DataFrame, open_episodes: Mapping[str, OpenEpisode], merge_gap_micros: int
) -> DataFrame:
    """Spark batch form (a backfill): ``alerts`` with their ``episode_id`` (:func:`assign_episodes`)."""
    columns = alerts.columns
    schema = alerts.schema
    starting = dict(open_episodes)

    def per_symbol(rows: pd.DataFrame) -> pd.DataFrame:
        keyed = rows.assign(event_micros=_micros(rows["event_time"]))
        ids, _ = assign_episodes(keyed, starting, merge_gap_micros)
        return rows.assign(episode_id=ids)[columns]

    return alerts.groupBy("symbol").applyInPandas(per_symbol, schema)


def _micros(times: pd.Series) -> np.ndarray:
    moments = pd.to_datetime(times, utc=True)
    return ((moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)


# The alert_episodes view over the alerts table ({alerts}: its SQL reference). Alerts written before
# episodes existed are each an episode of their own.
EPISODES_SQL = """
SELECT
  coalesce(episode_id, alert_id) AS episode_id,
  first(symbol) AS symbol,
  min(event_time) AS start_time,
  max(event_time) AS end_time,
  array_sort(collect_set(rule)) AS rules,
  max(score / threshold) AS peak_score_ratio,
  element_at(array('low', 'medium', 'high'),
             max(CASE severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END)) AS peak_severity,
  count(DISTINCT event_id) AS quote_count,
  count(*) AS alert_count,
  min(detected_at) AS first_detected_at
FROM {alerts}
GROUP BY coalesce(episode_id, alert_id)
"""


def alert_episodes(spark: SparkSession, alerts_location: str) -> DataFrame:
    """The ``alert_episodes`` view: one row per episode of the alerts table (one written before episodes
    existed, and not yet given the column by a stream's start, counts each alert as an episode)."""
    alerts = read_table(spark, alerts_location)
    if "episode_id" not in alerts.columns:
        alerts = alerts.withColumn("episode_id", F.lit(None).cast("string"))
    name = f"alerts_for_episodes_{abs(hash(alerts_location))}"
    alerts.createOrReplaceTempView(name)
    return spark.sql(EPISODES_SQL.format(alerts=name))


def episodes_view_name(alerts_location: str) -> str | None:
    """Where the view is created: beside an alerts table named in a metastore or Unity Catalog
    (``catalog.schema.alert_episodes``); None for path-based tables, which read it with
    :func:`alert_episodes`."""
    if not is_table_name(alerts_location):
        return None
    return ".".join([*alerts_location.split(".")[:-1], "alert_episodes"])


def ensure_episodes_view(spark: SparkSession, alerts_location: str) -> str | None:
    """Create (or replace) the ``alert_episodes`` view where tables have names; its name, or None."""
    name = episodes_view_name(alerts_location)
    if name is not None:
        spark.sql(
            f"CREATE OR REPLACE VIEW {name} AS {EPISODES_SQL.format(alerts=table_sql(alerts_location))}"
        )
    return name
