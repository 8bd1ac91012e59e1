"""Great Expectations suites built from config, and one validation run per micro-batch.

The suites are declared in ``quality.suites`` (conf/base.yml): our name for each expectation, the GX 1.x
expectation with its arguments, and a severity. :class:`SuiteValidator` builds the suite once and runs it
over a micro-batch's DataFrame in a single GX validation (GX resolves the metrics of all expectations
together) for ``dq_results`` and Data Docs. Rows are routed by the same expectations compiled to Spark
predicates (:mod:`surveillance.quality.routing`), not by asking GX for row keys.

Great Expectations is imported lazily: importing it takes seconds and runs that do not validate do not pay.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame

from surveillance.config import ConfigError, ExpectationSpec, QualitySettings

log = logging.getLogger(__name__)

# Our severities as GX's own (shown in Data Docs).
_GX_SEVERITY = {"error": "critical", "warn": "warning"}
# Arguments of an expectation that name columns of the validated DataFrame.
_COLUMN_ARGUMENTS = ("column", "column_A", "column_B")
_COLUMN_LIST_ARGUMENTS = ("column_list",)
# Lists GX returns per row that our result JSON leaves out (the rows are joined back instead).
_ROW_LISTS = ("unexpected_index_list", "unexpected_list", "unexpected_index_query")


@dataclass(frozen=True)
class ExpectationResult:
    """GX's verdict on one expectation for one micro-batch."""

    suite: str
    expectation: str
    expectation_type: str
    severity: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed_value: str | None
    kwargs: str
    result: str
    error: str | None = None


@dataclass(frozen=True)
class SuiteRun:
    """One validation run of a suite over one micro-batch."""

    suite: str
    results: list[ExpectationResult]
    seconds: float
    run_time: dt.datetime

    def unexpected_counts(self) -> dict[str, int]:
        """{expectation: unexpected rows} of the row-level expectations GX counted."""
        return {r.expectation: r.unexpected_count for r in self.results if r.unexpected_count is not None}


def preload_great_expectations() -> threading.Thread:
    """Import Great Expectations in the background (it takes seconds), e.g. while Spark starts."""
    thread = threading.Thread(target=_gx, name="import-great-expectations", daemon=True)
    thread.start()
    return thread


def _gx() -> tuple[Any, Any]:
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _expectation_classes() -> dict[str, type]:
    _, gxe = _gx()
    return {name.lower(): getattr(gxe, name) for name in dir(gxe) if name.startswith("Expect")}


def _class_for(expectation: str, where: str) -> type:
    classes = _expectation_classes()
    wanted = expectation.replace("_", "")
    if wanted in classes:
        return classes[wanted]
    snake = {_snake(cls.__name__): cls for cls in classes.values()}
    guess = difflib.get_close_matches(expectation, list(snake), n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    raise ConfigError(f"{where}.expectation: Great Expectations has no {expectation!r}{hint}")


def _snake(camel: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in camel).lstrip("_")


def _columns_named(kwargs: Mapping[str, Any]) -> list[str]:
    names = [kwargs[key] for key in _COLUMN_ARGUMENTS if isinstance(kwargs.get(key), str)]
    for key in _COLUMN_LIST_ARGUMENTS:
        names.extend(kwargs.get(key) or [])
    return names


def build_expectation(
    suite: str, name: str, spec: ExpectationSpec, known_columns: Iterable[str] | None
) -> Any:
    """The GX expectation object for one configured expectation (a ConfigError says what is wrong)."""
    where = f"quality.suites.{suite}.{name}"
    cls = _class_for(spec.expectation, where)
    if known_columns is not None:
        known = set(known_columns)
        for column in _columns_named(spec.kwargs):
            if column not in known:
                guess = difflib.get_close_matches(column, sorted(known), n=1)
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
                raise ConfigError(f"{where}.kwargs: no column {column!r} in what {suite} validates{hint}")
    try:
        return cls(**spec.kwargs, meta={"name": name}, severity=_GX_SEVERITY[spec.severity])
    except Exception as exc:  # GX validates arguments with pydantic; keep only its message
        message = str(exc).replace("\n", "; ")
        raise ConfigError(f"{where}: invalid arguments for {spec.expectation}: {message}") from None


def active_expectations(specs: Mapping[str, ExpectationSpec]) -> dict[str, ExpectationSpec]:
    """The expectations that are evaluated (severity other than ``off``), in suite order."""
    return {name: spec for name, spec in specs.items() if spec.severity != "off"}


def check_quality_config(quality: QualitySettings, columns: Mapping[str, Iterable[str]]) -> None:
    """Build every configured expectation once, so that a mistake fails at start with a clear message."""
    if not quality.enabled:
        return
    for suite in type(quality.suites).model_fields:
        for name, spec in active_expectations(getattr(quality.suites, suite)).items():
            build_expectation(suite, name, spec, columns.get(suite))


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True, allow_nan=True)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class SuiteValidator:
    """One expectation suite over Spark DataFrames, run once per micro-batch."""

    def __init__(
        self,
        suite: str,
        specs: Mapping[str, ExpectationSpec],
        known_columns: Iterable[str] | None = None,
    ) -> None:
        gx, _ = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.suite_name = suite
        self.specs = active_expectations(specs)
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.batch = (
            self.context.data_sources.add_spark(f"{suite}_source")
            .add_dataframe_asset(f"{suite}_micro_batches")
            .add_batch_definition_whole_dataframe("micro_batch")
        )
        self.suite = self.context.suites.add(gx.ExpectationSuite(name=suite))
        for name, spec in self.specs.items():
            self.suite.add_expectation(build_expectation(suite, name, spec, known_columns))
        self.definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite}_per_micro_batch", data=self.batch, suite=self.suite)
        )
        self._lock = threading.Lock()  # one GX context: one validation at a time

    def validate(self, rows: DataFrame) -> SuiteRun:
        """Run the whole suite over ``rows`` in one pass, counts only (best cached by the caller: GX
        reads it once per metric domain)."""
        with self._lock:
            run_time = dt.datetime.now(dt.UTC)
            started = time.perf_counter()
            outcome = self.definition.run(batch_parameters={"dataframe": rows}, result_format=_COUNTS_ONLY)
            results = {item.expectation_config.meta["name"]: self._result(item) for item in outcome.results}
            ordered = [results[name] for name in self.specs if name in results]
            return SuiteRun(self.suite_name, ordered, time.perf_counter() - started, run_time)

    def _result(self, item: Any) -> ExpectationResult:
        config = item.expectation_config
        name = (config.meta or {}).get("name", config.type)
        raw = dict(item.result or {})
        error = None
        info = item.exception_info or {}
        if info.get("raised_exception"):
            error = str(info.get("exception_message"))
            log.error("expectation %s.%s could not be evaluated: %s", self.suite_name, name, error)
        summary = {key: value for key, value in raw.items() if key not in _ROW_LISTS}
        observed = raw.get("observed_value")
        return ExpectationResult(
            suite=self.suite_name,
            expectation=name,
            expectation_type=config.type,
            severity=self.specs[name].severity if name in self.specs else "error",
            success=bool(item.success),
            element_count=raw.get("element_count"),
            unexpected_count=raw.get("unexpected_count"),
            unexpected_percent=_number(raw.get("unexpected_percent")),
            observed_value=None if observed is None else _json(observed),
            kwargs=_json({k: v for k, v in config.kwargs.items() if k != "batch_id"}),
            result=_json(summary),
            error=error,
        )


# Counts per expectation, no sample values (each sample list would cost a Spark job per expectation).
_COUNTS_ONLY = {"result_format": "BASIC", "partial_unexpected_count": 0}
