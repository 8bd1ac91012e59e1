"""What Databricks gives a notebook, on a laptop: ``dbutils.widgets``, ``display``, ``displayHTML``.

Widgets behave as on Databricks: a widget has a default, a parameter given to the run replaces it, reading a
widget that was never defined raises :class:`InputWidgetNotDefined`. Stricter than Databricks, a parameter
that names no widget is an error (see :meth:`LocalWidgets.unknown_parameters`), so a typo cannot pass
silently. ``display`` prints a DataFrame (Spark or pandas) as a small table and writes a plotly figure to
a numbered HTML file; :func:`figures_shown_by` routes ``fig.show()`` there too, so nothing opens a browser.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
from plotly.basedatatypes import BaseFigure

# The files a run writes into its output folder (and removes from an earlier run's): NN_<title>.html.
_OUTPUT_FILE = re.compile(r"^\d{2,}_.*\.html$")
_RENDERER = "surveillance_notebook"


class InputWidgetNotDefined(LookupError):
    """A widget was read before any cell defined it (Databricks raises an error of the same name)."""


class WidgetError(ValueError):
    """A widget defined wrongly, or given a parameter its choices do not allow."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''."""
    guess = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


@dataclass(frozen=True)
class Widget:
    name: str
    kind: str
    default: str
    choices: tuple[str, ...]
    label: str


class LocalWidgets:
    """``dbutils.widgets``: text, dropdown, combobox and multiselect widgets with defaults and parameters."""

    def __init__(self, parameters: Mapping[str, str] | None = None) -> None:
        self._parameters = {str(name): str(value) for name, value in (parameters or {}).items()}
        self._widgets: dict[str, Widget] = {}

    # Databricks' own argument names (defaultValue), so keyword calls written for Databricks work here.
    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:
        """Define a free-text widget."""
        self._define(name, "text", defaultValue, (), label)

    def dropdown(self, name: str, defaultValue: str, choices: list[str], label: str | None = None) -> None:
        """Define a widget whose value is one of ``choices``."""
        self._define(name, "dropdown", defaultValue, choices, label)

    def combobox(self, name: str, defaultValue: str, choices: list[str], label: str | None = None) -> None:
        """Define a free-text widget that suggests ``choices``."""
        self._define(name, "combobox", defaultValue, choices, label)

    def multiselect(self, name: str, defaultValue: str, choices: list[str], label: str | None = None) -> None:
        """Define a widget whose value is a comma-separated selection of ``choices``."""
        self._define(name, "multiselect", defaultValue, choices, label)

    def get(self, name: str) -> str:
        """The widget's value: the run's parameter if one was given, else its default."""
        widget = self._widgets.get(name)
        if widget is None:
            raise InputWidgetNotDefined(
                f"No input widget named {name!r} is defined{did_you_mean(name, self._widgets)}"
            )
        return self._parameters.get(name, widget.default)

    def getAll(self) -> dict[str, str]:
        """Every defined widget's value, by name."""
        return {name: self.get(name) for name in self._widgets}

    def remove(self, name: str) -> None:
        """Remove one widget."""
        if self._widgets.pop(name, None) is None:
            raise InputWidgetNotDefined(f"No input widget named {name!r} is defined")

    def removeAll(self) -> None:
        """Remove every widget."""
        self._widgets.clear()

    def defined(self) -> dict[str, Widget]:
        """The widgets defined so far."""
        return dict(self._widgets)

    def unknown_parameters(self) -> list[str]:
        """Parameters given to the run that no defined widget takes."""
        return sorted(set(self._parameters) - set(self._widgets))

    def _define(self, name: str, kind: str, default: str, choices: Iterable[str], label: str | None) -> None:
        if not isinstance(name, str) or not name:
            raise WidgetError(f"a widget needs a name, got {name!r}")
        options = tuple(str(choice) for choice in choices)
        default = str(default)
        if kind in ("dropdown", "multiselect") and not options:
            raise WidgetError(f"{kind} widget {name!r} needs choices")
        self._check_value(name, kind, default, options, what="default value")
        if name in self._parameters:
            self._check_value(name, kind, self._parameters[name], options, what="parameter")
        self._widgets[name] = Widget(name, kind, default, options, label or name)

    @staticmethod
    def _check_value(name: str, kind: str, value: str, choices: tuple[str, ...], what: str) -> None:
        if kind == "dropdown":
            values = [value]
        elif kind == "multiselect":
            values = [part.strip() for part in value.split(",") if part.strip()]
        else:
            return
        for item in values:
            if item not in choices:
                raise WidgetError(
                    f"{what} {item!r} of {kind} widget {name!r} is not one of its choices: "
                    f"{', '.join(choices)}{did_you_mean(item, choices)}"
                )


class LocalDbutils:
    """``dbutils`` with its widgets; the rest of Databricks' utilities do not exist on a laptop."""

    def __init__(self, widgets: LocalWidgets) -> None:
        self.widgets = widgets

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"dbutils.{name} is not available outside Databricks (the local shim has widgets)"
        )


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", re.sub(r"<[^>]+>", " ", text).lower()).strip("_")
    return slug[:60].rstrip("_") or "figure"


def _figure_title(figure: BaseFigure | Mapping[str, Any]) -> str:
    if isinstance(figure, BaseFigure):
        return figure.layout.title.text or ""
    title = figure.get("layout", {}).get("title") or {}
    return str(title.get("text") or "") if isinstance(title, Mapping) else str(title)


class LocalDisplay:
    """``display`` and ``displayHTML``: tables printed, figures and HTML written as numbered files."""

    def __init__(self, out_dir: Path, rows: int = 20, write: Callable[[str], None] = print) -> None:
        self.out_dir = Path(out_dir)
        self.rows = rows
        self.write = write
        self.files: list[Path] = []

    def clear(self) -> None:
        """Delete the numbered files an earlier run left in the output folder (and only those)."""
        if self.out_dir.is_dir():
            for path in self.out_dir.iterdir():
                if path.is_file() and _OUTPUT_FILE.match(path.name):
                    path.unlink()

    def display(self, obj: Any = None, *args: Any, **kwargs: Any) -> None:
        """Show a DataFrame as a table, a plotly figure as a file; anything else as text."""
        # Databricks' display takes extra arguments (e.g. streamName); they mean nothing here.
        if isinstance(obj, BaseFigure):
            self.figure(obj)
        elif isinstance(obj, pd.Series):
            self._table(obj.to_frame(), len(obj))
        elif isinstance(obj, pd.DataFrame):
            self._table(obj, len(obj))
        elif hasattr(obj, "toPandas") and hasattr(obj, "limit"):  # a Spark DataFrame
            head = obj.limit(self.rows + 1).toPandas()
            self._table(head, None if len(head) > self.rows else len(head))
        else:
            self.write(str(obj))

    def displayHTML(self, html: str) -> None:
        """Write the HTML to a numbered file and print its path."""
        page = html
        if "<html" not in html[:1000].lower():
            page = f"<html><head><meta charset='utf-8'></head><body>{html}</body></html>"
        path = self._next_path("html")
        path.write_text(page, encoding="utf-8")
        self._written(path)

    def figure(self, figure: BaseFigure | Mapping[str, Any]) -> Path:
        """Write a plotly figure (or its dict) as a numbered HTML file; plotly.js sits beside it, once."""
        path = self._next_path(_slug(_figure_title(figure)))
        # "directory": the page loads plotly.min.js from its folder (copied there), so it opens offline
        # without carrying 4 MB of JavaScript in every file.
        pio.write_html(figure, str(path), include_plotlyjs="directory", full_html=True, auto_open=False)
        self._written(path)
        return path

    def _next_path(self, stem: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{len(self.files) + 1:02d}_{stem}.html"

    def _written(self, path: Path) -> None:
        self.files.append(path)
        self.write(f"[display] wrote {path}")

    def _table(self, frame: pd.DataFrame, total: int | None) -> None:
        shown = frame.head(self.rows)
        if shown.empty:
            self.write(f"(no rows; columns: {', '.join(map(str, frame.columns))})")
            return
        text = shown.to_string(index=False, max_colwidth=48)
        if total is None:
            text += f"\n(first {self.rows} rows)"
        elif total > len(shown):
            text += f"\n(first {len(shown)} of {total:,} rows)"
        self.write(text)


@contextmanager
def figures_shown_by(shown: LocalDisplay) -> Iterator[None]:
    """While the block runs, ``fig.show()`` writes the figure through ``shown`` instead of a browser.

    On Databricks plotly picks its ``databricks`` renderer (it calls the notebook's ``displayHTML``); here
    plotly's default renderer is pointed at the local display, and restored afterwards.
    """
    from plotly.io.base_renderers import ExternalRenderer

    class _LocalRenderer(ExternalRenderer):
        def render(self, fig_dict: dict[str, Any]) -> None:
            shown.figure(fig_dict)

    renderers = pio.renderers
    previous = renderers.default
    renderers[_RENDERER] = _LocalRenderer()
    renderers.default = _RENDERER
    try:
        yield
    finally:
        renderers.default = previous
