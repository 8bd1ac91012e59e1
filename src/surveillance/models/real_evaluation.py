"""How detectors behave on real markets: the false-alarm load a user would take on, and the obvious events.

Real data carries no labels, except the obvious: a price that moved more than 5 % from the previous quote
of its symbol (a stock split, a unit error in a feed, an off-market print, a crash). For each detector this
reports, over the real quotes of :mod:`surveillance.models.real_markets`:

* alerts (flagged quotes) and alert episodes (:mod:`surveillance.detection.episodes`, the unit an analyst
  reviews) per 1,000 real quotes, overall and per symbol;
* recall of the real >5 % moves: the share of them the detector flags (a model cannot score a symbol's
  first :data:`~surveillance.models.features.MIN_HISTORY` quotes; those moves count as missed).

The models are scored offline on the one feature definition; the rules run as the pipeline runs them, in
Spark (:func:`evaluate_rules`), on the same quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from surveillance.config import Settings
from surveillance.detection.episodes import assign_episodes
from surveillance.models.features import quote_features, with_event_micros
from surveillance.models.real_markets import RealQuotes, large_moves

MOVE_THRESHOLD = 0.05


@dataclass
class RealMarketData:
    """Real quotes, their model features (scorable rows) and the >5 % moves among them."""

    quotes: pd.DataFrame
    sources: pd.DataFrame
    features: pd.DataFrame
    moves: pd.DataFrame

    @classmethod
    def from_quotes(cls, real: RealQuotes) -> RealMarketData:
        features = quote_features(with_event_micros(real.quotes))
        return cls(
            real.quotes, real.sources, features[features.scorable], large_moves(real.quotes, MOVE_THRESHOLD)
        )


@dataclass
class RealEvaluation:
    """Per detector (and rule): alerts, episodes and move recall; and alerts per 1,000 quotes by symbol."""

    table: pd.DataFrame
    by_symbol: pd.DataFrame
    quotes: int
    moves: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "quotes": self.quotes,
            "moves_over_5_percent": self.moves,
            "detectors": self.table.to_dict("records"),
            "by_symbol": self.by_symbol.to_dict("records"),
        }


def flagged_summary(
    name: str, flagged: pd.DataFrame, data: RealMarketData, merge_gap_seconds: float
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One detector's row and its per-symbol rates, from its flagged quotes (``symbol``, ``event_id``,
    ``event_micros``)."""
    total = len(data.quotes)
    ids, _ = assign_episodes(flagged, {}, round(merge_gap_seconds * 1e6))
    caught = data.moves.event_id.isin(set(flagged.event_id))
    row = {
        "detector": name,
        "alerts": len(flagged),
        "alerts_per_1000": 1000 * len(flagged) / total if total else float("nan"),
        "episodes": len(set(ids)),
        "episodes_per_1000": 1000 * len(set(ids)) / total if total else float("nan"),
        "moves": len(data.moves),
        "moves_flagged": int(caught.sum()),
        "move_recall": float(caught.mean()) if len(data.moves) else float("nan"),
    }
    quotes = data.quotes.groupby("symbol").size()
    alerts = flagged.groupby("symbol").size().reindex(quotes.index, fill_value=0)
    by_symbol = pd.DataFrame(
        {
            "detector": name,
            "symbol": quotes.index,
            "quotes": quotes.to_numpy(),
            "alerts": alerts.to_numpy(),
            "alerts_per_1000": 1000 * alerts.to_numpy() / quotes.to_numpy(),
        }
    )
    return row, by_symbol


def evaluate_models(
    models: Mapping[str, Any], data: RealMarketData, merge_gap_seconds: float
) -> RealEvaluation:
    """Each model (an :class:`~surveillance.models.pyfunc.AnomalyModel`) on the real quotes."""
    rows, per_symbol = [], []
    for name, model in models.items():
        flags = model.score_frame(data.features)["is_anomaly"].to_numpy(bool)
        row, by_symbol = flagged_summary(name, data.features.loc[flags], data, merge_gap_seconds)
        rows.append(row)
        per_symbol.append(by_symbol)
    return _evaluation(rows, per_symbol, data)


def _evaluation(
    rows: list[dict[str, Any]], per_symbol: list[pd.DataFrame], data: RealMarketData
) -> RealEvaluation:
    by_symbol = pd.concat(per_symbol, ignore_index=True) if per_symbol else pd.DataFrame()
    return RealEvaluation(pd.DataFrame(rows), by_symbol, len(data.quotes), len(data.moves))


def evaluate_rules(spark: Any, settings: Settings, data: RealMarketData) -> RealEvaluation:
    """The configured rules, run in Spark exactly as a backfill runs them, on the real quotes: one row per
    rule and one for all rules together (what a user turning the rules on would review)."""
    from pyspark.sql import functions as F

    from surveillance.detection.rules import detect_alerts

    quotes = data.quotes
    frame = spark.createDataFrame(
        pd.DataFrame(
            {
                "event_id": quotes.event_id.to_numpy(),
                "symbol": quotes.symbol.to_numpy(),
                "event_time": pd.to_datetime(quotes.event_time, utc=True).dt.tz_localize(None),
                "price": quotes.price.to_numpy(np.float64),
                "volume": quotes.volume.to_numpy(np.int64),
                "bid": quotes.bid.to_numpy(np.float64),
                "ask": quotes.ask.to_numpy(np.float64),
            }
        ),
        "event_id string, symbol string, event_time timestamp, price double, volume long, bid double, "
        "ask double",
    ).select(
        "*",
        F.lit(True).alias("is_new"),
        F.lit(False).alias("is_late"),
        F.lit(0).alias("kafka_partition"),
        F.lit(0).cast("long").alias("kafka_offset"),
        F.col("event_time").alias("kafka_timestamp"),
        F.lit("real-data").alias("stream_id"),
        F.lit(0).cast("long").alias("batch_id"),
    )
    alerts = (
        detect_alerts(frame, settings.rules)
        .select("rule", "symbol", "event_id", F.unix_micros("event_time").alias("event_micros"))
        .toPandas()
    )
    rows, per_symbol = [], []
    groups = [(f"rule:{rule}", found) for rule, found in alerts.groupby("rule")]
    every = alerts.drop_duplicates(["symbol", "event_id"])
    for name, found in [*groups, ("rules (all)", every)]:
        row, by_symbol = flagged_summary(name, found, data, settings.models.evaluation.merge_gap_seconds)
        rows.append(row)
        per_symbol.append(by_symbol)
    return _evaluation(rows, per_symbol, data)


def combined(*evaluations: RealEvaluation) -> RealEvaluation:
    """Several evaluations of the same data in one table."""
    present = [evaluation for evaluation in evaluations if evaluation is not None]
    return RealEvaluation(
        pd.concat([evaluation.table for evaluation in present], ignore_index=True),
        pd.concat([evaluation.by_symbol for evaluation in present], ignore_index=True),
        present[0].quotes,
        present[0].moves,
    )
