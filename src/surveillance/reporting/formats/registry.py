"""The report formats by name: a format is one class that renders a :class:`ReportContent` to files."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from surveillance.reporting.content import ReportContent, ReportError

FORMATS: dict[str, type[ReportFormat]] = {}


class ReportFormat(ABC):
    """One output format. ``render`` writes the report to ``path`` (and any companion files beside it) and
    returns every file written, the main one first."""

    name: ClassVar[str]
    media_type: ClassVar[str]
    extension: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        FORMATS[cls.name] = cls

    @abstractmethod
    def render(self, content: ReportContent, path: Path) -> list[Path]: ...


def report_format(name: str) -> ReportFormat:
    """The format called ``name`` (``pdf``, ``csv``, ``html``, or one a plug-in registered)."""
    import surveillance.reporting.formats  # noqa: F401 - registers the built-in formats

    if name not in FORMATS:
        raise ReportError(f"unknown report format {name!r}; formats: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]()


def format_names() -> list[str]:
    import surveillance.reporting.formats  # noqa: F401 - registers the built-in formats

    return sorted(FORMATS)


def media_type_of(path: Path) -> str:
    for fmt in FORMATS.values():
        if path.suffix == f".{fmt.extension}":
            return fmt.media_type
    return "application/octet-stream"
