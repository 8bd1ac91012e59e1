# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Data quality
# MAGIC
# MAGIC What the Great Expectations suites found, read from the lakehouse (`dq_results`, `stream_progress`,
# MAGIC `quarantine_quotes`): the last micro-batches with the expectations they failed, the pass rate of every
# MAGIC expectation per micro-batch, quotes per batch by outcome (quarantined, warned, late, out of order) and
# MAGIC the quarantine reasons. The same figures as `surveil dq report`.
# MAGIC
# MAGIC **Parameters**
# MAGIC - `env`: configuration overlay, `local` / `dev` / `prod` (default `local`)
# MAGIC - `overrides`: configuration assignments `key=value`, one per line or separated by `;`
# MAGIC - `last`: how many of the latest micro-batches to chart (default 200)

# COMMAND ----------

from surveillance.config import load_settings
from surveillance.lakehouse import table_locations
from surveillance.notebook import split_overrides
from surveillance.notebook.data_quality import load_quality_history
from surveillance.quality.report import (
    arrival_figure,
    load_dq_status,
    pass_rate_figure,
    quarantine_reasons_figure,
)

dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"], "Environment")
dbutils.widgets.text("overrides", "", "Config overrides (key=value; ...)")
dbutils.widgets.text("last", "200", "Latest micro-batches")

# COMMAND ----------

env = dbutils.widgets.get("env")
last = int(dbutils.widgets.get("last"))
assert env in ("local", "dev", "prod"), f"env must be local, dev or prod, not {env!r}"
assert last >= 1, "last must be at least 1"

settings = load_settings(env=env, overrides=split_overrides(dbutils.widgets.get("overrides")))
locations = table_locations(settings)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The last micro-batches and what they failed

# COMMAND ----------

status = load_dq_status(spark, locations, last=10)
display(status.batches)
display(status.failures)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Pass rates, outcomes per batch, quarantine reasons

# COMMAND ----------

history = load_quality_history(spark, locations, last=last)
pass_rate_figure(history.results).show()
arrival_figure(history.batches).show()
quarantine_reasons_figure(history.reasons).show()
display(history.reasons.sort_values("records", ascending=False))
