"""Faults injected into a real operator from outside it: messages published straight to
its RabbitMQ queues, a worker Lease with no worker behind it, and a ValidatingAdmission
Policy that makes the API server refuse one job's status writes."""

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika

from tests.support.polling import eventually
from tests.support.stack import Kubectl

# A job with this label has every status write that sets its phase to the label's value
# refused by the API server (while `refused_status_writes` is in force).
REFUSE_LABEL = "test.diffleet.io/refuse-phase"


def publish(queue: str, body: bytes) -> None:
    """Publishes a raw body to a queue (default exchange), confirmed."""

    async def send() -> None:
        connection = await aio_pika.connect(os.environ["DIFFLEET_AMQP_URL"], timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await channel.default_exchange.publish(message, routing_key=queue, timeout=10)

    asyncio.run(send())


def ready_messages(queue: str) -> int:
    """Messages ready in a queue (not those delivered and unacknowledged)."""

    async def count() -> int:
        connection = await aio_pika.connect(os.environ["DIFFLEET_AMQP_URL"], timeout=10)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True, passive=True)
            return declared.declaration_result.message_count or 0

    return asyncio.run(count())


def lease_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def idle_worker_lease(kubectl: Kubectl, namespace: str, worker_id: str) -> None:
    """A worker's Lease (one free t4 slot, valid for an hour) with no worker behind it:
    jobs dispatched there wait in its queue, for the test to read or leave."""
    inventory = {"workerId": worker_id, "pool": "t4", "vramGiB": 16, "concurrency": 1}
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": worker_id,
            "labels": {"diffleet.io/worker": "true", "diffleet.io/pool": "t4"},
            "annotations": {"diffleet.io/inventory": json.dumps(inventory)},
        },
        "spec": {
            "holderIdentity": worker_id,
            "leaseDurationSeconds": 3600,
            "renewTime": lease_time(datetime.now(UTC)),
        },
    }
    kubectl.apply(json.dumps(lease), namespace)


def apply_labelled_job(
    kubectl: Kubectl, namespace: str, name: str, labels: dict[str, str], **spec: Any
) -> None:
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "GenerationJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {"prompt": "a red circle", "steps": 4} | spec,
    }
    kubectl.apply(json.dumps(body), namespace)


def _policy(name: str, namespace: str, reason: str) -> str:
    label = f"object.metadata.labels['{REFUSE_LABEL}']"
    # A write moves the job into the phase when it sets it, or, for Scheduled and Running,
    # first records its time: the operator writes a job's transitions that come close
    # together in one write, whose phase is the last of them.
    first = {
        phase: f"({label} == '{phase}' && has(object.status.{field})"
        f" && !(has(oldObject.status) && has(oldObject.status.{field})))"
        for phase, field in (("Scheduled", "scheduledAt"), ("Running", "startedAt"))
    }
    refused = (
        f"has(object.metadata.labels) && '{REFUSE_LABEL}' in object.metadata.labels"
        f" && has(object.status) && ((has(object.status.phase) && object.status.phase == {label})"
        f" || {first['Scheduled']} || {first['Running']})"
    )
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["diffleet.io"],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["generationjobs/status"],
                    }
                ]
            },
            "validations": [
                {"expression": f"!({refused})", "reason": reason, "message": "refused by a test"}
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]})


@contextmanager
def refused_status_writes(
    kubectl: Kubectl, namespace: str, probe_job: str, reason: str = "Invalid"
) -> Iterator[None]:
    """While in force, the API server refuses (422 for reason Invalid, 403 for
    Forbidden) a status write that moves a job into the phase of its REFUSE_LABEL (sets
    it, or first records the time of Scheduled or Running). `probe_job`,
    an existing job of the namespace carrying the label, shows when it is in force."""
    name = f"refuse-{namespace}"
    kubectl.apply(_policy(name, namespace, reason))
    phase = kubectl.json("get", "generationjob", probe_job, "-n", namespace)["metadata"]["labels"][
        REFUSE_LABEL
    ]

    def in_force() -> bool:
        result = kubectl.run(
            "patch", "generationjob", probe_job, "-n", namespace, "--subresource=status",
            "--type=merge", "--dry-run=server", "-p", json.dumps({"status": {"phase": phase}}),
            check=False,
        )  # fmt: skip
        return result.returncode != 0 and "refused by a test" in result.stderr

    try:
        eventually(in_force, timeout=30, what="the refusing policy in force")
        yield
    finally:
        kubectl.run(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
            "--ignore-not-found", check=False,
        )  # fmt: skip


def lift_refusal(kubectl: Kubectl, namespace: str) -> None:
    """Ends `refused_status_writes` early (its exit then finds nothing to delete)."""
    name = f"refuse-{namespace}"
    kubectl.run("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name)
