"""TrainingJobs through the real operator with simulated workers (issue 20): what the API
server refuses, what admission refuses, a training to its LoRA's ModelCache Ready (and a
textual inversion to its embedding's), its preemption by inference, its recovery from a
lost worker, and its cancellation.

The simulated worker trains in steps of `STEP_SECONDS` with the real protocol and
storage keys (gpu-worker/src/diffleet_worker/simulated_training.py); its dataset is read
from MinIO as the real worker reads it."""

import json
import time
from datetime import datetime
from typing import Any

import boto3
from safetensors.torch import load

from diffleet_core.datasets import dataset_prefix
from hack.models.datasets import NEW_WORD, shapes_dataset, upload_dataset
from tests.support.platform import Platform, Process, apply_job, register_model, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import Kubectl

UPLOADS = "diffleet-uploads"
STEP_SECONDS = 0.1
BLUE = (30, 30, 220)
# Lost workers are noticed fast (the platform's workers hold 3 s Leases).
OPERATOR_SETTINGS = {"training_startup_grace_seconds": "1"}


def dataset(namespace: str, name: str = "shapes", *, captions: bool = True) -> str:
    """Uploads a small dataset of shapes to the namespace's datasets folder; its URI."""
    s3 = boto3.client("s3")
    examples = shapes_dataset(BLUE, NEW_WORD, 4, seed=1)
    uri = upload_dataset(s3, UPLOADS, dataset_prefix(namespace, name), examples)
    if not captions:
        prefix = dataset_prefix(namespace, name)
        s3.delete_object(Bucket=UPLOADS, Key=f"{prefix}0000.txt")
    return uri


def training_manifest(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": "base",
            "output": {"name": f"{name}-lora"},
            "steps": 40,
            "checkpointEverySteps": 5,
            "resolution": 64,
            "batchSize": 2,
        }
        | spec,
    }
    return json.dumps(body)


def apply_training(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> None:
    kubectl.apply(training_manifest(name, **spec), namespace)


def training_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    body = kubectl.json("get", "trainingjob", name, "-n", namespace)
    status: dict[str, Any] = body.get("status") or {}
    return status


def wait_for_training(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = training_status(kubectl, namespace, name)
        return status if status.get("phase") == phase else None

    return eventually(reached, timeout=timeout, what=f"training {name} {phase}")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


def refusal(kubectl: Kubectl, namespace: str, manifest: str) -> str:
    """kubectl apply's error for a manifest the API server refuses."""
    applied = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=manifest, check=False)
    assert applied.returncode != 0, f"applied: {applied.stdout}"
    return applied.stderr


def start(platform: Platform, kubectl: Kubectl, namespace: str, *workers: str) -> Process:
    """The operator, the base checkpoint, and simulated workers of one slot each."""
    operator = platform.operator(**OPERATOR_SETTINGS)
    register_model(kubectl, namespace, "base")
    for worker_id in workers:
        start_worker(platform, worker_id)
    if workers:
        platform.wait_for_workers(operator, "t4", len(workers), timeout=60)
    return operator


def worker_process(platform: Platform, worker_id: str) -> Process:
    return next(p for p in platform.processes if p.name.endswith(f"-{worker_id}"))


def start_worker(platform: Platform, worker_id: str) -> Process:
    return platform.worker(
        worker_id,
        sim_training_step_seconds=str(STEP_SECONDS),
        sim_load_seconds="0",
        sim_warm_load_seconds="0",
        concurrency="1",
    )


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_bad_specs_are_refused_by_the_api_server_naming_the_field(
    kubectl: Kubectl, namespace: str
) -> None:
    uri = f"s3://{UPLOADS}/{dataset_prefix(namespace, 'shapes')}"
    no_dataset = json.loads(training_manifest("t"))
    assert "spec.dataset" in refusal(kubectl, namespace, json.dumps(no_dataset))
    assert "spec.rank" in refusal(kubectl, namespace, training_manifest("t", dataset=uri, rank=0))
    assert "spec.resolution" in refusal(
        kubectl, namespace, training_manifest("t", dataset=uri, resolution=100)
    )
    apply_training(kubectl, namespace, "t", dataset=uri)
    changed = refusal(kubectl, namespace, training_manifest("t", dataset=uri, steps=41))
    assert "spec.steps" in changed
    assert "immutable" in changed
    apply_training(kubectl, namespace, "t", dataset=uri, cancel=True)
    assert "cancel" in refusal(kubectl, namespace, training_manifest("t", dataset=uri))


def test_textual_inversion_rules_are_the_api_servers_naming_the_field(
    kubectl: Kubectl, namespace: str
) -> None:
    """A placeholder with textual-inversion and only then; no text encoder LoRA with it."""
    uri = f"s3://{UPLOADS}/{dataset_prefix(namespace, 'shapes')}"
    inversion = {"dataset": uri, "method": "textual-inversion"}
    refused = [
        refusal(kubectl, namespace, training_manifest("t", **inversion)),
        refusal(kubectl, namespace, training_manifest("t", dataset=uri, placeholder=NEW_WORD)),
    ]
    for message in refused:
        assert "spec.placeholder" in message
        assert "placeholder is required for textual-inversion, and not allowed for lora" in message
    encoder = refusal(
        kubectl,
        namespace,
        training_manifest("t", **inversion, placeholder=NEW_WORD, trainTextEncoder=True),
    )
    assert "spec.trainTextEncoder" in encoder
    assert "trainTextEncoder must be false for textual-inversion" in encoder
    apply_training(kubectl, namespace, "t", **inversion, placeholder=NEW_WORD)


def test_admission_refuses_a_dataset_without_captions_and_an_unknown_base_model(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    start(platform, kubectl, namespace)
    # Its own folder: "unknown"'s upload would put the deleted caption back before the
    # operator lists it.
    bare = dataset(namespace, "uncaptioned", captions=False)
    apply_training(kubectl, namespace, "uncaptioned", dataset=bare)
    apply_training(kubectl, namespace, "unknown", dataset=dataset(namespace), baseModel="nope")
    uncaptioned = wait_for_training(kubectl, namespace, "uncaptioned", "Failed")
    admitted = condition(uncaptioned, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "MissingCaptions")
    assert "spec.dataset" in admitted["message"]
    assert "0000.png" in admitted["message"]
    unknown = wait_for_training(kubectl, namespace, "unknown", "Failed")
    assert unknown["reason"] == "ModelNotFound"
    assert condition(unknown, "Admitted")["message"].startswith("spec.baseModel")


def test_a_training_succeeds_with_its_lora_model_cache_ready(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = start(platform, kubectl, namespace, "w1")
    apply_training(kubectl, namespace, "t", dataset=dataset(namespace))
    done = wait_for_training(kubectl, namespace, "t", "Succeeded")
    assert done["attempts"] == 1
    assert done["step"] == 40
    assert done["stepsRun"] == 40
    assert [c["step"] for c in done["checkpoints"]] == list(range(5, 41, 5))
    assert condition(done, "Complete")["status"] == "True"
    lora = kubectl.json("get", "modelcache", "t-lora", "-n", namespace)
    assert lora["metadata"]["labels"]["diffleet.io/trained-by"] == "t"
    assert lora["spec"]["type"] == "lora"
    assert lora["status"]["phase"] == "Ready"
    assert done["output"]["digest"] == lora["status"]["digest"]
    assert operator.metric("diffleet_trainings_dispatched_total") == 1


def test_a_textual_inversion_succeeds_with_its_embedding_model_cache_ready(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    """Its ModelCache is an embedding of the base's family, named as the token prompts
    use, and the (simulated) file is an embedding under that token."""
    start(platform, kubectl, namespace, "w1")
    apply_training(
        kubectl,
        namespace,
        "t",
        dataset=dataset(namespace),
        method="textual-inversion",
        placeholder=NEW_WORD,
        output={"name": "zorp-token"},
        steps=10,
    )
    done = wait_for_training(kubectl, namespace, "t", "Succeeded")
    cache = kubectl.json("get", "modelcache", "zorp-token", "-n", namespace)
    assert cache["metadata"]["labels"]["diffleet.io/trained-by"] == "t"
    assert (cache["spec"]["type"], cache["spec"]["format"]) == ("embedding", "safetensors")
    assert cache["spec"]["baseModel"] == "sd15"
    assert cache["status"]["phase"] == "Ready"
    assert done["output"]["digest"] == cache["status"]["digest"]
    bucket, _, key = done["output"]["uri"].removeprefix("s3://").partition("/")
    data = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert list(load(data)) == ["zorp-token"]


def test_inference_preempts_a_training_which_resumes_from_its_checkpoint(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    operator = start(platform, kubectl, namespace, "w1")
    apply_training(kubectl, namespace, "t", dataset=dataset(namespace), steps=60)
    eventually(
        lambda: training_status(kubectl, namespace, "t").get("checkpoints"),
        timeout=60,
        what="the training checkpointed",
    )
    apply_job(kubectl, namespace, "job", model="base")
    job = wait_for_phase(kubectl, namespace, "job", "Succeeded", timeout=60)
    waited = (instant(job["startedAt"]) - instant(job["queuedAt"])).total_seconds()
    print(f"GenerationJob queued -> started: {waited:.2f}s (training step {STEP_SECONDS}s)")
    assert waited < STEP_SECONDS + 3.0
    done = wait_for_training(kubectl, namespace, "t", "Succeeded")
    assert done["preemptions"] == 1
    assert done["attempts"] == 2
    assert 60 <= done["stepsRun"] <= 60 + 5
    assert operator.metric("diffleet_training_preemptions_total") == 1
    assert operator.metric("diffleet_training_preemption_seconds_count") == 1


def test_a_training_of_a_lost_worker_resumes_on_another(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    start(platform, kubectl, namespace, "w1")
    apply_training(kubectl, namespace, "t", dataset=dataset(namespace), steps=60)
    first = eventually(
        lambda: (s := training_status(kubectl, namespace, "t")).get("checkpoints") and s,
        timeout=60,
        what="the training checkpointed",
    )
    assert first["worker"] == "w1"
    worker_process(platform, "w1").kill()
    start_worker(platform, "w2")
    done = wait_for_training(kubectl, namespace, "t", "Succeeded", timeout=90)
    assert done["attempts"] == 2
    assert done["preemptions"] == 0
    assert done["stepsRun"] <= 60 + 5
    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=t"
    )["items"]
    assert "WorkerLost" in {event["reason"] for event in events}


def test_a_cancelled_training_stops_and_keeps_its_checkpoints(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    start(platform, kubectl, namespace, "w1")
    apply_training(kubectl, namespace, "t", dataset=dataset(namespace), steps=400)
    eventually(
        lambda: training_status(kubectl, namespace, "t").get("checkpoints"),
        timeout=60,
        what="the training checkpointed",
    )
    kubectl.run(
        "patch", "trainingjob", "t", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"cancel":true}}',
    )  # fmt: skip
    asked = time.monotonic()
    cancelled = wait_for_training(kubectl, namespace, "t", "Cancelled", timeout=10)
    print(f"cancel -> Cancelled: {time.monotonic() - asked:.2f}s")
    assert cancelled["checkpoints"]
    s3 = boto3.client("s3")
    for checkpoint in cancelled["checkpoints"]:
        bucket, _, key = checkpoint["uri"].removeprefix("s3://").partition("/")
        s3.head_object(Bucket=bucket, Key=key)
