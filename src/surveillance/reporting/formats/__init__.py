"""Report formats; importing this package registers the built-in ones."""

from surveillance.reporting.formats import csv_report, html_report, pdf_report  # noqa: F401
from surveillance.reporting.formats.registry import FORMATS, ReportFormat, format_names, report_format

__all__ = ["FORMATS", "ReportFormat", "format_names", "report_format"]
