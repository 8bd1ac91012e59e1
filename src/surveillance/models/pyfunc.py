"""The MLflow model: a fitted detector, its threshold and what it needs to explain a score.

Logged with ``mlflow.pyfunc.log_model``; whoever loads ``models:/market_anomaly@champion`` gets
``predict(features) -> score, is_anomaly, rarity, top_feature_<k>, top_deviation_<k>`` for any feature rows
from :func:`surveillance.models.features.quote_features`. Vectorised over the rows.

``rarity`` makes scores of different detectors comparable: the share of the *normal* training quotes that
score at least as high (1e-4: one normal quote in ten thousand). Alert severity is read from it.

Top contributing features are model-agnostic: the features the detector reads, ranked by how far the row's
value lies from the training median, in robust scale units (see ``robust_center_scale``).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from surveillance.models.detectors import Detector, robust_center_scale
from surveillance.models.features import FEATURE_COLUMNS


def model_incompatibility(model: Any) -> str:
    """Why a loaded model cannot score this version's features ('' when it can): a version trained before
    the features changed reads columns :func:`~surveillance.models.features.quote_features` no longer
    computes."""
    missing = [name for name in getattr(model, "features", []) if name not in FEATURE_COLUMNS]
    if not missing:
        return ""
    return (
        f"reads features this version no longer computes ({', '.join(missing)}); "
        "train a new one with `surveil models compare`"
    )


def output_columns(top_k: int) -> list[str]:
    """predict's columns: score, is_anomaly, then top_feature_<k> and top_deviation_<k> for k = 1..top_k."""
    names = ["score", "is_anomaly", "rarity"]
    for k in range(1, top_k + 1):
        names += [f"top_feature_{k}", f"top_deviation_{k}"]
    return names


class AnomalyModel(mlflow.pyfunc.PythonModel):
    """A detector as an MLflow pyfunc model."""

    def __init__(
        self, detector: Detector, training: pd.DataFrame, training_types: np.ndarray, top_k: int = 3
    ) -> None:
        """``training``: the fitted feature rows; ``training_types``: their anomaly type ('' = normal)."""
        self.detector = detector
        self.threshold = float(detector.threshold)
        self.features = list(detector.features)
        self.center, self.scale = robust_center_scale(training[self.features])
        normal_scores = np.asarray(detector.score(training[np.asarray(training_types) == ""]), np.float64)
        self.normal_scores = np.sort(normal_scores[np.isfinite(normal_scores)])
        self.top_k = top_k

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.score_frame(model_input)

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Scores, flags and the top contributing features of every row (NaN score: not enough data)."""
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise ValueError(f"the model needs feature columns {missing} (features from quote_features)")
        scores = np.asarray(self.detector.score(frame), dtype=np.float64)
        # Share of normal training quotes scoring at least this high (NaN scores: 1, nothing unusual).
        at_least = len(self.normal_scores) - np.searchsorted(self.normal_scores, scores, side="left")
        rarity = np.where(np.isnan(scores), 1.0, at_least / max(len(self.normal_scores), 1))
        flagged = self.detector.flag(scores)
        out = pd.DataFrame({"score": scores, "is_anomaly": flagged, "rarity": rarity}, index=frame.index)
        values = frame[self.features].to_numpy(np.float64)
        deviation = np.nan_to_num(np.abs(values - self.center) / self.scale, nan=-1.0)
        ranked = np.argsort(-deviation, axis=1, kind="stable")
        names = np.array(self.features, dtype=object)
        rows = np.arange(len(frame))
        for k in range(self.top_k):
            if k < len(self.features):
                out[f"top_feature_{k + 1}"] = names[ranked[:, k]]
                out[f"top_deviation_{k + 1}"] = deviation[rows, ranked[:, k]]
            else:  # a detector reading fewer features than top_k
                out[f"top_feature_{k + 1}"] = ""
                out[f"top_deviation_{k + 1}"] = np.nan
        return out[output_columns(self.top_k)]
