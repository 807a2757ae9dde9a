"""The MutatingAdmissionPolicy of manifests/admission/ puts the operator's finalizer on
every GenerationJob as the API server creates it, so the operator need not write it."""

import json
from pathlib import Path

import yaml

from diffleet_core.resources.generation_job import FINALIZER
from tests.support.stack import Kubectl

POLICY = Path(__file__).resolve().parents[2] / "manifests" / "admission"


def job(name: str, finalizers: list[str] | None = None) -> str:
    metadata: dict[str, object] = {"name": name}
    if finalizers is not None:
        metadata["finalizers"] = finalizers
    return json.dumps(
        {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "GenerationJob",
            "metadata": metadata,
            "spec": {"model": "m", "prompt": "a lighthouse"},
        }
    )


def test_the_policy_adds_the_finalizer_the_operator_uses() -> None:
    [policy, binding] = yaml.safe_load_all((POLICY / "generationjob-finalizer.yaml").read_text())
    [mutation] = policy["spec"]["mutations"]
    assert mutation["jsonPatch"]["expression"].count(f'"{FINALIZER}"') == 2
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]


def test_a_new_job_has_the_finalizer_from_its_creation(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(job("plain"), namespace)
    kubectl.apply(job("other", finalizers=["example.com/keep"]), namespace)
    kubectl.apply(job("already", finalizers=[FINALIZER]), namespace)
    finalizers = {
        item["metadata"]["name"]: item["metadata"]["finalizers"]
        for item in kubectl.json("get", "gj", "-n", namespace)["items"]
    }
    assert finalizers == {
        "plain": [FINALIZER],
        "other": ["example.com/keep", FINALIZER],
        "already": [FINALIZER],
    }
    # Written at creation: kubectl's apply is the only writer of the job.
    plain = kubectl.json("get", "gj", "plain", "-n", namespace, "--show-managed-fields")
    fields = plain["metadata"]["managedFields"]
    assert len({entry["manager"] for entry in fields}) == 1
