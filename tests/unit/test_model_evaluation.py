"""Event-level metrics on hand-made rows and labels, where every count can be checked by eye."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from surveillance.models.evaluation import (
    OVERALL,
    EventScorer,
    best_f1_threshold,
    choose_threshold,
    metrics_table,
    pr_curve,
    row_labels,
)

T0 = pd.Timestamp("2026-11-20T14:30:00Z")


def rows(symbol: str, seconds: list[float]) -> pd.DataFrame:
    micros = [
        int((T0 + pd.Timedelta(seconds=s) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(microseconds=1))
        for s in seconds
    ]
    return pd.DataFrame({"symbol": symbol, "event_micros": micros})


def label(symbol: str, start: float, end: float, kind: str) -> dict[str, object]:
    return {
        "symbol": symbol,
        "event_time": T0 + pd.Timedelta(seconds=start),
        "end_time": T0 + pd.Timedelta(seconds=end),
        "anomaly_type": kind,
    }


# Two symbols, one row a second for 10 minutes; a flash crash on AAA at 100-160 s, a stale feed on AAA at
# 400-450 s and a spread blowout on BBB at 200-210 s.
ROWS = pd.concat([rows("AAA", list(range(600))), rows("BBB", list(range(600)))], ignore_index=True)
LABELS = pd.DataFrame(
    [
        label("AAA", 100, 160, "flash_crash"),
        label("AAA", 400, 450, "stale_feed"),
        label("BBB", 200, 210, "spread_blowout"),
    ]
)


def flags(*ranges: tuple[str, int, int]) -> np.ndarray:
    out = np.zeros(len(ROWS), dtype=bool)
    for symbol, lo, hi in ranges:
        offset = 0 if symbol == "AAA" else 600
        out[offset + lo : offset + hi] = True
    return out


def scorer() -> EventScorer:
    return EventScorer(ROWS, LABELS, merge_gap_seconds=30, tolerance_seconds=10)


def test_hits_false_events_and_detections() -> None:
    # AAA: 95-99 s (inside the widened crash span: a hit), 300-305 s (false), 470-480 s (false: 20 s past
    # the stale span, beyond the 10 s tolerance); BBB: 205 s (hit).
    counts = scorer().count(flags(("AAA", 95, 100), ("AAA", 300, 306), ("AAA", 470, 481), ("BBB", 205, 206)))
    assert counts.predicted == 4
    assert counts.false == 2
    assert counts.hits == {"flash_crash": 1, "spread_blowout": 1, "stale_feed": 0}
    assert counts.detected == {"flash_crash": 1, "spread_blowout": 1, "stale_feed": 0}
    assert counts.precision() == pytest.approx(2 / 4)
    assert counts.recall() == pytest.approx(2 / 3)
    assert counts.precision("flash_crash") == pytest.approx(1 / 3)  # its hit against all false events
    assert counts.recall("stale_feed") == 0.0


def test_flags_close_together_merge_into_one_event() -> None:
    # 100-110 and 130-140: 20 s apart (< 30 s merge gap), one alert event; 200 s: another.
    counts = scorer().count(flags(("AAA", 100, 111), ("AAA", 130, 141), ("AAA", 200, 201)))
    assert counts.predicted == 2
    assert counts.false == 1


def test_nothing_flagged_has_no_precision_zero_recall_and_zero_f1() -> None:
    counts = scorer().count(np.zeros(len(ROWS), dtype=bool))
    assert (counts.predicted, counts.recall(), counts.f1()) == (0, 0.0, 0.0)
    assert np.isnan(counts.precision())


def test_row_labels_mark_rows_inside_spans() -> None:
    kinds = row_labels(ROWS, LABELS)
    assert (kinds == "flash_crash").sum() == 61
    assert (kinds == "spread_blowout").sum() == 11
    assert kinds[99] == "" and kinds[100] == "flash_crash"


def test_a_perfect_score_has_pr_auc_one_and_a_random_one_less() -> None:
    perfect = row_labels(ROWS, LABELS) != ""
    curve = pr_curve(scorer(), perfect.astype(float))
    assert curve.average_precision() == pytest.approx(1.0)
    noise = np.random.default_rng(0).random(len(ROWS))
    assert pr_curve(scorer(), noise).average_precision() < 0.7
    assert best_f1_threshold(scorer(), perfect.astype(float)) < 1.0


def test_metrics_table_has_a_row_per_type_and_overall() -> None:
    perfect = (row_labels(ROWS, LABELS) != "").astype(float)
    counts = scorer().count(perfect > 0.5)
    table = metrics_table(counts, pr_curve(scorer(), perfect))
    assert table.anomaly_type.tolist() == [OVERALL, "flash_crash", "spread_blowout", "stale_feed"]
    assert table.f1.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert table.labelled_events.tolist() == [3, 1, 1, 1]


def test_the_threshold_keeps_the_precision_asked_for_and_takes_the_most_recall_it_allows() -> None:
    # Scores: the three labelled spans at 0.9, 0.8 and 0.5; two ordinary stretches at 0.7 and 0.6.
    scores = np.zeros(len(ROWS))
    scores[100:160] = 0.9  # AAA flash crash
    scores[600 + 200 : 600 + 210] = 0.8  # BBB blowout
    scores[300:305] = 0.7  # AAA, nothing labelled: a false event
    scores[600 + 500 : 600 + 505] = 0.6  # BBB, another false event
    scores[400:450] = 0.5  # AAA stale feed
    at_best_f1 = best_f1_threshold(scorer(), scores)
    strict = choose_threshold(scorer(), scores, min_precision=1.0)
    assert scorer().count(scores > strict).recall() == pytest.approx(2 / 3)  # both false events kept out
    assert scorer().count(scores > strict).false == 0
    assert strict >= 0.7
    # Precision 0.6 allows both false events, and all three spans with them: the loosest threshold there.
    loose = choose_threshold(scorer(), scores, min_precision=0.6)
    assert scorer().count(scores > loose).recall() == 1.0 and loose < 0.5
    # 0 means the best F1; an unreachable precision falls back to it too.
    assert choose_threshold(scorer(), scores, 0.0) == at_best_f1
    scores[300:305] = 0.95  # a false event above every labelled span: precision 1 is out of reach
    assert choose_threshold(scorer(), scores, 1.0) == best_f1_threshold(scorer(), scores)
