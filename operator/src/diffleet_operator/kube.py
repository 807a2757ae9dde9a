"""The operator's Kubernetes client for work outside kopf handlers: status patches from
the dispatch and result loops, ModelCache, Namespace and ConfigMap look-ups, Leases,
deletions, worker pods and GPUPools. Every call has a timeout."""

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.logs import about_job
from diffleet_core.resources import (
    generation_job,
    gpu_pool,
    model_cache,
    style_preset,
    training_job,
)
from diffleet_core.resources.generation_job import GenerationJobStatus
from diffleet_operator import status
from diffleet_operator.events import EventRecorder

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# A namespace's labels (its tier) and annotations (its fair share) are read again after
# this long.
NAMESPACE_MAX_AGE_SECONDS = 2.0
# A job status write re-reads and judges again at most this many times when another
# write lands between its read and its patch.
CONFLICT_RETRIES = 5
# A watch silent this long past its server-side timeout is a dead connection.
WATCH_GRACE_SECONDS = 30


class Kube:
    def __init__(self, api: client.ApiClient, timeout: float, event_tally_seconds: float) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.timeout = timeout
        self._events = EventRecorder(self._create_event, event_tally_seconds)
        # Namespace -> when read, its labels and its annotations.
        self._namespaces: dict[str, tuple[float, dict[str, str], dict[str, str]]] = {}

    @classmethod
    async def connect(cls, request_timeout: float, event_tally_seconds: float) -> "Kube":
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        api = client.ApiClient()
        # kubernetes_asyncio's session trusts the environment (proxies, ~/.netrc), which
        # aiohttp looks up in a worker thread on every request. The operator talks to its
        # API server directly, as kopf's own session does by default.
        api.rest_client.pool_manager._trust_env = False
        kube = cls(api, request_timeout, event_tally_seconds)
        kube._events.start()
        return kube

    async def close(self) -> None:
        await self._events.close(within=self.timeout)
        await self._api.close()

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(namespace, generation_job.PLURAL, name)

    async def get_style_preset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(namespace, style_preset.PLURAL, name)

    async def annotate_job(self, namespace: str, name: str, annotations: Mapping[str, str]) -> bool:
        """Sets annotations of the job; False if it is gone."""
        try:
            # _content_type is a runtime keyword that the bundled stubs do not declare.
            response = await self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                API_GROUP,
                API_VERSION,
                namespace,
                generation_job.PLURAL,
                name,
                {"metadata": {"annotations": dict(annotations)}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        await _discard(cast(aiohttp.ClientResponse, response))
        return True

    async def patch_job_status(
        self,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        known: Mapping[str, Any] | None = None,
    ) -> bool:
        """Writes the patch unless it would move the job back (status.may_write), judged
        against the stored status and sent with its resourceVersion: a write that lands in
        between (409) makes it read and judge again. False when dropped or the job is gone.
        `known`, the job as last seen (the watch's cache), stands for the stored job on the
        first try, saving a read: the resourceVersion makes a stale one a 409; a patch that
        it refuses is judged again on a read, as only the stored job may refuse it.

        Every job status write goes through here, so that a late report (a "started" after
        "succeeded") or a stale loop can never undo a transition."""
        body = known
        for _ in range(CONFLICT_RETRIES):
            read = body is None
            if body is None:
                body = await self.get_job(namespace, name)
                if body is None:
                    return False
            if not status.may_write(_stored_status(body), patch):
                if not read:
                    body = None
                    continue
                logger.info(
                    "stale status write dropped (phase %s over %s)",
                    patch.get("phase", "unchanged"),
                    body.get("status", {}).get("phase"),
                    extra=about_job(namespace, name, body["metadata"]["uid"]),
                )
                return False
            version = body["metadata"]["resourceVersion"]
            merged = status.over_stored_conditions(patch, body.get("status"))
            body = None
            try:
                await self._patch_status(
                    namespace, generation_job.PLURAL, name, merged, resource_version=version
                )
            except ApiException as error:
                if error.status == 409:
                    continue
                if error.status == 404:
                    return False
                raise
            return True
        raise ApiException(status=409, reason=f"status of {namespace}/{name} kept changing")

    async def patch_model_cache_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._patch_status(namespace, model_cache.PLURAL, name, status)

    async def _patch_status(
        self,
        namespace: str,
        plural: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> None:
        # A resourceVersion in the patch makes it conditional: 409 if the object changed.
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        # _content_type is a runtime keyword that the bundled stubs do not declare.
        response = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        await _discard(response)

    async def get_training(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(namespace, training_job.PLURAL, name)

    async def patch_training_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> None:
        """A conditional status write (409 when the TrainingJob changed since that version)."""
        await self._patch_status(
            namespace, training_job.PLURAL, name, status, resource_version=resource_version
        )

    async def create_model_cache(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Creates the ModelCache (409 when one of that name exists)."""
        response = await self._custom.create_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            namespace,
            model_cache.PLURAL,
            dict(body),
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        await _discard(cast(aiohttp.ClientResponse, response))

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

    def tally_event(self, job: Mapping[str, Any], reason: str) -> None:
        """Counts a routine transition of the job into one Event per window on its
        namespace (diffleet_operator.events)."""
        self._events.tally(job, reason)

    async def _create_event(self, namespace: str, event: dict[str, Any]) -> None:
        response = await self._core.create_namespaced_event(
            namespace,
            event,  # type: ignore[arg-type]  # a plain dict is sent as it is
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        await _discard(cast(aiohttp.ClientResponse, response))

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Creates the pod; the pod as stored."""
        response = await self._core.create_namespaced_pod(
            namespace,
            body,  # type: ignore[arg-type]  # a plain dict is sent as it is
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        return await _json(cast(aiohttp.ClientResponse, response))

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Deletes the pod with its own grace period; one already gone is no error."""
        try:
            response = await self._core.delete_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
            await _discard(cast(aiohttp.ClientResponse, response))
        except ApiException as error:
            if error.status != 404:
                raise

    async def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any] | None:
        """Sets (None: removes) the pod's annotations; the pod, None if it is gone."""
        try:
            response = await self._core.patch_namespaced_pod(  # type: ignore[call-arg]
                name,
                namespace,
                {"metadata": {"annotations": dict(annotations)}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            return await _json(cast(aiohttp.ClientResponse, response))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def list_pods(self, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The pods that match the label selector, and the list's resourceVersion."""
        return await self._list(self._core.list_namespaced_pod, namespace, label_selector=selector)

    def pod_events(
        self, namespace: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events (type, raw object) of the pods that match the label selector,
        from a resourceVersion, until the server ends the watch after timeout_seconds."""
        return self._watch(
            self._core.list_namespaced_pod, namespace, resource_version, timeout_seconds,
            label_selector=selector,
        )  # fmt: skip

    async def list_config_map(self, namespace: str, name: str) -> tuple[list[dict[str, Any]], str]:
        """The ConfigMap `name` (a list of it, or empty), and the list's resourceVersion."""
        return await self._list(
            self._core.list_namespaced_config_map, namespace, field_selector=f"metadata.name={name}"
        )

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The data of the ConfigMap `name`; None when there is no such ConfigMap."""
        try:
            response = await self._core.read_namespaced_config_map(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
            body = await _json(cast(aiohttp.ClientResponse, response))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(body.get("data") or {})

    def config_map_events(
        self, namespace: str, name: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events (type, raw object) of the ConfigMap `name`, from a resourceVersion,
        until the server ends the watch after timeout_seconds."""
        return self._watch(
            self._core.list_namespaced_config_map, namespace, resource_version, timeout_seconds,
            field_selector=f"metadata.name={name}",
        )  # fmt: skip

    async def _list(
        self, method: Callable[..., Any], namespace: str, **selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        response = await method(
            namespace, **selector, _preload_content=False, _request_timeout=self.timeout
        )
        listed = await _json(cast(aiohttp.ClientResponse, response))
        return listed["items"], listed["metadata"]["resourceVersion"]

    async def _watch(
        self,
        method: Callable[..., Any],
        namespace: str,
        resource_version: str,
        timeout_seconds: int,
        **selector: str,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        stream = watch.Watch()
        async with stream.stream(
            method,
            namespace,
            **selector,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=(self.timeout, timeout_seconds + WATCH_GRACE_SECONDS),
        ) as events:
            async for event in events:
                yield str(event["type"]), event["raw_object"]

    async def patch_gpu_pool_status(self, name: str, status: Mapping[str, Any]) -> None:
        response = await self._custom.patch_cluster_custom_object_status(  # type: ignore[call-arg]
            API_GROUP,
            API_VERSION,
            gpu_pool.PLURAL,
            name,
            {"status": dict(status)},
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        await _discard(response)

    async def patch_gpu_pool_finalizers(
        self, name: str, finalizers: Sequence[str], resource_version: str
    ) -> dict[str, Any]:
        """Sets the GPUPool's finalizers if it is still at `resource_version` (else 409);
        the GPUPool as stored."""
        body = {"metadata": {"finalizers": list(finalizers), "resourceVersion": resource_version}}
        response = await self._custom.patch_cluster_custom_object(  # type: ignore[call-arg]
            API_GROUP,
            API_VERSION,
            gpu_pool.PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        return await _json(response)

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        """The namespace's labels, read at most once per NAMESPACE_MAX_AGE_SECONDS."""
        return (await self._namespace(namespace))[1]

    async def namespace_annotations(self, namespace: str) -> dict[str, str]:
        """The namespace's annotations, read at most once per NAMESPACE_MAX_AGE_SECONDS."""
        return (await self._namespace(namespace))[2]

    def cached_namespace_annotations(self, namespace: str) -> tuple[float, dict[str, str]] | None:
        """The namespace's annotations as last read and their age in seconds, without a
        request; None if never read."""
        cached = self._namespaces.get(namespace)
        return None if cached is None else (time.monotonic() - cached[0], cached[2])

    async def _namespace(self, namespace: str) -> tuple[float, dict[str, str], dict[str, str]]:
        cached = self._namespaces.get(namespace)
        if cached is None or time.monotonic() - cached[0] > NAMESPACE_MAX_AGE_SECONDS:
            ns = await self._core.read_namespace(namespace, _request_timeout=self.timeout)
            meta = ns.metadata
            cached = (time.monotonic(), dict(meta.labels or {}), dict(meta.annotations or {}))
            self._namespaces[namespace] = cached
        return cached

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


def _stored_status(body: Mapping[str, Any]) -> GenerationJobStatus:
    """The stored status; one that does not parse is judged as empty (any write may repair
    it, as the quarantine's condition does)."""
    try:
        return GenerationJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return GenerationJobStatus()


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The decoded body of a response; an error status raises ApiException as a decoded
    call would."""
    if not 200 <= response.status <= 299:
        await _discard(response)
    body: dict[str, Any] = await response.json()
    return body


async def _discard(response: aiohttp.ClientResponse) -> None:
    """Releases a response that the operator does not read back (a write's echo of the
    object), undecoded; an error status raises ApiException as a decoded call would."""
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = await response.read()
        raise error
    response.release()
