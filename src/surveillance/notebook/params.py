"""Notebook parameters that are not plain values: the ``overrides`` widget's configuration assignments."""

from __future__ import annotations

import re

from surveillance.config import ConfigError

# One assignment per line or between semicolons: a widget is one line of text in the Databricks UI.
_SEPARATORS = re.compile(r"[;\n]")


def split_overrides(text: str) -> list[str]:
    """``key=value`` assignments from text separated by newlines or ``;`` (blanks and ``#`` lines skipped)."""
    assignments = []
    for part in _SEPARATORS.split(text or ""):
        assignment = part.strip()
        if not assignment or assignment.startswith("#"):
            continue
        if "=" not in assignment or not assignment.split("=", 1)[0].strip():
            raise ConfigError(f"overrides: expected key=value, got {assignment!r}")
        assignments.append(assignment)
    return assignments
