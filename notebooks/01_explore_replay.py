# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Explore and replay quotes
# MAGIC
# MAGIC Sends a quotes file to the Kafka quotes topic (the committed sample, or generated quotes), then
# MAGIC previews what the stream will make of the topic: every record read once in batch, turned into
# MAGIC bronze rows and parsed against the quote contract (valid, or the reason it is rejected). The Great
# MAGIC Expectations suites, deduplication and the watermark run in the stream (notebook 02). Last, the
# MAGIC newest rows of the bronze table, if the stream has created it.
# MAGIC
# MAGIC **Parameters**
# MAGIC - `env`: configuration overlay, `local` / `dev` / `prod` (default `local`)
# MAGIC - `overrides`: configuration assignments `key=value`, one per line or separated by `;`
# MAGIC - `sample`: a `.jsonl` / `.csv` quotes file, or `generate` (default
# MAGIC   `data/samples/quotes_sample.jsonl`). A relative path starts at the working directory: the project
# MAGIC   root locally, this notebook's folder on Databricks Runtime 14+ (there: `../data/samples/...`)
# MAGIC - `symbols`, `minutes`: the size of generated quotes (only with `sample` = `generate`)
# MAGIC - `replay`: `yes` sends the file to the topic, `no` only looks at what the topic holds

# COMMAND ----------

from pathlib import Path

from surveillance.config import load_settings, resolve_local_path
from surveillance.ingestion.generator import generate_quotes, write_jsonl
from surveillance.ingestion.replay import replay_file
from surveillance.kafka.admin import ensure_topics
from surveillance.lakehouse import table_locations
from surveillance.notebook import split_overrides
from surveillance.notebook.explore import (
    latest_bronze,
    messages_per_minute_figure,
    messages_per_symbol_figure,
    reject_reasons_figure,
    topic_preview,
)

dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"], "Environment")
dbutils.widgets.text("overrides", "", "Config overrides (key=value; ...)")
dbutils.widgets.text("sample", "data/samples/quotes_sample.jsonl", "Quotes file, or 'generate'")
dbutils.widgets.text("symbols", "8", "Generated symbols")
dbutils.widgets.text("minutes", "30", "Generated minutes")
dbutils.widgets.dropdown("replay", "yes", ["yes", "no"], "Send the file to Kafka")

# COMMAND ----------

env = dbutils.widgets.get("env")
sample = dbutils.widgets.get("sample").strip()
symbols = int(dbutils.widgets.get("symbols"))
minutes = int(dbutils.widgets.get("minutes"))
replay = dbutils.widgets.get("replay") == "yes"
assert env in ("local", "dev", "prod"), f"env must be local, dev or prod, not {env!r}"
assert sample, "sample must name a quotes file, or be 'generate'"
assert symbols >= 1 and minutes >= 1, "symbols and minutes must be at least 1"

settings = load_settings(env=env, overrides=split_overrides(dbutils.widgets.get("overrides")))
locations = table_locations(settings)
print(f"env {settings.env}: topic {settings.kafka.topics.quotes} on {settings.kafka.bootstrap_servers}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Replay a quotes file to Kafka

# COMMAND ----------

if sample == "generate":
    generated = generate_quotes(symbols=symbols, minutes=minutes, inject_anomalies=True, dirty=True)
    generated_file = Path(resolve_local_path(settings.state_dir)) / "notebooks" / "quotes.jsonl"
    quotes_file = write_jsonl(generated, generated_file)
else:
    quotes_file = Path(sample)
assert quotes_file.is_file(), f"no quotes file {quotes_file} (relative paths start at the working directory)"

ensure_topics(settings.kafka)
if replay:
    result = replay_file(quotes_file, settings.kafka, progress=False)
    assert result.ok, f"replay failed: {result.first_error}"
    print(f"sent {result.sent:,} messages from {quotes_file} in {result.elapsed_s:.1f} s")

# COMMAND ----------

# MAGIC %md
# MAGIC ## What the stream will make of the topic

# COMMAND ----------

preview = topic_preview(spark, settings)
print(
    f"{preview.messages:,} records in the topic: {preview.valid:,} meet the contract, "
    f"{preview.messages - preview.valid:,} are rejected"
)
display(preview.reasons)

# COMMAND ----------

messages_per_symbol_figure(preview.by_symbol).show()
messages_per_minute_figure(preview.by_minute).show()
reject_reasons_figure(preview.reasons).show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The bronze table (once the stream has run)

# COMMAND ----------

bronze = latest_bronze(spark, locations)
if bronze is None:
    print(f"no bronze table at {locations['bronze_quotes']} yet: run notebook 02")
else:
    display(bronze)
