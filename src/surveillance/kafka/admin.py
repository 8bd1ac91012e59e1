"""Topic administration with kafka-python: create the pipeline's topics, read offsets, count messages."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from surveillance.config import KafkaSettings
from surveillance.kafka.errors import BrokerAccessError

log = logging.getLogger(__name__)


def ensure_topics(kafka: KafkaSettings, timeout: float = 30) -> dict[str, int]:
    """Create the quotes and alerts topics if missing; wait until usable; return their partition counts."""
    wanted = {kafka.topics.quotes: kafka.quotes_partitions, kafka.topics.alerts: kafka.alerts_partitions}
    with _admin(kafka) as admin:
        existing = set(admin.list_topics())
        for name, partitions in wanted.items():
            if name in existing:
                continue
            # Replication factor -1: the broker's default (1 on the local broker, the cluster's elsewhere).
            # TopicAlreadyExists: created meanwhile by someone else, which is fine.
            with suppress(TopicAlreadyExistsError):
                admin.create_topics({name: {"num_partitions": partitions, "replication_factor": -1}})
        # CreateTopics only means "accepted": wait until every partition has a leader before producing.
        admin.wait_for_topics(list(wanted), timeout_ms=int(timeout * 1000))
        actual = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(wanted))}
    for name, partitions in wanted.items():
        if actual.get(name) != partitions:
            # Kafka cannot shrink a topic, and growing one remaps keys to partitions: say so, change nothing.
            log.warning("topic %s has %s partitions; config asks for %s", name, actual.get(name), partitions)
    return actual


def topic_end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The next offset to be written in each partition of ``topic``."""
    end = _offsets(kafka, topic)[1]
    return {tp.partition: end[tp] for tp in sorted(end)}


def count_messages(kafka: KafkaSettings, topic: str) -> int:
    """Messages currently held in ``topic``: the sum over partitions of end minus beginning offsets."""
    beginning, end = _offsets(kafka, topic)
    return sum(end[tp] - beginning[tp] for tp in end)


def delete_topics(kafka: KafkaSettings, names: Iterable[str], timeout: float = 30) -> None:
    """Delete the named topics; names that do not exist are ignored."""
    names = list(names)
    if not names:
        return
    with _admin(kafka) as admin:
        present = set(names) & set(admin.list_topics())
        if not present:
            return
        with suppress(UnknownTopicOrPartitionError):  # deleted meanwhile by someone else: fine
            admin.delete_topics(sorted(present), timeout_ms=int(timeout * 1000))
        # Deletion is asynchronous: wait until the names are gone, so they can be created again at once.
        deadline = time.monotonic() + timeout
        while present & set(admin.list_topics()):
            if time.monotonic() >= deadline:
                raise KafkaTimeoutError(
                    f"topics {sorted(present)} still exist {timeout:.0f} s after deletion"
                )
            time.sleep(0.1)


def _offsets(kafka: KafkaSettings, topic: str) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    consumer = KafkaConsumer(**kafka.client_options(), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}")
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        return consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    finally:
        consumer.close()


@contextmanager
def _admin(kafka: KafkaSettings) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(**kafka.client_options(), client_id="surveillance-admin")
    try:
        yield admin
    finally:
        admin.close()


def check_access(kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Connect as the settings say (TLS, SASL) and raise :class:`BrokerAccessError` with what is wrong."""
    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # each failed attempt's log would bury the diagnosis
    try:
        admin = KafkaAdminClient(
            **kafka.client_options(),
            client_id="surveillance-access-check",
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise access_problem(kafka, exc) from None
    finally:
        client_log.setLevel(level)
    admin.close()


def access_problem(kafka: KafkaSettings, error: Exception) -> BrokerAccessError:
    """Why a client could not bootstrap, found step by step against each bootstrap server: a TCP
    connection, then the TLS handshake with the configured CA, then (what is left) the SASL login.

    Only a refusal waiting cannot cure counts as ``reachable`` (a certificate not trusted, a failed
    handshake, a SASL login): a PLAINTEXT port that accepts a connection but does not answer yet is a
    broker still starting (seen right after a restart), so it is waited for like one that is down."""
    problems: list[str] = []
    reachable = False
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            connection = socket.create_connection((host, int(port)), timeout=3)
        except (OSError, ValueError) as exc:
            problems.append(f"nothing answers at {server} ({exc})")
            continue
        with connection:
            if kafka.uses_tls:
                context = ssl.create_default_context(cafile=kafka.ca_file())
                try:
                    context.wrap_socket(connection, server_hostname=host).close()
                except ssl.SSLCertVerificationError as exc:
                    trusted = kafka.ssl_ca_location or "the system's certificate authorities"
                    problems.append(
                        f"{server}: its TLS certificate is not trusted ({exc.verify_message}); "
                        f"trusted: {trusted} (kafka.ssl_ca_location)"
                    )
                    reachable = True
                    continue
                except (ssl.SSLError, OSError) as exc:
                    problems.append(f"{server}: the TLS handshake failed ({exc}); does it serve TLS?")
                    reachable = True
                    continue
        if kafka.security_protocol.startswith("SASL_"):
            reachable = True
            problems.append(
                f"{server} accepted the connection but not the {kafka.sasl_mechanism} login of user "
                f"{os.environ.get(kafka.sasl_username_env or '', '')!r}: the user or the password (the "
                f"environment variables {kafka.sasl_username_env} and {kafka.sasl_password_env}) is wrong, "
                "or the broker does not enable that mechanism"
            )
        else:
            problems.append(
                f"{server} accepted the connection but did not answer as a Kafka broker (yet: starting up?)"
            )
    summary = "; ".join(problems)
    return BrokerAccessError(
        f"cannot use Kafka at {kafka.bootstrap_servers} ({kafka.security_protocol}): {summary} [{error}]",
        reachable,
    )
