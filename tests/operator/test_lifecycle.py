"""A GenerationJob from kubectl apply to images in S3, through the real operator, RabbitMQ,
kube-apiserver and a worker speaking the real protocol (simulated timings)."""

import hashlib
import io
import json
from typing import Any

import boto3
from PIL import Image

from diffleet_core.storage import S3Location
from tests.support.platform import Platform, apply_job, job_status, register_model, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import Kubectl


def test_job_runs_from_pending_to_succeeded(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator(event_tally_seconds="1")
    worker = platform.worker("w1", sim_step_seconds="0.25")
    apply_job(kubectl, namespace, "lighthouse", model="later", steps=8, batchSize=2)

    pending = wait_for_phase(kubectl, namespace, "lighthouse", "Pending")
    assert pending["reason"] == "ModelNotFound"
    assert "'later'" in pending["message"]

    digest = register_model(kubectl, namespace, "later")
    seen: list[str] = []

    def finished() -> dict[str, Any] | None:
        status = job_status(kubectl, namespace, "lighthouse")
        phase = str(status.get("phase"))
        if not seen or seen[-1] != phase:
            seen.append(phase)
        return status if phase == "Succeeded" else None

    status = eventually(finished, timeout=60, interval=0.1, what="job Succeeded")
    assert [p for p in seen if p in ("Running", "Succeeded")] == ["Running", "Succeeded"]
    assert status["modelDigest"] == digest
    assert status["attempts"] == 1
    assert status["worker"] == "w1"
    assert isinstance(status["seed"], int)
    assert status["progress"] == {"step": 8, "totalSteps": 8}
    assert {c["type"] for c in status["conditions"]} >= {"Admitted", "Scheduled", "Complete"}

    s3 = boto3.client("s3")
    outputs = status["outputs"]
    assert len(outputs) == 2
    for output in outputs:
        location = S3Location.parse(output["uri"])
        data = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
        assert hashlib.sha256(data).hexdigest() == output["sha256"]

    # Routine transitions are tallied into one Event per reason on the namespace, each
    # naming its jobs; the job itself carries only what went wrong (here: the wait).
    def tallied() -> dict[str, str] | None:
        events = kubectl.json("get", "events", "-n", namespace)["items"]
        routine = {
            event["reason"]: event["message"]
            for event in events
            if (event["involvedObject"]["kind"], event["involvedObject"]["name"])
            == ("Namespace", namespace)
        }
        return routine if len(routine) == 3 else None

    routine = eventually(tallied, timeout=30, what="tallied Events on the namespace")
    assert routine == {
        "Dispatched": "1 job(s): lighthouse",
        "Started": "1 job(s): lighthouse",
        "Succeeded": "1 job(s): lighthouse",
    }
    on_job = {
        event["reason"]
        for event in kubectl.json("get", "events", "-n", namespace)["items"]
        if event["involvedObject"]["name"] == "lighthouse"
    }
    assert on_job.isdisjoint(routine)

    # The worker's JSON log line about running the job names it by uid, and by trace id
    # when the job carries a trace (the stack's collector is on).
    meta = kubectl.json("get", "generationjob", "lighthouse", "-n", namespace)["metadata"]
    lines = [json.loads(line) for line in worker.log.read_text().splitlines() if line[:1] == "{"]
    running = [line for line in lines if line["message"].startswith(f"running job {meta['uid']}")]
    assert running, worker.tail()
    assert running[0]["job_uid"] == meta["uid"]
    assert running[0]["component"] == "worker"
    if traceparent := meta.get("annotations", {}).get("diffleet.io/traceparent"):
        assert running[0]["trace_id"] == traceparent.split("-")[1]


def test_seed_given_is_kept_and_tier_follows_namespace(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    kubectl.run("label", "namespace", namespace, "diffleet.io/tier=pro")
    platform.operator()
    platform.worker("w1")
    register_model(kubectl, namespace, "m")
    apply_job(kubectl, namespace, "seeded", model="m", seed=42)
    apply_job(kubectl, namespace, "lowered", model="m", priority="standard")
    apply_job(kubectl, namespace, "not-raised", model="m", priority="enterprise")
    seeded = wait_for_phase(kubectl, namespace, "seeded", "Succeeded")
    assert seeded["seed"] == 42
    assert seeded["tier"] == "pro"
    lowered = wait_for_phase(kubectl, namespace, "lowered", "Succeeded")
    assert lowered["tier"] == "standard"
    assert wait_for_phase(kubectl, namespace, "not-raised", "Succeeded")["tier"] == "pro"
    # The worker ran with the recorded seed (the simulated worker paints seed % 256 red).
    for status in (seeded, lowered):
        assert seed_painted(status["outputs"][0]["uri"]) == status["seed"] % 256


def seed_painted(uri: str) -> int:
    location = S3Location.parse(uri)
    data = boto3.client("s3").get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    pixel = Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return int(pixel[0])


def test_finished_job_is_deleted_after_its_ttl(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    platform.worker("w1")
    register_model(kubectl, namespace, "m")
    # Long enough for the poll below to see Succeeded before the deletion on a busy machine.
    apply_job(kubectl, namespace, "short-lived", model="m", ttlSecondsAfterFinished=5)
    done = wait_for_phase(kubectl, namespace, "short-lived", "Succeeded")
    assert done["completedAt"]

    def gone() -> bool:
        result = kubectl.run("get", "gj", "short-lived", "-n", namespace, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    eventually(gone, timeout=30, what="job deleted after its TTL")


def test_job_with_incompatible_models_fails_at_admission(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    platform.operator()
    platform.worker("w1")
    register_model(kubectl, namespace, "sd15-checkpoint")
    register_model(kubectl, namespace, "xl-style", type="lora", baseModel="sdxl")
    apply_job(
        kubectl, namespace, "mismatched", model="sd15-checkpoint", loras=[{"model": "xl-style"}]
    )

    failed = wait_for_phase(kubectl, namespace, "mismatched", "Failed")
    assert failed["reason"] == "IncompatibleModels"
    assert failed["message"] == "loras: xl-style is not a sd15 LoRA"
    # Refused before any queue: never scheduled, no worker, no attempt.
    assert "worker" not in failed
    assert not failed.get("attempts")
    assert {c["type"] for c in failed["conditions"]}.isdisjoint({"Admitted", "Scheduled"})
    reasons = {
        event["reason"]
        for event in kubectl.json("get", "events", "-n", namespace)["items"]
        if event["involvedObject"]["name"] == "mismatched"
    }
    assert "IncompatibleModels" in reasons
    assert "Dispatched" not in reasons
