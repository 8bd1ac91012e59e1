"""Debian packages a feature needs at run time (Chromium for charts in PDFs and the browser tests,
poppler-utils for page renders), installed with apt-get when missing and running as root."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence


class SystemPackageMissing(RuntimeError):
    """The program is not installed and cannot be installed from here; the message says how to."""


def ensure_program(program: str, packages: Sequence[str], why: str) -> str:
    """The path of ``program``, installing Debian's ``packages`` first if it is not on PATH."""
    found = shutil.which(program)
    if found:
        return found
    command = f"apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemPackageMissing(f"{why} needs {program}: install it ({command}, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # The package lists of a fresh machine may be missing or stale.
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    found = shutil.which(program)
    if not found:
        raise SystemPackageMissing(f"{why} needs {program}, still missing after {command}")
    return found


def ensure_chromium(why: str = "drawing charts") -> str:
    return ensure_program("chromium", ["chromium", "chromium-driver"], why)
