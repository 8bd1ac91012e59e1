"""Session-wide fixtures: one real local Kafka broker (KRaft) shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from surveillance.config import Settings, load_settings
from surveillance.kafka.broker import LocalBroker
from surveillance.spark import get_spark

# Not the default 9092/9093, so a developer's own local broker keeps running undisturbed.
BROKER_PORT = 19192
CONTROLLER_PORT = 19193


@pytest.fixture(scope="session")
def kafka_settings(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Local settings whose state lives in a session temp dir, with a real Kafka broker running for them."""
    settings = load_settings(
        env="local",
        overrides=[
            f"state_dir={tmp_path_factory.mktemp('state')}",
            f"kafka.bootstrap_servers=localhost:{BROKER_PORT}",
            f"kafka.local_broker.port={BROKER_PORT}",
            f"kafka.local_broker.controller_port={CONTROLLER_PORT}",
        ],
    )
    broker = LocalBroker(settings)
    # Registered before up(): a broker that started but never answered is stopped as well.
    request.addfinalizer(broker.down)
    broker.up()
    yield settings


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local SparkSession for the whole run: Delta and the Kafka connector on, UI off, few partitions."""
    settings = load_settings(env="local", overrides=["spark.master=local[2]", "spark.shuffle_partitions=2"])
    session = get_spark(settings, app_name="surveillance-tests")
    yield session
    session.stop()
