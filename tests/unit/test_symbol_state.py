"""The detection query's per-symbol state step, on tiny pandas frames (no Spark)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from surveillance.detection.context import ContextWindows
from surveillance.detection.symbol_state import (
    CONTEXT_SCHEMA,
    ENRICHED_SCHEMA,
    StateLimits,
    SymbolState,
    accepted_rows,
    advance_symbol,
    new_quotes_in_context,
)
from surveillance.transforms.arrivals import SeenQuotes

LIMITS = StateLimits(
    tail_ticks=3, late_after_micros=600_000_000, dedup_horizon_micros=3_600_000_000, dedup_max_ids=4
)
SECOND = 1_000_000


def _rows(*quotes: tuple[str, int], first_offset: int = 0, arrived_at_s: int = 0) -> pd.DataFrame:
    """One symbol's quotes (event_id, event time in s), arriving in this order from ``arrived_at_s`` on."""
    ids = [event_id for event_id, _ in quotes]
    return pd.DataFrame(
        {
            "symbol": "ACME",
            "event_id": ids,
            "event_micros": [seconds * SECOND for _, seconds in quotes],
            "price": np.arange(len(ids), dtype=float) + 100.0,
            "volume": 10,
            "bid": 99.0,
            "ask": np.nan,
            "dq_warnings": [["bid_not_above_ask"] if i == 0 else [] for i in range(len(ids))],
            "kafka_partition": 0,
            "kafka_offset": np.arange(first_offset, first_offset + len(ids)),
            "kafka_micros": arrived_at_s * SECOND + np.arange(first_offset, first_offset + len(ids)),
        }
    )


def _round_trip(state: SymbolState) -> SymbolState:
    # As Spark stores it: a row of plain values.
    return SymbolState.from_row(state.to_row())


def test_first_batch_has_no_history_and_keeps_the_first_arrival_of_each_id() -> None:
    context, state = advance_symbol(
        SymbolState.empty(), _rows(("a", 1), ("b", 2), ("b", 2), ("c", 3)), LIMITS
    )
    assert list(context.columns) == CONTEXT_SCHEMA.fieldNames()
    assert list(context.event_id) == ["a", "b", "c"] and context.is_new.all()
    assert not context.is_late.any() and not context.is_out_of_order.any()
    assert state.max_event_micros == 3 * SECOND and list(state.tail.event_id) == ["a", "b", "c"]


def test_the_tail_comes_back_as_history_and_a_resent_id_is_dropped() -> None:
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1), ("b", 2), ("c", 3)), LIMITS)
    state = _round_trip(state)
    assert state.tail.dq_warnings.tolist() == [["bid_not_above_ask"], [], []]
    context, after = advance_symbol(state, _rows(("c", 3), ("d", 4), first_offset=3), LIMITS)
    assert list(context.event_id) == ["a", "b", "c", "d"]
    assert list(context.is_new) == [False, False, False, True]
    assert context.bid.iloc[0] == 99.0 and np.isnan(context.ask.iloc[0])
    # The tail keeps the last tail_ticks quotes in tick order.
    assert list(after.tail.event_id) == ["b", "c", "d"]


def test_lateness_and_order_are_per_symbol_against_its_own_high_water_mark() -> None:
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1000)), LIMITS)
    context, after = advance_symbol(
        _round_trip(state), _rows(("recent", 990), ("old", 100), ("next", 1001), first_offset=1), LIMITS
    )
    new = context[context.is_new].set_index("event_id")
    assert new.is_out_of_order.to_dict() == {"recent": True, "old": True, "next": False}
    assert new.is_late.to_dict() == {"recent": False, "old": True, "next": False}  # 900 s behind > 600 s
    assert after.max_event_micros == 1001 * SECOND
    # The late quote is in the tail at its place in tick order.
    assert list(after.tail.event_id) == ["recent", "a", "next"]


def test_seen_ids_are_bounded_by_horizon_and_count() -> None:
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1), ("b", 2), ("c", 3)), LIMITS)
    later = _rows(("d", 7200), ("e", 7201), first_offset=3, arrived_at_s=7200)
    _, state = advance_symbol(_round_trip(state), later, LIMITS)
    # a, b, c are more than an hour behind the high-water mark and arrived more than an hour before the
    # latest: forgotten; at most 4 ids are kept anyway.
    assert len(state.seen.hashes) == 2
    again = _rows(("e", 7201), ("f", 7202), first_offset=5, arrived_at_s=7201)
    context, _ = advance_symbol(_round_trip(state), again, LIMITS)
    assert list(context[context.is_new].event_id) == ["f"]


def test_a_quote_stamped_hours_ahead_does_not_make_the_symbol_forget_what_just_arrived() -> None:
    # "ahead" (a clock hours fast, yet within the plausible day) moves the high-water mark past a and b...
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1), ("b", 2), ("ahead", 20_000)), LIMITS)
    # ...but a and b arrived moments ago: sent again, they are still recognised.
    stored = _round_trip(state)
    context, after = advance_symbol(stored, _rows(("a", 1), ("b", 2), first_offset=3), LIMITS)
    assert context.empty and after is stored


def test_a_file_replayed_hours_later_is_recognised_by_its_event_times() -> None:
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1), ("b", 2)), LIMITS)
    replayed = _rows(("a", 1), ("b", 2), ("c", 3), first_offset=2, arrived_at_s=5 * 3600)
    context, _ = advance_symbol(_round_trip(state), replayed, LIMITS)
    assert list(context[context.is_new].event_id) == ["c"]


def test_a_state_written_before_arrivals_were_kept_still_reads() -> None:
    hashes = np.array([11, 22], np.int64).tobytes()
    event_times = np.array([5 * SECOND, 6 * SECOND], np.int64).tobytes()
    seen = SeenQuotes.from_bytes(hashes, event_times, 6 * SECOND)
    assert list(seen.hashes) == [11, 22] and list(seen.arrivals) == list(seen.micros) == [
        5 * SECOND,
        6 * SECOND,
    ]
    again = SeenQuotes.from_bytes(*seen.to_bytes(), seen.high_water)  # written anew: both clocks kept
    assert list(again.hashes) == [11, 22] and list(again.arrivals) == list(again.micros)
    assert len(seen.to_bytes()[1]) == 4 * 8


def test_a_batch_of_only_resent_ids_changes_nothing() -> None:
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1)), LIMITS)
    context, after = advance_symbol(state, _rows(("a", 1), first_offset=1), LIMITS)
    assert context.empty and after is state


def test_a_batch_of_only_re_sent_quotes_emits_nothing_and_keeps_the_state() -> None:
    windows = ContextWindows(zscore_window=3, volume_window=3, model_features=True)
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1), ("b", 2)), LIMITS)
    context, after = advance_symbol(state, _rows(("a", 1), ("b", 2), first_offset=2), LIMITS)
    assert after is state
    assert new_quotes_in_context(context, windows).empty


def test_new_quotes_carry_their_context_from_the_tail() -> None:
    windows = ContextWindows(zscore_window=3, volume_window=3, model_features=True)
    _, state = advance_symbol(SymbolState.empty(), _rows(("a", 1), ("b", 2)), LIMITS)
    context, _ = advance_symbol(_round_trip(state), _rows(("c", 3), first_offset=2), LIMITS)
    enriched = new_quotes_in_context(context, windows)
    assert list(enriched.columns) == ENRICHED_SCHEMA.fieldNames()
    (row,) = enriched.itertuples()
    assert row.event_id == "c" and row.prev_event_id == "b"
    assert row.prev_price == 101.0 and row.ret == pytest.approx(100.0 / 101.0 - 1)
    assert row.ret_n == 1 and row.volume_n == 2 and row.volume_mean == 10.0
    assert row.prev_dq_warnings == []


def test_the_operator_keeps_only_what_silver_accepts() -> None:
    records = _rows(("a", 1), ("b", 2)).assign(accepted=[True, False])
    records.loc[1, "event_micros"] = None  # a rejected record may lack any field
    kept = accepted_rows(records)
    assert list(kept.event_id) == ["a"] and kept.event_micros.dtype == np.int64
