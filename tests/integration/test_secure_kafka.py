"""The pipeline over SASL_SSL (SCRAM-SHA-512, TLS with the local broker's own CA), as production runs it:
credentials from the environment, the same stream; and what a user sees when they are wrong."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable
from stream_process import alert_ids_on_topic, stream_command, stream_overrides

from surveillance.config import Settings, load_settings
from surveillance.ingestion.generator import generate_quotes, write_jsonl
from surveillance.ingestion.replay import replay_file
from surveillance.kafka.broker import LocalBroker
from surveillance.lakehouse import table_locations

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

PORT, CONTROLLER_PORT = 19592, 19593
USER, PASSWORD = "surveil-analyst", 'a "quoted" pass\\word'  # quotes and a backslash: JAAS escaping


@pytest.fixture(scope="module")
def secure_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A SASL_SSL local broker of its own (the session's plain one is left alone), up through the CLI."""
    state = tmp_path_factory.mktemp("secure")
    environ = {"SURVEIL_TEST_KAFKA_USER": USER, "SURVEIL_TEST_KAFKA_PASSWORD": PASSWORD}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        settings = load_settings(
            env="local",
            overrides=[
                f"state_dir={state}/state",
                f"lakehouse.root={state}/lakehouse",
                f"stream.checkpoint_dir={state}/checkpoint",
                f"kafka.bootstrap_servers=localhost:{PORT}",
                f"kafka.local_broker.port={PORT}",
                f"kafka.local_broker.controller_port={CONTROLLER_PORT}",
                "kafka.security_protocol=SASL_SSL",
                "kafka.sasl_mechanism=SCRAM-SHA-512",
                "kafka.sasl_username_env=SURVEIL_TEST_KAFKA_USER",
                "kafka.sasl_password_env=SURVEIL_TEST_KAFKA_PASSWORD",
                f"kafka.ssl_ca_location={state}/state/kafka/tls/ca.pem",
            ],
        )
        broker = LocalBroker(settings)
        try:
            ports = [
                f"kafka.local_broker.port={PORT}",
                f"kafka.local_broker.controller_port={CONTROLLER_PORT}",
            ]
            sets = [arg for value in [*stream_overrides(settings), *ports] for arg in ("--set", value)]
            up = subprocess.run(
                [sys.executable, "-m", "surveillance.cli", *sets, "kafka", "up"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert up.returncode == 0, up.stdout + up.stderr
            yield settings
        finally:
            broker.down()


def test_the_stream_runs_over_sasl_ssl_with_credentials_from_the_environment(
    secure_settings: Settings, tmp_path: Path
) -> None:
    properties = (Path(secure_settings.state_dir) / "kafka" / "server.properties").read_text()
    assert "listeners=SASL_SSL://localhost" in properties and "PLAINTEXT://" not in properties
    assert PASSWORD not in properties  # the broker knows the user's salted SCRAM credential only
    generated = generate_quotes(symbols=4, minutes=15, seed=5, inject_anomalies=True)
    result = replay_file(
        write_jsonl(generated, tmp_path / "quotes.jsonl"), secure_settings.kafka, progress=False
    )
    assert result.ok and result.sent == len(generated.raw_lines)

    done = subprocess.run(stream_command(secure_settings), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    locations = table_locations(secure_settings)
    bronze = DeltaTable(locations["bronze_quotes"]).to_pandas()
    alerts = DeltaTable(locations["alerts"]).to_pandas()
    assert len(bronze) == result.sent and not bronze.duplicated(["partition", "offset"]).any()
    assert len(alerts) > 0 and set(alert_ids_on_topic(secure_settings)) == set(alerts.alert_id)


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("SURVEIL_TEST_KAFKA_PASSWORD=wrong", "accepted the connection but not the SCRAM-SHA-512 login"),
        ("ssl_ca_location=", "its TLS certificate is not trusted"),
    ],
)
def test_a_wrong_password_or_an_untrusted_certificate_is_said_at_once(
    secure_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str, said: str
) -> None:
    name, _, value = override.partition("=")
    settings = secure_settings
    if name == "ssl_ca_location":
        settings = secure_settings.with_overrides("kafka.ssl_ca_location=null")
    else:
        monkeypatch.setenv(name, value)
    lines = tmp_path / "one.jsonl"
    lines.write_text('{"event_id": "x"}\n')
    replayed = replay_file(lines, settings.kafka, progress=False, retry_for_s=120)
    assert not replayed.ok and said in (replayed.first_error or ""), replayed.first_error
    assert replayed.not_attempted_from == 1  # nothing was sent, and it says so

    stream = subprocess.run(stream_command(settings), capture_output=True, text=True, timeout=300)
    assert stream.returncode == 2, stream.stderr[-3000:]
    assert said in " ".join(stream.stdout.split() + stream.stderr.split()), stream.stderr[-3000:]
    assert "Traceback" not in stream.stderr, stream.stderr[-3000:]
