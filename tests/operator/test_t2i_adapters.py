"""T2I-Adapters through the real operator, jobs applied with kubectl: kubectl takes them
(a controlNets entry does not say what its model is), admission fails those diffusers
cannot run (Failed, IncompatibleModels, the field named): a T2I-Adapter beside a
ControlNet, outside mode txt2img, or with a guidance window; a job of two T2I-Adapters
is placed, and its order carries each adapter with its type of conditioning."""

import asyncio
from typing import Any

from tests.operator.injection import idle_worker_lease
from tests.operator.test_generation_models import IMAGE, model_caches
from tests.operator.test_ordering import take_dispatched
from tests.support.platform import Platform, apply_job, wait_for_phase
from tests.support.stack import Kubectl


def test_admission_refuses_what_adapter_pipelines_cannot_run_and_places_the_rest(
    kubectl: Kubectl, namespace: str, platform: Platform
) -> None:
    idle_worker_lease(kubectl, namespace, "idle")
    platform.system_namespace = namespace
    platform.operator()
    sd15 = {"baseModel": "sd15"}
    adapter = {"type": "t2i-adapter", "format": "diffusers"} | sd15
    model_caches(
        kubectl,
        namespace,
        {
            "sd": sd15,
            "t2i-canny": adapter | {"controlType": "canny"},
            "t2i-depth": adapter | {"controlType": "depth"},
            "cn-canny": {"type": "controlnet", "controlType": "canny"} | sd15,
        },
    )
    canny = {"model": "t2i-canny", "image": IMAGE}
    refused: dict[str, tuple[dict[str, Any], str]] = {
        "mixed": (
            {"controlNets": [canny, {"model": "cn-canny", "image": IMAGE}]},
            "controlNets[1].model: cn-canny is a ControlNet and t2i-canny a T2I-Adapter: a"
            " job's entries are all ControlNets or all T2I-Adapters",
        ),
        "img2img": (
            {"mode": "img2img", "initImage": IMAGE, "controlNets": [canny]},
            "controlNets[0].model: t2i-canny is a T2I-Adapter: T2I-Adapters run only in mode"
            " txt2img",
        ),
        "window": (
            {"controlNets": [canny | {"guidanceEnd": 0.5}]},
            "controlNets[0].guidanceEnd: t2i-canny is a T2I-Adapter, which steers every step"
            " (guidanceEnd must be 1)",
        ),
    }
    for name, (fields, _) in refused.items():
        apply_job(kubectl, namespace, name, **({"model": "sd"} | fields))
    for name, (_, message) in refused.items():
        failed = wait_for_phase(kubectl, namespace, name, "Failed", timeout=30)
        assert (failed["reason"], failed["message"]) == ("IncompatibleModels", message)

    depth_map = {"model": "t2i-depth", "image": IMAGE, "preprocess": "none"}
    apply_job(kubectl, namespace, "fits", model="sd", controlNets=[canny, depth_map])
    wait_for_phase(kubectl, namespace, "fits", "Scheduled", timeout=30)
    order = asyncio.run(take_dispatched(f"{namespace}.worker.idle"))
    assert order.job.name == "fits"
    assert [(ref.name, ref.type) for ref in order.control_nets] == [
        ("t2i-canny", "t2i-adapter"),
        ("t2i-depth", "t2i-adapter"),
    ]
    assert order.control_types == ["canny", "depth"]
    assert order.detectors == []
