"""PDF: a document for the file (reportlab): a title page, the tables, the charts as images (plotly drawn
offline by Kaleido), page numbers on every page."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from surveillance.reporting.charts import png_images, report_figures
from surveillance.reporting.content import ReportContent
from surveillance.reporting.formats.registry import ReportFormat
from surveillance.reporting.sections import Section, number, provenance, report_sections

TITLE = "Market surveillance report"
WIDTH = A4[0] - 36 * mm


class _NumberedCanvas(Canvas):
    """Writes "page N of M" on each page once the number of pages is known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:  # reportlab's name
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            self.setFont("Helvetica", 8)
            self.setFillColor(colors.grey)
            self.drawString(18 * mm, 10 * mm, TITLE)
            self.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {self._pageNumber} of {total}")
            super().showPage()
        super().save()


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontSize=24, leading=30, spaceAfter=12 * mm),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], spaceBefore=4 * mm),
        "body": base["BodyText"],
        "note": ParagraphStyle("note", parent=base["BodyText"], fontSize=8, textColor=colors.grey),
        "cell": ParagraphStyle("cell", parent=base["BodyText"], fontSize=7.5, leading=9),
        "mono": ParagraphStyle(
            "mono", parent=base["Code"], fontSize=6.5, leading=8, spaceBefore=0, spaceAfter=0
        ),
    }


def _table(section: Section, styles: dict[str, ParagraphStyle]) -> list[Any]:
    def cell(value: Any, column: int) -> Paragraph:
        style = styles["mono"] if column in section.wide else styles["cell"]
        return Paragraph(escape(str(value)).replace("\n", "<br/>"), style)

    data = [[Paragraph(f"<b>{escape(c)}</b>", styles["cell"]) for c in section.columns]]
    data += [[cell(v, i) for i, v in enumerate(row)] for row in section.rows]
    widths = None
    if section.wide:
        # The long-text columns take 40% of the width; the others share the rest.
        narrow = (WIDTH * 0.6) / (len(section.columns) - len(section.wide))
        widths = [
            WIDTH * 0.4 / len(section.wide) if i in section.wide else narrow
            for i in range(len(section.columns))
        ]
    table = Table(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.lightgrey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    flow: list[Any] = [Paragraph(escape(section.title), styles["h2"]), table]
    if section.note:
        flow.append(Paragraph(escape(section.note), styles["note"]))
    return flow


def report_pdf(content: ReportContent) -> bytes:
    styles = _styles()
    story: list[Any] = [Spacer(1, 40 * mm), Paragraph(TITLE, styles["title"])]
    facts = Table(
        [
            [Paragraph(f"<b>{escape(k)}</b>", styles["body"]), Paragraph(escape(v), styles["body"])]
            for k, v in provenance(content)
        ],
        colWidths=[40 * mm, WIDTH - 40 * mm],
        hAlign="LEFT",
    )
    story += [facts, Spacer(1, 10 * mm)]
    headline = (
        f"{number(content.alert_total)} alerts; "
        f"{number(content.layer_counts.get('silver_quotes'))} valid quotes; "
        f"{number(content.layer_counts.get('quarantine_quotes'))} quarantined records."
    )
    story += [Paragraph(escape(headline), styles["body"]), PageBreak()]
    sections = report_sections(content)
    for section in sections[:4]:
        story += _table(section, styles)
    figures = report_figures(content)
    if figures:
        story += [PageBreak(), Paragraph("Charts", styles["h2"])]
        for (_, fig), png in zip(figures, png_images([f for _, f in figures]), strict=True):
            height = fig.layout.height or 360
            image = Image(io.BytesIO(png), width=WIDTH, height=WIDTH * height / 1000)
            story.append(KeepTogether([image, Spacer(1, 4 * mm)]))
    story.append(PageBreak())
    for section in sections[4:]:
        story += _table(section, styles)
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=TITLE,
        author="surveillance",
        subject=f"{content.request.describe()['from']} to {content.request.describe()['to']}",
    )
    document.build(story, canvasmaker=_NumberedCanvas)
    return buffer.getvalue()


class PdfReport(ReportFormat):
    name = "pdf"
    media_type = "application/pdf"
    extension = "pdf"

    def render(self, content: ReportContent, path: Path) -> list[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(report_pdf(content))
        return [path]
