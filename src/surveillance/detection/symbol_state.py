"""Per-symbol state of the detection query, kept in Spark's state store (``applyInPandasWithState``).

For each symbol the state holds what the detectors need from before the micro-batch, and nothing more:

* the **tail**: the last ``tail_ticks`` accepted quotes in tick order (event time, then event_id), with their
  warn expectations: the previous price however old it is (an overnight gap, a halt), the rules' rolling
  windows and the model's feature history (``models.features.HISTORY_TICKS``);
* the **high-water mark**: the latest event time accepted, against which a quote is late or out of order;
* the **seen ids**: 64-bit hashes of the event_ids accepted within ``dedup_horizon`` of the high-water mark
  (at most ``dedup_max_ids``), so that a re-sent quote raises no second alert.

A batch's rows of one symbol go through :func:`advance_symbol`, a pure pandas function: it drops re-sent
and repeated event_ids, flags lateness per symbol, and returns the tail (``is_new`` false) followed by the
new quotes (``is_new`` true). The operator then attaches each new quote's context
(:func:`~surveillance.detection.context.tick_context`, the same function a backfill applies to silver
history plus new quotes) and emits the new quotes only, so the detectors downstream are row filters.
The state lives in the checkpoint: a restart resumes with it.

The state is one row per symbol of compact binary fields (the tail as an Arrow IPC stream, the seen ids as
raw int64 arrays): decoding and encoding it costs microseconds, not a Python object per remembered id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState

from surveillance.detection.context import (
    CONTEXT_FIELDS,
    ContextWindows,
    sort_symbol_ticks,
    tick_context,
)
from surveillance.transforms.arrivals import ArrivalLimits, SeenQuotes, arrive

# The quote columns the operator receives (and returns, with the flags), one row per Kafka record.
INPUT_SCHEMA = T.StructType(
    [
        T.StructField("symbol", T.StringType()),
        T.StructField("event_id", T.StringType()),
        T.StructField("event_micros", T.LongType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("volume", T.LongType()),
        T.StructField("bid", T.DoubleType()),
        T.StructField("ask", T.DoubleType()),
        T.StructField("dq_warnings", T.ArrayType(T.StringType())),
        T.StructField("kafka_partition", T.IntegerType()),
        T.StructField("kafka_offset", T.LongType()),
        T.StructField("kafka_micros", T.LongType()),
    ]
)
# What the operator receives: every parsed record, with the verdict silver gives it.
OPERATOR_INPUT_SCHEMA = T.StructType([T.StructField("accepted", T.BooleanType()), *INPUT_SCHEMA.fields])
CONTEXT_SCHEMA = T.StructType(
    [
        *INPUT_SCHEMA.fields,
        T.StructField("is_late", T.BooleanType()),
        T.StructField("is_out_of_order", T.BooleanType()),
        T.StructField("is_new", T.BooleanType()),
    ]
)
# What the operator emits: each new quote with its flags and its context.
ENRICHED_SCHEMA = T.StructType(
    [
        *INPUT_SCHEMA.fields,
        T.StructField("is_late", T.BooleanType()),
        T.StructField("is_out_of_order", T.BooleanType()),
        *CONTEXT_FIELDS,
    ]
)
_TAIL = ("event_id", "event_micros", "price", "volume", "bid", "ask")
_TAIL_ARROW = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_micros", pa.int64()),
        ("price", pa.float64()),
        ("volume", pa.int64()),
        ("bid", pa.float64()),
        ("ask", pa.float64()),
        ("dq_warnings", pa.list_(pa.string())),
    ]
)
STATE_SCHEMA = T.StructType(
    [
        T.StructField("tail", T.BinaryType()),  # Arrow IPC stream of _TAIL_ARROW
        T.StructField("seen_hashes", T.BinaryType()),  # int64, native byte order
        T.StructField("seen_micros", T.BinaryType()),
        T.StructField("max_event_micros", T.LongType()),
    ]
)


@dataclass(frozen=True)
class StateLimits:
    tail_ticks: int  # quotes kept per symbol for the rules' windows and the model's features
    late_after_micros: int  # a quote this far behind its symbol's high-water mark is late
    dedup_horizon_micros: int  # event_ids remembered this far behind the high-water mark...
    dedup_max_ids: int  # ...and at most this many per symbol

    @property
    def arrival(self) -> ArrivalLimits:
        return ArrivalLimits(self.late_after_micros, self.dedup_horizon_micros, self.dedup_max_ids)


@dataclass
class SymbolState:
    tail: pd.DataFrame  # _TAIL columns + dq_warnings (lists), tick order
    seen: SeenQuotes  # the ids accepted, and the symbol's high-water mark

    @property
    def max_event_micros(self) -> int | None:
        return self.seen.high_water

    @classmethod
    def empty(cls) -> SymbolState:
        tail = pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in _TAIL})
        tail["dq_warnings"] = pd.Series(dtype=object)
        return cls(tail, SeenQuotes.empty())

    @classmethod
    def from_row(cls, row: tuple) -> SymbolState:
        values = dict(zip(STATE_SCHEMA.fieldNames(), row, strict=True))
        table = pa.ipc.open_stream(bytes(values["tail"])).read_all()
        tail = table.to_pandas()
        tail["dq_warnings"] = [list(w) if w is not None else [] for w in tail["dq_warnings"]]
        seen = SeenQuotes.from_bytes(
            bytes(values["seen_hashes"]), bytes(values["seen_micros"]), values["max_event_micros"]
        )
        return cls(tail, seen)

    def to_row(self) -> tuple:
        tail = self.tail[[*_TAIL, "dq_warnings"]]
        table = pa.Table.from_pandas(tail, schema=_TAIL_ARROW, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, _TAIL_ARROW) as writer:
            writer.write_table(table)
        return (
            sink.getvalue().to_pybytes(),
            *self.seen.to_bytes(),
            None if self.max_event_micros is None else int(self.max_event_micros),
        )


def _dtype(name: str) -> str:
    return {"event_id": "object", "event_micros": "int64", "volume": "int64"}.get(name, "float64")


def advance_symbol(
    state: SymbolState, rows: pd.DataFrame, limits: StateLimits
) -> tuple[pd.DataFrame, SymbolState]:
    """One micro-batch of one symbol: (its context rows, the state after it). Pure: no I/O, no Spark."""
    fresh, after_seen = arrive(state.seen, rows, limits.arrival)
    fresh = fresh.reset_index(drop=True)
    if fresh.empty:
        return _context(state.tail.iloc[:0], fresh, rows.iloc[:0]), state
    fresh["is_new"] = True
    tail = state.tail.assign(is_new=False)
    merged = pd.concat([tail, fresh[[*_TAIL, "dq_warnings", "is_new"]]], ignore_index=True)
    merged = merged.sort_values(["event_micros", "event_id"], kind="mergesort", ignore_index=True)
    after = SymbolState(
        merged[[*_TAIL, "dq_warnings"]].iloc[-limits.tail_ticks :].reset_index(drop=True), after_seen
    )
    return _context(state.tail, fresh, rows), after


def _context(tail: pd.DataFrame, fresh: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    history = tail.assign(
        symbol=template["symbol"].iloc[0] if len(template) else None,
        kafka_partition=None,
        kafka_offset=None,
        kafka_micros=None,
        is_late=False,
        is_out_of_order=False,
        is_new=False,
    )
    return pd.concat([history, fresh], ignore_index=True).reindex(columns=CONTEXT_SCHEMA.fieldNames())


StateFunction = Callable[[tuple, Iterator[pd.DataFrame], "GroupState"], Iterator[pd.DataFrame]]


_ALWAYS_SET = ("kafka_partition", "kafka_offset", "kafka_micros")
_USUALLY_SET = ("event_micros", "volume")  # required by the default suite; a user may relax that


def accepted_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The records silver accepts, in :data:`INPUT_SCHEMA`, integer columns as integers again (a
    rejected record's missing values made them floats on the way in)."""
    kept = records[records["accepted"].fillna(False).to_numpy(bool)]
    integers = [*_ALWAYS_SET, *[name for name in _USUALLY_SET if kept[name].notna().all()]]
    return kept.astype({name: "int64" for name in integers}).reset_index(drop=True)[INPUT_SCHEMA.fieldNames()]


def new_quotes_in_context(context: pd.DataFrame, windows: ContextWindows) -> pd.DataFrame:
    """The new quotes of :func:`advance_symbol`'s output, each with its per-symbol context attached."""
    if not context["is_new"].to_numpy(bool).any():  # every quote was a re-send
        return pd.DataFrame(columns=ENRICHED_SCHEMA.fieldNames())
    ticks = sort_symbol_ticks(context)
    enriched = tick_context(ticks, windows)
    return enriched[enriched["is_new"].to_numpy(bool)].reindex(columns=ENRICHED_SCHEMA.fieldNames())


def symbol_state_function(limits: StateLimits, windows: ContextWindows) -> StateFunction:
    """The ``applyInPandasWithState`` function: :func:`advance_symbol`, then the new quotes' context."""

    def apply(key: tuple, batches: Iterator[pd.DataFrame], group_state: GroupState) -> Iterator[pd.DataFrame]:
        rows = accepted_rows(pd.concat(list(batches), ignore_index=True))
        if rows.empty:  # nothing silver accepts (a record without a symbol lands here): state unchanged
            yield pd.DataFrame(columns=ENRICHED_SCHEMA.fieldNames())
            return
        state = SymbolState.from_row(group_state.get) if group_state.exists else SymbolState.empty()
        context, after = advance_symbol(state, rows, limits)
        if after is not state:
            group_state.update(after.to_row())
        yield new_quotes_in_context(context, windows)

    return apply
