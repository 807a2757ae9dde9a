"""The quarantine rule (diffleet_operator.quarantine): what is retried, what is set aside,
and what the set-aside record says.

The handler tests feed the GenerationJob watch handler stored objects that the CRD now
refuses (a NUL or a lone surrogate in a spec string, a malformed field or status), as an
object stored before the CRD refused them would arrive, with an in-memory Kubernetes
client. tests/operator/test_quarantine.py runs the real operator."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import kopf
import pytest
from aio_pika.exceptions import AMQPConnectionError
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from diffleet_operator.cache.fleet import FleetInventory
from diffleet_operator.cache.jobs import JobCache
from diffleet_operator.cache.model_index import ModelIndex
from diffleet_operator.config import OperatorSettings
from diffleet_operator.handlers.generation_jobs import track
from diffleet_operator.kube import Kube
from diffleet_operator.quarantine import CONDITION, condition_patch, describe, transient
from diffleet_operator.queue.admitter import Admitter
from diffleet_operator.runtime import Runtime


def validation_error() -> ValidationError:
    class Strict(BaseModel):
        steps: int

    try:
        Strict.model_validate({"steps": "many"})
    except ValidationError as error:
        return error
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(ApiException(status=503), True, id="API server unavailable"),
        pytest.param(ApiException(status=500), True, id="API server error"),
        pytest.param(ApiException(status=429), True, id="throttled"),
        pytest.param(ApiException(status=409), True, id="conflict"),
        pytest.param(ApiException(status=408), True, id="request timeout"),
        pytest.param(ApiException(status=403), True, id="RBAC: the deployment's fault"),
        pytest.param(ApiException(status=401), True, id="credentials: the deployment's"),
        pytest.param(aiohttp.ClientConnectionError(), True, id="API server unreachable"),
        pytest.param(TimeoutError(), True, id="timeout"),
        pytest.param(ConnectionResetError(), True, id="connection reset"),
        pytest.param(AMQPConnectionError(), True, id="RabbitMQ unavailable"),
        pytest.param(ApiException(status=422), False, id="write refused: invalid"),
        pytest.param(ApiException(status=400), False, id="bad request"),
        pytest.param(ApiException(status=413), False, id="too large"),
        pytest.param(validation_error(), False, id="cannot be parsed"),
        pytest.param(KeyError("spec"), False, id="missing field"),
        pytest.param(OverflowError("date value out of range"), False, id="generic fault"),
    ],
)
def test_transient_failures_are_the_dependencies_and_the_rest_the_records(
    error: BaseException, expected: bool
) -> None:
    assert transient(error) is expected


def test_describe_escapes_what_the_record_held_and_stays_short() -> None:
    text = describe(ValueError("prompt a\x00b\ud800c\nd é ✓ " + "x" * 5000))
    for raw in ("\x00", "\ud800", "\n"):
        assert raw not in text
    for shown in ("\\x00", "\\ud800", "é ✓"):
        assert shown in text
    assert text.startswith("ValueError: prompt a")
    assert len(text) == 1024
    text.encode("utf-8")  # storable as it is


def test_describe_names_the_api_servers_answer() -> None:
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = b'{"message": "status.conditions[0].message: Too long"}'
    assert describe(error).startswith("the API server answered 422 Unprocessable Entity: {")


def test_the_condition_is_added_beside_the_stored_ones_and_replaces_an_older_one() -> None:
    body = {
        "metadata": {"generation": 2},
        "status": {
            "conditions": [
                {"type": "Admitted", "status": "True", "reason": "Admitted"},
                {"type": CONDITION, "status": "True", "reason": "Old", "message": "old"},
            ]
        },
    }
    patch = condition_patch(body, cast(Any, "InvalidRecord"), "admission loop: bad")
    types = [condition["type"] for condition in patch["conditions"]]
    assert types == ["Admitted", CONDITION]
    [quarantined] = [c for c in patch["conditions"] if c["type"] == CONDITION]
    assert quarantined["status"] == "True"
    assert quarantined["reason"] == "InvalidRecord"
    assert quarantined["message"] == "admission loop: bad"
    assert quarantined["observedGeneration"] == 2


@pytest.mark.parametrize(
    "stored", [None, "Running", {"conditions": "many"}, {"conditions": [1, {"x": 1}]}]
)
def test_a_malformed_stored_status_still_gets_the_condition(stored: object) -> None:
    patch = condition_patch({"metadata": {}, "status": stored}, cast(Any, "X"), "m")
    assert [condition["type"] for condition in patch["conditions"]] == [CONDITION]


class FakeKube:
    """The calls the watch handler and admission make, recorded."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, bool]] = []

    async def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        self.patches.append((name, status))
        return True

    def post_event(
        self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        self.events.append((body["metadata"]["name"], reason, message, warning))

    async def get_job(self, namespace: str, name: str) -> None:
        return None

    async def config_map_data(self, namespace: str, name: str) -> None:
        return None  # no content policy

    async def get_style_preset(self, namespace: str, name: str) -> None:
        return None


def job(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> kopf.Body:
    return kopf.Body(
        cast(
            kopf.RawBody,
            {
                "apiVersion": "diffleet.io/v1alpha1",
                "kind": "GenerationJob",
                "metadata": {
                    "namespace": "tenant",
                    "name": name,
                    "uid": f"uid-{name}",
                    "generation": 1,
                    "creationTimestamp": "2025-01-01T12:00:00Z",
                },
                "spec": {"model": "m", "prompt": "a red circle"} | spec,
                "status": status or {},
            },
        )
    )


# The watch handler as kopf calls it (its decorator types it as kopf's own callback).
watched = cast(Callable[..., Awaitable[None]], track)


def quarantined_count() -> float:
    return (
        REGISTRY.get_sample_value(
            "diffleet_operator_records_quarantined_total", {"loop": "admission"}
        )
        or 0.0
    )


POISONED = [
    pytest.param(job("nul", {"prompt": "a red\x00circle"}), id="NUL in the prompt"),
    pytest.param(job("surrogate", {"negativePrompt": "blue\ud800"}), id="lone surrogate"),
    pytest.param(job("steps", {"steps": "many"}), id="malformed field"),
    pytest.param(job("unknown", {"stepz": 4}), id="unknown field"),
    pytest.param(job("status", {}, {"attempts": -1, "phase": "Sideways"}), id="malformed status"),
]


@pytest.mark.parametrize("poisoned", POISONED)
def test_a_job_the_operator_cannot_read_is_quarantined_once_and_the_next_one_admitted(
    poisoned: kopf.Body,
) -> None:
    kube = FakeKube()
    rt = Runtime(
        settings=cast(Any, SimpleNamespace(system_namespace="diffleet-system")),
        operator=OperatorSettings(),
        kube=cast(Kube, kube),
        broker=cast(Any, None),
        fleet=FleetInventory(),
        jobs=JobCache(),
        models=ModelIndex(),
    )
    memo = kopf.Memo(runtime=rt, admitter=Admitter(rt))
    before = quarantined_count()

    async def watch(*bodies: kopf.Body) -> None:
        for body in bodies:
            await watched(event={"type": "MODIFIED"}, body=body, memo=memo)

    asyncio.run(watch(poisoned, poisoned, job("healthy", {})))

    name = poisoned["metadata"]["name"]
    assert rt.jobs.get(f"uid-{name}") is None  # no loop sees it
    [status] = [s for n, s in kube.patches if n == name]
    [condition] = status["conditions"]
    assert (condition["type"], condition["reason"]) == (CONDITION, "InvalidRecord")
    assert condition["message"].startswith("admission loop: ValidationError")
    assert [(n, reason, warning) for n, reason, _, warning in kube.events] == [
        (name, CONDITION, True)
    ]
    assert quarantined_count() == before + 1
    # The next job was handled: it waits for its model, with the reason written.
    [pending] = [s for n, s in kube.patches if n == "healthy"]
    assert (pending["phase"], pending["reason"]) == ("Pending", "ModelNotFound")
