"""The API's Kubernetes client: GenerationJobs, TrainingJobs and ModelCaches in tenant
namespaces (and ModelCaches of the system namespace), and the content policy ConfigMaps.
Every call has a timeout; Kubernetes' refusals become problem responses naming the field."""

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from diffleet_api.errors import (
    ConflictError,
    FieldError,
    InvalidError,
    NotFoundError,
    UnavailableError,
)
from diffleet_core import API_GROUP, API_VERSION, TIER_LABEL, telemetry
from diffleet_core.fleet import WORKER_LABEL
from diffleet_core.resources import (
    generation_job,
    gpu_pool,
    model_cache,
    style_preset,
    training_job,
)

MERGE_PATCH = "application/merge-patch+json"
CREATED_BY = "app.kubernetes.io/created-by"
API = "diffleet-api"  # the value of CREATED_BY on the jobs this API creates
# The compatible door a job came through (openai, a1111) and the caller who used it
# (caller_label): what a door's "the caller's running job" looks for.
DOOR_LABEL = "diffleet.io/door"
CALLER_LABEL = "diffleet.io/caller"
# The end user a client names for its own accounting (OpenAI's `user`).
END_USER_ANNOTATION = "diffleet.io/end-user"
Body = dict[str, Any]
WATCH_GRACE_SECONDS = 30


@dataclass(frozen=True)
class JobTags:
    """Labels and annotations a job is created with, besides the API's own."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    items: list[Body]
    next_cursor: str | None


def paging(cursor: str | None) -> dict[str, Any]:
    """The continue token of a list, when there is one (the client refuses None)."""
    return {"_continue": cursor} if cursor else {}


class Kube:
    def __init__(self, api: client.ApiClient, timeout: float) -> None:
        self._api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.timeout = timeout

    @classmethod
    async def connect(cls, request_timeout: float, connections: int) -> "Kube":
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # KUBECONFIG as it is now: the library's default is read when it is imported.
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        configuration.connection_pool_maxsize = connections
        api = client.ApiClient(configuration)
        # kubernetes_asyncio's session trusts the environment (proxies, ~/.netrc), which
        # aiohttp looks up in a worker thread on every request. The API talks to its API
        # server directly (a proxy in the kubeconfig still applies), as the operator does.
        api.rest_client.pool_manager._trust_env = False
        return cls(api, request_timeout)

    async def close(self) -> None:
        await self._api.close()

    async def check(self) -> None:
        """Raises when the API server does not answer a cheap, authorized request."""
        await self.custom.list_cluster_custom_object(
            API_GROUP, API_VERSION, generation_job.PLURAL, limit=1, _request_timeout=self.timeout
        )

    # ------------------------------------------------------------ GenerationJobs

    async def create_job(
        self, namespace: str, name: str, spec: Body, tags: JobTags | None = None
    ) -> Body:
        """Creates the job, whose annotation carries the trace on (from this span, a child
        of the request's) to the operator and the worker."""
        attributes = {telemetry.JOB_NAMESPACE: namespace, telemetry.JOB_NAME: name}
        with telemetry.tracer.start_as_current_span("create job", attributes=attributes) as span:
            tags = tags or JobTags()
            annotations = dict(tags.annotations)
            telemetry.annotate(annotations)
            labels = {**tags.labels, CREATED_BY: API}
            body = {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": generation_job.KIND,
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": spec,
            }
            with refusals(f"job {name!r}"):
                created: Body = await self.custom.create_namespaced_custom_object(
                    API_GROUP,
                    API_VERSION,
                    namespace,
                    generation_job.PLURAL,
                    body,
                    _request_timeout=self.timeout,
                )
            span.set_attribute(telemetry.JOB_UID, created["metadata"]["uid"])
        return created

    async def get_job(self, namespace: str, name: str) -> Body | None:
        return await self._get(namespace, generation_job.PLURAL, name)

    async def list_jobs(
        self, namespace: str, limit: int, cursor: str | None, label_selector: str = ""
    ) -> Page:
        with refusals("job list", field="cursor" if cursor else None):
            listed = await self.custom.list_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                generation_job.PLURAL,
                limit=limit,
                label_selector=label_selector,
                _request_timeout=self.timeout,
                **paging(cursor),
            )
        return Page(listed["items"], listed["metadata"].get("continue") or None)

    async def cancel_job(self, namespace: str, name: str) -> Body:
        with refusals(f"job {name!r}"):
            # _content_type is a runtime keyword that the bundled stubs do not declare.
            patched: Body = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                API_GROUP,
                API_VERSION,
                namespace,
                generation_job.PLURAL,
                name,
                {"spec": {"cancel": True}},
                _content_type=MERGE_PATCH,
                _request_timeout=self.timeout,
            )
        return patched

    async def delete_job(self, namespace: str, name: str) -> None:
        try:
            await self.custom.delete_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                generation_job.PLURAL,
                name,
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def job_events(
        self,
        namespace: str | None,
        resource_version: str | None,
        timeout_seconds: int,
        field_selector: str | None = None,
        plural: str = generation_job.PLURAL,
    ) -> AsyncIterator[tuple[str, Body]]:
        """Watch events of GenerationJobs (or of `plural`: TrainingJobs) of one namespace
        or all, from a resourceVersion."""
        listing = (
            self.custom.list_namespaced_custom_object
            if namespace
            else self.custom.list_cluster_custom_object
        )
        args = (API_GROUP, API_VERSION, namespace, plural)
        stream = watch.Watch()
        kwargs: dict[str, Any] = {
            "timeout_seconds": timeout_seconds,
            "allow_watch_bookmarks": True,
            # The server ends the watch after timeout_seconds: silence past that is a dead
            # connection (no RST came), which raises TimeoutError instead of hanging.
            "_request_timeout": (self.timeout, timeout_seconds + WATCH_GRACE_SECONDS),
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        if field_selector:
            kwargs["field_selector"] = field_selector
        async with stream.stream(listing, *[a for a in args if a is not None], **kwargs) as events:
            async for event in events:
                yield str(event["type"]), event["raw_object"]

    async def list_all_jobs(self, namespace: str | None) -> tuple[list[Body], str]:
        """Every GenerationJob (one namespace or all) and the list's resourceVersion."""
        if namespace:
            listed = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, generation_job.PLURAL,
                _request_timeout=self.timeout,
            )  # fmt: skip
        else:
            listed = await self.custom.list_cluster_custom_object(
                API_GROUP, API_VERSION, generation_job.PLURAL, _request_timeout=self.timeout
            )
        return listed["items"], listed["metadata"]["resourceVersion"]

    # ------------------------------------------------------------ TrainingJobs

    async def create_training(self, namespace: str, name: str, spec: Body) -> Body:
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": training_job.KIND,
            "metadata": {"name": name, "labels": {CREATED_BY: API}},
            "spec": spec,
        }
        with refusals(f"training {name!r}"):
            created: Body = await self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, training_job.PLURAL, body,
                _request_timeout=self.timeout,
            )  # fmt: skip
        return created

    async def get_training(self, namespace: str, name: str) -> Body | None:
        return await self._get(namespace, training_job.PLURAL, name)

    async def list_trainings(self, namespace: str, limit: int, cursor: str | None) -> Page:
        with refusals("training list", field="cursor" if cursor else None):
            listed = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, training_job.PLURAL, limit=limit,
                _request_timeout=self.timeout, **paging(cursor),
            )  # fmt: skip
        return Page(listed["items"], listed["metadata"].get("continue") or None)

    async def list_all_trainings(self, namespace: str | None) -> tuple[list[Body], str]:
        """Every TrainingJob (one namespace or all) and the list's resourceVersion."""
        if namespace:
            listed = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, training_job.PLURAL,
                _request_timeout=self.timeout,
            )  # fmt: skip
        else:
            listed = await self.custom.list_cluster_custom_object(
                API_GROUP, API_VERSION, training_job.PLURAL, _request_timeout=self.timeout
            )
        return listed["items"], listed["metadata"]["resourceVersion"]

    async def cancel_training(self, namespace: str, name: str) -> Body:
        with refusals(f"training {name!r}"):
            # _content_type is a runtime keyword that the bundled stubs do not declare.
            patched: Body = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                API_GROUP, API_VERSION, namespace, training_job.PLURAL, name,
                {"spec": {"cancel": True}}, _content_type=MERGE_PATCH,
                _request_timeout=self.timeout,
            )  # fmt: skip
        return patched

    # ------------------------------------------------------------ GPUPools

    async def list_pools(self, selector: str) -> list[str]:
        """Names of the GPUPools that match a label selector."""
        listed = await self.custom.list_cluster_custom_object(
            API_GROUP, API_VERSION, gpu_pool.PLURAL, label_selector=selector,
            _request_timeout=self.timeout,
        )  # fmt: skip
        return [item["metadata"]["name"] for item in listed["items"]]

    async def list_pool_bodies(self) -> list[Body]:
        """Every GPUPool (cluster-scoped), of every fleet."""
        listed = await self.custom.list_cluster_custom_object(
            API_GROUP, API_VERSION, gpu_pool.PLURAL, _request_timeout=self.timeout
        )
        items: list[Body] = listed["items"]
        return items

    async def list_worker_leases(self, namespace: str) -> list[Body]:
        """The worker Leases of a fleet namespace (label diffleet.io/worker=true)."""
        listed = await self.coordination.list_namespaced_lease(
            namespace, label_selector=f"{WORKER_LABEL}=true", _request_timeout=self.timeout
        )
        items: list[Body] = self._api.sanitize_for_serialization(listed)["items"]
        return items

    async def list_pool_events(self) -> list[Body]:
        """The Events about GPUPools (in the namespace Events of cluster-scoped objects go to)."""
        listed = await self.core.list_namespaced_event(
            gpu_pool.EVENTS_NAMESPACE,
            field_selector=f"involvedObject.kind={gpu_pool.KIND}",
            _request_timeout=self.timeout,
        )
        items: list[Body] = self._api.sanitize_for_serialization(listed)["items"]
        return items

    async def delete_pool(self, name: str) -> None:
        """Deletes a GPUPool (its finalizer lets the operator drain its workers first);
        one already gone is fine."""
        try:
            await self.custom.delete_cluster_custom_object(
                API_GROUP, API_VERSION, gpu_pool.PLURAL, name, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise

    # ------------------------------------------------------------ ModelCaches

    async def get_model(self, namespace: str, name: str) -> Body | None:
        return await self._get(namespace, model_cache.PLURAL, name)

    async def list_models(self, namespace: str) -> list[Body]:
        with refusals("model list"):
            listed = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, model_cache.PLURAL,
                _request_timeout=self.timeout,
            )  # fmt: skip
        items: list[Body] = listed["items"]
        return items

    async def create_model(self, namespace: str, name: str, spec: Body) -> Body:
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": model_cache.KIND,
            "metadata": {"name": name, "labels": {CREATED_BY: API}},
            "spec": spec,
        }
        with refusals(f"model {name!r}"):
            created: Body = await self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, model_cache.PLURAL, body,
                _request_timeout=self.timeout,
            )  # fmt: skip
        return created

    # ------------------------------------------------------------ StylePresets

    async def get_style_preset(self, namespace: str, name: str) -> Body | None:
        return await self._get(namespace, style_preset.PLURAL, name)

    async def list_style_presets(self, namespace: str) -> list[Body]:
        with refusals("style list"):
            listed = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, style_preset.PLURAL,
                _request_timeout=self.timeout,
            )  # fmt: skip
        items: list[Body] = listed["items"]
        return items

    # ------------------------------------------------------------ Namespaces

    async def ensure_namespace(self, name: str, tier: str) -> None:
        """Creates the tenant's namespace, or sets the tier label of an existing one."""
        labels = {TIER_LABEL: tier}
        try:
            await self.core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)),
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status != 409:
                raise
            await self.core.patch_namespace(
                name, {"metadata": {"labels": labels}}, _request_timeout=self.timeout
            )

    # ------------------------------------------------------------ ConfigMaps

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The data of the ConfigMap `name`; None when there is no such ConfigMap."""
        try:
            with refusals(f"ConfigMap {namespace}/{name}"):
                found = await self.core.read_namespaced_config_map(
                    name, namespace, _request_timeout=self.timeout
                )
        except NotFoundError:
            return None
        return dict(found.data or {})

    async def _get(self, namespace: str, plural: str, name: str) -> Body | None:
        try:
            with refusals(name):
                body: Body = await self.custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, plural, name, _request_timeout=self.timeout
                )
        except NotFoundError:
            return None
        return body


@contextmanager
def refusals(what: str, field: str | None = None) -> Iterator[None]:
    """Turns Kubernetes API errors into problem responses; a bad request (400) or an
    expired list (410) is blamed on `field` when given (a client's continue token)."""
    try:
        yield
    except ApiException as error:
        if field is not None and error.status in (400, 410):
            message = f"{field} is not a valid or current continue token ({error.reason})"
            raise InvalidError(
                f"{what}: {message}",
                errors=[FieldError(field=field, rule="valid", message=message)],
            ) from error
        raise problem_of(error, what) from error
    except (TimeoutError, aiohttp.ClientError) as error:
        raise UnavailableError(f"Kubernetes API unreachable for {what}: {error!r}") from error


def problem_of(error: ApiException, what: str) -> Exception:
    if error.status == 404:
        return NotFoundError(f"{what} not found")
    if error.status == 409:
        return ConflictError(f"{what} already exists")
    if error.status == 422:
        return InvalidError(f"{what}: refused by Kubernetes", errors=causes(error))
    return UnavailableError(f"Kubernetes API answered {error.status} {error.reason} for {what}")


def causes(error: ApiException) -> list[FieldError]:
    try:
        details = json.loads(error.body or "{}").get("details", {})
    except json.JSONDecodeError:
        return []
    return [
        FieldError(
            field=str(cause.get("field", "")).removeprefix("spec."),
            rule=str(cause.get("reason", "")),
            message=str(cause.get("message", "")),
        )
        for cause in details.get("causes", [])
    ]
