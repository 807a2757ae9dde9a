"""The models of the generation features through the real operator, jobs applied with
kubectl: admission refuses (Failed, IncompatibleModels, the field named first) a
ControlNet of another type than its entry's, an auto-preprocessed type no preprocessor
runs for, a detected type without a registered detector, IP-Adapters of two image
encoders and an svd checkpoint outside img2vid; once a detector is registered, the order
a worker gets carries each ControlNet with its type, the detector, the IP-Adapter and its
image encoder. The operator's platform namespace is the test's, so that the detectors of
diffleet-system are not found."""

import asyncio
import json
import uuid
from typing import Any

import boto3

from tests.operator.injection import idle_worker_lease
from tests.operator.test_ordering import take_dispatched
from tests.support.platform import Platform, apply_job, tiny_safetensors, wait_for_phase
from tests.support.polling import eventually
from tests.support.stack import Kubectl

IMAGE = "s3://diffleet-uploads/tests/control.png"


def model_caches(kubectl: Kubectl, namespace: str, specs: dict[str, dict[str, Any]]) -> None:
    """ModelCaches of tiny artifacts (never loaded here), applied together, once all are
    Ready: a single file for each of the types that come as one (a safetensors `format`),
    a diffusers folder for the others."""
    s3 = boto3.client("s3")
    for name, spec in specs.items():
        key = f"tests/{namespace}/{name}-{uuid.uuid4().hex[:6]}"
        if spec.get("format") == "diffusers":
            s3.put_object(Bucket="diffleet-models", Key=f"{key}/config.json", Body=b"{}")
        else:
            key += ".safetensors"
            s3.put_object(Bucket="diffleet-models", Key=key, Body=tiny_safetensors(key))
        body = {
            "apiVersion": "diffleet.io/v1alpha1",
            "kind": "ModelCache",
            "metadata": {"name": name},
            "spec": {"source": f"s3://diffleet-models/{key}", "format": "safetensors"}
            | {"vramGiB": 0.5}
            | spec,
        }
        kubectl.apply(json.dumps(body), namespace)

    def ready() -> bool:
        listed = kubectl.json("get", "modelcaches", "-n", namespace)["items"]
        phases = {body["metadata"]["name"]: body.get("status", {}).get("phase") for body in listed}
        return all(phases.get(name) == "Ready" for name in specs)

    eventually(ready, timeout=60, what=f"ModelCaches {sorted(specs)} Ready")


def test_admission_refuses_what_cannot_run_and_the_order_carries_every_model(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    idle_worker_lease(kubectl, namespace, "idle")
    platform.system_namespace = namespace
    platform.operator()
    sd15 = {"baseModel": "sd15"}
    adapter = {"type": "ip-adapter"} | sd15
    model_caches(
        kubectl,
        namespace,
        {
            "sd": sd15,
            "svd": {"baseModel": "svd"},
            "cn-depth": {"type": "controlnet", "controlType": "depth"} | sd15,
            "cn-pose": {"type": "controlnet", "controlType": "openpose"} | sd15,
            "ip-a": adapter | {"imageEncoder": "enc-a"},
            "ip-b": adapter | {"imageEncoder": "enc-b"},
            "enc-a": {"type": "image-encoder", "format": "diffusers"},
        },
    )
    depth = {"model": "cn-depth", "image": IMAGE}
    refused: dict[str, tuple[dict[str, Any], str]] = {
        "cn-type": (
            {"controlNets": [depth | {"type": "canny", "preprocess": "none"}]},
            "controlNets[0].type: cn-depth is a depth ControlNet, not canny",
        ),
        "pose-auto": (
            {"controlNet": {"model": "cn-pose", "image": IMAGE}},
            "controlNet.preprocess: no openpose preprocessor runs in diffleet; send a processed"
            " image with preprocess none",
        ),
        "depth-auto": (
            {"controlNets": [depth]},
            "controlNets[0].preprocess: no depth detector is registered (a ModelCache of type"
            " detector with controlType depth); register one, or send a processed image with"
            " preprocess none",
        ),
        "two-encoders": (
            {"ipAdapters": [{"model": "ip-a", "image": IMAGE}, {"model": "ip-b", "image": IMAGE}]},
            "ipAdapters: all of a job's IP-Adapters must share one image encoder (ip-a uses"
            " enc-a, ip-b uses enc-b)",
        ),
        "svd-txt2img": (
            {"model": "svd"},
            "model: svd is an svd checkpoint: it runs only in mode img2vid",
        ),
    }
    for name, (fields, _) in refused.items():
        apply_job(kubectl, namespace, name, **({"model": "sd"} | fields))
    for name, (_, message) in refused.items():
        failed = wait_for_phase(kubectl, namespace, name, "Failed", timeout=30)
        assert (failed["reason"], failed["message"]) == ("IncompatibleModels", message)

    detector = {"type": "detector", "controlType": "depth", "format": "diffusers"}
    model_caches(kubectl, namespace, {"dpt": detector})
    processed = {"model": "cn-depth", "image": IMAGE, "preprocess": "none"}
    apply_job(
        kubectl,
        namespace,
        "fits",
        model="sd",
        controlNets=[depth, processed],
        ipAdapters=[{"model": "ip-a", "image": IMAGE}],
    )
    wait_for_phase(kubectl, namespace, "fits", "Scheduled", timeout=30)
    order = asyncio.run(take_dispatched(f"{namespace}.worker.idle"))
    assert order.job.name == "fits"
    assert [ref.name for ref in order.control_nets] == ["cn-depth", "cn-depth"]
    assert order.control_types == ["depth", "depth"]
    # One detector for the one auto-preprocessed entry's type.
    assert [(ref.name, ref.type, ref.control_type) for ref in order.detectors] == [
        ("dpt", "detector", "depth")
    ]
    assert [ref.name for ref in order.ip_adapters] == ["ip-a"]
    assert order.image_encoder is not None
    assert (order.image_encoder.name, order.image_encoder.type) == ("enc-a", "image-encoder")
