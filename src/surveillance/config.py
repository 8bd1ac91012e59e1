"""One configuration system: conf/base.yml + an environment overlay + environment variables + --set.

Precedence, lowest first: ``conf/base.yml`` < ``conf/<env>.yml`` < ``SURVEIL__SECTION__KEY`` variables <
``--set section.key=value``. The merged document is validated into :class:`Settings`; an unknown key is an
error with a suggestion, never silently ignored. ``${NAME}`` in a YAML string is replaced by the environment
variable NAME (an error if it is unset), so hosts and secrets stay out of the files.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "SURVEIL__"
ENVIRONMENTS = ("local", "dev", "prod")
_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$")
# Free-form maps whose own keys contain dots (Kafka and Spark option names): a dotted override below them
# names one key, e.g. --set kafka.options.ssl.endpoint.identification.algorithm=https.
_FREE_MAPS = {("kafka", "options"), ("spark", "conf"), ("lakehouse", "tables")}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    guess = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


class _Strict(BaseModel):
    # Numbers become text where text is expected: `--set kafka.topics.quotes=2024` or an unquoted version.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def _option_text(value: Any) -> str:
    # Spark and Kafka options are text; YAML (and --set) parse `true` and `8` into bool and int.
    return str(value).lower() if isinstance(value, bool) else str(value)


def _stringify_options(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _option_text(item) for key, item in value.items()}
    return value


def interval_seconds(text: str) -> int:
    """Seconds in a Spark-style interval such as '10 minutes' or '2 seconds'."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an interval like '30 seconds', '10 minutes' or '2 hours'")
    unit = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[match.group(2)]
    return int(match.group(1)) * unit


def _check_interval(value: str) -> str:
    interval_seconds(value)
    return value


class LocalClusterSettings(_Strict):
    """``surveil cluster up``: a Spark standalone master and workers on loopback."""

    port: int = Field(7077, ge=1, le=65535)
    webui_port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=16)
    worker_cores: int = Field(1, ge=1)
    worker_memory: str = Field("2g", pattern=r"^[1-9][0-9]*[mMgG]$")


class SparkSettings(_Strict):
    master: str | None = "local[*]"
    app_name: str = "market-surveillance"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "2g"
    ui_enabled: bool = False
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    # A local driver JVM maps the class-data archive `surveil setup` writes (a faster start; see spark.py).
    class_archive: bool = True
    conf: dict[str, str] = Field(default_factory=dict)
    local_cluster: LocalClusterSettings = LocalClusterSettings()

    _text_options = field_validator("conf", mode="before")(_stringify_options)


class TopicSettings(_Strict):
    quotes: str = "quotes"
    alerts: str = "alerts"


class LocalBrokerSettings(_Strict):
    port: int = Field(9092, ge=1, le=65535)
    controller_port: int = Field(9093, ge=1, le=65535)
    kafka_version: str = "4.1.1"
    heap: str = "512m"


# The JAAS login module Kafka's Java client authenticates with, per SASL mechanism.
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _jaas_quoted(value: str) -> str:
    """A JAAS option value: double-quoted, its backslashes and quotes escaped (Kafka's JaasConfig parser)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class KafkaSettings(_Strict):
    bootstrap_servers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    # The names of the environment variables holding the SASL user and password: secrets never sit in YAML.
    sasl_username_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sasl_password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The login module's class for Spark's Kafka client, when it is not Kafka's own for the mechanism
    # (Databricks Runtime shades the client: kafkashaded.org.apache.kafka...).
    sasl_login_module: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.$]*$")
    # A PEM file of the certificate authorities to trust for SSL/SASL_SSL (both clients); None: the
    # JVM's and the system's defaults.
    ssl_ca_location: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    topics: TopicSettings = TopicSettings()
    quotes_partitions: int = Field(4, ge=1)
    alerts_partitions: int = Field(1, ge=1)
    local_broker: LocalBrokerSettings = LocalBrokerSettings()

    _text_options = field_validator("options", mode="before")(_stringify_options)

    @field_validator("options")
    @classmethod
    def _no_secrets_in_options(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if "jaas" in key.lower() or "password" in key.lower():
                raise ValueError(f"{key!r} is a secret: put it in an environment variable, not in config")
        return value

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username_env and self.sasl_password_env):
            raise ValueError(
                f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_mechanism, "
                "kafka.sasl_username_env and kafka.sasl_password_env (the names of the environment "
                "variables holding the user and the password)"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username_env or self.sasl_password_env):
            raise ValueError(
                f"kafka.sasl_* settings are set but kafka.security_protocol is {self.security_protocol}: "
                "use SASL_SSL (or SASL_PLAINTEXT) to authenticate"
            )
        if self.ssl_ca_location and not self.security_protocol.endswith("SSL"):
            raise ValueError(
                f"kafka.ssl_ca_location is set but kafka.security_protocol is {self.security_protocol}"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def sasl_credentials(self) -> tuple[str, str] | None:
        """(user, password) from the environment variables the settings name; None without SASL."""
        if not (self.sasl_username_env and self.sasl_password_env):
            return None
        missing = [
            name for name in (self.sasl_username_env, self.sasl_password_env) if not os.environ.get(name)
        ]
        if missing:
            raise ConfigError(
                f"kafka.security_protocol {self.security_protocol} reads the SASL user and password from "
                f"the environment, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
            )
        return os.environ[self.sasl_username_env], os.environ[self.sasl_password_env]

    def ca_file(self) -> str | None:
        """The CA file as an absolute path, checked to exist (a relative one is under the project root)."""
        if not self.ssl_ca_location:
            return None
        path = resolve_local_path(self.ssl_ca_location)
        if not Path(path).is_file():
            raise ConfigError(f"kafka.ssl_ca_location {self.ssl_ca_location!r}: no such file ({path})")
        return path

    def spark_options(self) -> dict[str, str]:
        """Options for Spark's Kafka source and sink (``kafka.``-prefixed client settings)."""
        options = {"kafka.bootstrap.servers": self.bootstrap_servers}
        options["kafka.security.protocol"] = self.security_protocol
        credentials = self.sasl_credentials()
        if credentials and self.sasl_mechanism:
            module = self.sasl_login_module or _LOGIN_MODULES[self.sasl_mechanism]
            user, password = credentials
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f"{module} required username={_jaas_quoted(user)} password={_jaas_quoted(password)};"
            )
        ca_file = self.ca_file()
        if ca_file:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = ca_file
        options.update({f"kafka.{key}": val for key, val in self.options.items()})
        return options

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients with the same connection settings."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        credentials = self.sasl_credentials()
        if credentials:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"], options["sasl_plain_password"] = credentials
        ca_file = self.ca_file()
        if ca_file:
            options["ssl_cafile"] = ca_file
        return options


_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


# Tables only ever appended to by the stream: compacting them cannot conflict with its writes (a MERGE,
# as gold's, can, so gold is compacted only when asked for, with the stream stopped).
_APPEND_ONLY_TABLES = [
    "bronze_quotes",
    "silver_quotes",
    "quarantine_quotes",
    "alerts",
    "dq_results",
    "stream_progress",
]
_MIN_SAFE_VACUUM_S = 7 * 86400  # Delta's own safety check: a write may still use files younger than this


class MaintenanceSettings(_Strict):
    """``surveil maintain``: compaction, VACUUM, and the log's retention, safe with the stream running."""

    optimize: list[str] = Field(default_factory=lambda: list(_APPEND_ONLY_TABLES))
    # Files no version within this reaches are deleted by VACUUM; time travel reaches this far back.
    vacuum_retention: str = "7 days"
    # The transaction log's history kept (delta.logRetentionDuration): Delta drops older log files itself.
    log_retention: str = "30 days"
    # Below 7 days VACUUM may delete files a running write still needs: only with the stream stopped.
    allow_short_vacuum_retention: bool = False
    # lite: the files to delete found in the log (seconds a table); full: every file listed, aborted
    # writes' orphans included (tens of seconds a table on a laptop): now and then, e.g. weekly.
    vacuum_mode: Literal["lite", "full"] = "lite"

    _intervals = field_validator("vacuum_retention", "log_retention")(_check_interval)

    @model_validator(mode="after")
    def _safe_retention(self) -> MaintenanceSettings:
        if (
            interval_seconds(self.vacuum_retention) < _MIN_SAFE_VACUUM_S
            and not self.allow_short_vacuum_retention
        ):
            raise ValueError(
                f"lakehouse.maintenance.vacuum_retention {self.vacuum_retention!r} is under 7 days: VACUUM "
                "could delete files a running write or a reader still uses (allow_short_vacuum_retention: "
                "true is for a lakehouse no stream writes while VACUUM runs)"
            )
        if interval_seconds(self.log_retention) < interval_seconds(self.vacuum_retention):
            raise ValueError("lakehouse.maintenance.log_retention is shorter than vacuum_retention")
        return self


class LakehouseSettings(_Strict):
    model_config = ConfigDict(
        extra="forbid", frozen=True, coerce_numbers_to_str=True, validate_by_name=True, validate_by_alias=True
    )

    # Tables as Delta paths under root, unless `schema` (and `catalog`) are set: then they are metastore
    # tables named catalog.schema.<table> (Unity Catalog on Databricks).
    root: str = ".state/lakehouse"
    catalog: str | None = Field(None, pattern=_IDENTIFIER)
    schema_name: str | None = Field(None, alias="schema", pattern=_IDENTIFIER)
    # Optional per-table overrides: {logical name: path (has a "/") or table name}.
    tables: dict[str, str] = Field(default_factory=dict)
    maintenance: MaintenanceSettings = MaintenanceSettings()

    _text_options = field_validator("tables", mode="before")(_stringify_options)

    @model_validator(mode="after")
    def _catalog_needs_schema(self) -> LakehouseSettings:
        if self.catalog and not self.schema_name:
            raise ValueError("lakehouse.catalog is set but lakehouse.schema is not: tables need both")
        return self


class StreamSettings(_Strict):
    enabled: bool = True  # false: the detection query only (no lakehouse writes)
    # 1: both queries in one Spark application (FAIR pools; a cluster, a notebook). 2: on one machine,
    # `surveil stream` runs each query in its own process, the lakehouse's at a lower CPU priority
    # (`lakehouse_nice`), so that its long tasks and GX runs never hold the cores the detection needs.
    processes: Literal[1, 2] = 1
    lakehouse_nice: int = Field(10, ge=0, le=19)
    checkpoint_dir: str = ".state/checkpoints/quotes_to_lakehouse"
    query_name: str = Field("quotes_to_lakehouse", pattern=r"^[A-Za-z0-9_]+$")
    trigger_interval: str = "2 seconds"
    # Each lakehouse batch pays ~47 Spark jobs and 5 Delta commits whatever its size: large batches.
    max_offsets_per_trigger: int | None = Field(100000, ge=1)
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    fail_on_data_loss: bool = True
    watermark: str = "10 minutes"
    # A re-sent event_id is dropped (silver) and raises no second alert (detection) if it comes back
    # within this much event time of its symbol's latest quote, and within the symbol's last
    # `dedup_max_ids` accepted quotes: what the per-symbol state remembers.
    dedup_horizon: str = "2 hours"
    dedup_max_ids: int = Field(50000, ge=1)
    # Partitions of the lakehouse query's per-symbol state, fixed in the checkpoint at its first start.
    state_partitions: int = Field(2, ge=1)

    _intervals = field_validator("trigger_interval", "watermark", "dedup_horizon")(_check_interval)


class DetectionSettings(_Strict):
    """The detection query: Kafka -> per-symbol state -> rules and model -> alerts (topic, then Delta)."""

    enabled: bool = True
    # null: beside the lakehouse query's checkpoint, in a folder named after this query.
    checkpoint_dir: str | None = None
    query_name: str = Field("quotes_to_alerts", pattern=r"^[A-Za-z0-9_]+$")
    # "0 seconds": the next micro-batch starts as soon as the previous one ends.
    trigger_interval: str = "0 seconds"
    max_offsets_per_trigger: int | None = Field(20000, ge=1)
    # Spark's FAIR scheduler weight of the detection query's pool against the lakehouse query's (1).
    pool_weight: int = Field(10, ge=1)
    # Progress rows of the detection query are appended to stream_progress at most this often (one commit).
    progress_interval: str = "10 seconds"
    # Partitions of the per-symbol state (its shuffle), fixed in the checkpoint at the query's first start.
    # Each is one task per micro-batch with a fixed cost: on a few cores, fewer is faster; a cluster with
    # many symbols wants about its core count.
    state_partitions: int = Field(2, ge=1)
    # A batch's alerts are re-sent (same alert_id) while the alerts topic refuses them, this long before
    # the batch fails (and the query with it: a restart re-runs the batch, so none is lost either way).
    publish_timeout: str = "10 minutes"

    _intervals = field_validator("trigger_interval", "progress_interval", "publish_timeout")(_check_interval)


class PriceJumpRule(_Strict):
    enabled: bool = True
    threshold: float = Field(0.05, gt=0)


class ZScoreRule(_Strict):
    enabled: bool = True
    window: int = Field(50, ge=2)
    min_periods: int = Field(20, ge=2)
    threshold: float = Field(6.0, gt=0)


class VolumeSpikeRule(_Strict):
    enabled: bool = True
    window: int = Field(50, ge=2)
    min_periods: int = Field(20, ge=1)
    ratio: float = Field(10.0, gt=1)
    min_volume: int = Field(1000, ge=0)


class SeveritySettings(_Strict):
    medium_ratio: float = Field(1.5, ge=1)
    high_ratio: float = Field(2.5, ge=1)


class RuleSettings(_Strict):
    # How far back in event time the rules look for a symbol's previous quotes (the state they carry
    # across micro-batches). Bounds the per-batch read of silver.
    history_lookback: str = "2 hours"
    price_jump: PriceJumpRule = PriceJumpRule()
    zscore: ZScoreRule = ZScoreRule()
    volume_spike: VolumeSpikeRule = VolumeSpikeRule()
    severity: SeveritySettings = SeveritySettings()

    _intervals = field_validator("history_lookback")(_check_interval)


Severity = Literal["error", "warn", "off"]


class ExpectationSpec(_Strict):
    """One Great Expectations expectation of a suite, with what a failure means for the rows."""

    # The GX 1.x expectation in snake case, e.g. expect_column_values_to_be_between.
    expectation: str = Field(pattern=r"^expect_[a-z0-9_]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # error: rows that break it are quarantined; warn: recorded and flagged on the row, which flows on;
    # off: not evaluated.
    severity: Severity = "error"
    description: str = ""

    @field_validator("severity", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value


_EXPECTATION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_expectation_names(value: dict[str, ExpectationSpec]) -> dict[str, ExpectationSpec]:
    for name in value:
        if not _EXPECTATION_NAME.match(name):
            raise ValueError(f"expectation name {name!r} must be lower_snake_case")
    return value


class SuiteSettings(_Strict):
    # {our name for the expectation: its spec}; the name is what quarantine reasons and dq_results show.
    silver_quotes: dict[str, ExpectationSpec] = Field(default_factory=dict)
    gold_bars_1m: dict[str, ExpectationSpec] = Field(default_factory=dict)

    _names = field_validator("silver_quotes", "gold_bars_1m")(_check_expectation_names)


class QualitySettings(_Strict):
    enabled: bool = True
    suites: SuiteSettings = SuiteSettings()
    # warn expectations that make a quote's price unreliable: a price_jump alert on such a quote (or
    # measured from such a previous quote) is kept with confidence "low" and the reasons in its evidence.
    price_jump_unreliable_when: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unreliable_names_exist(self) -> QualitySettings:
        known = self.suites.silver_quotes
        for name in self.price_jump_unreliable_when:
            if name not in known:
                hint = _did_you_mean(name, known)
                raise ValueError(
                    f"price_jump_unreliable_when names {name!r}, not in suites.silver_quotes{hint}"
                )
        return self


class SchemaSettings(_Strict):
    # true: a new optional field sent by producers becomes a new silver column (Delta schema evolution);
    # false: silver keeps its columns (bronze always keeps the whole message).
    evolve: bool = False


DETECTORS = (
    "fixed_jump",
    "rolling_zscore",
    "robust_zscore",
    "ewma_chart",
    "isolation_forest",
    "gradient_boosting",
)


class DataSplit(_Strict):
    """One labelled data set for the detectors: generated quotes with every anomaly type."""

    seed: int = Field(ge=0)
    symbols: int = Field(ge=1)
    # Index of the first ticker: train and test use different symbols.
    first_symbol: int = Field(0, ge=0)
    minutes: int = Field(120, ge=10)
    ticks_per_minute: int = Field(30, ge=1)
    # Each symbol's own price level, volatility, tick rate (around ticks_per_minute), spread, volume scale
    # and fat-tailed shocks, drawn at random: no feature can then stand for "came from our generator".
    randomize: bool = True


class OutOfDistributionSplit(_Strict):
    """The out-of-distribution test set: an independent synthetic market (ingestion/ood_market.py)."""

    seed: int = Field(303, ge=0)
    symbols: int = Field(8, ge=1)
    first_symbol: int = Field(0, ge=0)
    minutes: int = Field(120, ge=10)


class EvaluationSettings(_Strict):
    # Flagged quotes of one symbol less than this apart form one predicted event (one alert to review).
    merge_gap_seconds: float = Field(30.0, ge=0)
    # A predicted event counts as a hit when it overlaps a labelled span widened by this much either side.
    tolerance_seconds: float = Field(10.0, ge=0)
    # Symbols of the training set held out to choose each learned detector's threshold: the one with the
    # highest event recall whose precision there is at least min_precision (0: the best F1).
    calibration_share: float = Field(0.25, gt=0, lt=1)
    min_precision: float = Field(0.99, ge=0, le=1)


class QualityGate(_Strict):
    """What the champion of ``models compare`` on the configured seeds must keep (``make test`` checks it):
    a change that makes the model worse off its own generator fails the build."""

    # Event F1 on the out-of-distribution set, overall and for every anomaly type.
    min_ood_f1: float = Field(0.9, ge=0, le=1)
    min_ood_type_f1: float = Field(0.7, ge=0, le=1)
    # Alerts per 1,000 real quotes, where the real market data is at hand.
    max_real_alerts_per_1000: float = Field(4.0, ge=0)


class ScoringSettings(_Strict):
    enabled: bool = True
    # How often the running stream asks the registry where the champion alias points.
    reload_interval: str = "30 seconds"
    top_features: int = Field(3, ge=1, le=10)
    # A model alert's severity from its rarity (the share of normal training quotes scoring at least as
    # high): high at or below high_rarity, medium at or below medium_rarity, else low.
    medium_rarity: float = Field(0.001, gt=0, le=1)
    high_rarity: float = Field(0.0001, gt=0, le=1)

    _intervals = field_validator("reload_interval")(_check_interval)


class ModelSettings(_Strict):
    # null: a SQLite store under state_dir (mlflow/mlflow.db), artifacts beside it. Any MLflow tracking
    # URI works (a server, "databricks"); the registry follows it unless registry_uri is set.
    tracking_uri: str | None = None
    registry_uri: str | None = None
    artifact_location: str | None = None
    experiment: str = "market_anomaly_detectors"
    registered_name: str = "market_anomaly"
    champion_alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_]*$")
    selection_metric: Literal["f1", "pr_auc", "precision", "recall"] = "f1"
    # A challenger replaces the champion only when its score beats the champion's (re-measured on the same
    # test set) by more than this.
    promotion_margin: float = Field(0.01, ge=0)
    seed: int = Field(42, ge=0)
    train: DataSplit = DataSplit(seed=101, symbols=80, first_symbol=0)
    test: DataSplit = DataSplit(seed=202, symbols=8, first_symbol=80)
    # Scored side by side with the test set; the champion is chosen on the worse of the two.
    out_of_distribution: OutOfDistributionSplit = OutOfDistributionSplit()
    evaluation: EvaluationSettings = EvaluationSettings()
    quality_gate: QualityGate = QualityGate()
    # {detector: its parameters}; the detectors compared, each with its own keys (see models/detectors.py).
    detectors: dict[str, dict[str, Any]] = Field(default_factory=lambda: {name: {} for name in DETECTORS})
    scoring: ScoringSettings = ScoringSettings()

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if name not in DETECTORS:
                hint = _did_you_mean(name, DETECTORS)
                raise ValueError(f"unknown detector {name!r}{hint}; known: {', '.join(DETECTORS)}")
        if not value:
            raise ValueError("at least one detector must be configured")
        return value

    @model_validator(mode="after")
    def _disjoint_symbols(self) -> ModelSettings:
        train = range(self.train.first_symbol, self.train.first_symbol + self.train.symbols)
        test = range(self.test.first_symbol, self.test.first_symbol + self.test.symbols)
        if set(train) & set(test):
            raise ValueError(
                "models.train and models.test must use different symbols: make their "
                "[first_symbol, first_symbol + symbols) ranges disjoint"
            )
        if self.train.seed == self.test.seed:
            raise ValueError("models.train.seed and models.test.seed must differ")
        return self


class LiveFeedSettings(_Strict):
    # A comment line every so often keeps proxies from closing an idle feed and finds departed clients.
    heartbeat: str = "15 seconds"
    # How many records before a resume position are read again to drop alerts the client already has
    # (the publisher resends a batch it is unsure of, with the same alert_id).
    dedup_lookback: int = Field(2000, ge=0)
    # Each live client holds a Kafka consumer and a thread of its own; beyond this many, a 503.
    max_clients: int = Field(64, ge=1, le=1024)

    _interval = field_validator("heartbeat")(_check_interval)


class ServingSettings(_Strict):
    """`surveil api`: the alerts API and console, reading the tables with delta-rs and DuckDB (no Spark)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Browser origins allowed to call the API from another site; empty: CORS off.
    cors_origins: list[str] = Field(default_factory=list)
    # The environment variable holding `name:role:secret` keys, comma-separated, and the one naming a
    # secret file with the same content (a mounted secret; re-read when it changes: rotation without a
    # restart). Never the keys themselves in configuration.
    api_keys_env: str = Field("SURVEIL_API_KEYS", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_keys_file_env: str = Field("SURVEIL_API_KEYS_FILE", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # How old a table snapshot may get before a request looks for new commits.
    refresh_interval: str = "1 second"
    # Quotes shown around an alert: each side, by default and at most.
    quote_window: str = "5 minutes"
    max_quote_window: str = "2 hours"
    default_limit: int = Field(100, ge=1)
    max_limit: int = Field(1000, ge=1)
    # Memory for decoded alerts files (newest first); ~300 MB holds a million alerts.
    cache_mb: int = Field(1024, ge=16)
    # Storage paths for tables named catalog.schema.table (delta-rs reads paths, not metastore names).
    table_paths: dict[str, str] = Field(default_factory=dict)
    # SQL run once on the API's DuckDB connection before any read: what object-store tables need, e.g.
    # ["INSTALL httpfs", "LOAD httpfs", "CREATE SECRET (TYPE s3, PROVIDER credential_chain)"].
    duckdb_setup: list[str] = Field(default_factory=list)
    live: LiveFeedSettings = LiveFeedSettings()

    _intervals = field_validator("refresh_interval", "quote_window", "max_quote_window")(_check_interval)

    @model_validator(mode="after")
    def _limits(self) -> ServingSettings:
        if self.default_limit > self.max_limit:
            raise ValueError("serving.default_limit must not exceed serving.max_limit")
        if interval_seconds(self.quote_window) > interval_seconds(self.max_quote_window):
            raise ValueError("serving.quote_window must not exceed serving.max_quote_window")
        return self


class EmailSettings(_Strict):
    """SMTP delivery of reports. Credentials come from the environment, never from these files."""

    host: str = ""  # empty: e-mail off
    port: int = Field(587, ge=1, le=65535)
    # starttls: plain connection upgraded (587); tls: TLS from the start (465); none: only for a local relay.
    security: Literal["starttls", "tls", "none"] = "starttls"
    sender: str = ""
    username_env: str = Field("SURVEIL_SMTP_USER", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_env: str = Field("SURVEIL_SMTP_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # A report larger than this is linked (download URL on link_base_url) instead of attached.
    max_attachment_mb: float = Field(10.0, gt=0)
    link_base_url: str = ""
    # A CA bundle to trust besides the system's (a company's own mail relay certificate).
    ca_file: str = ""
    attempts: int = Field(3, ge=1, le=20)
    retry_delay: str = "30 seconds"
    timeout: str = "30 seconds"

    _intervals = field_validator("retry_delay", "timeout")(_check_interval)

    @model_validator(mode="after")
    def _sender(self) -> EmailSettings:
        if self.host and "@" not in self.sender:
            raise ValueError("reports.email.sender must be an e-mail address when reports.email.host is set")
        return self


class ReportSettings(_Strict):
    """Surveillance reports (PDF, CSV, HTML): `surveil report`, the API's /v1/reports, the daily job."""

    # Report files and the report_tasks table (the API's background reports); relative: under state_dir.
    dir: str = "reports_api"
    workers: int = Field(2, ge=1, le=16)
    queue_limit: int = Field(8, ge=0, le=1000)
    top_alerts: int = Field(25, ge=1, le=1000)
    chart_symbols: int = Field(6, ge=1, le=50)
    email: EmailSettings = EmailSettings()


class MetricsSettings(_Strict):
    """Prometheus metrics of the stream's query processes (the API serves its own at its port)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    # The lakehouse query's port; the detection query, in its own process, serves on the next one.
    port: int = Field(9464, ge=1, le=65534)
    # On a cluster (spark-submit, Databricks) only when asked: the driver's ports are not ours to open.
    on_cluster: bool = False
    # How often the Kafka end offsets behind the lag metric are read again (at most).
    lag_refresh: str = "5 seconds"

    _interval = field_validator("lag_refresh")(_check_interval)


class MonitorSettings(_Strict):
    """`surveil monitor`: a local Prometheus scraping the stream and the API."""

    host: str = "127.0.0.1"
    port: int = Field(9090, ge=1, le=65535)
    scrape_interval: str = "5 seconds"
    retention: str = Field("7d", pattern=r"^[0-9]+[smhdwy]$")

    _interval = field_validator("scrape_interval")(_check_interval)


class DriftSettings(_Strict):
    """`surveil drift report`: a window of silver against the champion's training reference (Evidently)."""

    # Evidently's per-column test and its threshold (normed Wasserstein: a distance in reference standard
    # deviations; drift above it). The run's verdict: drift when at least this many of the columns the
    # model reads (its features and the one-quote return) drift.
    stattest: Literal["wasserstein", "psi", "jensenshannon", "ks"] = "wasserstein"
    threshold: float = Field(0.1, gt=0)
    min_columns: int = Field(1, ge=1)
    # The window when none is given: this long, ending now.
    window: str = "1 day"
    # Rows of each side the test sees (a random sample beyond): the report stays seconds, not minutes.
    max_rows: int = Field(100_000, ge=1000)
    reports_dir: str = "reports/drift"

    _interval = field_validator("window")(_check_interval)


class ReconnectSettings(_Strict):
    """Reconnect delays: ``initial`` doubling up to ``max`` (with jitter); reset once a connection works."""

    initial: str = "1 second"
    max: str = "60 seconds"

    _check = field_validator("initial", "max")(_check_interval)


class PolygonSettings(_Strict):
    """Polygon.io's (Massive's) WebSocket stocks feed: trades carry the latest quote's bid and ask."""

    url: str = "wss://socket.polygon.io/stocks"  # delayed data: wss://delayed.polygon.io/stocks
    rest_url: str = "https://api.polygon.io"  # market status and ticker checks
    api_key_env: str = Field("POLYGON_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # T: every trade is a quote row (price, size, the latest bid/ask). Q: quotes only update bid/ask,
    # unless publish_quotes also makes each a row (price = mid, volume 0).
    channels: list[Literal["T", "Q"]] = Field(default_factory=lambda: ["T", "Q"], min_length=1)
    publish_quotes: bool = False
    check_symbols: bool = True  # ask the reference API whether each ticker exists before subscribing
    # status: Polygon's market status (holidays included), falling back to the clock; clock; always.
    market_hours: Literal["status", "clock", "always"] = "status"
    extended_hours: bool = True  # pre-market and after-hours count as open
    market_check_interval: str = "5 minutes"
    reconnect: ReconnectSettings = ReconnectSettings()

    _check = field_validator("market_check_interval")(_check_interval)


class YFinanceSettings(_Strict):
    """Yahoo Finance through the yfinance package: its live WebSocket, or polling when it has none."""

    mode: Literal["auto", "stream", "poll"] = "auto"  # auto: stream when the installed yfinance can
    url: str | None = None  # the streamer's address; None: yfinance's own (Yahoo)
    check_symbols: bool = True  # ask Yahoo's chart service about each symbol before streaming
    poll_interval: str = "15 seconds"
    closed_poll_interval: str = "5 minutes"  # every symbol's market closed: ask this rarely
    reconnect: ReconnectSettings = ReconnectSettings()

    _check = field_validator("poll_interval", "closed_poll_interval")(_check_interval)


class ReplayProviderSettings(_Strict):
    """The file replay as a provider: a JSONL or CSV file, optionally paced."""

    file: str | None = None
    rate: float | None = Field(None, gt=0)


class IngestSettings(_Strict):
    """`surveil ingest`: live market data into the quotes topic through a provider plugin."""

    buffer_records: int = Field(10_000, ge=1)  # quotes waiting for Kafka; a full buffer holds the feed back
    dedup_ids: int = Field(100_000, ge=0)  # event_ids remembered to drop a reconnect's resend
    progress_interval: str = "10 seconds"
    metrics_port: int | None = Field(None, ge=1, le=65535)  # None: metrics.port + 2
    retry_for: str = "2 minutes"  # each quote is retried through a broker outage this long
    polygon: PolygonSettings = PolygonSettings()
    yfinance: YFinanceSettings = YFinanceSettings()
    replay: ReplayProviderSettings = ReplayProviderSettings()
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)  # a plugin's own options, by name

    _check = field_validator("progress_interval", "retry_for")(_check_interval)


class Settings(_Strict):
    # `schema` would shadow a pydantic BaseModel attribute: the field has another name, the key is `schema`.
    model_config = ConfigDict(
        extra="forbid", frozen=True, coerce_numbers_to_str=True, validate_by_name=True, validate_by_alias=True
    )

    env: Literal["local", "dev", "prod"] = "local"
    state_dir: str = ".state"
    spark: SparkSettings = SparkSettings()
    kafka: KafkaSettings = KafkaSettings()
    lakehouse: LakehouseSettings = LakehouseSettings()
    stream: StreamSettings = StreamSettings()
    detection: DetectionSettings = DetectionSettings()
    rules: RuleSettings = RuleSettings()
    quality: QualitySettings = QualitySettings()
    schema_settings: SchemaSettings = Field(SchemaSettings(), alias="schema")
    models: ModelSettings = ModelSettings()
    serving: ServingSettings = ServingSettings()
    reports: ReportSettings = ReportSettings()
    metrics: MetricsSettings = MetricsSettings()
    monitor: MonitorSettings = MonitorSettings()
    drift: DriftSettings = DriftSettings()
    ingest: IngestSettings = IngestSettings()

    @model_validator(mode="after")
    def _some_query_runs(self) -> Settings:
        if not self.stream.enabled and not self.detection.enabled:
            raise ValueError("stream.enabled and detection.enabled are both false: no query would run")
        return self

    def to_json(self) -> str:
        """The resolved settings as JSON (read back by :meth:`from_json`), e.g. for a child process."""
        return self.model_dump_json(by_alias=True)

    @staticmethod
    def from_json(text: str) -> Settings:
        """Settings written by :meth:`to_json`, validated again."""
        return _validate(json.loads(text))

    def with_overrides(self, *assignments: str) -> Settings:
        """A copy with ``key=value`` overrides applied and validated again."""
        doc = self.model_dump(by_alias=True)
        for assignment in assignments:
            _apply_assignment(doc, assignment)
        return _validate(doc)


def conf_dir() -> Path:
    """The folder holding base.yml and the overlays: SURVEIL_CONF_DIR, else ./conf or ../conf (a notebook
    in notebooks/ runs in its own folder on Databricks), else the source checkout's, else the copy inside
    the installed wheel (a job on a cluster's node, with no checkout)."""
    explicit = os.environ.get("SURVEIL_CONF_DIR")
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve()
    for candidate in (Path.cwd() / "conf", Path.cwd().parent / "conf", here.parents[2] / "conf"):
        if (candidate / "base.yml").exists():
            return candidate
    return here.parent / "conf"


def load_settings(
    env: str | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> Settings:
    """Load, merge and validate the configuration for ``env`` (default: $SURVEIL_ENV or 'local')."""
    environ = os.environ if environ is None else environ
    env = env or environ.get("SURVEIL_ENV", "local")
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}: choose one of {', '.join(ENVIRONMENTS)}")
    directory = directory or conf_dir()
    base_file = directory / "base.yml"
    if not base_file.exists():
        raise ConfigError(f"no {base_file}: run from the project root or set SURVEIL_CONF_DIR")
    doc = _read_yaml(base_file)
    overlay_file = directory / f"{env}.yml"
    if overlay_file.exists():
        doc = _deep_merge(doc, _read_yaml(overlay_file))
    doc["env"] = env
    for key, value in sorted(environ.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _apply_assignment(doc, f"{dotted}={value}", source=f"environment variable {key}")
    for assignment in overrides:
        _apply_assignment(doc, assignment, source="--set")
    doc = _expand_placeholders(doc, environ, path="")
    return _validate(doc)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_assignment(doc: dict[str, Any], assignment: str, source: str = "--set") -> None:
    if "=" not in assignment:
        raise ConfigError(f"{source}: expected key=value, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    parts = [part for part in dotted.strip().split(".") if part]
    if not parts:
        raise ConfigError(f"{source}: empty key in {assignment!r}")
    if len(parts) > 3 and tuple(parts[:2]) in _FREE_MAPS:
        parts = [*parts[:2], ".".join(parts[2:])]
    # YAML parsing gives 'true' -> True, '5' -> 5, 'null' -> None, while keeping free text as text.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _expand_placeholders(value: Any, environ: Mapping[str, str], path: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand_placeholders(v, environ, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_placeholders(v, environ, path) for v in value]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{path}: needs environment variable {name}, which is not set")
            return environ[name]

        return _PLACEHOLDER.sub(substitute, value)
    return value


def _validate(doc: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
            known = _known_keys(error["loc"][:-1])
            guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            if guess:
                message += f" (did you mean {'.'.join([*map(str, error['loc'][:-1]), guess[0]])!r}?)"
            elif known:
                message += f" (known keys here: {', '.join(sorted(known))})"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def _known_keys(parent: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    parts = list(parent)
    while parts:
        part = parts.pop(0)
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        annotation = fields[str(part)].annotation if str(part) in fields else None
        if get_origin(annotation) is dict and parts:
            # A free-keyed map of models (e.g. the expectations of a suite): the next part is a key.
            annotation = get_args(annotation)[1]
            parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def resolve_local_path(path: str) -> str:
    """An absolute path for a local relative path; URIs and absolute paths are returned unchanged."""
    if "://" in path or path.startswith("/") or re.match(r"^[a-z]+:", path):
        return path
    return str(Path(path).resolve())
