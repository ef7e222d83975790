"""The alerts documented in docs/operations.md ("Alerts") are the PrometheusRule that is deployed.

Each alert is written once in the runbook, as PromQL under a `# alert: NAME  for: D  severity: S`
line and its one-line meaning, and once in deploy/k8s/base/alerts.yaml. These tests fail
when one has an alert the other lacks, when they differ in expression, duration, severity or
summary, when an overlay does not deploy the rule, or when an expression names a metric the
code does not export (a renamed metric would silence its alert for good).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HEADER = re.compile(r"# alert: (?P<name>\w+)\s+for: (?P<for>\S+)\s+severity: (?P<severity>\w+)$")
SUFFIXES = ("_bucket", "_count", "_sum")  # a histogram's series


def squash(text: str) -> str:
    return " ".join(text.split())


def documented() -> dict[str, dict[str, str]]:
    """The runbook's alerts: name -> expr, for, severity, summary."""
    section = (ROOT / "docs" / "operations.md").read_text().split("\n### Alerts\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```promql\n", 1)[1].split("\n```", 1)[0]
    alerts = {}
    for chunk in block.strip().split("\n\n"):
        first, *rest = chunk.splitlines()
        header = HEADER.match(first)
        assert header, f"an alert in docs/operations.md starts with '# alert: NAME  for: D  severity: S': {first!r}"
        alerts[header["name"]] = {
            "for": header["for"],
            "severity": header["severity"],
            "summary": squash(" ".join(line[2:] for line in rest if line.startswith("#"))),
            "expr": squash(" ".join(line for line in rest if not line.startswith("#"))),
        }
    return alerts


def deployed(rule: dict) -> dict[str, dict[str, str]]:
    return {
        r["alert"]: {
            "for": r.get("for", "0s"),
            "severity": r["labels"]["severity"],
            "summary": squash(r["annotations"]["summary"]),
            "expr": squash(r["expr"]),
        }
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if "alert" in r
    }


def base_rule() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "alerts.yaml").read_text())


def exported_metrics() -> set[str]:
    """Every crm_* metric name the code registers (string literals in libs/ and services/, not tests)."""
    names = set()
    for path in [*ROOT.glob("libs/crmkit/crmkit/**/*.py"), *ROOT.glob("services/*/crm_*/**/*.py")]:
        names |= set(re.findall(r"[\"'](crm_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_the_runbook_lists_alerts():
    alerts = documented()
    assert len(alerts) >= 5 and "CrmProjectionStalled" in alerts


def test_every_documented_alert_is_deployed_and_every_deployed_alert_documented():
    docs, rule = documented(), deployed(base_rule())
    assert sorted(set(docs) - set(rule)) == [], "documented in docs/operations.md, missing from alerts.yaml"
    assert sorted(set(rule) - set(docs)) == [], "in deploy/k8s/base/alerts.yaml, not documented"
    for name in docs:
        assert rule[name] == docs[name], f"{name}: alerts.yaml and docs/operations.md differ"


def test_alert_expressions_name_only_exported_metrics():
    exported = exported_metrics()
    for name, alert in deployed(base_rule()).items():
        for metric in set(re.findall(r"\bcrm_[a-z0-9_]+", alert["expr"])):
            base = next((metric.removesuffix(s) for s in SUFFIXES if metric.endswith(s)), metric)
            assert base in exported or base.removesuffix("_total") in exported, f"{name}: no code exports {metric}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_overlay_deploys_the_rule(rendered, overlay):
    (rule,) = [o for o in rendered[overlay] if o["kind"] == "PrometheusRule"]
    assert deployed(rule) == deployed(base_rule())
