"""The champion model inside the stream: features and scores for a micro-batch's new quotes, as alerts.

:class:`ChampionModel` loads ``models:/<registered name>@<champion alias>`` once and asks the registry again
every ``models.scoring.reload_interval``: when the alias has moved, the next micro-batch scores with the new
version, without restarting the query. A registry that cannot be reached keeps the loaded version (and says
so in the log): the stream never stops for it.

Scoring runs on the executors: features per symbol with ``applyInPandas`` (the one feature definition, over
the batch's new quotes plus each symbol's last ``HISTORY_TICKS`` quotes), then the model's vectorised
``score_frame`` with ``mapInPandas``. Only flagged quotes come back to become ``rule = "model"`` alerts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from surveillance.config import ScoringSettings, Settings, SeveritySettings, interval_seconds
from surveillance.detection.rules import alert_rows
from surveillance.models.features import FEATURE_COLUMNS, HISTORY_TICKS, sort_ticks, symbol_features

log = logging.getLogger(__name__)
MODEL_RULE = "model"
_KEY = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("event_id", T.StringType()),
        T.StructField("event_micros", T.LongType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("volume", T.LongType()),
        T.StructField("bid", T.DoubleType()),
        T.StructField("ask", T.DoubleType()),
        T.StructField("is_new", T.BooleanType()),
    ]
)
FEATURES_SCHEMA = T.StructType(
    [
        *_KEY.fields,
        *[T.StructField(name, T.DoubleType()) for name in FEATURE_COLUMNS],
        T.StructField("scorable", T.BooleanType()),
    ]
)


def _new_row_features(quotes: pd.DataFrame) -> pd.DataFrame:
    ordered = sort_ticks(quotes)
    is_new = ordered["is_new"].to_numpy(bool)
    if not is_new.any():
        return ordered.iloc[:0].assign(**{name: np.nan for name in FEATURE_COLUMNS}, scorable=False)
    first_new = int(np.argmax(is_new))
    # Rows before the window of the first new quote cannot change any new quote's features.
    window = ordered.iloc[max(0, first_new - HISTORY_TICKS) :].reset_index(drop=True)
    features = pd.concat([window, symbol_features(window)], axis=1)
    return features[features["is_new"]]


def model_features(context: DataFrame) -> DataFrame:
    """Features of the new quotes (``is_new``) of ``context``, which also holds their symbols' history.

    The same :func:`~surveillance.models.features.symbol_features` as training and batch jobs, applied per
    symbol. Spark first keeps each symbol's last ``HISTORY_TICKS`` quotes before its earliest new one, so
    Python never sees more history than the features read.
    """
    ticks = Window.partitionBy("symbol").orderBy("event_micros", "event_id")
    per_symbol = Window.partitionBy("symbol")
    slim = (
        context.select(
            "symbol",
            "event_id",
            F.unix_micros("event_time").alias("event_micros"),
            "price",
            "volume",
            "bid",
            "ask",
            "is_new",
        )
        .withColumn("_tick", F.row_number().over(ticks))
        .withColumn("_first_new", F.min(F.when(F.col("is_new"), F.col("_tick"))).over(per_symbol))
        .where(F.col("_first_new").isNotNull() & (F.col("_tick") >= F.col("_first_new") - HISTORY_TICKS))
        .drop("_tick", "_first_new")
    )
    return slim.groupBy("symbol").applyInPandas(_new_row_features, FEATURES_SCHEMA)


def output_schema(top_k: int) -> T.StructType:
    """The scored rows: the quote's key, then the model's output columns."""
    fields = [
        T.StructField("symbol", T.StringType()),
        T.StructField("event_id", T.StringType()),
        T.StructField("score", T.DoubleType()),
        T.StructField("is_anomaly", T.BooleanType()),
        T.StructField("rarity", T.DoubleType()),
    ]
    for k in range(1, top_k + 1):
        fields += [
            T.StructField(f"top_feature_{k}", T.StringType()),
            T.StructField(f"top_deviation_{k}", T.DoubleType()),
        ]
    return T.StructType(fields)


def score_features(features: DataFrame, model: Any, top_k: int, only_flagged: bool = True) -> DataFrame:
    """The model's scores of scorable feature rows (by default only the flagged ones), vectorised per
    Arrow batch on the executors; ``model`` is an :class:`~surveillance.models.pyfunc.AnomalyModel`."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            keys = batch[["symbol", "event_id"]].reset_index(drop=True)
            scored = pd.concat([keys, model.score_frame(batch).reset_index(drop=True)], axis=1)
            yield scored[scored["is_anomaly"]] if only_flagged else scored

    return features.where("scorable").mapInPandas(score, output_schema(top_k))


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    detector: str
    model: Any  # AnomalyModel

    @property
    def threshold(self) -> float:
        return float(self.model.threshold)


class ChampionModel:
    """The champion model version this process scores with, refreshed from the registry at an interval."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = interval_seconds(settings.models.scoring.reload_interval)
        self.loaded: LoadedModel | None = None
        self._checked_at = float("-inf")

    def current(self) -> LoadedModel | None:
        """The model to score this micro-batch with (asking the registry if the interval has passed)."""
        if time.monotonic() - self._checked_at >= self.interval:
            self._checked_at = time.monotonic()
            try:
                self.refresh()
            except Exception as exc:  # a registry outage must not stop the stream: keep what is loaded
                version = self.loaded.version if self.loaded else "none"
                log.warning("could not refresh the champion model (keeping version %s): %s", version, exc)
        return self.loaded

    def refresh(self) -> None:
        """Load the version the champion alias points to, if it is not the one already loaded."""
        import mlflow.pyfunc

        from surveillance.models.registry import alias_version, model_uri, use_mlflow

        version = alias_version(self.settings)
        if version is None:
            if self.loaded is not None:
                log.warning("the champion alias is gone: model scoring stops until it is set again")
            self.loaded = None
            return
        if self.loaded is not None and self.loaded.version == str(version.version):
            return
        # load_model resolves models:/ URIs through this process's registry URI: point it at the configured
        # store first (left alone it is MLflow's default, ./mlflow.db, where nothing is registered).
        use_mlflow(self.settings)
        model = mlflow.pyfunc.load_model(model_uri(self.settings, version.version)).unwrap_python_model()
        previous = self.loaded.version if self.loaded else None
        self.loaded = LoadedModel(
            self.settings.models.registered_name,
            str(version.version),
            (version.tags or {}).get("detector", model.detector.name),
            model,
        )
        log.warning("scoring with %s version %s (was %s)", self.loaded.name, self.loaded.version, previous)


def model_alerts(
    context: DataFrame,
    loaded: LoadedModel,
    scoring: ScoringSettings,
    levels: SeveritySettings,
    unreliable_when: Sequence[str] = (),
) -> DataFrame:
    """``rule = "model"`` alerts for the new quotes of ``context`` the model flags, in the alerts schema.

    Evidence: the model's name, version and detector, and the top contributing features with how far each
    lies from its training median (robust z). Confidence is "low" when the quote broke one of
    ``unreliable_when``, as for the rules. Severity comes from the score's rarity among normal training
    quotes (``scoring.high_rarity``, ``scoring.medium_rarity``), comparable across detectors.
    """
    top_k = scoring.top_features
    flagged = score_features(model_features(context), loaded.model, top_k)
    candidates = context.where("is_new").join(F.broadcast(flagged), ["symbol", "event_id"])
    top = F.filter(
        F.array(
            *[
                F.struct(
                    F.col(f"top_feature_{k}").alias("feature"),
                    F.col(f"top_deviation_{k}").alias("robust_z"),
                )
                for k in range(1, top_k + 1)
            ]
        ),
        lambda item: item["feature"] != "",
    )
    wanted = F.array(*[F.lit(name) for name in unreliable_when]) if unreliable_when else None
    own = (
        F.array_intersect(F.coalesce("dq_warnings", F.array().cast("array<string>")), wanted)
        if wanted is not None
        else F.array().cast("array<string>")
    )
    details = F.struct(
        F.lit(loaded.name).alias("model_name"),
        F.lit(loaded.version).alias("model_version"),
        F.lit(loaded.detector).alias("detector"),
        "rarity",
        top.alias("top_features"),
        "price",
        "volume",
        "bid",
        "ask",
        own.alias("dq_warnings"),
    )
    confidence = F.when(F.size(own) > 0, "low").otherwise("high")
    rarity = F.col("rarity")
    level = (
        F.when(rarity <= scoring.high_rarity, "high")
        .when(rarity <= scoring.medium_rarity, "medium")
        .otherwise("low")
    )
    return alert_rows(
        candidates, MODEL_RULE, F.col("score"), loaded.threshold, details, levels, confidence, level
    )
