"""The local API server over HTTP, for the calls tests make most often: reading objects
(every wait polls), and a namespace's creation and deletion (around most tests).

A kubectl call costs about 0.15 s and 0.1 CPU s here (a Go process start-up); a request
on a kept-alive connection costs a few milliseconds. Everything else goes through kubectl
(tests/support/stack.py), the door a user has.
"""

import base64
import functools
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import (
    generation_job,
    gpu_pool,
    model_cache,
    style_preset,
    training_job,
)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group_version: str  # "v1" for the core group
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{root}{scope}/{self.plural}" + (f"/{name}" if name else "")


DIFFLEET = f"{API_GROUP}/{API_VERSION}"
GENERATION_JOBS = Resource(DIFFLEET, generation_job.PLURAL)
MODEL_CACHES = Resource(DIFFLEET, model_cache.PLURAL)
NAMESPACES = Resource("v1", "namespaces", namespaced=False)

# The names `kubectl get` takes for the kinds tests read, as the CRDs' and Kubernetes'
# short names, singulars and plurals give them.
RESOURCES: dict[str, Resource] = {
    name: resource
    for resource, names in [
        (GENERATION_JOBS, ("gj", "generationjob")),
        (MODEL_CACHES, ("mc", "modelcache")),
        (Resource(DIFFLEET, training_job.PLURAL), ("tj", "trainingjob")),
        (Resource(DIFFLEET, style_preset.PLURAL), ("stylepreset",)),
        (Resource(DIFFLEET, gpu_pool.PLURAL, namespaced=False), ("gp", "gpupool")),
        (Resource("v1", "events"), ("ev", "event")),
        (Resource("v1", "pods"), ("po", "pod")),
        (Resource("v1", "nodes", namespaced=False), ("no", "node")),
        (Resource("coordination.k8s.io/v1", "leases"), ("lease",)),
        (NAMESPACES, ("ns", "namespace")),
    ]
    for name in (*names, resource.plural)
}


class KubeApi:
    """An HTTP client of the API server with the kubeconfig's credentials."""

    def __init__(self, kubeconfig: str) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        # ssl reads a client certificate only from files: they live until it has read them.
        with tempfile.TemporaryDirectory() as directory:
            certificate, key = Path(directory) / "crt", Path(directory) / "key"
            certificate.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            context.load_cert_chain(certificate, key)
        self.http = httpx.Client(base_url=cluster["server"], verify=context, timeout=20)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": content_type} if body is not None else {}
        return self.http.request(method, path, json=body, headers=headers, params=params)

    def get(self, resource: Resource, name: str | None, namespace: str | None) -> Any:
        """An object, or a list as `kubectl get -o json` prints it (each item with its
        apiVersion and kind); AssertionError when the object does not exist."""
        response = self.request("GET", resource.path(namespace, name))
        if response.status_code != 200:
            raise AssertionError(f"GET {resource.plural} {name}: {response.text}")
        found: dict[str, Any] = response.json()
        if name is not None:
            return found
        kind = found["kind"].removesuffix("List")
        items = [{"apiVersion": found["apiVersion"], "kind": kind} | i for i in found["items"]]
        return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": found["metadata"]}

    def create_namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        response = self.request("POST", NAMESPACES.path(), body)
        if response.status_code != 201:
            raise AssertionError(f"namespace {name} not created: {response.text}")

    def apply(self, resource: Resource, namespace: str, body: dict[str, Any]) -> None:
        """Server-side apply: creates the object or updates the fields `body` gives."""
        response = self.request(
            "PATCH",
            resource.path(namespace, body["metadata"]["name"]),
            body,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": "diffleet-tests", "force": "true"},
        )
        if response.status_code not in (200, 201):
            raise AssertionError(f"{body['kind']} not applied: {response.text}")

    def drop_finalizers(self, resource: Resource, namespace: str, names: list[str]) -> None:
        """Drops the finalizers of these objects; one already gone is skipped."""
        for name in names:
            self.request(
                "PATCH",
                resource.path(namespace, name),
                {"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )

    def delete_all(self, resource: Resource, namespace: str) -> list[str]:
        """Deletes every object of `resource` in `namespace` without waiting; their names."""
        deleted = self.request("DELETE", resource.path(namespace))  # the objects deleted
        return [item["metadata"]["name"] for item in deleted.json().get("items", [])]

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> None:
        """Deletes an object without waiting; one already gone is fine."""
        self.request("DELETE", resource.path(namespace, name))


@functools.cache
def kube_api(kubeconfig: str) -> KubeApi:
    """One client (and its kept-alive connections) per kubeconfig and process."""
    return KubeApi(kubeconfig)
