# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Run the streaming pipeline
# MAGIC
# MAGIC Starts the streaming job (Kafka quotes -> bronze / silver / quarantine / gold / alerts, with the data
# MAGIC quality suites and the champion model, exactly as `surveil stream` runs it), prints a line per
# MAGIC micro-batch until the query has processed everything in the topic (or `max_minutes` pass), and always
# MAGIC stops it. Then: records, quarantine and alerts per micro-batch from the `stream_progress` table, and
# MAGIC the summary of what the lakehouse holds.
# MAGIC
# MAGIC **Parameters**
# MAGIC - `env`: configuration overlay, `local` / `dev` / `prod` (default `local`)
# MAGIC - `overrides`: configuration assignments `key=value`, one per line or separated by `;`
# MAGIC - `max_minutes`: stop watching (and stop the stream) after this many minutes even if not caught up

# COMMAND ----------

from surveillance.config import load_settings
from surveillance.lakehouse import table_locations
from surveillance.notebook import split_overrides
from surveillance.notebook.watch import batch_counts_figure, load_batch_progress, watch_stream
from surveillance.pipeline.stream import start_stream
from surveillance.reporting.summary import print_summary, summarize, wide_console

dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"], "Environment")
dbutils.widgets.text("overrides", "", "Config overrides (key=value; ...)")
dbutils.widgets.text("max_minutes", "10", "Watch at most (minutes)")

# COMMAND ----------

env = dbutils.widgets.get("env")
max_minutes = float(dbutils.widgets.get("max_minutes"))
assert env in ("local", "dev", "prod"), f"env must be local, dev or prod, not {env!r}"
assert max_minutes > 0, "max_minutes must be positive"

settings = load_settings(env=env, overrides=split_overrides(dbutils.widgets.get("overrides")))
locations = table_locations(settings)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Stream until caught up with the topic

# COMMAND ----------

query = start_stream(spark, settings)
try:
    watched = watch_stream(query, settings.kafka, max_minutes=max_minutes)
finally:
    query.stop()
print(f"query {query.name} stopped (active: {query.isActive})")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Micro-batches and the lakehouse

# COMMAND ----------

progress = load_batch_progress(spark, locations, stream_id=str(query.id))
display(progress)
batch_counts_figure(progress).show()

# COMMAND ----------

print_summary(summarize(spark, locations), wide_console())
