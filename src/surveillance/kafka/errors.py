"""Errors of the Kafka edge, importable without loading a Kafka client."""

from __future__ import annotations


class BrokerAccessError(RuntimeError):
    """The brokers cannot be used as the settings say; ``reachable``: something answered (so waiting will
    not help: a certificate not trusted, credentials refused), or nothing did (a broker down, which may
    come back)."""

    def __init__(self, message: str, reachable: bool) -> None:
        super().__init__(message)
        self.reachable = reachable
