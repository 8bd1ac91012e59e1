"""Per-symbol state of the lakehouse query: silver's dedup and arrival flags, and gold's open bars.

Every parsed and routed record of a micro-batch passes through one ``applyInPandasWithState`` step, grouped
by the symbol of the records silver accepts (records it rejects form one group with no state, and pass
through unchanged). For each symbol the state keeps:

* what :func:`surveillance.transforms.arrivals.arrive` needs: hashes of the event_ids accepted within
  ``dedup_horizon`` of the symbol's high-water mark, and that mark;
* the **open bars**: one accumulator per minute that a quote that is not late may still reach
  (:mod:`surveillance.transforms.gold`).

The step emits every record with ``is_new`` (silver takes it), ``is_late`` and ``is_out_of_order``, and
one row per bar the batch touched (``row_kind`` "bar"), whole: the micro-batch writes silver and gold from
them with no read of either table, so its cost does not grow with the tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState

from surveillance.transforms.arrivals import ArrivalLimits, SeenQuotes, arrive
from surveillance.transforms.gold import (
    BAR_STATE_COLUMNS,
    empty_bar_state,
    merge_bars,
    minute_partials,
    still_open,
)

RECORD, BAR = "record", "bar"

# The routed record's columns that cross into Python (times as microseconds: a rejected record's time may
# lie outside what pandas' nanosecond timestamps hold). The parsed VARIANT does not cross; what needs it
# afterwards parses ``value`` again.
RECORD_FIELDS = [
    T.StructField("key", T.StringType()),
    T.StructField("value", T.StringType()),
    T.StructField("topic", T.StringType()),
    T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()),
    T.StructField("kafka_micros", T.LongType()),
    T.StructField("_raw_event_id", T.StringType()),
    T.StructField("_raw_symbol", T.StringType()),
    T.StructField("_raw_event_time", T.StringType()),
    T.StructField("_raw_price", T.DoubleType()),
    T.StructField("_raw_volume", T.LongType()),
    T.StructField("_raw_bid", T.DoubleType()),
    T.StructField("_raw_ask", T.DoubleType()),
    T.StructField("event_micros", T.LongType()),
    T.StructField("reject_reason", T.StringType()),
    T.StructField("dq_errors", T.ArrayType(T.StringType())),
    T.StructField("dq_warnings", T.ArrayType(T.StringType())),
]
INPUT_SCHEMA = T.StructType([T.StructField("state_key", T.StringType()), *RECORD_FIELDS])
BAR_FIELDS = [
    T.StructField("bar_symbol", T.StringType()),
    T.StructField("bar_minute_micros", T.LongType()),
    T.StructField("bar_open", T.DoubleType()),
    T.StructField("bar_high", T.DoubleType()),
    T.StructField("bar_low", T.DoubleType()),
    T.StructField("bar_close", T.DoubleType()),
    T.StructField("bar_volume", T.LongType()),
    T.StructField("bar_notional", T.DoubleType()),
    T.StructField("bar_trade_count", T.LongType()),
    T.StructField("bar_first_micros", T.LongType()),
    T.StructField("bar_last_micros", T.LongType()),
    T.StructField("bar_volume_before", T.LongType()),
    T.StructField("bar_count_before", T.LongType()),
]
FLAG_FIELDS = [T.StructField(name, T.BooleanType()) for name in ("is_new", "is_late", "is_out_of_order")]
OUTPUT_SCHEMA = T.StructType(
    [T.StructField("row_kind", T.StringType()), *RECORD_FIELDS, *FLAG_FIELDS, *BAR_FIELDS]
)
STATE_SCHEMA = T.StructType(
    [
        T.StructField("seen_hashes", T.BinaryType()),  # int64, native byte order
        T.StructField("seen_micros", T.BinaryType()),  # event times, then arrivals (SeenQuotes.to_bytes)
        T.StructField("max_event_micros", T.LongType()),
        T.StructField("open_bars", T.BinaryType()),  # Arrow IPC stream of BAR_STATE_COLUMNS
    ]
)
_BARS_ARROW = pa.schema(
    [
        (name, pa.string() if kind == "object" else pa.from_numpy_dtype(kind))
        for name, kind in BAR_STATE_COLUMNS.items()
    ]
)
# What the arrival rules and the bars read, under silver's names.
_QUOTE_NAMES = {
    "_raw_event_id": "event_id",
    "event_micros": "event_micros",
    "kafka_micros": "kafka_micros",
    "partition": "kafka_partition",
    "offset": "kafka_offset",
    "_raw_price": "price",
    "_raw_volume": "volume",
}
_INTEGERS = [f.name for f in RECORD_FIELDS if isinstance(f.dataType, T.IntegerType | T.LongType)]


def state_input(routed: DataFrame) -> DataFrame:
    """Routed records (:func:`surveillance.pipeline.layers.route_quotes`) in :data:`INPUT_SCHEMA`: keyed by
    the symbol of an accepted record, NULL for a rejected one."""
    accepted = F.col("reject_reason").isNull()
    converted = {
        "state_key": F.when(accepted, F.col("_raw_symbol")),
        "kafka_micros": F.unix_micros("kafka_timestamp"),
        "event_micros": F.unix_micros("_event_time"),
    }
    return routed.select(*[converted.get(f.name, F.col(f.name)).alias(f.name) for f in INPUT_SCHEMA.fields])


def routed_records(rows: DataFrame) -> DataFrame:
    """The step's record rows back in the routed records' columns (times as timestamps again), with the
    flags; ``_doc`` parsed again from ``value`` (Spark parses it only where it is read)."""
    records = rows.where(F.col("row_kind") == RECORD)
    restored: dict[str, Column] = {
        "kafka_timestamp": F.timestamp_micros("kafka_micros"),
        "_event_time": F.col("_raw_event_time").try_cast("timestamp"),
        "_doc": F.try_parse_json("value"),
    }
    kept = [f.name for f in RECORD_FIELDS if f.name not in ("kafka_micros", "event_micros")]
    return records.select(
        *kept, *[c.alias(n) for n, c in restored.items()], "is_new", "is_late", "is_out_of_order"
    )


def touched_bars(rows: DataFrame) -> DataFrame:
    """The step's bar rows: each bar a micro-batch touched, whole, with what it held before the batch."""
    return rows.where(F.col("row_kind") == BAR).select(
        *[F.col(f.name).alias(f.name.removeprefix("bar_")) for f in BAR_FIELDS]
    )


def _decode(row: tuple) -> tuple[SeenQuotes, pd.DataFrame]:
    values = dict(zip(STATE_SCHEMA.fieldNames(), row, strict=True))
    seen = SeenQuotes.from_bytes(
        bytes(values["seen_hashes"]), bytes(values["seen_micros"]), values["max_event_micros"]
    )
    bars = pa.ipc.open_stream(bytes(values["open_bars"])).read_all().to_pandas()
    return seen, bars.astype(BAR_STATE_COLUMNS)


def _encode(seen: SeenQuotes, bars: pd.DataFrame) -> tuple:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, _BARS_ARROW) as writer:
        writer.write_table(pa.Table.from_pandas(bars, schema=_BARS_ARROW, preserve_index=False))
    return (
        *seen.to_bytes(),
        None if seen.high_water is None else int(seen.high_water),
        sink.getvalue().to_pybytes(),
    )


def advance_silver(
    seen: SeenQuotes, open_bars: pd.DataFrame, records: pd.DataFrame, limits: ArrivalLimits
) -> tuple[pd.DataFrame, pd.DataFrame, SeenQuotes, pd.DataFrame]:
    """One micro-batch of one symbol's accepted records: (the records with their flags, the touched bars
    whole, what is seen after, the open bars after). Pure."""
    quotes = records[list(_QUOTE_NAMES)].rename(columns=_QUOTE_NAMES)
    fresh, after = arrive(seen, quotes, limits)
    flagged = records.assign(is_new=False, is_late=False, is_out_of_order=False)
    flagged.loc[fresh.index, "is_new"] = True
    flagged.loc[fresh.index, "is_late"] = fresh["is_late"].to_numpy(bool)
    flagged.loc[fresh.index, "is_out_of_order"] = fresh["is_out_of_order"].to_numpy(bool)
    on_time = fresh[~fresh["is_late"].to_numpy(bool)]
    touched = empty_bar_state().assign(volume_before=0, count_before=0)
    bars_after = open_bars
    if not on_time.empty:
        touched = merge_bars(open_bars, minute_partials(on_time))
        kept = open_bars[~open_bars["minute_micros"].isin(touched["minute_micros"])]
        bars_after = pd.concat([kept, touched[list(BAR_STATE_COLUMNS)]], ignore_index=True)
    if after.high_water is not None:
        bars_after = still_open(bars_after, after.high_water, limits.late_after_micros)
    return flagged, touched, after, bars_after.sort_values("minute_micros", ignore_index=True)


def _record_rows(records: pd.DataFrame) -> pd.DataFrame:
    out = records.assign(row_kind=RECORD)
    for name in _INTEGERS:
        out[name] = out[name].astype("Int64")  # a rejected record's missing numbers made them floats
    return _with_nulls(out, [f.name for f in BAR_FIELDS])


def _with_nulls(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    # Columns of the other kind of row: NULL (None, not NaN: Arrow refuses NaN as an array or a string).
    for name in names:
        frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame.reindex(columns=OUTPUT_SCHEMA.fieldNames())


def _bar_rows(symbol: str, bars: pd.DataFrame) -> pd.DataFrame:
    renamed = bars.rename(
        columns={
            "minute_micros": "bar_minute_micros",
            "first_micros": "bar_first_micros",
            "last_micros": "bar_last_micros",
            **{name: f"bar_{name}" for name in ("open", "high", "low", "close", "volume", "notional")},
            "trade_count": "bar_trade_count",
            "volume_before": "bar_volume_before",
            "count_before": "bar_count_before",
        }
    )
    rows = renamed.assign(row_kind=BAR, bar_symbol=symbol)
    return _with_nulls(rows, [f.name for f in (*RECORD_FIELDS, *FLAG_FIELDS)])


StateFunction = Callable[[tuple, Iterator[pd.DataFrame], GroupState], Iterator[pd.DataFrame]]


def silver_state_function(limits: ArrivalLimits) -> StateFunction:
    """The ``applyInPandasWithState`` function of the lakehouse query (see the module's docstring)."""

    def apply(key: tuple, batches: Iterator[pd.DataFrame], group_state: GroupState) -> Iterator[pd.DataFrame]:
        # PySpark concatenates the record and bar rows we yield; pandas warns about their all-NULL columns.
        warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation", FutureWarning)
        records = pd.concat(list(batches), ignore_index=True).drop(columns="state_key")
        if key[0] is None:  # rejected records: no state, nothing new
            yield _record_rows(records.assign(is_new=False, is_late=False, is_out_of_order=False))
            return
        if group_state.exists:
            seen, open_bars = _decode(group_state.get)
        else:
            seen, open_bars = SeenQuotes.empty(), empty_bar_state()
        for name in ("kafka_micros", "event_micros", "partition", "offset"):
            records[name] = records[name].astype("int64")
        flagged, touched, after, bars_after = advance_silver(seen, open_bars, records, limits)
        group_state.update(_encode(after, bars_after))
        yield _record_rows(flagged)
        if not touched.empty:
            yield _bar_rows(key[0], touched)

    return apply
