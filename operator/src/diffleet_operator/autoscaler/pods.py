"""A pool's worker pod, built from its GPUPool alone (a pure function: same pool, same pod
but for the name).

The operator sets what a worker must not get wrong, after the template: its pool, GPU
type, VRAM and shutdown grace from the GPUPool; its id, node and fleet namespace from
the downward API (the pod's name, node and namespace), so the worker's Lease is named
after its pod.
"""

import secrets
from typing import Any

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.fleet import GPUPOOL_LABEL, PART_OF, PART_OF_LABEL
from diffleet_core.resources.gpu_pool import GPU_RESOURCE, KIND, GPUPoolSpec

COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "gpu-worker"
CONTAINER = "worker"
DEFAULT_COMMAND = ["diffleet-worker"]
DEFAULT_SERVICE_ACCOUNT = "diffleet-worker"
# Kubernetes' own alphabet for generated name suffixes: no vowels (no words), no 0/1/3.
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SUFFIX_LENGTH = 5

WORKER_ENV = "DIFFLEET_WORKER_"
METRICS_PORT_ENV = f"{WORKER_ENV}METRICS_PORT"
SCRAPE_ANNOTATION = "prometheus.io/scrape"
PORT_ANNOTATION = "prometheus.io/port"
PATH_ANNOTATION = "prometheus.io/path"
# Variables the operator sets on every worker; a template's own entries of these names
# are left out.
FIELD_ENV = {
    f"{WORKER_ENV}WORKER_ID": "metadata.name",
    f"{WORKER_ENV}NODE": "spec.nodeName",
    f"{WORKER_ENV}FLEET_NAMESPACE": "metadata.namespace",
}


def pod_name(pool: str) -> str:
    """A new worker's name: the pool's and a random suffix, as a ReplicaSet names pods."""
    suffix = "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    return f"{pool}-{suffix}"


def pool_labels(pool: str) -> dict[str, str]:
    """The labels that mark a pod as one of `pool`'s workers (the operator's selector)."""
    return {GPUPOOL_LABEL: pool, PART_OF_LABEL: PART_OF, COMPONENT_LABEL: COMPONENT}


def worker_pod(
    *, name: str, namespace: str, pool: str, pool_uid: str, spec: GPUPoolSpec, image: str
) -> dict[str, Any]:
    """The pod of worker `name` of GPUPool `pool` (uid `pool_uid`), in `namespace`;
    `image` unless the template names one."""
    template = spec.template
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": template.image or image,
        "command": list(template.command or DEFAULT_COMMAND),
        "env": _env(pool, spec),
        "resources": _resources(spec),
    }
    if template.image_pull_policy:
        container["imagePullPolicy"] = str(template.image_pull_policy)
    if template.env_from:
        container["envFrom"] = [
            source.model_dump(by_alias=True, exclude_none=True) for source in template.env_from
        ]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": template.service_account_name or DEFAULT_SERVICE_ACCOUNT,
        "restartPolicy": "Always",  # a worker that crashes restarts in place
        "terminationGracePeriodSeconds": spec.drain_seconds,
        "nodeSelector": spec.effective_node_selector(pool),
        "tolerations": [
            toleration.model_dump(by_alias=True, exclude_none=True, mode="json")
            for toleration in spec.effective_tolerations()
        ],
        "containers": [container],
    }
    if template.priority_class_name:
        pod_spec["priorityClassName"] = template.priority_class_name
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**(template.labels or {}), **pool_labels(pool)},
        "ownerReferences": [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": pool,
                "uid": pool_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    annotations = {**_scrape_annotations(spec), **(template.annotations or {})}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _scrape_annotations(spec: GPUPoolSpec) -> dict[str, str]:
    """Where the template turns the worker's /metrics on, the annotations by which
    Prometheus' pod discovery finds it (the template's own annotations win)."""
    port = next(
        (var.value for var in spec.template.env or [] if var.name == METRICS_PORT_ENV), None
    )
    if not port or port == "0":
        return {}
    return {SCRAPE_ANNOTATION: "true", PORT_ANNOTATION: port, PATH_ANNOTATION: "/metrics"}


def _env(pool: str, spec: GPUPoolSpec) -> list[dict[str, Any]]:
    """The template's variables, then the operator's (which replace any of their names)."""
    pool_env = {
        f"{WORKER_ENV}POOL": pool,
        f"{WORKER_ENV}GPU_TYPE": spec.gpu_type,
        f"{WORKER_ENV}VRAM_GIB": _number(spec.vram_gib),
        f"{WORKER_ENV}SHUTDOWN_GRACE_SECONDS": str(spec.drain_seconds),
    }
    ours = {*pool_env, *FIELD_ENV}
    kept = [
        var.model_dump(by_alias=True, exclude_none=True)
        for var in spec.template.env or []
        if var.name not in ours
    ]
    return [
        *kept,
        *({"name": key, "value": value} for key, value in pool_env.items()),
        *(
            {"name": key, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for key, path in FIELD_ENV.items()
        ),
    ]


def _resources(spec: GPUPoolSpec) -> dict[str, Any]:
    """The template's requests and limits with `gpusPerWorker` GPUs in both (an extended
    resource is requested as a limit, and a request must equal it)."""
    resources = spec.template.resources
    gpus = {GPU_RESOURCE: spec.gpus_per_worker}
    return {
        "requests": {**((resources and resources.requests) or {}), **gpus},
        "limits": {**((resources and resources.limits) or {}), **gpus},
    }


def _number(value: float) -> str:
    """80.0 as "80", 7.5 as "7.5"."""
    return str(int(value)) if value.is_integer() else str(value)
