"""The report's tables, as titled rows: what the PDF and the HTML report both lay out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from surveillance.reporting.content import ReportContent

LAYER_NOTES = {
    "bronze_quotes": "records received (every symbol)",
    "quarantine_quotes": "records set aside, with a reason (every symbol)",
    "silver_quotes": "valid quotes",
    "gold_bars_1m": "one-minute bars",
    "alerts": "alerts",
}


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    wide: list[int] = field(default_factory=list)  # columns that hold long text


def number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def evidence_lines(details: dict[str, Any], limit: int = 12) -> list[str]:
    """The evidence as ``key: value`` lines, nested values as compact JSON."""
    lines = []
    for key, value in list(details.items())[:limit]:
        text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(", ", ": "))
        if isinstance(value, float):
            text = f"{value:.6g}"
        lines.append(f"{key}: {text[:160]}")
    if len(details) > limit:
        lines.append(f"… {len(details) - limit} more")
    return lines


def report_sections(content: ReportContent) -> list[Section]:
    missing = f" Tables not found: {', '.join(content.missing_tables)}." if content.missing_tables else ""
    sections = [
        Section(
            "Records per layer",
            ["table", "records", "what"],
            [[t, number(n), LAYER_NOTES[t]] for t, n in content.layer_counts.items()],
            "Silver, gold and alerts by event time within the range (and the symbols asked for); bronze and "
            "quarantine: the records of the micro-batches that carried those quotes." + missing,
        ),
        Section(
            "Quarantined records by reason",
            ["reason", "records"],
            [[r, number(n)] for r, n in content.quarantine_by_reason] or [["none", "0"]],
        ),
        Section(
            "Alerts by rule, severity and confidence",
            ["rule", "severity", "confidence", "alerts"],
            [[a["rule"], a["severity"], a["confidence"], number(a["alerts"])] for a in content.alerts_by_rule]
            or [["none", "", "", "0"]],
            f"{number(content.alert_total)} alerts in all.",
        ),
        Section(
            "Alerts by status",
            ["status", "alerts"],
            [[s, number(n)] for s, n in content.alerts_by_status] or [["none", "0"]],
            "From the alert_actions audit table; an alert nobody acted on is open.",
        ),
        Section(
            f"Top {len(content.top_alerts)} alerts",
            ["event time (UTC)", "symbol", "rule", "severity / confidence", "score / threshold", "evidence"],
            [
                [
                    a["event_time"].isoformat(sep=" ", timespec="milliseconds") if a["event_time"] else "",
                    a["symbol"],
                    a["rule"],
                    f"{a['severity']} / {a['confidence']}",
                    f"{number(a['score'])} / {number(a['threshold'])}",
                    "\n".join(evidence_lines(a["details"])),
                ]
                for a in content.top_alerts
            ],
            "Most serious first: severity, then high confidence, then score beyond threshold.",
            wide=[5],
        ),
        Section(
            "Data quality: pass rates",
            ["suite", "expectation", "severity", "batches", "passed", "pass rate", "unexpected rows"],
            [
                [
                    d["suite"],
                    d["expectation"],
                    d["severity"],
                    number(d["batches"]),
                    number(d["passed"]),
                    f"{d['pass_rate']:.1%}" if d["pass_rate"] is not None else "–",
                    number(d["unexpected"]),
                ]
                for d in content.dq_pass_rates
            ]
            or [["none", "", "", "0", "0", "–", "0"]],
            "Great Expectations' verdicts for the micro-batches that carried the range's quotes.",
        ),
        Section(
            "Models that scored the range",
            ["model", "version", "model alerts"],
            [[m["model_name"], m["model_version"], number(m["alerts"])] for m in content.models]
            or [["no model alerts in the range", "", "0"]],
            "The registered champion's name and version, as each model alert records them.",
        ),
    ]
    return sections


def provenance(content: ReportContent) -> list[tuple[str, str]]:
    asked = content.request.describe()
    return [
        ("Range (UTC)", f"{asked['from']} to {asked['to']} (end excluded)"),
        ("Symbols", ", ".join(asked["symbols"]) if isinstance(asked["symbols"], list) else "all"),
        ("Rules", ", ".join(asked["rules"]) if isinstance(asked["rules"], list) else "all"),
        ("Generated at", content.generated_at.isoformat()),
        ("Code version", content.code_version),
        ("Tables", ", ".join(sorted(content.source.locations))),
    ]
