"""HTML: the report as one self-contained page (plotly.js embedded once, in the head, so every figure's
script finds it loaded, and the page opens offline)."""

from __future__ import annotations

import html
from pathlib import Path

from plotly.offline import get_plotlyjs

from surveillance.reporting.charts import report_figures
from surveillance.reporting.content import ReportContent
from surveillance.reporting.formats.registry import ReportFormat
from surveillance.reporting.sections import Section, provenance, report_sections

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.wide { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .8rem; }
p.note { color: #555; font-size: .85rem; }
"""


def _table(section: Section) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='wide'>{html.escape(str(v))}</td>"
            if i in section.wide
            else f"<td>{html.escape(str(v))}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in section.rows
    )
    note = f"<p class='note'>{html.escape(section.note)}</p>" if section.note else ""
    return f"<h2>{html.escape(section.title)}</h2><table><tr>{head}</tr>{body}</table>{note}"


def report_html(content: ReportContent) -> str:
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in provenance(content)
    )
    sections = report_sections(content)
    figures = "".join(
        f"<figure>{fig.to_html(full_html=False, include_plotlyjs=False, div_id=f'figure-{n}')}</figure>"
        for n, (_, fig) in enumerate(report_figures(content))
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Market surveillance report</title>"
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        "<h1>Market surveillance report</h1>"
        f"<table>{facts}</table>"
        + "".join(_table(s) for s in sections[:4])
        + f"<h2>Charts</h2>{figures or '<p>No bars or alerts in the range.</p>'}"
        + "".join(_table(s) for s in sections[4:])
        + "</body></html>"
    )


class HtmlReport(ReportFormat):
    name = "html"
    media_type = "text/html; charset=utf-8"
    extension = "html"

    def render(self, content: ReportContent, path: Path) -> list[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report_html(content), encoding="utf-8")
        return [path]
