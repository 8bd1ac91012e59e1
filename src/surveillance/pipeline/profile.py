"""Where a micro-batch spends its time: wall seconds per named step and the Spark jobs it ran.

Each micro-batch of each query tags its Spark jobs with a job group (``<query>:<batch id>``), in its own
thread and in every writer thread it starts, and times its steps. The figures land in ``stream_progress``
(``step_seconds``, ``spark_jobs``) and ``make bench`` prints them: they are how a run is tuned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pyspark.sql import SparkSession

T = TypeVar("T")


class BatchProfile:
    """Step timings and the Spark job group of one micro-batch of one query."""

    def __init__(self, spark: SparkSession, query: str, batch_id: int, pool: str | None = None) -> None:
        self.spark = spark
        self.group = f"{query}:{batch_id}"
        self.pool = pool
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self.tag_thread()

    def tag_thread(self) -> None:
        """Put the Spark jobs this thread starts into the batch's job group (and scheduler pool)."""
        context = self.spark.sparkContext
        context.setJobGroup(self.group, self.group, interruptOnCancel=False)
        if self.pool is not None:
            context.setLocalProperty("spark.scheduler.pool", self.pool)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step (steps of the same name add up, e.g. over writer threads)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def in_thread(self, step: str, work: Callable[..., T], *args: Any) -> Callable[[], T]:
        """``work(*args)`` as a task for another thread: tagged with the job group and timed as ``step``."""

        def run() -> T:
            self.tag_thread()
            with self.step(step):
                return work(*args)

        return run

    def spark_jobs(self) -> int:
        """How many Spark jobs the batch has run so far."""
        return len(self.spark.sparkContext.statusTracker().getJobIdsForGroup(self.group))

    def total_seconds(self) -> float:
        return time.perf_counter() - self.started

    def step_seconds(self) -> dict[str, float]:
        """{step: seconds}, plus ``total`` (the whole batch, wall clock)."""
        with self._lock:
            return {
                **{k: round(v, 4) for k, v in self.seconds.items()},
                "total": round(self.total_seconds(), 4),
            }
