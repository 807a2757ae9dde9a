"""python -m hack.prometheus_sd --out FILE: the local stack's pod discovery for Prometheus.

Debian's Prometheus is built without Kubernetes service discovery, so this process plays
its part: every few seconds it lists the stack's pods (KUBECONFIG) and writes the running
ones annotated prometheus.io/scrape: "true" to a file_sd file, at podIP:prometheus.io/port
and prometheus.io/path, labelled with their namespace, pod, component and GPUPool."""

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

logger = logging.getLogger("prometheus-sd")

PERIOD_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 10.0
SCRAPE = "prometheus.io/scrape"
PORT = "prometheus.io/port"
PATH = "prometheus.io/path"
COMPONENT_LABEL = "app.kubernetes.io/component"
GPUPOOL_LABEL = "diffleet.io/gpupool"


def target_groups(pods: list[Any]) -> list[dict[str, Any]]:
    """One file_sd target group per running pod that asks to be scraped, sorted."""
    groups = []
    for pod in pods:
        annotations = pod.metadata.annotations or {}
        port = annotations.get(PORT)
        if annotations.get(SCRAPE) != "true" or not port or pod.status.phase != "Running":
            continue
        if not pod.status.pod_ip:
            continue
        labels = pod.metadata.labels or {}
        group_labels = {
            "__metrics_path__": annotations.get(PATH, "/metrics"),
            "namespace": pod.metadata.namespace,
            "pod": pod.metadata.name,
            "component": labels.get(COMPONENT_LABEL, ""),
            "gpupool": labels.get(GPUPOOL_LABEL, ""),
        }
        groups.append(
            {
                "targets": [f"{pod.status.pod_ip}:{port}"],
                "labels": {key: value for key, value in group_labels.items() if value},
            }
        )
    return sorted(groups, key=lambda group: group["labels"]["pod"])


def write_atomically(path: Path, groups: list[dict[str, Any]]) -> None:
    """Prometheus may read the file at any moment: it sees the old list or the new one."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(groups, indent=1) + "\n")
    partial.replace(path)


async def discover(out: Path, stop: asyncio.Event) -> None:
    await config.load_kube_config()
    async with client.ApiClient() as api:
        core = client.CoreV1Api(api)
        written: list[dict[str, Any]] | None = None
        delay = PERIOD_SECONDS
        while not stop.is_set():
            try:
                pods = await core.list_pod_for_all_namespaces(
                    _request_timeout=REQUEST_TIMEOUT_SECONDS
                )
                groups = target_groups(pods.items)
                if groups != written:
                    write_atomically(out, groups)
                    written = groups
                    logger.info("%d pod targets", len(groups))
                delay = PERIOD_SECONDS
            except Exception as error:  # noqa: BLE001 - the API server may be restarting
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                logger.warning("listing pods failed (next try in %.0fs): %s", delay, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


async def main(out: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await discover(out, stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m hack.prometheus_sd", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the file_sd JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main(args.out))
