"""The operator's Kubernetes client for work outside kopf handlers: status patches from
the dispatch and result loops, ModelCache and Namespace look-ups, Leases, deletions.
Every call has a timeout."""

import time
from collections.abc import Mapping
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import generation_job, model_cache
from diffleet_operator.events import EventRecorder

MERGE_PATCH = "application/merge-patch+json"
# A namespace's labels (its tier) are read again after this long.
LABELS_MAX_AGE_SECONDS = 2.0


class Kube:
    def __init__(self, api: client.ApiClient, timeout: float) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.timeout = timeout
        self._events = EventRecorder(self._create_event)
        self._labels: dict[str, tuple[float, dict[str, str]]] = {}

    @classmethod
    async def connect(cls, request_timeout: float) -> "Kube":
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        api = client.ApiClient()
        # kubernetes_asyncio's session trusts the environment (proxies, ~/.netrc), which
        # aiohttp looks up in a worker thread on every request. The operator talks to its
        # API server directly, as kopf's own session does by default.
        api.rest_client.pool_manager._trust_env = False
        return cls(api, request_timeout)

    async def close(self) -> None:
        await self._events.close(within=self.timeout)
        await self._api.close()

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(namespace, generation_job.PLURAL, name)

    async def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._patch_status(namespace, generation_job.PLURAL, name, status)

    async def patch_model_cache_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._patch_status(namespace, model_cache.PLURAL, name, status)

    async def _patch_status(
        self, namespace: str, plural: str, name: str, status: dict[str, Any]
    ) -> None:
        # _content_type is a runtime keyword that the bundled stubs do not declare.
        response = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        await _discard(response)

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

    def post_event(
        self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Records a Kubernetes Event on the object, in the background (best effort)."""
        self._events.record(body, reason, message, warning=warning)

    async def _create_event(self, namespace: str, event: dict[str, Any]) -> None:
        response = await self._core.create_namespaced_event(
            namespace,
            event,  # type: ignore[arg-type]  # a plain dict is sent as it is
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        await _discard(cast(aiohttp.ClientResponse, response))

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        """The namespace's labels, read at most once per LABELS_MAX_AGE_SECONDS."""
        read_at, labels = self._labels.get(namespace, (0.0, {}))
        if time.monotonic() - read_at > LABELS_MAX_AGE_SECONDS:
            ns = await self._core.read_namespace(namespace, _request_timeout=self.timeout)
            labels = dict(ns.metadata.labels or {})
            self._labels[namespace] = (time.monotonic(), labels)
        return labels

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


async def _discard(response: aiohttp.ClientResponse) -> None:
    """Releases a response that the operator does not read back (a write's echo of the
    object), undecoded; an error status raises ApiException as a decoded call would."""
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = await response.read()
        raise error
    response.release()
