"""CSV: the alerts of the range, evidence flattened into ``details.<key>`` columns, and the summary counts
as a second file (``<name>_summary.csv``). UTF-8, a header row, RFC 4180 (CRLF, quotes doubled)."""

from __future__ import annotations

import csv
from pathlib import Path

from surveillance.reporting.content import ReportContent
from surveillance.reporting.formats.registry import ReportFormat


def summary_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_summary.csv")


class CsvReport(ReportFormat):
    name = "csv"
    media_type = "text/csv; charset=utf-8"
    extension = "csv"

    def render(self, content: ReportContent, path: Path) -> list[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        content.source.copy_alerts_csv(content.request, path)
        summary = summary_path(path)
        with summary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["section", "key", "value"], lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(content.summary_rows())
        return [path, summary]
