"""Silver's arrival rules for one symbol's quotes, in pandas: which are new, which late, which out of order.

Both queries keep, per symbol in Spark's state store, what these rules need from earlier micro-batches (the
ids seen and the high-water mark, :class:`SeenQuotes`); :func:`arrive` applies them to one micro-batch:

* **new**: the first arrival of an event_id (by Kafka timestamp, partition, offset) that was not accepted
  before: an id is remembered while its event time is within ``dedup_horizon`` of the symbol's
  high-water mark *or* its arrival within ``dedup_horizon`` of the symbol's latest arrival (at most the
  last ``dedup_max_ids``). Either clock alone can be fooled: a quote stamped hours ahead moves the
  high-water mark past every earlier id, and a file replayed again hours later arrives long after the
  first copy; a re-sent quote is caught unless both are true;
* **late**: more than ``late_after`` behind the symbol's high-water mark before the batch (per symbol:
  partitions and symbols advance at their own pace, so an ordered replay is never late);
* **out of order**: an earlier-arrived new quote of the symbol has a later event time.

The lakehouse query writes the new quotes to silver with these flags; the detection query raises alerts
once per new quote. A backfill applies the same rules to silver history in Spark
(:func:`surveillance.pipeline.layers.new_silver_quotes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ARRIVAL_ORDER = ["kafka_micros", "kafka_partition", "kafka_offset"]


@dataclass(frozen=True)
class ArrivalLimits:
    late_after_micros: int  # a quote this far behind its symbol's high-water mark is late
    dedup_horizon_micros: int  # event_ids remembered this far behind the high-water mark...
    dedup_max_ids: int  # ...and at most this many per symbol


@dataclass(frozen=True)
class SeenQuotes:
    """What one symbol's earlier batches leave for the next: hashes of the ids accepted (with their event
    times and arrival times, to forget them past the horizon) and the latest event time accepted."""

    hashes: np.ndarray  # int64
    micros: np.ndarray  # int64, event time of each remembered id
    high_water: int | None
    arrivals: np.ndarray = field(default_factory=lambda: np.array([], np.int64))  # int64, Kafka time of each

    @classmethod
    def empty(cls) -> SeenQuotes:
        return cls(np.array([], np.int64), np.array([], np.int64), None, np.array([], np.int64))

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(hashes, times) as a state row stores them: the times are the event times then the arrivals, one
        binary value, so that the state's schema (fixed in a checkpoint) is the one it always was."""
        times = np.concatenate([self.micros, self.arrivals]).astype(np.int64)
        return np.ascontiguousarray(self.hashes, np.int64).tobytes(), times.tobytes()

    @classmethod
    def from_bytes(cls, hashes: bytes, times: bytes, high_water: int | None) -> SeenQuotes:
        """The inverse of :meth:`to_bytes`. A state written before arrivals were kept holds event times
        only: they stand in for the arrivals (an id is then kept at least as long as it was)."""
        ids = np.frombuffer(hashes, np.int64)
        values = np.frombuffer(times, np.int64)
        if len(values) == 2 * len(ids):
            return cls(ids, values[: len(ids)], high_water, values[len(ids) :])
        return cls(ids, values, high_water, values)


def event_id_hashes(event_ids: pd.Series) -> np.ndarray:
    """Stable 64-bit hashes of event_ids (the same in every process: pandas' fixed-key SipHash)."""
    return pd.util.hash_array(event_ids.to_numpy(dtype=object)).view(np.int64)


def arrive(seen: SeenQuotes, rows: pd.DataFrame, limits: ArrivalLimits) -> tuple[pd.DataFrame, SeenQuotes]:
    """One micro-batch of one symbol's accepted quotes -> (its new quotes in arrival order, with ``is_late``
    and ``is_out_of_order``, keeping ``rows``' index; what is seen after the batch). Pure."""
    arrived = rows.sort_values(ARRIVAL_ORDER, kind="mergesort")
    first = arrived[~arrived["event_id"].duplicated(keep="first")]
    hashes = event_id_hashes(first["event_id"])
    unseen = ~np.isin(hashes, seen.hashes)
    fresh, hashes = first[unseen].copy(), hashes[unseen]
    if fresh.empty:
        return fresh.assign(is_late=pd.Series(dtype=bool), is_out_of_order=pd.Series(dtype=bool)), seen
    micros = fresh["event_micros"].to_numpy(np.int64)
    before = seen.high_water
    frontier = np.maximum.accumulate(micros)
    earlier = np.concatenate([[np.iinfo(np.int64).min], frontier[:-1]])
    if before is not None:
        earlier = np.maximum(earlier, before)
    fresh["is_out_of_order"] = micros < earlier
    fresh["is_late"] = (micros < before - limits.late_after_micros) if before is not None else False
    high_water = int(frontier[-1]) if before is None else max(before, int(frontier[-1]))
    all_hashes = np.concatenate([seen.hashes, hashes])
    all_micros = np.concatenate([seen.micros, micros])
    all_arrivals = np.concatenate([seen.arrivals, fresh["kafka_micros"].to_numpy(np.int64)])
    horizon = limits.dedup_horizon_micros
    keep = (all_micros >= high_water - horizon) | (all_arrivals >= all_arrivals.max() - horizon)
    last = slice(-limits.dedup_max_ids, None)
    after = SeenQuotes(all_hashes[keep][last], all_micros[keep][last], high_water, all_arrivals[keep][last])
    return fresh, after
