"""API keys: ``name:role:secret`` entries from an environment variable or a mounted secret file.

Secrets are kept only as SHA-256 digests, and a presented key is compared with every stored digest in
constant time, so how long a check takes says nothing about which key came close. The secret file is
read again when it changes: a key is rotated by rewriting the file, without a restart (write a new file
and rename it over the old one, so no reader sees it half-written).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from surveillance.config import ConfigError

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

VIEWER, ANALYST = "viewer", "analyst"
ROLES = (VIEWER, ANALYST)
# What each role may do: analysts also act on alerts.
PERMISSIONS = {VIEWER: frozenset({"read"}), ANALYST: frozenset({"read", "act"})}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


@dataclass(frozen=True)
class _StoredKey:
    principal: Principal
    digest: bytes


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_keys(text: str, source: str) -> list[_StoredKey]:
    """Entries ``name:role:secret`` separated by commas or newlines; ``#`` starts a comment line.

    Errors name the entry by position, never by its secret.
    """
    keys: list[_StoredKey] = []
    entries = [
        e.strip() for line in text.splitlines() if not line.lstrip().startswith("#") for e in line.split(",")
    ]
    for position, entry in enumerate((e for e in entries if e), start=1):
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(part.strip() for part in parts):
            raise ConfigError(f"{source}: entry {position} is not name:role:secret")
        name, role, secret = (part.strip() for part in parts)
        if role not in ROLES:
            raise ConfigError(
                f"{source}: entry {position} ({name}) has role {role!r}; roles: {', '.join(ROLES)}"
            )
        if len(secret) < 16:
            raise ConfigError(f"{source}: entry {position} ({name}) has a secret shorter than 16 characters")
        keys.append(_StoredKey(Principal(name, role), _digest(secret)))
    return keys


class ApiKeys:
    """The keys the API accepts, from ``$<keys_env>`` and the file named by ``$<file_env>``."""

    def __init__(self, keys_env: str, file_env: str, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._from_env = parse_keys(environ.get(keys_env, ""), f"${keys_env}")
        self._file = Path(environ[file_env]) if environ.get(file_env) else None
        self._file_env = file_env
        self._file_stamp: tuple[int, int] | None = None
        self._from_file: list[_StoredKey] = []
        self._lock = threading.Lock()
        self._reload_file(at_start=True)
        if not self._from_env and not self._from_file:
            raise ConfigError(
                f"no API keys: set ${keys_env} (or ${file_env} to a secret file) to name:role:secret "
                f"entries, role one of {', '.join(ROLES)}"
            )

    def _reload_file(self, at_start: bool = False) -> None:
        if self._file is None:
            return
        try:
            stat = self._file.stat()
        except FileNotFoundError as exc:
            if at_start:
                raise ConfigError(f"${self._file_env} names {self._file}, which does not exist") from exc
            if self._from_file:
                # The secret was deleted (unmounted): its keys no longer open anything.
                log.warning("%s is gone: the %d keys it held are revoked", self._file, len(self._from_file))
            self._from_file, self._file_stamp = [], None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._file_stamp:
            return
        try:
            text = self._file.read_text()
        except OSError as exc:
            if at_start:
                raise ConfigError(
                    f"${self._file_env} names {self._file}, which cannot be read: {exc}"
                ) from exc
            log.warning("%s cannot be read (%s): the keys read last still apply", self._file, exc)
            return
        if not text.strip() and not at_start:
            # Caught between a truncate and a write: keep the last keys and look again next time.
            return
        self._from_file = parse_keys(text, f"${self._file_env} ({self._file})")
        self._file_stamp = stamp

    def authenticate(self, presented: str | None) -> Principal | None:
        """The key's principal, or None. Every stored digest is compared, whatever matches."""
        if not presented:
            return None
        with self._lock:
            # A file half-written by a rotation: keep the keys read last.
            with contextlib.suppress(ConfigError):
                self._reload_file()
            stored = [*self._from_env, *self._from_file]
        offered = _digest(presented)
        found: Principal | None = None
        for key in stored:
            if hmac.compare_digest(key.digest, offered) and found is None:
                found = key.principal
        return found

    @property
    def count(self) -> int:
        return len(self._from_env) + len(self._from_file)
