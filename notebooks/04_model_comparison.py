# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Anomaly models: compare, track, promote
# MAGIC
# MAGIC Trains and evaluates every configured detector on the labelled train and test sets, logs each as an
# MAGIC MLflow run, registers the best and gives it the champion alias if it beats the current champion
# MAGIC (`surveil models compare`). Then the experiment's runs as tables, the precision-recall curves, and
# MAGIC the registered versions with the champion the stream scores with.
# MAGIC
# MAGIC **Parameters**
# MAGIC - `env`: configuration overlay, `local` / `dev` / `prod` (default `local`)
# MAGIC - `overrides`: configuration assignments `key=value`, one per line or separated by `;`
# MAGIC - `run_comparison`: `yes` trains and compares now; `no` only shows what MLflow holds

# COMMAND ----------

import pandas as pd

from surveillance.config import load_settings
from surveillance.models.compare import compare_detectors
from surveillance.models.registry import alias_version, model_versions
from surveillance.notebook import split_overrides
from surveillance.notebook.model_runs import comparison_figures, comparison_runs, logged_figure_html

dbutils.widgets.dropdown("env", "local", ["local", "dev", "prod"], "Environment")
dbutils.widgets.text("overrides", "", "Config overrides (key=value; ...)")
dbutils.widgets.dropdown("run_comparison", "yes", ["yes", "no"], "Train and compare now")

# COMMAND ----------

env = dbutils.widgets.get("env")
run_comparison = dbutils.widgets.get("run_comparison") == "yes"
assert env in ("local", "dev", "prod"), f"env must be local, dev or prod, not {env!r}"

settings = load_settings(env=env, overrides=split_overrides(dbutils.widgets.get("overrides")))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Compare the detectors

# COMMAND ----------

comparison = compare_detectors(settings, on_progress=print) if run_comparison else None
if comparison is not None:
    print(f"best: {comparison.best.name}; {comparison.decision.reason}")
    display(comparison.table())

# COMMAND ----------

# MAGIC %md
# MAGIC ## The MLflow runs

# COMMAND ----------

runs = comparison_runs(settings)
display(runs.comparisons)
display(runs.detectors)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Precision-recall (event level, test set)

# COMMAND ----------

if comparison is not None:
    for figure in comparison_figures(comparison):
        figure.show()
elif runs.latest_run_id is not None:
    displayHTML(logged_figure_html(settings, runs.latest_run_id, "pr_curves.html"))
else:
    print("no comparison logged yet: run this notebook with run_comparison = yes")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Registered versions and the champion

# COMMAND ----------

display(pd.DataFrame(model_versions(settings)))
champion = alias_version(settings)
if champion is None:
    print(f"no {settings.models.champion_alias} for {settings.models.registered_name} yet")
else:
    tags = champion.tags
    print(
        f"{settings.models.champion_alias}: {settings.models.registered_name} version {champion.version} "
        f"({tags.get('detector')}, {tags.get('selection_metric')} {tags.get('test_score')})"
    )
