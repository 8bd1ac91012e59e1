"""The local broker's secured listener, for ``kafka.security_protocol: SASL_SSL`` on a laptop or in tests.

TLS: a self-signed certificate for ``localhost`` made with the JDK's ``keytool`` (no other tool needed),
its PEM copy the CA file clients trust (``kafka.ssl_ca_location``). SASL: SCRAM (SHA-256 or SHA-512). The
broker authenticates to itself as ``surveil-broker``, a user written into its storage when it is formatted;
the settings' user (from the environment variables they name) is upserted at every start, so a changed
password takes effect on the next ``surveil kafka up``. Generated passwords and the keystore live in
``<state_dir>/kafka/tls/`` (mode 0700), never in the repository.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surveillance.config import KafkaSettings

BROKER_USER = "surveil-broker"
_SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class SecurityError(RuntimeError):
    """The local broker cannot serve the security the settings ask for."""


@dataclass(frozen=True)
class BrokerSecurity:
    mechanism: str
    keystore: Path
    ca_file: Path
    keystore_password: str
    broker_password: str

    def listener_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """server.properties entries of a SASL_SSL client listener (the controller stays on loopback)."""
        module = "org.apache.kafka.common.security.scram.ScramLoginModule"
        jaas = f'{module} required username="{BROKER_USER}" password="{self.broker_password}";'
        return {
            "listeners": f"SASL_SSL://localhost:{port},CONTROLLER://localhost:{controller_port}",
            "advertised.listeners": f"SASL_SSL://localhost:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": self.mechanism,
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            f"listener.name.sasl_ssl.{self.mechanism.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }

    def format_arguments(self) -> list[str]:
        """StorageTool ``format`` arguments that create the broker's own SCRAM user."""
        return ["--add-scram", f'{self.mechanism}=[name={BROKER_USER},password="{self.broker_password}"]']

    def broker_client_options(self, bootstrap: str) -> dict[str, Any]:
        """kafka-python options to talk to the broker as its own user (probes, user upserts)."""
        return {
            "bootstrap_servers": [bootstrap],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": BROKER_USER,
            "sasl_plain_password": self.broker_password,
            "ssl_cafile": str(self.ca_file),
        }


def broker_security(kafka: KafkaSettings, home: Path, java: str) -> BrokerSecurity | None:
    """The local broker's TLS and SCRAM material for these settings (made on first use); None for
    PLAINTEXT. Only SASL_SSL with SCRAM is served locally: other protocols are a clear error."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    if kafka.security_protocol != "SASL_SSL" or kafka.sasl_mechanism not in _SCRAM:
        raise SecurityError(
            f"the local broker serves PLAINTEXT or SASL_SSL with {' or '.join(_SCRAM)}; the settings ask "
            f"for {kafka.security_protocol} with {kafka.sasl_mechanism}"
        )
    tls = home / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    tls.chmod(0o700)
    secrets_path = tls / "secrets.json"
    if secrets_path.exists():
        stored = json.loads(secrets_path.read_text())
    else:
        stored = {"keystore": secrets.token_urlsafe(18), "broker": secrets.token_urlsafe(18)}
        descriptor = os.open(secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle)
    security = BrokerSecurity(
        mechanism=kafka.sasl_mechanism,
        keystore=tls / "broker.p12",
        ca_file=tls / "ca.pem",
        keystore_password=stored["keystore"],
        broker_password=stored["broker"],
    )
    if not (security.keystore.exists() and security.ca_file.exists()):
        _make_certificate(security, Path(java).with_name("keytool"))
    return security


def _make_certificate(security: BrokerSecurity, keytool: Path) -> None:
    """A self-signed RSA certificate for localhost (and 127.0.0.1), ten years, and its PEM copy."""
    security.keystore.unlink(missing_ok=True)
    password = security.keystore_password
    steps = [
        [
            str(keytool), "-genkeypair", "-alias", "localhost", "-keyalg", "RSA", "-keysize", "2048",
            "-validity", "3650", "-dname", "CN=localhost", "-ext", "SAN=dns:localhost,ip:127.0.0.1",
            "-keystore", str(security.keystore), "-storetype", "PKCS12",
            "-storepass", password, "-keypass", password, "-noprompt",
        ],
        [
            str(keytool), "-exportcert", "-rfc", "-alias", "localhost",
            "-keystore", str(security.keystore), "-storepass", password, "-file", str(security.ca_file),
        ],
    ]  # fmt: skip
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SecurityError(f"keytool failed ({' '.join(command[:2])}): {done.stdout}{done.stderr}")


def upsert_user(security: BrokerSecurity, bootstrap: str, kafka: KafkaSettings) -> str:
    """Create or update the settings' SCRAM user on the running broker; its name."""
    from kafka import KafkaAdminClient
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    credentials = kafka.sasl_credentials()
    if credentials is None:
        raise SecurityError("SASL_SSL settings without a user (kafka.sasl_username_env)")
    user, password = credentials
    mechanism = (
        ScramMechanism.SCRAM_SHA_512 if security.mechanism.endswith("512") else ScramMechanism.SCRAM_SHA_256
    )
    admin = KafkaAdminClient(**security.broker_client_options(bootstrap), client_id="surveillance-users")
    try:
        errors = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(user, mechanism, password)])
    finally:
        admin.close()
    if errors.get(user):
        raise SecurityError(f"the broker refused SCRAM credentials for {user!r}: {errors[user]}")
    return user
