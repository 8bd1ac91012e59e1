"""The Prometheus alerting rules and the Grafana dashboard, checked by Prometheus' own promtool (Debian's
prometheus package, installed by this test when missing): the rules parse, each fires on its synthetic
series and stays quiet on a healthy one, and every dashboard query is valid PromQL over our metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from surveillance.system_packages import SystemPackageMissing, ensure_program

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "monitoring" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "surveillance.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return ensure_program("promtool", ["prometheus"], "the monitoring tests")
    except SystemPackageMissing as exc:
        pytest.fail(str(exc))


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=RULES.parent, timeout=120)


def test_rules_parse_and_pass_their_unit_tests(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_is_tested_firing_and_quiet() -> None:
    alerts = {
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }
    fired, quiet = set(), set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == alerts, f"never shown firing: {alerts - fired}"
    assert quiet == alerts, f"never shown quiet: {alerts - quiet}"


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_queries_are_valid_promql_over_our_metrics(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len({title for title, _ in queries}) >= 12
    # Each query as a recording rule: promtool parses it as Prometheus would.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr.replace("$__rate_interval", "1m")}
                    for n, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Every metric a panel reads is one the project exports.
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "surveillance" / "observability").glob("*.py"))
    for title, expr in queries:
        for metric in re.findall(r"\b(surveil_[a-z_]+?)(?:_total|_bucket|_count|_sum|_info)?\b", expr):
            assert metric in source, f"{title}: {metric} is not exported"
