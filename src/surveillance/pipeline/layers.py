"""The derivations shared by the stream's micro-batches and by backfills: one definition of each layer.

A micro-batch and a backfill differ only in where their rows come from (Kafka vs bronze), which silver rows
serve as history and how the results are written. What a quote becomes in silver, which alerts it raises
and how it is validated are computed here, by the same functions, for both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from surveillance.config import ConfigError, Settings
from surveillance.detection.context import with_quote_context
from surveillance.detection.rules import alerts_in_context, rule_windows
from surveillance.lakehouse import SILVER
from surveillance.models.scoring import LoadedModel, model_alerts
from surveillance.quality.columns import (
    expectation_reason,
    with_quote_quality_columns,
)
from surveillance.quality.results import SUITE_COLUMNS
from surveillance.quality.routing import RowCheck, row_checks, with_dq_outcomes
from surveillance.quality.validation import (
    SuiteValidator,
    active_expectations,
    check_quality_config,
)
from surveillance.transforms.silver import (
    first_per_event_id,
    flag_late,
    flag_out_of_order,
    new_fields,
    not_seen_before,
    object_fields,
    to_silver,
    with_silver_fields,
)

# Uniqueness "in a batch" means per micro-batch: a backfill validates many micro-batches at once.
BATCH_KEY = ("stream_id", "batch_id")

# Building a GX context and its suites takes seconds: a process that starts several queries (notebooks,
# tests) reuses them. Keyed by the suite's configuration, so a changed suite gets a new validator.
_VALIDATORS: dict[str, SuiteValidator] = {}


def _validator(suite: str, specs: dict[str, Any]) -> SuiteValidator | None:
    if not active_expectations(specs):
        return None
    key = json.dumps([suite, {n: s.model_dump() for n, s in specs.items()}], sort_keys=True)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = SuiteValidator(suite, specs)
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
    checks = {check.name: check for check in silver_row_checks(settings)}
    for check in checks.values():
        if check.needs_window and check.severity == "error":
            raise ConfigError(
                f"quality.suites.silver_quotes.{check.name}: it compares rows of a micro-batch with each "
                "other, which the stream can only do after the per-symbol state has taken each quote: "
                "give it severity warn (re-sent event_ids are dropped from silver by the state either way)"
            )
    for name in quality.price_jump_unreliable_when:
        if name in checks and checks[name].needs_window:
            raise ConfigError(
                f"quality.price_jump_unreliable_when: {name} compares rows of a batch with each other; "
                "the detection query judges each quote on its own (name a row-level expectation)"
            )
    return (
        _validator("silver_quotes", quality.suites.silver_quotes),
        _validator("gold_bars_1m", quality.suites.gold_bars_1m),
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


def silver_row_checks(settings: Settings) -> list[RowCheck]:
    """The silver suite's row-level expectations as Spark predicates (none when quality is off)."""
    if not settings.quality.enabled:
        return []
    return row_checks("silver_quotes", settings.quality.suites.silver_quotes, BATCH_KEY)


def route_quotes(
    checked: DataFrame,
    checks: Sequence[RowCheck],
    extra_fields: Mapping[str, str] | None = None,
    row_level_only: bool = False,
) -> DataFrame:
    """Parsed rows + ``dq_errors``/``dq_warnings``; a contract-valid row that broke an error expectation is
    rejected (its ``reject_reason`` names them). One projection: no validation pass, nothing collected.

    A record's contract reason (if any) stays its reason: the expectations judge contract-valid records only.
    """
    view = with_quote_quality_columns(with_silver_fields(checked, extra_fields))
    judged = with_dq_outcomes(view, checks, row_level_only)
    contract_valid = F.col("reject_reason").isNull()
    empty = F.array().cast("array<string>")
    errors = F.when(contract_valid, F.col("dq_errors")).otherwise(empty)
    return judged.withColumns(
        {
            "dq_errors": errors,
            "dq_warnings": F.when(contract_valid, F.col("dq_warnings")).otherwise(empty),
            "reject_reason": F.coalesce("reject_reason", expectation_reason(errors)),
        }
    ).select(*checked.columns, "dq_errors", "dq_warnings")


def with_batch_outcomes(routed: DataFrame, checks: Sequence[RowCheck]) -> DataFrame:
    """Routed records + the warnings of the expectations that compare rows of the micro-batch with each
    other (uniqueness), which a streaming plan cannot evaluate before its state step; ``dq_warnings``
    stays in suite order. Such expectations are warn only (see :func:`suite_validators`)."""
    batch_level = {check.name: check.breaks for check in checks if check.needs_window}
    if not batch_level:
        return routed
    view = with_quote_quality_columns(with_silver_fields(routed))
    contract_valid = F.col("reject_reason").isNull() | (F.size("dq_errors") > 0)
    warned = [
        F.when(
            F.array_contains("dq_warnings", check.name)
            | (contract_valid & batch_level.get(check.name, F.lit(False))),
            F.lit(check.name),
        )
        for check in checks
        if check.severity == "warn"
    ]
    return view.withColumn("dq_warnings", F.array_compact(F.array(*warned))).select(*routed.columns)


def suite_frame(checked: DataFrame, extra_fields: Mapping[str, str] | None = None) -> DataFrame:
    """What the silver suite validates: every contract-valid record (routed or not), with the columns its
    expectations see."""
    view = with_quote_quality_columns(with_silver_fields(checked, extra_fields))
    columns = [*SUITE_COLUMNS["silver_quotes"], *(extra_fields or {})]
    contract_valid = F.col("reject_reason").isNull()
    if "dq_errors" in checked.columns:
        contract_valid = contract_valid | (F.size("dq_errors") > 0)
    return view.where(contract_valid).select(*columns)


def new_silver_quotes(
    routed: DataFrame,
    extra_fields: Mapping[str, str],
    history: DataFrame,
    state: DataFrame | None,
    late_after_s: float,
) -> DataFrame:
    """Routed records -> the silver rows they add: first arrival per event_id, not already in ``history``,
    with their arrival flags (late: over ``late_after_s`` behind its symbol; out of order) from their
    micro-batch's ``state``."""
    candidates = first_per_event_id(to_silver(routed, extra_fields))
    fresh = flag_late(not_seen_before(candidates, history), state, late_after_s)
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
    """Every rule's alerts for the new quotes of ``context``, and the champion model's when one is loaded.

    ``context``: silver history and new quotes (see :func:`rule_context`); each quote's per-symbol context
    is computed here, as the stream's state operator computes it from its tail.
    """
    windows = rule_windows(settings.rules, model_features=model is not None)
    return alerts_from_context(with_quote_context(context, windows), settings, model, quality_on)


def alerts_from_context(
    quotes: DataFrame, settings: Settings, model: LoadedModel | None, quality_on: bool
) -> DataFrame:
    """The detectors on quotes that carry their context: the rules' and the model's alerts (row-level)."""
    unreliable = settings.quality.price_jump_unreliable_when if quality_on else ()
    alerts = alerts_in_context(quotes, settings.rules, unreliable)
    if model is not None:
        scoring, levels = settings.models.scoring, settings.rules.severity
        alerts = alerts.unionByName(model_alerts(quotes, model, scoring, levels, unreliable))
    return alerts
