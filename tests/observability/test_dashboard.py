"""The Grafana dashboard (charts/diffleet/files/dashboards/diffleet.json): it is what
hack/dashboard.py generates, and every series its panels and the chart's rules query is one
that a component exports or a recording rule adds. Static: no Grafana, no Prometheus."""

import json

from hack import dashboard
from tests.observability.metric_names import (
    exported,
    read_by,
    recorded,
    rule_expressions,
)


def panel_queries() -> dict[str, list[str]]:
    panels = json.loads(dashboard.OUTPUT.read_text())["panels"]
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in panels
        if panel["type"] != "row"
    }


def test_the_committed_dashboard_is_what_the_code_generates() -> None:
    assert dashboard.OUTPUT.read_text() == dashboard.render(), "stale: run python -m hack.dashboard"


def test_every_panel_queries_series_that_exist() -> None:
    known = exported() | recorded()
    queries = panel_queries()
    assert len(queries) == 16
    assert all(queries.values())
    for title, exprs in queries.items():
        for expr in exprs:
            names = read_by(expr)
            assert names, f"{title}: {expr} reads no diffleet series"
            assert names <= known, f"{title}: {sorted(names - known)} exported by no component"


def test_every_rule_reads_series_that_exist() -> None:
    known = exported() | recorded()
    for expr in rule_expressions():
        assert read_by(expr) <= known, expr


def test_the_name_collection_sees_each_metric_type_and_rejects_unknown_names() -> None:
    names = exported()
    assert {
        "diffleet_queue_depth",
        "diffleet_job_transitions_total",
        "diffleet_worker_step_seconds_bucket",
        "diffleet_api_request_seconds_count",
    } <= names
    assert "diffleet_job_transitions" not in names
    assert read_by('sum(rate(diffleet_nonexistent_total{a="diffleet_x"}[5m]))') == {
        "diffleet_nonexistent_total"
    }
