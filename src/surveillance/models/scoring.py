"""The champion model inside the stream: features and scores for a micro-batch's new quotes, as alerts.

:class:`ChampionModel` loads ``models:/<registered name>@<champion alias>`` once and asks the registry again
every ``models.scoring.reload_interval``: when the alias has moved, the next micro-batch scores with the new
version, without restarting the query. A registry that cannot be reached keeps the loaded version (and says
so in the log): the stream never stops for it.

Scoring runs on the executors, on quotes that already carry their features (the one feature definition,
computed in the detection query's state operator, or per symbol in a backfill): the model's vectorised
``score_frame`` with ``mapInPandas``. Only flagged quotes come back to become ``rule = "model"`` alerts.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from surveillance.config import ScoringSettings, Settings, SeveritySettings, interval_seconds
from surveillance.detection.rules import alert_rows
from surveillance.models.features import FEATURE_COLUMNS
from surveillance.observability.metrics import record_model

log = logging.getLogger(__name__)
MODEL_RULE = "model"


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


def score_features(
    features: DataFrame,
    model: Any,
    top_k: int,
    only_flagged: bool = True,
    keep: Sequence[str] = (),
) -> DataFrame:
    """The model's scores of scorable feature rows (by default only the flagged ones), vectorised per
    Arrow batch on the executors; ``model`` is an :class:`~surveillance.models.pyfunc.AnomalyModel`, or
    a broadcast of one (shipped to each Python worker once, not with every task).

    Each scored row carries ``symbol``, ``event_id`` and the ``keep`` columns of its quote, so alerts need
    no join back to the quotes.
    """
    carried = ["symbol", "event_id", *[name for name in keep if name not in ("symbol", "event_id")]]
    carried_fields = [features.schema[name] for name in carried]
    score_fields = output_schema(top_k).fields[2:]
    schema = T.StructType([*carried_fields, *score_fields])

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = model.value if isinstance(model, Broadcast) else model
        for batch in batches:
            kept = batch[carried].reset_index(drop=True)
            scored = pd.concat([kept, scorer.score_frame(batch).reset_index(drop=True)], axis=1)
            yield scored[scored["is_anomaly"]] if only_flagged else scored

    needed = list(dict.fromkeys([*carried, *FEATURE_COLUMNS]))
    return features.where("scorable").select(*needed).mapInPandas(score, schema)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    detector: str
    model: Any  # AnomalyModel
    _broadcast: Broadcast | None = field(default=None, compare=False, repr=False)

    @property
    def threshold(self) -> float:
        return float(self.model.threshold)

    def shipped(self, spark: SparkSession) -> Broadcast:
        """The model as a broadcast variable: a stream scores every micro-batch with the same version, and
        a fitted model pickled into each task's closure would cross to the workers every time."""
        if self._broadcast is None:
            object.__setattr__(self, "_broadcast", spark.sparkContext.broadcast(self.model))
        return self._broadcast


def preload_mlflow() -> threading.Thread:
    """Import MLflow's model loading in the background (seconds of Python), e.g. while Spark starts."""
    thread = threading.Thread(target=lambda: importlib.import_module("mlflow.pyfunc"), daemon=True)
    thread.start()
    return thread


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
                record_model(self.settings.models.registered_name, version, loaded=False)
        return self.loaded

    def refresh(self) -> None:
        """Load the version the champion alias points to, if it is not the one already loaded."""
        import mlflow.pyfunc

        from surveillance.models.pyfunc import model_incompatibility
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
        incompatible = model_incompatibility(model)
        if incompatible:
            raise ValueError(
                f"{self.settings.models.registered_name} version {version.version} {incompatible}"
            )
        previous = self.loaded.version if self.loaded else None
        if self.loaded is not None and self.loaded._broadcast is not None:
            self.loaded._broadcast.unpersist()  # the workers fetch the new version's when they need it
        self.loaded = LoadedModel(
            self.settings.models.registered_name,
            str(version.version),
            (version.tags or {}).get("detector", model.detector.name),
            model,
        )
        log.warning("scoring with %s version %s (was %s)", self.loaded.name, self.loaded.version, previous)
        record_model(self.loaded.name, self.loaded.version, loaded=True)


def model_alerts(
    context: DataFrame,
    loaded: LoadedModel,
    scoring: ScoringSettings,
    levels: SeveritySettings,
    unreliable_when: Sequence[str] = (),
) -> DataFrame:
    """``rule = "model"`` alerts for the new quotes of ``context`` the model flags, in the alerts schema.

    ``context`` carries each quote's model features (:mod:`surveillance.detection.context`).

    Evidence: the model's name, version and detector, and the top contributing features with how far each
    lies from its training median (robust z). Confidence is "low" when the quote broke one of
    ``unreliable_when``, as for the rules. Severity comes from the score's rarity among normal training
    quotes (``scoring.high_rarity``, ``scoring.medium_rarity``), comparable across detectors.
    """
    top_k = scoring.top_features
    carried = [
        "event_time", "price", "volume", "bid", "ask", "dq_warnings", "kafka_partition", "kafka_offset",
        "kafka_timestamp", "stream_id", "batch_id",
    ]  # fmt: skip
    candidates = score_features(
        context.where("is_new"), loaded.shipped(context.sparkSession), top_k, keep=carried
    )
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
