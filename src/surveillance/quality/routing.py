"""Row-level data quality as Spark column predicates, compiled from the same suite config GX runs.

Routing a row (quarantine on an ``error`` expectation, ``dq_warnings`` on a ``warn`` one) needs, for every
row, the names of the expectations it breaks. Asking Great Expectations for the keys of every unexpected row
costs a second validation pass and a driver collect proportional to the failures; here each row-level
expectation becomes a boolean "this row breaks it" column, and one projection adds ``dq_errors`` and
``dq_warnings`` to the rows. GX still validates the batch, once, for ``dq_results`` and Data Docs; the
integration tests check that its unexpected counts equal these predicates' counts.

Semantics follow GX's Spark engine: column-map expectations ignore NULL values (a NULL breaks only
``..._to_not_be_null``); pair expectations skip rows by ``ignore_row_if``; table-level expectations (the
schema, column types) have no rows to route.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from surveillance.config import ConfigError, ExpectationSpec

# Expectations about the table as a whole: nothing to route per row.
TABLE_LEVEL = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_row_count_to_be_between",
        "expect_table_column_count_to_equal",
        "expect_column_to_exist",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_in_type_list",
    }
)
# Expectations whose verdict on a row depends on other rows of the batch (a window over the batch).
BATCH_LEVEL = frozenset({"expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique"})


def _between(value: Column, kwargs: Mapping[str, Any]) -> Column:
    ok = F.lit(True)
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None:
        ok = ok & ((value > F.lit(low)) if kwargs.get("strict_min") else (value >= F.lit(low)))
    if high is not None:
        ok = ok & ((value < F.lit(high)) if kwargs.get("strict_max") else (value <= F.lit(high)))
    # GX's Spark engine counts a comparison that is not true (NaN against a bound included) as unexpected.
    return value.isNotNull() & ~F.coalesce(ok, F.lit(False))


def _pair_skipped(a: Column, b: Column, ignore_row_if: str) -> Column:
    if ignore_row_if == "either_value_is_missing":
        return a.isNull() | b.isNull()
    if ignore_row_if == "neither":
        return F.lit(False)
    return a.isNull() & b.isNull()  # GX's default: both_values_are_missing


def _pair(kwargs: Mapping[str, Any], holds: Callable[[Column, Column], Column]) -> Column:
    a, b = F.col(kwargs["column_A"]), F.col(kwargs["column_B"])
    skipped = _pair_skipped(a, b, kwargs.get("ignore_row_if", "both_values_are_missing"))
    return ~skipped & ~F.coalesce(holds(a, b), F.lit(False))


def _greater(kwargs: Mapping[str, Any]) -> Column:
    or_equal = bool(kwargs.get("or_equal"))
    return _pair(kwargs, lambda a, b: (a >= b) if or_equal else (a > b))


def _column(kwargs: Mapping[str, Any]) -> Column:
    return F.col(kwargs["column"])


_ROW_PREDICATES: dict[str, Callable[[Mapping[str, Any]], Column]] = {
    "expect_column_values_to_not_be_null": lambda kw: _column(kw).isNull(),
    "expect_column_values_to_be_null": lambda kw: _column(kw).isNotNull(),
    "expect_column_values_to_match_regex": lambda kw: (
        _column(kw).isNotNull() & ~_column(kw).rlike(kw["regex"])
    ),
    "expect_column_values_to_not_match_regex": lambda kw: (
        _column(kw).isNotNull() & _column(kw).rlike(kw["regex"])
    ),
    "expect_column_values_to_be_between": lambda kw: _between(_column(kw), kw),
    "expect_column_values_to_be_in_set": lambda kw: (
        _column(kw).isNotNull() & ~_column(kw).isin(*kw["value_set"])
    ),
    "expect_column_values_to_not_be_in_set": lambda kw: (
        _column(kw).isNotNull() & _column(kw).isin(*kw["value_set"])
    ),
    "expect_column_value_lengths_to_be_between": lambda kw: _between(F.length(_column(kw)), kw),
    "expect_column_pair_values_a_to_be_greater_than_b": _greater,
    "expect_column_pair_values_to_be_equal": lambda kw: _pair(kw, lambda a, b: a == b),
}


def _batch_predicate(spec: ExpectationSpec, batch_key: Sequence[str]) -> Column:
    columns = spec.kwargs.get("column_list") or [spec.kwargs["column"]]
    # Unique within the micro-batch: a backfill validates many micro-batches at once.
    group = Window.partitionBy(*[c for c in batch_key if c not in columns], *columns)
    # GX skips a row whose values are all missing.
    present = reduce(lambda a, b: a | b, [F.col(c).isNotNull() for c in columns])
    return present & (F.count(F.lit(1)).over(group) > 1)


@dataclass(frozen=True)
class RowCheck:
    """One row-level expectation as a predicate: true where a row breaks it."""

    name: str
    severity: str
    breaks: Column
    needs_window: bool


def supported_expectations() -> list[str]:
    """Every expectation type that routes rows (the others are table-level only)."""
    return sorted({*_ROW_PREDICATES, *BATCH_LEVEL})


def row_checks(
    suite: str, specs: Mapping[str, ExpectationSpec], batch_key: Sequence[str] = ()
) -> list[RowCheck]:
    """The suite's active row-level expectations as predicates, in suite order (a ConfigError names any
    expectation that can neither route rows nor is table-level)."""
    checks = []
    for name, spec in specs.items():
        if spec.severity == "off" or spec.expectation in TABLE_LEVEL:
            continue
        if spec.expectation in BATCH_LEVEL:
            checks.append(RowCheck(name, spec.severity, _batch_predicate(spec, batch_key), True))
            continue
        build = _ROW_PREDICATES.get(spec.expectation)
        if build is None:
            raise ConfigError(
                f"quality.suites.{suite}.{name}: {spec.expectation} has no row predicate, so its rows "
                f"cannot be routed; row-level expectations supported: {', '.join(supported_expectations())}"
            )
        checks.append(RowCheck(name, spec.severity, build(spec.kwargs), False))
    return checks


def _names(checks: Sequence[RowCheck], severity: str) -> Column:
    hits = [F.when(check.breaks, F.lit(check.name)) for check in checks if check.severity == severity]
    if not hits:
        return F.array().cast("array<string>")
    # array_compact drops the NULLs of expectations a row keeps; suite order is kept.
    return F.array_compact(F.array(*hits))


def with_dq_outcomes(rows: DataFrame, checks: Sequence[RowCheck], row_level_only: bool = False) -> DataFrame:
    """``rows`` + ``dq_errors`` and ``dq_warnings``: the names of the error / warn expectations each breaks.

    ``row_level_only`` leaves out expectations that compare rows of a batch with each other (a streaming
    plan before a stateful operator cannot hold such a window).
    """
    used = [check for check in checks if not (row_level_only and check.needs_window)]
    return rows.withColumns({"dq_errors": _names(used, "error"), "dq_warnings": _names(used, "warn")})
