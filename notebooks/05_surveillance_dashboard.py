# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Surveillance dashboard
# MAGIC
# MAGIC The alerts against the market: one symbol's one-minute candlesticks (gold bars) with a marker per
# MAGIC alert at the alerted quote's price, every alert on a timeline by rule and severity, and the alert
# MAGIC counts by rule and symbol.
# MAGIC
# MAGIC **Parameters**
# MAGIC - `env`: configuration overlay, `local` / `dev` / `prod` (default `local`)
# MAGIC - `overrides`: configuration assignments `key=value`, one per line or separated by `;`
# MAGIC - `symbol`: the symbol of the candlestick chart (default: empty, the symbol with the most alerts)

# COMMAND ----------

from surveillance.config import load_settings
from surveillance.lakehouse import table_locations
from surveillance.notebook import split_overrides
from surveillance.reporting.dashboard import (
    alert_heatmap_figure,
    alert_timeline_figure,
    candlestick_figure,
    load_dashboard,
)

dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"], "Environment")
dbutils.widgets.text("overrides", "", "Config overrides (key=value; ...)")
dbutils.widgets.text("symbol", "", "Symbol (empty: most alerts)")

# COMMAND ----------

env = dbutils.widgets.get("env")
symbol = dbutils.widgets.get("symbol").strip().upper() or None
assert env in ("local", "dev", "prod"), f"env must be local, dev or prod, not {env!r}"

settings = load_settings(env=env, overrides=split_overrides(dbutils.widgets.get("overrides")))
dashboard = load_dashboard(spark, table_locations(settings), symbol=symbol)
assert symbol is None or not dashboard.bars.empty, f"no gold bars for symbol {symbol!r}"
print(f"{len(dashboard.alerts):,} alerts; candlesticks for {dashboard.symbol} ({len(dashboard.bars):,} bars)")

# COMMAND ----------

candlestick_figure(dashboard.bars, dashboard.alerts, dashboard.symbol).show()

# COMMAND ----------

alert_timeline_figure(dashboard.alerts).show()
alert_heatmap_figure(dashboard.alerts).show()

# COMMAND ----------

display(dashboard.alerts)
