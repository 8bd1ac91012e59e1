"""The derivations shared by the stream's micro-batches and by backfills: one definition of each layer.

A micro-batch and a backfill differ only in where their rows come from (Kafka vs bronze), which silver rows
serve as history and how the results are written. What a quote becomes in silver, which alerts it raises
and how it is validated are computed here, by the same functions, for both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from surveillance.config import Settings
from surveillance.detection.rules import detect_alerts
from surveillance.lakehouse import SILVER
from surveillance.models.scoring import LoadedModel, model_alerts
from surveillance.quality.columns import (
    OUTCOME_SCHEMA,
    SILVER_ROW_KEY,
    flag_out_of_order,
    with_quote_quality_columns,
)
from surveillance.quality.results import SUITE_COLUMNS
from surveillance.quality.validation import (
    SuiteRun,
    SuiteValidator,
    active_expectations,
    check_quality_config,
)
from surveillance.transforms.silver import (
    first_per_event_id,
    flag_late,
    new_fields,
    not_seen_before,
    object_fields,
    to_silver,
)

# Building a GX context and its suites takes seconds: a process that starts several queries (notebooks,
# tests) reuses them. Keyed by the suite's configuration, so a changed suite gets a new validator.
_VALIDATORS: dict[str, SuiteValidator] = {}


def _validator(suite: str, specs: dict[str, Any], row_key: tuple[str, ...]) -> SuiteValidator | None:
    if not active_expectations(specs):
        return None
    key = json.dumps([suite, {n: s.model_dump() for n, s in specs.items()}, row_key], sort_keys=True)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = SuiteValidator(suite, specs, row_key)
    return _VALIDATORS[key]


def suite_validators(settings: Settings) -> tuple[SuiteValidator | None, SuiteValidator | None]:
    """The silver and bars suites' validators (None where quality is off or a suite is empty)."""
    quality = settings.quality
    if not quality.enabled:
        return None, None
    # Evolved silver columns are not known at start: expectations may name them.
    columns = {
        k: v for k, v in SUITE_COLUMNS.items() if k != "silver_quotes" or not settings.schema_settings.evolve
    }
    check_quality_config(quality, columns)
    return (
        _validator("silver_quotes", quality.suites.silver_quotes, SILVER_ROW_KEY),
        _validator("gold_bars_1m", quality.suites.gold_bars_1m, ("symbol", "bar_start")),
    )


def silver_extra_fields(
    silver_columns: Mapping[str, str], message_schema: str | None, evolve: bool
) -> tuple[dict[str, str], dict[str, Any]]:
    """Silver's extra columns for a batch's messages, and what producers sent beyond the contract.

    ``silver_columns`` is {column: type} of the silver table. With ``evolve``, the extra columns are every
    field already added to silver plus the new ones these messages bring; without it, none. The second
    value describes the fields beyond the contract and silver's columns, for the data-quality record.
    """
    added = {name: kind for name, kind in silver_columns.items() if name not in SILVER.schema.fieldNames()}
    addable, refused = new_fields(message_schema, list(silver_columns))
    observed = object_fields(message_schema)
    drift = {
        "unknown_fields": {name: observed[name] for name in (*addable, *refused)},
        "not_addable": refused,
        "evolve": evolve,
    }
    return ({**added, **addable} if evolve else {}), drift


def validate_quotes(
    spark: SparkSession,
    validator: SuiteValidator,
    checked: DataFrame,
    extra_fields: Mapping[str, str],
    state: DataFrame | None,
) -> tuple[SuiteRun, DataFrame | None]:
    """Run the silver suite over the contract-valid rows of ``checked``; the rows that broke something.

    The second value has one row per such record, keyed by its Kafka coordinates (``OUTCOME_SCHEMA``), or
    is None when every row passed.
    """
    quotes = with_quote_quality_columns(flag_late(to_silver(checked, extra_fields), state)).persist()
    try:
        run = validator.validate(quotes)
    finally:
        quotes.unpersist()
    errors, warnings = run.failed_rows("error"), run.failed_rows("warn")
    keys = sorted(set(errors) | set(warnings))
    if not keys:
        return run, None
    rows = [(int(p), int(o), errors.get((p, o), []), warnings.get((p, o), [])) for p, o in keys]
    return run, spark.createDataFrame(rows, OUTCOME_SCHEMA)


def new_silver_quotes(
    routed: DataFrame, extra_fields: Mapping[str, str], history: DataFrame, state: DataFrame | None
) -> DataFrame:
    """Routed records -> the silver rows they add: first arrival per event_id, not already in ``history``,
    with their arrival flags (late beyond the watermark, out of order) from their micro-batch's ``state``."""
    candidates = first_per_event_id(to_silver(routed, extra_fields))
    fresh = flag_late(not_seen_before(candidates, history.select("event_id")), state)
    return flag_out_of_order(fresh, state)


def rule_context(history: DataFrame, new_quotes: DataFrame) -> DataFrame:
    """The quotes the detectors read: silver history (``is_new`` false) and the new quotes (true)."""
    core = SILVER.schema.fieldNames()
    return (
        history.select(*core)
        .withColumn("is_new", F.lit(False))
        .unionByName(new_quotes.select(*core).withColumn("is_new", F.lit(True)))
    )


def derive_alerts(
    context: DataFrame, settings: Settings, model: LoadedModel | None, quality_on: bool
) -> DataFrame:
    """Every rule's alerts for the new quotes of ``context``, and the champion model's when one is loaded."""
    unreliable = settings.quality.price_jump_unreliable_when if quality_on else ()
    alerts = detect_alerts(context, settings.rules, unreliable)
    if model is not None:
        scoring, levels = settings.models.scoring, settings.rules.severity
        alerts = alerts.unionByName(model_alerts(context, model, scoring, levels, unreliable))
    return alerts
