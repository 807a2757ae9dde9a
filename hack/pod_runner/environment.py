"""What a pod's process is given: its environment and its ServiceAccount's kubeconfig."""

import base64
import logging
import os
import re
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client

logger = logging.getLogger("pod_runner")

ROOT = Path(__file__).resolve().parents[2]
TOKEN_SECONDS = 24 * 3600
REQUEST_TIMEOUT = 10.0
# Variables of the runner's own environment that belong to one pod, never to all of them.
NOT_INHERITED = re.compile(r"^(KUBECONFIG|KUBERNETES_SERVICE_.*|DIFFLEET_WORKER_.*)$")
_REFERENCE = re.compile(r"\$\((\w+)\)")


class EnvError(Exception):
    """A variable of the pod cannot be resolved (a missing Secret or ConfigMap key)."""


def field_value(pod: client.V1Pod, path: str, address: str) -> str:
    """The downward API's fieldRef values, as a kubelet would give them on this host
    (`address`: the pod's IP, also its host's here)."""
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": address,
        "status.hostIP": address,
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        values = (meta.labels if match[1] == "labels" else meta.annotations) or {}
        return str(values.get(match[2], ""))
    raise EnvError(f"fieldRef {path} is not supported by the pod runner")


async def _key_of(
    core: client.CoreV1Api, kind: str, namespace: str, name: str, key: str | None
) -> dict[str, str]:
    read = core.read_namespaced_secret if kind == "Secret" else core.read_namespaced_config_map
    obj: Any = await read(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    data = obj.data or {}
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in data.items()}
    if key is None:
        return dict(data)
    if key not in data:
        raise EnvError(f"{kind} {namespace}/{name} has no key {key}")
    return {key: data[key]}


async def _key_ref(
    core: client.CoreV1Api, namespace: str, name: str, source: client.V1EnvVarSource
) -> str | None:
    """A secretKeyRef or configMapKeyRef; None for an optional one that is missing."""
    selector: client.V1SecretKeySelector | client.V1ConfigMapKeySelector
    if source.secret_key_ref:
        kind, selector = "Secret", source.secret_key_ref
    elif source.config_map_key_ref:
        kind, selector = "ConfigMap", source.config_map_key_ref
    else:
        raise EnvError(f"env {name}: only value, fieldRef and key refs are supported")
    try:
        values = await _key_of(core, kind, namespace, selector.name, selector.key)
    except client.ApiException as error:
        if error.status == 404 and selector.optional:
            return None
        raise EnvError(f"{kind} {namespace}/{selector.name}: {error.reason}") from error
    return values[selector.key]


async def pod_env(core: client.CoreV1Api, pod: client.V1Pod, address: str) -> dict[str, str]:
    """The first container's envFrom and env, resolved in order, $(VAR) references expanded."""
    container = pod.spec.containers[0]
    namespace = pod.metadata.namespace
    env: dict[str, str] = {}
    for bulk in container.env_from or []:
        ref = bulk.secret_ref or bulk.config_map_ref
        kind = "Secret" if bulk.secret_ref else "ConfigMap"
        try:
            values = await _key_of(core, kind, namespace, ref.name, None)
        except client.ApiException as error:
            if error.status == 404 and ref.optional:
                continue
            raise EnvError(f"{kind} {namespace}/{ref.name}: {error.reason}") from error
        env.update({f"{bulk.prefix or ''}{k}": v for k, v in values.items()})
    for var in container.env or []:
        # The bundled stubs declare valueFrom as always set; it is not.
        source = cast("client.V1EnvVarSource | None", var.value_from)
        if source is None:
            env[var.name] = _REFERENCE.sub(lambda m: env.get(m[1], m[0]), var.value or "")
        elif source.field_ref:
            env[var.name] = field_value(pod, source.field_ref.field_path, address)
        else:
            value = await _key_ref(core, namespace, var.name, source)
            if value is not None:
                env[var.name] = value
    return env


def process_env(pod_values: dict[str, str], kubeconfig: Path) -> dict[str, str]:
    """The runner's environment (the stack's addresses, as `make env` gives them), the
    project's .venv/bin first on PATH, then the pod's own variables and its kubeconfig."""
    base = {k: v for k, v in os.environ.items() if not NOT_INHERITED.match(k)}
    base["PATH"] = os.pathsep.join([str(ROOT / ".venv" / "bin"), base.get("PATH", "")])
    return {**base, **pod_values, "KUBECONFIG": str(kubeconfig)}


async def service_account_token(core: client.CoreV1Api, pod: client.V1Pod) -> str:
    """A token of the pod's ServiceAccount, bound to the pod, from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[],  # the API server's own audience
            expiration_seconds=TOKEN_SECONDS,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
            ),
        )
    )
    account = pod.spec.service_account_name or "default"
    response = await core.create_namespaced_service_account_token(
        account, pod.metadata.namespace, request, _request_timeout=REQUEST_TIMEOUT
    )
    return str(response.status.token)


def write_kubeconfig(path: Path, admin: client.Configuration, token: str) -> None:
    """A kubeconfig for the stack's API server that authenticates with `token` (mode 0600)."""
    ca = Path(str(admin.ssl_ca_cert)).read_bytes()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "diffleet-local",
                "cluster": {
                    "server": admin.host,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": "pod", "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": "diffleet-local", "user": "pod"}}],
        "current-context": "pod",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        yaml.safe_dump(kubeconfig, out)
