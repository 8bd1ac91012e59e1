"""``python -m surveillance.warmup SETTINGS_JSON``: a short Spark run whose driver JVM writes the class-data
archive at its exit (see :func:`surveillance.spark.build_class_archive`).

It loads what a streaming query's start loads: Delta (create, append, MERGE, read), the Kafka source (a
plan only: no broker is needed), a stateful pandas step in a stream with a checkpoint, foreachBatch.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from surveillance.config import Settings
from surveillance.spark import get_spark


def _count_per_key(key: tuple, batches: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
    seen = state.get[0] if state.exists else 0
    seen += sum(len(batch) for batch in batches)
    state.update((seen,))
    yield pd.DataFrame({"key": [key[0]], "seen": [seen]})


def main(settings_json: str) -> None:
    settings = Settings.from_json(settings_json).with_overrides("spark.master=local[2]")
    spark = get_spark(settings, app_name="surveil-class-archive")
    from delta.tables import DeltaTable

    with tempfile.TemporaryDirectory(prefix="surveil-warmup-") as folder:
        table = f"{folder}/counts"
        spark.createDataFrame([(0, 0)], "key long, seen long").write.format("delta").save(table)
        spark.readStream.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:1").option(
            "subscribe", "warmup"
        ).load().select(F.col("value").cast("string"))

        def write(batch, batch_id: int) -> None:
            batch.write.format("delta").mode("append").save(table)
            DeltaTable.forPath(spark, table).alias("t").merge(
                batch.alias("s"), "t.key = s.key AND t.seen = s.seen"
            ).whenNotMatchedInsertAll().execute()

        counts = (
            spark.readStream.format("rate")
            .option("rowsPerSecond", 200)
            .load()
            .withColumn("key", F.col("value") % 4)
            .groupBy("key")
            .applyInPandasWithState(
                _count_per_key, "key long, seen long", "seen long", "append", GroupStateTimeout.NoTimeout
            )
        )
        query = (
            counts.writeStream.foreachBatch(write)
            .option("checkpointLocation", f"{folder}/checkpoint")
            .trigger(processingTime="1 second")
            .start()
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(query.recentProgress) < 4:
            time.sleep(0.5)
        query.stop()
        spark.read.format("delta").load(table).agg(F.max("seen")).collect()
    jvm = spark.sparkContext._gateway.proc
    spark.stop()
    # The JVM writes the archive as it exits, which it does when its stdin closes: wait for that.
    jvm.stdin.close()
    jvm.wait(300)


if __name__ == "__main__":
    main(sys.argv[1])
