"""python -m hack.dashboard [--check]: writes diffleet's Grafana dashboard,
charts/diffleet/files/dashboards/diffleet.json, from code (grafana-foundation-sdk); the chart
ships it in a ConfigMap for Grafana's dashboard sidecar. --check: exits 1 if the committed
file differs from what this generates."""

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "charts" / "diffleet" / "files" / "dashboards" / "diffleet.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"


def quantile(q: float, histogram: str, by: str = "") -> str:
    """The q-quantile of a histogram's buckets over the rate interval, grouped `by`."""
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket{RATE})))"


def panel(title: str, unit: str, *queries: tuple[str, str], description: str = "") -> Panel:
    """A time series panel of (PromQL, legend) queries, half the dashboard's width."""
    built = (
        Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .min(0)
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
    )
    for index, (expr, legend) in enumerate(queries):
        query = Dataquery().ref_id(chr(ord("A") + index)).expr(expr).legend_format(legend)
        built = built.with_target(query)
    return built


def queue_and_jobs() -> list[Panel]:
    return [
        panel(
            "Queue depth per tier",
            "short",
            ("tier:diffleet_queue_depth:max", "{{tier}}"),
            description="Admitted jobs waiting for dispatch (the tier queues and the "
            "operator's buffers).",
        ),
        panel(
            "Dispatch latency",
            "s",
            (quantile(0.5, "diffleet_dispatch_seconds"), "dispatch p50"),
            (quantile(0.99, "diffleet_dispatch_seconds"), "dispatch p99"),
            (quantile(0.99, "diffleet_admission_seconds"), "admission p99"),
            description="From a job's creation to Queued (admission) and to Scheduled (dispatch).",
        ),
        panel(
            "Job outcomes",
            "ops",
            (
                "sum by (phase) (rate(diffleet_job_transitions_total"
                f'{{phase=~"Succeeded|Failed|Cancelled"}}{RATE}))',
                "{{phase}}",
            ),
            (f"sum by (reason) (rate(diffleet_requeues_total{RATE}))", "requeued: {{reason}}"),
            description="Jobs finishing per second, by phase, and jobs requeued, by reason.",
        ),
        panel(
            "Failed share of finished jobs",
            "percentunit",
            ("diffleet:job_failures:ratio_rate15m", "failed / finished (15m)"),
        ),
    ]


def pools() -> list[Panel]:
    def per_pool(metric: str, what: str) -> tuple[str, str]:
        return f"max by (pool) ({metric})", f"{{{{pool}}}} {what}"

    return [
        panel(
            "Pool replicas: desired, ready, busy",
            "short",
            per_pool("diffleet_pool_desired_replicas", "desired"),
            per_pool("diffleet_pool_ready_replicas", "ready"),
            per_pool("diffleet_pool_busy_replicas", "busy"),
            description="What each GPUPool's status says: the workers the autoscaler wants, "
            "those whose worker holds its Lease, and those running jobs.",
        ),
        panel(
            "Jobs waiting per pool",
            "short",
            per_pool("diffleet_pool_queued_jobs", "queued"),
            per_pool("diffleet_pool_at_max_replicas", "at maxReplicas"),
        ),
        panel(
            "Autoscaler decision latency",
            "s",
            (quantile(0.99, "diffleet_autoscaler_decision_seconds"), "p99"),
            description="From a change of demand to the autoscaler's decision applied.",
        ),
        panel(
            "Live and lost workers",
            "short",
            per_pool("diffleet_workers", "live"),
            (f"sum by (pool) (increase(diffleet_workers_lost_total{RATE}))", "{{pool}} lost"),
        ),
    ]


def workers() -> list[Panel]:
    return [
        panel(
            "Model loads: cold, warm, hot",
            "ops",
            (f"sum by (tier) (rate(diffleet_worker_model_served_total{RATE}))", "{{tier}}"),
            description="Models jobs needed, by the cache tier that served them: hot (in "
            "memory), warm (on local disk), cold (downloaded from S3).",
        ),
        panel(
            "Denoising step time per GPU type",
            "s",
            (quantile(0.5, "diffleet_worker_step_seconds", "gpu_type"), "{{gpu_type}} p50"),
            (quantile(0.99, "diffleet_worker_step_seconds", "gpu_type"), "{{gpu_type}} p99"),
        ),
        panel(
            "Worker job outcomes",
            "ops",
            (f"sum by (outcome) (rate(diffleet_worker_jobs_total{RATE}))", "{{outcome}}"),
            (
                f"sum by (retried) (rate(diffleet_worker_out_of_memory_total{RATE}))",
                "out of memory (retried: {{retried}})",
            ),
        ),
        panel(
            "Job run time",
            "s",
            (quantile(0.5, "diffleet_worker_run_seconds"), "p50"),
            (quantile(0.99, "diffleet_worker_run_seconds"), "p99"),
            description="From a job's order to its images in S3.",
        ),
    ]


def api() -> list[Panel]:
    return [
        panel(
            "API latency per route (p99)",
            "s",
            (quantile(0.99, "diffleet_api_request_seconds", "route"), "{{route}}"),
        ),
        panel(
            "API errors",
            "percentunit",
            ("diffleet:api_request_errors:ratio_rate5m", "5xx share (5m)"),
            (
                "sum by (route, status) (rate(diffleet_api_request_seconds_count"
                f'{{status=~"5.."}}{RATE})) / ignoring(route, status) group_left '
                f"sum(rate(diffleet_api_request_seconds_count{RATE}))",
                "{{route}} {{status}}",
            ),
        ),
        panel(
            "Webhook deliveries",
            "short",
            (
                f"sum by (outcome) (rate(diffleet_api_webhook_attempts_total{RATE}))",
                "attempts/s: {{outcome}}",
            ),
            ("max(diffleet_api_webhook_deliveries_pending)", "pending"),
        ),
        panel(
            "Oldest pending webhook delivery",
            "s",
            ("max(diffleet_api_webhook_oldest_pending_seconds)", "age"),
        ),
    ]


def dashboard() -> Dashboard:
    built = (
        Dashboard("diffleet")
        .uid("diffleet")
        .description("Queues, dispatch, GPU pools, workers and the API of diffleet.")
        .tags(["diffleet", "generated"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    sections = [
        ("Queue and jobs", queue_and_jobs()),
        ("GPU pools", pools()),
        ("Workers", workers()),
        ("API", api()),
    ]
    for title, panels in sections:
        built = built.with_row(Row(title))
        for each in panels:
            built = built.with_panel(each)
    return built


def render() -> str:
    return json.dumps(dashboard().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.dashboard", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python -m hack.dashboard", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
