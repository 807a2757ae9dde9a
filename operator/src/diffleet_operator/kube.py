"""The operator's Kubernetes client for work outside kopf handlers: status patches from
the dispatch and result loops, ModelCache and Namespace look-ups, Leases, deletions.
Every call has a timeout."""

from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import generation_job

MERGE_PATCH = "application/merge-patch+json"


class Kube:
    def __init__(self, api: client.ApiClient, timeout: float) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.timeout = timeout

    @classmethod
    async def connect(cls, request_timeout: float) -> "Kube":
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient(), request_timeout)

    async def close(self) -> None:
        await self._api.close()

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(namespace, generation_job.PLURAL, name)

    async def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # _content_type is a runtime keyword that the bundled stubs do not declare.
        await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            API_GROUP,
            API_VERSION,
            namespace,
            generation_job.PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
            _request_timeout=self.timeout,
        )

    async def delete_job(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self._custom.delete_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                generation_job.PLURAL,
                name,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = await self._core.read_namespace(namespace, _request_timeout=self.timeout)
        return dict(ns.metadata.labels or {})

    async def _get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, plural, name, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body
