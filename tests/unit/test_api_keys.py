"""API keys: parsing, roles, constant-time lookup, rotation through the secret file, secrets never echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surveillance.config import ConfigError
from surveillance.serving.auth import ApiKeys, Principal, parse_keys

A, B, C = "a" * 20, "b-secret-0123456789", "c" * 32


def keys(environ: dict[str, str]) -> ApiKeys:
    return ApiKeys("KEYS", "KEYS_FILE", environ=environ)


def test_keys_and_roles() -> None:
    store = keys({"KEYS": f"amy:analyst:{A}, val:viewer:{B}"})
    assert store.authenticate(A) == Principal("amy", "analyst")
    assert store.authenticate(B) == Principal("val", "viewer")
    assert (
        store.authenticate(A + "x") is None
        and store.authenticate("") is None
        and store.authenticate(None) is None
    )
    assert store.authenticate(A).may("act") and not store.authenticate(B).may("act")
    assert store.authenticate(B).may("read")


def test_bad_entries_are_named_without_their_secret() -> None:
    for text, fragment in [
        (f"amy:admin:{A}", "role 'admin'"),
        ("amy:analyst:tiny-pw", "shorter than 16"),
        (f"amy{A}", "entry 1 is not name:role:secret"),
        (f"ok:viewer:{B},:analyst:{C}", "entry 2"),
    ]:
        with pytest.raises(ConfigError) as error:
            parse_keys(text, "$KEYS")
        assert fragment in str(error.value)
        for secret in (A, B, C, "tiny-pw"):
            assert secret not in str(error.value)
    with pytest.raises(ConfigError, match="no API keys"):
        keys({})


def test_secrets_are_kept_only_as_digests() -> None:
    store = keys({"KEYS": f"amy:analyst:{A}"})
    assert A not in repr(store.__dict__) and A.encode() not in repr(store.__dict__).encode()


def test_rotation_through_the_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "keys"
    secret_file.write_text(f"# the desk\nval:viewer:{B}\n")
    store = keys({"KEYS": f"amy:analyst:{A}", "KEYS_FILE": str(secret_file)})
    assert store.authenticate(B) == Principal("val", "viewer")
    secret_file.write_text(f"val:viewer:{C}\n")
    stat = secret_file.stat()
    os.utime(secret_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert store.authenticate(B) is None
    assert store.authenticate(C) == Principal("val", "viewer")
    assert store.authenticate(A) == Principal("amy", "analyst")
    # A half-written file keeps the keys read last.
    secret_file.write_text("val:vie")
    os.utime(secret_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    assert store.authenticate(C) == Principal("val", "viewer")
    with pytest.raises(ConfigError, match="does not exist"):
        keys({"KEYS_FILE": str(tmp_path / "missing")})


def test_secret_file_emptied_unreadable_or_removed(tmp_path: Path) -> None:
    secret_file = tmp_path / "keys"
    secret_file.write_text(f"val:viewer:{B}\n")
    store = keys({"KEYS": f"amy:analyst:{A}", "KEYS_FILE": str(secret_file)})
    stat = secret_file.stat()

    def touch(step: int) -> None:
        os.utime(secret_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + step * 1_000_000))

    # Caught between a truncate and a write: the last keys still apply.
    secret_file.write_text("")
    touch(1)
    assert store.authenticate(B) == Principal("val", "viewer")
    # Not readable (a directory stands in for a permission error, which root never gets): same.
    secret_file.unlink()
    secret_file.mkdir()
    assert store.authenticate(B) == Principal("val", "viewer")
    # Removed: the file's keys are revoked, the environment's stay.
    secret_file.rmdir()
    assert store.authenticate(B) is None
    assert store.authenticate(A) == Principal("amy", "analyst")
    # Back: read again.
    secret_file.write_text(f"val:viewer:{C}\n")
    assert store.authenticate(C) == Principal("val", "viewer")
