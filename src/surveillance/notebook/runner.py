"""Run a Databricks source-format notebook (``notebooks/*.py``) headless, on a laptop.

jupytext has no Databricks format, so the file is split here: cells are separated by ``# COMMAND
----------``; ``# MAGIC %md`` cells are documentation and skipped, ``# MAGIC %pip`` cells are skipped with
a note (the virtualenv already has the packages), any other magic is refused before anything runs. Code
cells are executed in order in one namespace holding what Databricks provides: ``spark``, ``dbutils``,
``display`` and ``displayHTML``. Relative paths in a notebook resolve from the working directory: run from
the project root.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from surveillance.notebook.local import (
    LocalDbutils,
    LocalDisplay,
    LocalWidgets,
    did_you_mean,
    figures_shown_by,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

NOTEBOOK_HEADER = "# Databricks notebook source"
CELL_SEPARATOR = "# COMMAND ----------"
MAGIC_PREFIX = "# MAGIC"
TITLE_PREFIX = "# DBTITLE"  # Databricks' cell titles: a comment line at the top of a cell
DEFAULT_OUTPUT_ROOT = Path("reports") / "notebooks"

CellKind = Literal["python", "markdown", "pip", "magic"]


class NotebookError(Exception):
    """A notebook that cannot be found, split or run; the message names the notebook (and cell)."""


@dataclass(frozen=True)
class Cell:
    """One cell: its number as Databricks shows it (from 1), where its text starts in the file, its text."""

    number: int
    line: int
    kind: CellKind
    source: str
    magic: str = ""  # the magic command of a magic cell, e.g. "%md", "%sql"

    @property
    def first_line(self) -> str:
        """The cell's first non-blank line (how an error points at it)."""
        return next((text.strip() for text in self.source.splitlines() if text.strip()), "")


def _magic_text(line: str) -> str:
    text = line.strip()[len(MAGIC_PREFIX) :]
    return text[1:] if text.startswith(" ") else text


def _cell(number: int, start: int, lines: list[str], name: str) -> Cell:
    content = [text for text in lines if text.strip() and not text.lstrip().startswith(TITLE_PREFIX)]
    magic = [text for text in content if text.lstrip().startswith(MAGIC_PREFIX)]
    if not magic:
        return Cell(number, start, "python", "\n".join(lines))
    if len(magic) != len(content):
        raise NotebookError(f"{name}, cell {number} (line {start}): mixes '# MAGIC' lines with code")
    text = "\n".join(_magic_text(line) for line in magic)
    command = text.split(maxsplit=1)[0] if text.strip() else ""
    kind: CellKind = "magic"
    if command.startswith("%md"):
        kind = "markdown"
    elif command == "%pip":
        kind = "pip"
    return Cell(number, start, kind, text, magic=command)


def split_cells(text: str, name: str = "<notebook>") -> list[Cell]:
    """The cells of a notebook in Databricks source format (an error if the header line is missing)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != NOTEBOOK_HEADER:
        raise NotebookError(f"{name}: not a Databricks notebook (its first line must be {NOTEBOOK_HEADER!r})")
    chunks: list[tuple[int, list[str]]] = [(2, [])]
    for number, line in enumerate(lines[1:], start=2):
        if line.strip() == CELL_SEPARATOR:
            chunks.append((number + 1, []))
        else:
            chunks[-1][1].append(line)
    cells: list[Cell] = []
    for start, chunk in chunks:
        # Blank lines around a cell are Databricks' own padding; the cell starts at its first text line.
        first = next((i for i, text in enumerate(chunk) if text.strip()), None)
        if first is None:
            continue
        last = max(i for i, text in enumerate(chunk) if text.strip())
        cells.append(_cell(len(cells) + 1, start + first, chunk[first : last + 1], name))
    return cells


def notebook_title(path: Path) -> str:
    """The first markdown heading of a notebook, without its '#' marks ('' if it has none)."""
    for cell in split_cells(path.read_text(encoding="utf-8"), name=str(path)):
        if cell.kind == "markdown":
            for line in cell.source[len(cell.magic) :].splitlines():
                if line.lstrip().startswith("#"):
                    return line.lstrip("# ").strip()
    return ""


def notebooks_dir() -> Path:
    """The project's ``notebooks/`` folder: under the working directory, else beside the library's source."""
    local = Path.cwd() / "notebooks"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[3] / "notebooks"


def _is_notebook(path: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        return handle.readline().strip() == NOTEBOOK_HEADER


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """Every Databricks notebook in the folder, by name."""
    folder = directory or notebooks_dir()
    return sorted(path for path in folder.glob("*.py") if _is_notebook(path))


def find_notebook(name: str, directory: Path | None = None) -> Path:
    """A notebook by path, by file stem (``05_surveillance_dashboard``) or by its number (``05``)."""
    candidate = Path(name)
    if candidate.suffix == ".py" or len(candidate.parts) > 1:
        if not candidate.is_file():
            raise NotebookError(f"no notebook file {name}")
        return candidate
    notebooks = list_notebooks(directory)
    matches = [path for path in notebooks if name in (path.stem, path.stem.split("_", 1)[0])]
    if len(matches) == 1:
        return matches[0]
    stems = [path.stem for path in notebooks]
    if matches:
        raise NotebookError(f"{name!r} names several notebooks: {', '.join(p.stem for p in matches)}")
    raise NotebookError(f"no notebook {name!r}{did_you_mean(name, stems)}; known: {', '.join(stems)}")


def default_output_dir(path: Path) -> Path:
    """Where a notebook's figures go unless told otherwise: reports/notebooks/<notebook name>/."""
    return DEFAULT_OUTPUT_ROOT / path.stem


@dataclass
class NotebookRun:
    """What a run did: the cells it executed, the files ``display`` wrote, the notebook's namespace."""

    path: Path
    cells_run: int
    files: list[Path]
    seconds: float
    namespace: dict[str, Any] = field(repr=False)


def _check_parameters(widgets: LocalWidgets, path: Path, finished: bool) -> None:
    # Checked once widgets exist (after the cell defining them) rather than only at the end: a mistyped
    # parameter should stop the run before it replays or streams anything.
    defined = widgets.defined()
    if not (defined or finished):
        return
    unknown = widgets.unknown_parameters()
    if unknown:
        hints = "; ".join(f"{name!r}{did_you_mean(name, defined)}" for name in unknown)
        raise NotebookError(
            f"{path}: parameters given that no widget takes: {hints}; "
            f"its widgets: {', '.join(defined) or 'none'}"
        )


def _spark_for(parameters: Mapping[str, str], app_name: str) -> SparkSession:
    # The notebook builds its own settings from the same two widgets; Spark is made from what it will see
    # (its env widget defaults to local whatever $SURVEIL_ENV says).
    from surveillance.config import load_settings
    from surveillance.notebook.params import split_overrides
    from surveillance.spark import get_spark

    settings = load_settings(
        env=parameters.get("env") or "local", overrides=split_overrides(parameters.get("overrides", ""))
    )
    return get_spark(settings, app_name=app_name)


def run_notebook(
    path: Path,
    parameters: Mapping[str, str] | None = None,
    out_dir: Path | None = None,
    spark: SparkSession | None = None,
    echo: Callable[[str], None] = print,
) -> NotebookRun:
    """Execute the notebook's code cells in order; widgets take ``parameters``, figures go to ``out_dir``.

    Without ``spark``, the active session is used, else one is started from the ``env`` and ``overrides``
    parameters (and stopped at the end). An error in a cell is re-raised as :class:`NotebookError` naming
    the notebook, the cell number and the cell's first line, with the original exception as its cause.
    """
    path = Path(path)
    parameters = dict(parameters or {})
    cells = split_cells(path.read_text(encoding="utf-8"), name=str(path))
    for cell in cells:
        if cell.kind == "magic":
            raise NotebookError(
                f"{path}, cell {cell.number} (line {cell.line}): {cell.magic or 'the magic'} runs only on "
                "Databricks (the local runner skips %md and %pip cells and runs Python)"
            )
    widgets = LocalWidgets(parameters)
    shown = LocalDisplay(out_dir or default_output_dir(path), write=echo)
    shown.clear()
    started = time.monotonic()
    session, own_session = spark, False
    if session is None:
        from pyspark.sql import SparkSession

        own_session = SparkSession.getActiveSession() is None
        session = _spark_for(parameters, app_name=f"notebook-{path.stem}")
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "spark": session,
        "dbutils": LocalDbutils(widgets),
        "display": shown.display,
        "displayHTML": shown.displayHTML,
    }
    code_cells = [cell for cell in cells if cell.kind == "python"]
    try:
        with figures_shown_by(shown):
            for cell in cells:
                if cell.kind == "pip":
                    echo(
                        f"[{path.stem} · cell {cell.number}] skipped {cell.first_line!r}: install into .venv"
                    )
                if cell.kind != "python":
                    continue
                echo(f"[{path.stem} · cell {cell.number}/{len(cells)}] {cell.first_line}")
                try:
                    # Padding with blank lines keeps the file's line numbers in tracebacks.
                    exec(compile("\n" * (cell.line - 1) + cell.source, str(path), "exec"), namespace)
                except Exception as exc:
                    raise NotebookError(
                        f"{path}, cell {cell.number} (line {cell.line}: {cell.first_line!r}) failed: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                _check_parameters(widgets, path, finished=False)
        _check_parameters(widgets, path, finished=True)
    finally:
        if own_session:
            session.stop()
    return NotebookRun(path, len(code_cells), list(shown.files), time.monotonic() - started, namespace)
