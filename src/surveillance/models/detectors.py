"""The anomaly detectors compared on the same features: each maps feature rows to a score (higher = more
anomalous) and holds the threshold above which a quote is flagged.

Baselines, as the rules do it: ``fixed_jump`` (|return| above 5 %) and ``rolling_zscore`` (|return z-score|
above 6). Then ``robust_zscore`` (median/MAD distance on every feature), ``ewma_chart`` (an EWMA control
chart on returns and spreads, plus the instant features a chart watches), ``isolation_forest``
(scikit-learn, unsupervised) and ``gradient_boosting`` (scikit-learn's histogram gradient boosting,
supervised by the training labels). Learned thresholds are chosen on held-out training symbols by the caller.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from surveillance.models.features import MODEL_FEATURES

# Features a chart or a z-score watches: one series per anomaly footprint.
WATCHED = (
    "ret_sigma",
    "ret_20_z",
    "volume_z",
    "spread_z",
    "log_arrival_ratio",
    "frozen_run_ratio",
    "drawdown_20_z",
)
EWMA_WATCHED = (
    "ewma_ret_z",
    "ewma_spread_z",
    "log_arrival_ratio",
    "frozen_run_ratio",
    "volume_z",
)
# Metadata of the fields ``fit`` sets: not parameters, not shown in repr.
LEARNED: dict[str, Any] = {"learned": True}


def robust_center_scale(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per column: median and a robust scale (1.4826 MAD; 1.2533 mean absolute deviation if the MAD is 0).

    The fallback follows Iglewicz & Hoaglin: a feature that is almost always the same value (a frozen-feed
    run length) has a MAD of 0 but still a spread to measure departures by.
    """
    values = frame.to_numpy(np.float64)
    with np.errstate(all="ignore"):
        center = np.nanmedian(values, axis=0)
        deviation = np.abs(values - center)
        scale = 1.4826 * np.nanmedian(deviation, axis=0)
        fallback = 1.2533 * np.nanmean(deviation, axis=0)
    scale = np.where(scale > 0, scale, fallback)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return np.nan_to_num(center), scale


def type_balanced_weights(labels: np.ndarray, anomaly_weight: float = 1.0) -> np.ndarray:
    """Sample weights giving every anomaly type together ``anomaly_weight`` times the weight of the normal
    rows, shared equally.

    A spread blowout spans dozens of quotes, a price jump one: unweighted, a learner would trade every
    jump for a few more blowout rows.
    """
    weights = np.ones(len(labels))
    kinds = [kind for kind in np.unique(labels) if kind != ""]
    normal = max(int((labels == "").sum()), 1)
    for kind in kinds:
        rows = labels == kind
        weights[rows] = anomaly_weight * normal / len(kinds) / rows.sum()
    return weights


@dataclass
class Detector:
    """A detector: parameters as dataclass fields; ``fit`` learns from training rows; ``score`` is
    vectorised."""

    name: ClassVar[str]
    learns_threshold: ClassVar[bool] = True
    features: ClassVar[tuple[str, ...]] = MODEL_FEATURES
    threshold: float = float("nan")

    def fit(self, frame: pd.DataFrame, labels: np.ndarray, seed: int) -> Detector:
        """Learn from feature rows; ``labels``: each row's anomaly type, '' for normal (supervised only)."""
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The configurable parameters (not the threshold, not what ``fit`` learns)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "threshold" and not f.metadata.get("learned")
        }

    def flag(self, scores: np.ndarray) -> np.ndarray:
        return np.nan_to_num(scores, nan=-np.inf) > self.threshold


@dataclass
class FixedJump(Detector):
    """|simple return| from the previous quote above a fixed threshold (the price_jump rule)."""

    name: ClassVar[str] = "fixed_jump"
    learns_threshold: ClassVar[bool] = False
    features: ClassVar[tuple[str, ...]] = ("ret_1",)
    threshold: float = 0.05

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.abs(np.expm1(frame["ret_1"].to_numpy(np.float64)))


@dataclass
class RollingZscore(Detector):
    """|return z-score| against the previous 50 returns above a fixed threshold (the return_zscore rule)."""

    name: ClassVar[str] = "rolling_zscore"
    learns_threshold: ClassVar[bool] = False
    features: ClassVar[tuple[str, ...]] = ("ret_z",)
    threshold: float = 6.0

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.abs(frame["ret_z"].to_numpy(np.float64))


@dataclass
class _RobustDistance(Detector):
    """Largest robust z (distance from the training median in robust scale units) over watched features."""

    center: Any = field(default=None, repr=False, metadata=LEARNED)
    scale: Any = field(default=None, repr=False, metadata=LEARNED)

    def fit(self, frame: pd.DataFrame, labels: np.ndarray, seed: int) -> Detector:
        self.center, self.scale = robust_center_scale(frame[list(self.features)])
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[list(self.features)].to_numpy(np.float64)
        distance = np.abs(values - self.center) / self.scale
        return np.nanmax(np.where(np.isnan(distance), -np.inf, distance), axis=1)


@dataclass
class RobustZscore(_RobustDistance):
    name: ClassVar[str] = "robust_zscore"
    features: ClassVar[tuple[str, ...]] = WATCHED


@dataclass
class EwmaChart(_RobustDistance):
    """An EWMA control chart per series (λ = 0.2 over 50 quotes, see features.py), limits learned robustly.

    Smoothing lets a chart see small persistent shifts (a drift, a widened spread) a one-quote z-score
    misses; the burst and frozen-feed series are watched as they are.
    """

    name: ClassVar[str] = "ewma_chart"
    features: ClassVar[tuple[str, ...]] = EWMA_WATCHED


@dataclass
class IsolationForestDetector(Detector):
    """scikit-learn IsolationForest on robust-scaled features (missing values at the training median)."""

    name: ClassVar[str] = "isolation_forest"
    n_estimators: int = 200
    max_samples: int = 512
    center: Any = field(default=None, repr=False, metadata=LEARNED)
    scale: Any = field(default=None, repr=False, metadata=LEARNED)
    model: Any = field(default=None, repr=False, metadata=LEARNED)

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        values = (frame[list(self.features)].to_numpy(np.float64) - self.center) / self.scale
        # Clipped: a 900-sigma return and a 50-sigma one are equally isolated; the tree need not learn both.
        return np.clip(np.nan_to_num(values, nan=0.0), -50, 50)

    def fit(self, frame: pd.DataFrame, labels: np.ndarray, seed: int) -> Detector:
        from sklearn.ensemble import IsolationForest

        self.center, self.scale = robust_center_scale(frame[list(self.features)])
        self.model = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, random_state=seed, n_jobs=1
        ).fit(self._matrix(frame))
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return -self.model.score_samples(self._matrix(frame))


@dataclass
class GradientBoostingDetector(Detector):
    """scikit-learn HistGradientBoostingClassifier trained on the labels; the score is P(anomalous).

    The only supervised detector: it needs labelled history, which a surveillance team builds from
    reviewed alerts; here the generator's labels stand in for them.
    """

    name: ClassVar[str] = "gradient_boosting"
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    # Point anomalies are one quote each: a leaf must be allowed to hold a handful of rows.
    min_samples_leaf: int = 5
    # All anomalous rows together weigh this much against the normal ones (1: as much).
    anomaly_weight: float = 1.0
    model: Any = field(default=None, repr=False, metadata=LEARNED)

    def fit(self, frame: pd.DataFrame, labels: np.ndarray, seed: int) -> Detector:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.model = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            random_state=seed,
        ).fit(
            frame[list(self.features)].to_numpy(np.float64),
            labels != "",
            sample_weight=type_balanced_weights(labels, self.anomaly_weight),
        )
        return self

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(frame[list(self.features)].to_numpy(np.float64))[:, 1]


DETECTOR_CLASSES: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        FixedJump,
        RollingZscore,
        RobustZscore,
        EwmaChart,
        IsolationForestDetector,
        GradientBoostingDetector,
    )
}


def build_detector(name: str, params: dict[str, Any]) -> Detector:
    """A detector from its configured name and parameters; unknown parameters are an error."""
    if name not in DETECTOR_CLASSES:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTOR_CLASSES)}")
    cls = DETECTOR_CLASSES[name]
    allowed = set(cls().params()) | ({"threshold"} if not cls.learns_threshold else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"models.detectors.{name}: unknown parameter(s) {unknown}; allowed: {sorted(allowed) or 'none'}"
        )
    return cls(**params)
