"""The chart's Prometheus rules (charts/diffleet/files/prometheus-rules.yaml): promtool
accepts them, and its unit tests (files/rules-test.yaml) show each alert firing on a
synthetic series and quiet on a healthy one. Static: promtool only."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

FILES = Path(__file__).resolve().parents[2] / "charts" / "diffleet" / "files"
RULES = FILES / "prometheus-rules.yaml"
RULES_TEST = FILES / "rules-test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing (Debian package prometheus): run `make setup`")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_synthetic_series_and_stays_quiet_when_healthy() -> None:
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [case for test in tested for case in test.get("alert_rule_test", [])]
    names = {rule["alert"] for rule in alerts()}
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == names
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == names


def test_every_alert_says_how_bad_what_and_what_to_do() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
