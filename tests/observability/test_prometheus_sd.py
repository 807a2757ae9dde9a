"""The local stack's pod discovery for Prometheus (hack/prometheus_sd.py): which pods
become targets, at which address and path, with which labels."""

from kubernetes_asyncio.client import V1ObjectMeta, V1Pod, V1PodStatus

from hack.prometheus_sd import target_groups

SCRAPED = {"prometheus.io/scrape": "true", "prometheus.io/port": "8081"}


def pod(
    name: str, annotations: dict[str, str], phase: str = "Running", ip: str = "127.0.1.5"
) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name,
            namespace="diffleet-system",
            annotations=annotations,
            labels={"app.kubernetes.io/component": "operator"},
        ),
        status=V1PodStatus(phase=phase, pod_ip=ip),
    )


def test_running_pods_that_ask_are_targets_at_their_own_address() -> None:
    groups = target_groups(
        [
            pod("b-operator", SCRAPED),
            pod("a-worker", {**SCRAPED, "prometheus.io/path": "/stats"}, ip="127.0.1.6"),
            pod("quiet", {}),
            pod("declined", {**SCRAPED, "prometheus.io/scrape": "false"}),
            pod("starting", SCRAPED, phase="Pending"),
            pod("no-address", SCRAPED, ip=""),
        ]
    )
    assert groups == [
        {
            "targets": ["127.0.1.6:8081"],
            "labels": {
                "__metrics_path__": "/stats",
                "namespace": "diffleet-system",
                "pod": "a-worker",
                "component": "operator",
            },
        },
        {
            "targets": ["127.0.1.5:8081"],
            "labels": {
                "__metrics_path__": "/metrics",
                "namespace": "diffleet-system",
                "pod": "b-operator",
                "component": "operator",
            },
        },
    ]
