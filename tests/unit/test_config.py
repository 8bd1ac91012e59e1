"""Configuration: layering, overrides from env and --set, and clear errors for typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from surveillance.config import ConfigError, interval_seconds, load_settings

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_base_and_local_overlay_validate() -> None:
    settings = load_settings(env="local", environ={}, directory=CONF)
    assert settings.env == "local"
    assert settings.kafka.topics.quotes == "quotes"
    assert settings.rules.price_jump.threshold == 0.05


def test_set_overrides_win_over_environment_and_files() -> None:
    environ = {"SURVEIL__RULES__PRICE_JUMP__THRESHOLD": "0.07", "SURVEIL__KAFKA__QUOTES_PARTITIONS": "6"}
    settings = load_settings(
        env="local", overrides=["rules.price_jump.threshold=0.09"], environ=environ, directory=CONF
    )
    assert settings.rules.price_jump.threshold == 0.09
    assert settings.kafka.quotes_partitions == 6


def test_typo_in_key_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"kafka\.bootstrap_server: unknown key \(did you mean 'kafka\.bootstrap_servers'"
    ):
        load_settings(env="local", overrides=["kafka.bootstrap_server=x:1"], environ={}, directory=CONF)


def test_typo_in_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"rules\.zscore\.treshold: unknown key"):
        load_settings(env="local", environ={"SURVEIL__RULES__ZSCORE__TRESHOLD": "3"}, directory=CONF)


def test_bad_values_are_explained() -> None:
    with pytest.raises(ConfigError, match=r"stream\.watermark"):
        load_settings(env="local", overrides=["stream.watermark=soon"], environ={}, directory=CONF)
    with pytest.raises(ConfigError, match=r"rules\.price_jump\.threshold"):
        load_settings(env="local", overrides=["rules.price_jump.threshold=-1"], environ={}, directory=CONF)


def test_unknown_environment_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown environment 'staging'"):
        load_settings(env="staging", environ={}, directory=CONF)


def test_dev_needs_its_bootstrap_servers_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        load_settings(env="dev", environ={}, directory=CONF)
    settings = load_settings(
        env="dev",
        environ={"KAFKA_BOOTSTRAP_SERVERS": "broker:9093"},
        directory=CONF,
    )
    assert settings.kafka.bootstrap_servers == "broker:9093"
    assert settings.kafka.security_protocol == "SASL_SSL"


def test_secrets_are_not_accepted_in_config_options() -> None:
    with pytest.raises(ConfigError, match="secret"):
        load_settings(
            env="local", overrides=["kafka.options.sasl.jaas.config=abc"], environ={}, directory=CONF
        )


def test_sasl_credentials_come_from_the_named_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        env="local",
        overrides=[
            "kafka.security_protocol=SASL_SSL",
            "kafka.sasl_mechanism=SCRAM-SHA-512",
            "kafka.sasl_username_env=MY_USER",
            "kafka.sasl_password_env=MY_PASSWORD",
        ],
        environ={},
        directory=CONF,
    )
    monkeypatch.setenv("MY_USER", "alice")
    monkeypatch.setenv("MY_PASSWORD", 'pa"ss\\word')
    spark = settings.kafka.spark_options()
    assert spark["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    # Quotes and backslashes escaped for Kafka's JAAS parser: the password cannot end the value early.
    assert spark["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" '
        'password="pa\\"ss\\\\word";'
    )
    client = settings.kafka.client_options()
    assert (client["sasl_plain_username"], client["sasl_plain_password"]) == ("alice", 'pa"ss\\word')
    monkeypatch.delenv("MY_PASSWORD")
    with pytest.raises(ConfigError, match="MY_PASSWORD is not set"):
        settings.kafka.spark_options()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["kafka.security_protocol=SASL_SSL"], "needs kafka.sasl_mechanism"),
        (["kafka.sasl_mechanism=PLAIN"], "kafka.security_protocol is PLAINTEXT"),
        (["kafka.ssl_ca_location=/tmp/ca.pem"], "ssl_ca_location is set but"),
        (["kafka.security_protocol=SASL_SSL", "kafka.sasl_mechanism=GSSAPI"], "sasl_mechanism"),
    ],
)
def test_incomplete_kafka_security_fails_at_start(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env="local", overrides=overrides, environ={}, directory=CONF)


def test_the_ca_file_must_exist(tmp_path: Path) -> None:
    settings = load_settings(
        env="local",
        overrides=["kafka.security_protocol=SSL", f"kafka.ssl_ca_location={tmp_path}/missing.pem"],
        environ={},
        directory=CONF,
    )
    with pytest.raises(ConfigError, match="no such file"):
        settings.kafka.client_options()
    (tmp_path / "missing.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings.kafka.spark_options()["kafka.ssl.truststore.type"] == "PEM"


def test_interval_parsing() -> None:
    assert interval_seconds("10 minutes") == 600
    assert interval_seconds("2 seconds") == 2
    assert interval_seconds("1 hour") == 3600


def test_overrides_of_text_fields_stay_text() -> None:
    settings = load_settings(
        env="local",
        overrides=[
            "spark.conf.spark.sql.shuffle.partitions=8",
            "kafka.options.enable.idempotence=true",
            "kafka.topics.quotes=2024",
        ],
        environ={},
        directory=CONF,
    )
    assert settings.spark.conf == {"spark.sql.shuffle.partitions": "8"}
    assert settings.kafka.options == {"enable.idempotence": "true"}
    assert settings.kafka.topics.quotes == "2024"


def test_set_before_and_after_the_command_both_count() -> None:
    from surveillance.cli import _env, _overrides, build_parser

    args = build_parser().parse_args(["--set", "a=1", "--env", "dev", "stream", "--set", "b=2", "--once"])
    assert _overrides(args) == ["a=1", "b=2"] and _env(args) == "dev" and args.once


def test_each_query_process_runs_one_query_with_the_same_settings() -> None:
    from surveillance.config import Settings
    from surveillance.pipeline.runner import query_process_settings

    settings = load_settings(
        env="local", overrides=["rules.price_jump.threshold=0.04"], environ={}, directory=CONF
    )
    assert settings.stream.processes == 2  # a laptop runs the two queries apart
    children = query_process_settings(settings)
    detection, lakehouse = children["detection"], children["lakehouse"]
    assert detection.detection.enabled and not detection.stream.enabled
    assert lakehouse.stream.enabled and not lakehouse.detection.enabled
    for child in children.values():
        assert child.stream.processes == 1 and child.rules.price_jump.threshold == 0.04
        assert Settings.from_json(child.to_json()) == child  # how a child process receives them
    with pytest.raises(ConfigError, match="no query would run"):
        settings.with_overrides("stream.enabled=false", "detection.enabled=false")
