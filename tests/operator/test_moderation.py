"""The content policy and the watermark through the real operator: a prompt that the
job's namespace's diffleet-policy ConfigMap (else the platform's) denies fails the job at
admission, reason PromptRejected, naming the rule and the ConfigMap; the policy's safety
model and the namespace's watermark annotation reach the worker's order; an output the
safety model flags fails its job on a real worker, and nothing of it reaches S3."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from diffleet_core.storage import output_prefix
from hack.models.registry import RegisteredModel
from tests.conftest import delete_namespace
from tests.operator.injection import idle_worker_lease
from tests.operator.test_ordering import take_dispatched
from tests.support.groups import DIFFUSERS
from tests.support.platform import (
    Platform,
    apply_job,
    job_status,
    register_model,
    wait_for_phase,
)
from tests.support.polling import eventually
from tests.support.stack import Kubectl


def policy(kubectl: Kubectl, namespace: str, **data: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "diffleet-policy"},
        "data": data,
    }
    kubectl.apply(json.dumps(body), namespace)


def job_events(kubectl: Kubectl, namespace: str, job: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = kubectl.json("get", "events", "-n", namespace)["items"]
    return [event for event in events if event["involvedObject"]["name"] == job]


@pytest.fixture
def extra_namespaces(kubectl: Kubectl, namespace: str) -> Iterator[tuple[str, str]]:
    """A second job namespace, and a namespace that plays the platform's (the operator's
    system namespace): the real diffleet-system is shared by every test."""
    names = (f"{namespace}-own", f"{namespace}-platform")
    for name in names:
        kubectl.run("create", "namespace", name)
    yield names
    for name in names:
        delete_namespace(kubectl, name)


def safety_model(kubectl: Kubectl, namespace: str, name: str) -> None:
    """A ModelCache of type safety (a diffusers folder; never loaded here), once Ready."""
    prefix = f"tests/{namespace}/{name}-{uuid.uuid4().hex[:6]}"
    boto3.client("s3").put_object(Bucket="diffleet-models", Key=f"{prefix}/config.json", Body=b"{}")
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": name},
        "spec": {
            "source": f"s3://diffleet-models/{prefix}",
            "format": "diffusers",
            "type": "safety",
            "vramGiB": 0.25,
        },
    }
    kubectl.apply(json.dumps(body), namespace)

    def ready() -> bool:
        found = kubectl.json("get", "modelcache", name, "-n", namespace).get("status", {})
        return bool(found.get("phase") == "Ready")

    eventually(ready, timeout=60, what=f"ModelCache {name} Ready")


def test_a_denied_prompt_fails_at_admission_and_the_policy_and_watermark_reach_the_order(
    kubectl: Kubectl, namespace: str, platform: Platform, extra_namespaces: tuple[str, str]
) -> None:
    own, system = extra_namespaces
    policy(kubectl, system, denyList="# the platform's\nred panda\n", safetyModel="none-such")
    policy(kubectl, own, denyList="blue whale", safetyModel="checker")
    kubectl.run("annotate", "namespace", own, "diffleet.io/watermark=true")
    idle_worker_lease(kubectl, namespace, "idle")
    platform.job_namespaces = [namespace, own]
    platform.system_namespace = system
    platform.operator()
    register_model(kubectl, own, "m")

    # No policy of its own: the platform's applies, before the model is even looked for.
    apply_job(kubectl, namespace, "panda", model="missing", prompt="A Red Panda, asleep")
    failed = wait_for_phase(kubectl, namespace, "panda", "Failed", timeout=30)
    assert failed["reason"] == "PromptRejected"
    assert failed["message"] == (
        f"the prompt matches the deny rule 'red panda' of ConfigMap {system}/diffleet-policy"
    )
    warnings = eventually(
        lambda: [e for e in job_events(kubectl, namespace, "panda") if e["type"] == "Warning"],
        timeout=30,
        what="the PromptRejected Event",
    )
    assert [(e["reason"], e["message"]) for e in warnings] == [
        ("PromptRejected", failed["message"])
    ]

    # A namespace's own policy replaces the platform's (rules and safety model alike).
    apply_job(kubectl, own, "whale", model="m", prompt="a blue whale")
    apply_job(kubectl, own, "panda", model="m", prompt="a red panda")
    whale = wait_for_phase(kubectl, own, "whale", "Failed", timeout=30)
    assert whale["message"] == (
        f"the prompt matches the deny rule 'blue whale' of ConfigMap {own}/diffleet-policy"
    )
    # Admission waits for the policy's safety model as for any model of the job.
    eventually(
        lambda: job_status(kubectl, own, "panda").get("reason") == "ModelNotFound",
        timeout=30,
        what="the job waiting for the safety model",
    )
    assert "'checker'" in job_status(kubectl, own, "panda")["message"]
    safety_model(kubectl, own, "checker")
    wait_for_phase(kubectl, own, "panda", "Scheduled", timeout=30)

    order = asyncio.run(take_dispatched(f"{namespace}.worker.idle"))
    assert order.job.name == "panda"
    assert order.watermark is True
    assert order.safety is not None
    assert (order.safety.name, order.safety.type) == ("checker", "safety")


@DIFFUSERS
def test_an_output_the_safety_model_flags_fails_the_job_and_is_never_stored(
    kubectl: Kubectl, namespace: str, platform: Platform, models: dict[str, RegisteredModel]
) -> None:
    """tiny-safety-strict flags every image: the worker fails the job before any upload."""
    policy(kubectl, namespace, safetyModel="tiny-safety-strict")
    operator = platform.operator()
    platform.worker("cpu", simulate=False)
    platform.wait_for_workers(operator, "t4", 1, timeout=240)
    apply_job(kubectl, namespace, "flagged", model="tiny-sd15", width=64, height=64, steps=2)

    failed = wait_for_phase(kubectl, namespace, "flagged", "Failed", timeout=180)
    assert failed["reason"] == "ContentRejected"
    assert failed["attempts"] == 1  # a verdict, not a fault: never tried again
    uid = kubectl.json("get", "gj", "flagged", "-n", namespace)["metadata"]["uid"]
    stored = boto3.client("s3").list_objects_v2(
        Bucket="diffleet-outputs", Prefix=output_prefix(namespace, "flagged", uid)
    )
    assert stored.get("KeyCount", 0) == 0
