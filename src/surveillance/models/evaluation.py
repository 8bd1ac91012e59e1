"""Event-level evaluation of a detector against labelled anomaly spans.

An analyst reviews alerts, not rows, so we count events:

- **Predicted event**: flagged quotes of one symbol less than ``merge_gap`` apart, merged.
- **Hit**: a predicted event overlapping a labelled span widened by ``tolerance`` either side. Otherwise it
  is a false event.
- **Detected**: a labelled event with at least one flagged quote inside its widened span.
- **Precision** = hits / predicted events. **Recall** = detected / labelled events.
- **Per type**: recall_t = detected_t / labelled_t. precision_t = hits_t / (hits_t + false events), which
  ignores hits on other types.
- **PR-AUC**: average precision over a sweep of score thresholds (recall can only grow as the threshold
  falls, so the curve is a proper step function).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

OVERALL = "all"


@dataclass
class EventCounts:
    """Outcome of one threshold: predicted events, false ones, hits and detections per anomaly type."""

    predicted: int = 0
    false: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    detected: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)

    def precision(self, kind: str = OVERALL) -> float:
        """NaN when nothing was flagged (for that type): no alert, so no precision to speak of."""
        hits = sum(self.hits.values()) if kind == OVERALL else self.hits.get(kind, 0)
        flagged = hits + self.false
        return hits / flagged if flagged else float("nan")

    def recall(self, kind: str = OVERALL) -> float:
        found = sum(self.detected.values()) if kind == OVERALL else self.detected.get(kind, 0)
        total = sum(self.labelled.values()) if kind == OVERALL else self.labelled.get(kind, 0)
        return found / total if total else float("nan")

    def f1(self, kind: str = OVERALL) -> float:
        p, r = self.precision(kind), self.recall(kind)
        if np.isnan(p) or np.isnan(r):
            return 0.0 if r == 0 or np.isnan(p) else float("nan")
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


class EventScorer:
    """Counts events for any flag vector over fixed rows and labels (reused across a threshold sweep)."""

    def __init__(
        self,
        rows: pd.DataFrame,
        labels: pd.DataFrame,
        merge_gap_seconds: float,
        tolerance_seconds: float,
    ) -> None:
        """``rows``: symbol, event_micros (any order).

        ``labels``: symbol, event_time, end_time, anomaly_type.
        """
        self.merge_gap = round(merge_gap_seconds * 1e6)
        tolerance = round(tolerance_seconds * 1e6)
        self.order = np.lexsort((rows["event_micros"].to_numpy(), rows["symbol"].to_numpy()))
        symbols = rows["symbol"].to_numpy()[self.order]
        self.micros = rows["event_micros"].to_numpy(np.int64)[self.order]
        # [start, stop) row ranges per symbol in the sorted order.
        starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]]) if len(symbols) else np.array([])
        stops = np.r_[starts[1:], len(symbols)] if len(symbols) else np.array([])
        self.ranges = {symbols[a]: (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
        spans = span_micros(labels)
        self.kinds = sorted(labels["anomaly_type"].unique())
        self.spans: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for symbol, group in spans.groupby("symbol"):
            group = group.sort_values("start")
            self.spans[symbol] = (
                group["start"].to_numpy(np.int64) - tolerance,
                group["end"].to_numpy(np.int64) + tolerance,
                group["anomaly_type"].to_numpy(),
            )
        self.labelled = labels["anomaly_type"].value_counts().to_dict()

    def count(self, flagged: np.ndarray) -> EventCounts:
        """Event counts for a boolean flag per row (in the caller's row order)."""
        flagged_sorted = np.asarray(flagged, dtype=bool)[self.order]
        counts = EventCounts(
            hits=dict.fromkeys(self.kinds, 0),
            detected=dict.fromkeys(self.kinds, 0),
            labelled={kind: int(self.labelled.get(kind, 0)) for kind in self.kinds},
        )
        for symbol, (a, b) in self.ranges.items():
            times = self.micros[a:b][flagged_sorted[a:b]]
            starts, ends, kinds = self.spans.get(symbol, (np.array([]), np.array([]), np.array([])))
            if len(starts):
                inside = np.searchsorted(times, ends, "right") - np.searchsorted(times, starts, "left")
                _add(counts.detected, kinds[inside > 0])
            if not len(times):
                continue
            breaks = np.flatnonzero(np.diff(times) > self.merge_gap)
            event_starts = times[np.r_[0, breaks + 1]]
            event_ends = times[np.r_[breaks, len(times) - 1]]
            counts.predicted += len(event_starts)
            if not len(starts):
                counts.false += len(event_starts)
                continue
            # The last widened span starting at or before the event's end; a hit if it reaches its start.
            candidate = np.searchsorted(starts, event_ends, "right") - 1
            hit = (candidate >= 0) & (ends[np.maximum(candidate, 0)] >= event_starts)
            counts.false += int((~hit).sum())
            _add(counts.hits, kinds[candidate[hit]])
        return counts


def _add(totals: dict[str, int], kinds: np.ndarray) -> None:
    names, counts = np.unique(kinds.astype(str), return_counts=True)
    for name, count in zip(names, counts, strict=True):
        totals[name] += int(count)


def span_micros(labels: pd.DataFrame) -> pd.DataFrame:
    """Labels as symbol, start, end (microseconds since the epoch), anomaly_type."""

    def micros(column: str) -> np.ndarray:
        times = pd.to_datetime(labels[column], utc=True)
        return ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)

    end = "end_time" if "end_time" in labels.columns else "event_time"
    return pd.DataFrame(
        {
            "symbol": labels["symbol"].to_numpy(),
            "start": micros("event_time"),
            "end": micros(end),
            "anomaly_type": labels["anomaly_type"].to_numpy(),
        }
    )


def row_labels(rows: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """The anomaly type of each row whose quote lies inside a labelled span of its symbol, else ''."""
    out = np.full(len(rows), "", dtype=object)
    symbols = rows["symbol"].to_numpy()
    micros = rows["event_micros"].to_numpy(np.int64)
    for span in span_micros(labels).itertuples(index=False):
        inside = (symbols == span.symbol) & (micros >= span.start) & (micros <= span.end)
        out[inside] = span.anomaly_type
    return out


def candidate_thresholds(scores: np.ndarray, points: int = 150) -> np.ndarray:
    """Thresholds for a sweep: score quantiles concentrated where anomalies live (the top 20 %)."""
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        return np.array([0.0])
    top = np.quantile(finite, 1 - np.geomspace(0.2, 1e-5, points))
    return np.unique(np.r_[top, finite.max()])


@dataclass
class PrCurve:
    thresholds: np.ndarray
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]

    def average_precision(self, kind: str = OVERALL) -> float:
        """Step-wise area under the curve, from the strictest threshold (recall 0, precision 1) down."""
        recall = np.r_[0.0, self.recall[kind][::-1]]
        precision = np.r_[1.0, self.precision[kind][::-1]]
        if np.isnan(recall).all():
            return float("nan")
        return float(np.sum(np.diff(recall) * precision[1:]))


def pr_curve(scorer: EventScorer, scores: np.ndarray, thresholds: np.ndarray | None = None) -> PrCurve:
    """Event-level precision and recall per anomaly type and overall, for thresholds in increasing order."""
    thresholds = candidate_thresholds(scores) if thresholds is None else np.sort(thresholds)
    safe = np.nan_to_num(scores, nan=-np.inf)
    sweep = [scorer.count(safe > t) for t in thresholds]
    kinds = [OVERALL, *scorer.kinds]
    # Where nothing is flagged there is no false alert: precision 1, the usual start of a PR curve.
    return PrCurve(
        thresholds,
        {k: np.nan_to_num(np.array([c.precision(k) for c in sweep]), nan=1.0) for k in kinds},
        {k: np.array([c.recall(k) for c in sweep]) for k in kinds},
    )


def choose_threshold(scorer: EventScorer, scores: np.ndarray, min_precision: float = 0.0) -> float:
    """The threshold an analyst can live with: the highest event recall whose precision is at least
    ``min_precision`` (ties: the strictest); where no threshold reaches it, the best F1.

    Chosen on calibration data: on another market a detector's precision falls first (new kinds of normal
    look unusual), so a threshold at the F1 optimum of its own data floods analysts elsewhere.
    """
    curve = pr_curve(scorer, scores)
    p, r = curve.precision[OVERALL], curve.recall[OVERALL]
    allowed = (p >= min_precision) & (np.nan_to_num(r) > 0)  # flagging nothing is not an answer
    if min_precision <= 0 or not allowed.any():
        return best_f1_threshold(scorer, scores, curve)
    recall = np.where(allowed, np.nan_to_num(r), -1.0)
    best = np.flatnonzero(recall == recall.max())[-1]
    return float(curve.thresholds[best])


def best_f1_threshold(scorer: EventScorer, scores: np.ndarray, curve: PrCurve | None = None) -> float:
    """The threshold with the highest overall event F1 (ties: the strictest, fewer alerts)."""
    curve = curve if curve is not None else pr_curve(scorer, scores)
    p, r = curve.precision[OVERALL], curve.recall[OVERALL]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * p * r / (p + r))
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(curve.thresholds[best])


def metrics_table(counts: EventCounts, curve: PrCurve) -> pd.DataFrame:
    """One row per anomaly type and one for all: events, detected, precision, recall, F1, PR-AUC."""
    rows = []
    for kind in [OVERALL, *sorted(counts.labelled)]:
        labelled = sum(counts.labelled.values()) if kind == OVERALL else counts.labelled[kind]
        detected = sum(counts.detected.values()) if kind == OVERALL else counts.detected[kind]
        rows.append(
            {
                "anomaly_type": kind,
                "labelled_events": labelled,
                "detected_events": detected,
                "precision": counts.precision(kind),
                "recall": counts.recall(kind),
                "f1": counts.f1(kind),
                "pr_auc": curve.average_precision(kind),
            }
        )
    return pd.DataFrame(rows)
