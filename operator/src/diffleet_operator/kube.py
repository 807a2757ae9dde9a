"""The operator's Kubernetes client for work outside kopf handlers: status patches from
the dispatch and result loops, ModelCache and Namespace look-ups, Leases, deletions.
Every call has a timeout."""

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources import generation_job

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "diffleet-operator"

logger = logging.getLogger(__name__)


class Kube:
    def __init__(self, api: client.ApiClient, timeout: float) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.timeout = timeout
        self._events: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, request_timeout: float) -> "Kube":
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient(), request_timeout)

    async def close(self) -> None:
        await asyncio.gather(*self._events, return_exceptions=True)
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

    def post_event(
        self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Records a Kubernetes Event on the object, in the background (best effort)."""
        task = asyncio.create_task(self._post_event(body, reason, message, warning))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _post_event(
        self, body: Mapping[str, Any], reason: str, message: str, warning: bool
    ) -> None:
        meta = body["metadata"]
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta['name']}.", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=body["apiVersion"],
                kind=body["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
        )
        try:
            await self._core.create_namespaced_event(
                meta["namespace"], event, _request_timeout=self.timeout
            )
        except ApiException as error:
            logger.warning("event %s on %s not recorded: %s", reason, meta["name"], error.reason)

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
