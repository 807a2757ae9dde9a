"""The metric names diffleet's components export (read from their prometheus_client metric
objects) and those the chart's recording rules add, and the names a PromQL query reads."""

import re
from pathlib import Path
from types import ModuleType

import yaml
from prometheus_client.metrics import MetricWrapperBase

import diffleet_api.metrics
import diffleet_operator.metrics
import diffleet_worker.metrics

RULES = (
    Path(__file__).resolve().parents[2] / "charts" / "diffleet" / "files" / "prometheus-rules.yaml"
)
COMPONENTS: tuple[ModuleType, ...] = (
    diffleet_operator.metrics,
    diffleet_api.metrics,
    diffleet_worker.metrics,
)
# The series each metric type exposes (prometheus_client names a counter without _total).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# What is not a name: quoted strings, label matchers, ranges and durations.
NOT_NAMES = re.compile(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]')


def exported() -> set[str]:
    names = set()
    for module in COMPONENTS:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def recorded() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def read_by(expr: str) -> set[str]:
    """The diffleet series a query reads (functions, keywords and labels are not)."""
    return {name for name in NAME.findall(NOT_NAMES.sub(" ", expr)) if "diffleet" in name}
