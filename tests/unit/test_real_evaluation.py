"""The real-data evaluation's arithmetic on a small hand-made market: alerts and episodes per 1,000 quotes,
recall of the >5 % moves, per symbol; the rules through Spark on the same quotes. (The evaluation on the
real data itself is in test_model_quality_gate, where that data is at hand.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from surveillance.config import load_settings
from surveillance.models.detectors import FixedJump
from surveillance.models.features import FEATURE_COLUMNS
from surveillance.models.pyfunc import AnomalyModel
from surveillance.models.real_evaluation import RealMarketData, evaluate_models, evaluate_rules
from surveillance.models.real_markets import RealQuotes


def market() -> RealQuotes:
    """Two symbols of 300 one-minute quotes; AAA splits 7:1 at quote 200 and has a bad print at 250."""
    rng = np.random.default_rng(11)
    frames = []
    for symbol, level in (("AAA", 600.0), ("BBB", 40.0)):
        price = level * np.exp(np.cumsum(rng.normal(0, 5e-4, 300)))
        if symbol == "AAA":
            price[200:] /= 7
            price[250] *= 1.2  # one off-market print, back the next minute
        frames.append(
            pd.DataFrame(
                {
                    "event_id": [f"{symbol}-{n:04d}" for n in range(300)],
                    "symbol": symbol,
                    "event_time": pd.date_range("2024-03-01 14:31", periods=300, freq="min", tz="UTC"),
                    "price": np.round(price, 2),
                    "volume": rng.integers(100, 1000, 300),
                    "bid": np.round(price - 0.01, 2),
                    "ask": np.round(price + 0.01, 2),
                    "source": "hand",
                }
            )
        )
    return RealQuotes(pd.concat(frames, ignore_index=True), pd.DataFrame())


def test_rates_episodes_and_move_recall_per_detector() -> None:
    data = RealMarketData.from_quotes(market())
    assert list(data.moves.event_id) == ["AAA-0200", "AAA-0250", "AAA-0251"]
    jump = FixedJump()
    model = AnomalyModel(jump, data.features[list(FEATURE_COLUMNS)], np.full(len(data.features), ""))
    evaluation = evaluate_models({"fixed_jump": model}, data, merge_gap_seconds=30)
    row = evaluation.table.iloc[0]
    assert (row.alerts, row.moves_flagged, row.move_recall) == (3, 3, 1.0)
    assert row.alerts_per_1000 == pytest.approx(1000 * 3 / 600)
    # One-minute quotes, a 30 s merge gap: the print and its reversal are two episodes.
    assert row.episodes == 3
    by_symbol = evaluation.by_symbol.set_index("symbol")
    assert (
        by_symbol.loc["AAA", "alerts_per_1000"] == pytest.approx(10.0) and by_symbol.loc["BBB", "alerts"] == 0
    )
    assert evaluation.as_dict()["moves_over_5_percent"] == 3


def test_the_rules_run_in_spark_on_the_real_quotes(spark: SparkSession) -> None:
    data = RealMarketData.from_quotes(market())
    settings = load_settings(env="local")
    rules = evaluate_rules(spark, settings, data).table.set_index("detector")
    assert rules.loc["rule:price_jump", "moves_flagged"] == 3
    assert rules.loc["rules (all)", "move_recall"] == 1.0
    assert rules.loc["rules (all)", "alerts"] >= rules.loc["rule:price_jump", "alerts"]
