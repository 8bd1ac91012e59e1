"""A failed micro-batch as Spark itself judges it: its real stop classifier on what our batches raise."""

from __future__ import annotations

import traceback
from typing import Any

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from surveillance.pipeline.batch_errors import BatchFailed, reporting_batch_errors

pytestmark = pytest.mark.integration


def _what_spark_receives(spark: SparkSession, body: Any) -> Any:
    """The Py4JException Spark's stream thread gets from a foreachBatch body that raised: py4j sends
    the Python side's formatted traceback as its message."""
    try:
        reporting_batch_errors("quotes_to_lakehouse", body)(None, 3)
    except BatchFailed:
        formatted = traceback.format_exc()
    else:
        raise AssertionError("the body did not fail")
    return spark._jvm.py4j.Py4JException(
        f"An exception was raised by the Python Proxy. Return Message: {formatted}"
    )


def _is_spark_stop(spark: SparkSession, error: Any) -> bool:
    stream_execution = spark._jvm.org.apache.spark.sql.execution.streaming.runtime.StreamExecution
    return bool(stream_execution.isInterruptionException(error, spark.sparkContext._jsc.sc()))


def test_a_batch_interrupted_by_the_stop_is_judged_a_stop_not_a_stack_overflow(spark: SparkSession) -> None:
    def interrupted_mid_job(rows: Any, batch_id: int) -> None:
        # What query.stop() does to a batch waiting on a Spark job: its thread is interrupted.
        spark._jvm.java.lang.Thread.currentThread().interrupt()
        spark.range(100).repartition(3).collect()

    try:
        interrupted_mid_job(None, 3)
    except Py4JJavaError:
        raw = traceback.format_exc()
    # Long enough to overflow the regex Spark classifies a stop with, when passed on as it is...
    assert "java.lang.InterruptedException" in raw and len(raw) > 4_000
    # ...which is why what Spark receives is its exception lines only.
    assert _is_spark_stop(spark, _what_spark_receives(spark, interrupted_mid_job))


def test_a_batch_that_really_fails_is_judged_a_failure_with_its_cause_named(spark: SparkSession) -> None:
    def failing_write(rows: Any, batch_id: int) -> None:
        spark._jvm.java.io.FileOutputStream("/proc/no-such-lake/part-0000.parquet")

    with pytest.raises(Py4JJavaError, match="FileNotFoundException"):  # not one PySpark converts
        failing_write(None, 3)
    error = _what_spark_receives(spark, failing_write)
    assert not _is_spark_stop(spark, error)
    message = error.getMessage()
    assert "java.io.FileNotFoundException: /proc/no-such-lake/part-0000.parquet" in message
    assert "\tat " not in message and len(message) < 3_000  # no Java frames: short for Spark's regex
