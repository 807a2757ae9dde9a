"""GenerationJob specs of the generation features (outpaint, hiresFix, upscale,
restoreFaces, embeddings, vae, output; controlNets, ipAdapters, video, removeBackground),
judged alike by both doors: each refused one with the field it breaks, the rule the API
names and what kubectl says; and an accepted one of each feature, with what the API
charges for it (diffleet_core.pricing, worked out by hand here).
Likewise the ModelCaches of the newer types (upscaler, restorer, safety, detector,
ip-adapter, image-encoder, motion-adapter, background-remover, t2i-adapter) that break a
cross-field rule. tests/stack/test_crd_validation.py applies them with kubectl,
tests/api/test_generation_specs.py POSTs them."""

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from diffleet_core.resources.generation_job import GUIDANCE_WINDOW_RULE
from diffleet_core.resources.model_cache import (
    BASE_MODEL_RULE,
    CONTROL_TYPE_RULE,
    DETECTOR_RULE,
    FOLDER_RULE,
    IMAGE_ENCODER_RULE,
    SINGLE_FILE_RULE,
)

# Models the specs name, each of the type its field asks for (the API checks).
CHECKPOINT = "sd15-test"
UPSCALER = "x4-test"
RESTORER = "faces-test"
EMBEDDING = "ink-embedding"
VAE = "vae-test"
LORA = "ink-style"
CONTROLNET = "cn-canny-test"
DEPTH_CONTROLNET = "cn-depth-test"
T2I_ADAPTER = "t2i-canny-test"
IMAGE_ENCODER = "clip-test"
SVD = "svd-test"
IP_ADAPTER = "ip-adapter-test"
MOTION_ADAPTER = "motion-test"
BACKGROUND_REMOVER = "background-test"
# Under the tenant's upload prefix, as the API requires (`{namespace}`: `resolved`).
IMAGE = "s3://diffleet-uploads/{namespace}/in.png"
MASK = "s3://diffleet-uploads/{namespace}/mask.png"

BASE: dict[str, Any] = {
    "model": CHECKPOINT,
    "prompt": "a lighthouse at dusk",
    "width": 512,
    "height": 512,
    "steps": 4,
}
UPSCALE_ONLY: dict[str, Any] = {
    "model": None,
    "prompt": None,
    "mode": "upscale",
    "initImage": IMAGE,
    "upscale": {"model": UPSCALER},
}
OUTPAINT: dict[str, Any] = {"mode": "outpaint", "initImage": IMAGE, "outpaint": {"right": 256}}
CONTROL: dict[str, Any] = {"model": CONTROLNET, "image": IMAGE}
IMAGE_PROMPT: dict[str, Any] = {"model": IP_ADAPTER, "image": IMAGE}
IMG2VID: dict[str, Any] = {"mode": "img2vid", "initImage": IMAGE, "video": {"frames": 4}}
TXT2VID: dict[str, Any] = {
    "mode": "txt2vid",
    "video": {"frames": 4, "motionAdapter": MOTION_ADAPTER},
}


def changed(spec: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`spec` with `overrides` applied; an override of None removes the field."""
    result = {**spec, **overrides}
    return {key: value for key, value in result.items() if value is not None}


def resolved(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    """`spec` with its image URIs in `namespace`'s upload prefix."""
    loaded: dict[str, Any] = json.loads(json.dumps(spec).replace("{namespace}", namespace))
    return loaded


@dataclass(frozen=True)
class Refused:
    id: str  # a DNS label: also the name of the refused object
    overrides: dict[str, Any]  # on BASE
    field: str  # as the API names it (camelCase path under spec)
    rule: str  # the API's schema keyword
    kubectl: str  # what kubectl's error says
    message: str | None = None  # a cross-field rule's message, the same at both doors

    @property
    def spec(self) -> dict[str, Any]:
        return changed(BASE, self.overrides)


def cel(id: str, overrides: dict[str, Any], field: str, message: str) -> Refused:
    """A case of a cross-field (CEL) rule: the CRD reports it at spec.FIELD with the rule's
    message, and the API names FIELD with the same message."""
    return Refused(
        id,
        overrides,
        field,
        "x-kubernetes-validations",
        f'spec.{field}: Invalid value: "object": {message}',
        message,
    )


def schema(id: str, overrides: dict[str, Any], field: str, rule: str, kubectl: str) -> Refused:
    """A case of a rule on one field (bounds, enums, patterns, required)."""
    return Refused(id, overrides, field, rule, kubectl)


def bound(id: str, overrides: dict[str, Any], field: str, side: str, limit: str) -> Refused:
    """A value below a minimum (`side` "minimum") or above a maximum ("maximum")."""
    words = "greater than or equal to" if side == "minimum" else "less than or equal to"
    return schema(id, overrides, field, side, f"spec.{field} in body should be {words} {limit}")


OUTPAINT_RULE = "outpaint is required when, and only when, mode is outpaint"
INIT_REQUIRED = "initImage is required unless mode is txt2img or txt2vid"
UPSCALE_ADAPTERS = "mode upscale allows no loras, controlNet(s), ipAdapters, embeddings or vae"
PROMPT_RULE = "prompt must not be empty unless mode is inpaint, upscale or img2vid"
VIDEO_RULE = "video is required when, and only when, mode is img2vid or txt2vid"
MOTION_ADAPTER_RULE = "video.motionAdapter is required when, and only when, mode is txt2vid"
VIDEO_EXTRAS = (
    "mode img2vid and txt2vid allow no hiresFix, upscale, restoreFaces, removeBackground,"
    " controlNet(s) or ipAdapters"
)
HIRES_MODE = "hiresFix is allowed only when mode is txt2img"
UPSCALED_SIDE = (
    "upscale.scale times the generated size (and hiresFix.scale) must be at most 8192 a side"
)

REFUSED: list[Refused] = [
    # modes: what each needs, and model and prompt optional only where the mode says
    cel("model-absent", {"model": None}, "model", "model is required unless mode is upscale"),
    cel("prompt-absent", {"prompt": None}, "prompt", PROMPT_RULE),
    cel("prompt-empty-outpaint", OUTPAINT | {"prompt": ""}, "prompt", PROMPT_RULE),
    cel("prompt-empty-txt2vid", TXT2VID | {"prompt": ""}, "prompt", PROMPT_RULE),
    schema("mode-unknown", {"mode": "depth2img"}, "mode", "enum", "spec.mode: Unsupported value"),
    # outpaint
    cel("outpaint-on-txt2img", {"outpaint": {"right": 64}}, "outpaint", OUTPAINT_RULE),
    cel(
        "outpaint-mode-without-outpaint",
        {"mode": "outpaint", "initImage": IMAGE},
        "outpaint",
        OUTPAINT_RULE,
    ),
    cel(
        "outpaint-without-initimage",
        {"mode": "outpaint", "outpaint": {"right": 64}},
        "initImage",
        INIT_REQUIRED,
    ),
    cel(
        "outpaint-adds-nothing",
        OUTPAINT | {"outpaint": {"featherPixels": 8}},
        "outpaint",
        "outpaint must add pixels on at least one side",
    ),
    cel(
        "outpaint-canvas-2056",
        OUTPAINT | {"width": 2048, "outpaint": {"left": 8}},
        "outpaint",
        "outpaint must keep the canvas (width + left + right, height + top + bottom) at most"
        " 2048 pixels a side",
    ),
    schema(
        "outpaint-right-60",
        OUTPAINT | {"outpaint": {"right": 60}},
        "outpaint.right",
        "multipleOf",
        "spec.outpaint.right in body should be a multiple of 8",
    ),
    bound(
        "outpaint-left-1032",
        OUTPAINT | {"outpaint": {"left": 1032}},
        "outpaint.left",
        "maximum",
        "1024",
    ),
    bound(
        "outpaint-top-negative",
        OUTPAINT | {"outpaint": {"top": -8, "right": 8}},
        "outpaint.top",
        "minimum",
        "0",
    ),
    bound(
        "outpaint-feather-257",
        OUTPAINT | {"outpaint": {"right": 64, "featherPixels": 257}},
        "outpaint.featherPixels",
        "maximum",
        "256",
    ),
    # hiresFix
    cel(
        "hiresfix-on-img2img",
        {"mode": "img2img", "initImage": IMAGE, "hiresFix": {}},
        "hiresFix",
        HIRES_MODE,
    ),
    cel(
        "hiresfix-above-4096",
        {"width": 2048, "hiresFix": {"scale": 2.5}},
        "hiresFix.scale",
        "hiresFix.scale times width and height must be at most 4096",
    ),
    bound("hiresfix-scale-above-4", {"hiresFix": {"scale": 4.5}}, "hiresFix.scale", "maximum", "4"),
    bound("hiresfix-scale-below-1", {"hiresFix": {"scale": 0.5}}, "hiresFix.scale", "minimum", "1"),
    bound(
        "hiresfix-strength-above-1",
        {"hiresFix": {"strength": 1.5}},
        "hiresFix.strength",
        "maximum",
        "1",
    ),
    bound("hiresfix-steps-0", {"hiresFix": {"steps": 0}}, "hiresFix.steps", "minimum", "1"),
    # upscale, and mode upscale
    cel(
        "upscale-mode-without-upscale",
        UPSCALE_ONLY | {"upscale": None},
        "upscale",
        "upscale is required when mode is upscale",
    ),
    cel(
        "upscale-mode-without-initimage",
        UPSCALE_ONLY | {"initImage": None},
        "initImage",
        INIT_REQUIRED,
    ),
    cel(
        "upscale-above-8192",
        {"width": 2048, "upscale": {"model": UPSCALER, "scale": 4.5}},
        "upscale.scale",
        UPSCALED_SIDE,
    ),
    cel(
        "upscale-of-hiresfix-above-8192",
        {"width": 1024, "hiresFix": {"scale": 2}, "upscale": {"model": UPSCALER, "scale": 4.5}},
        "upscale.scale",
        UPSCALED_SIDE,
    ),
    cel(
        "upscale-mode-with-loras",
        UPSCALE_ONLY | {"loras": [{"model": LORA}]},
        "mode",
        UPSCALE_ADAPTERS,
    ),
    cel(
        "upscale-mode-with-embeddings",
        UPSCALE_ONLY | {"embeddings": [EMBEDDING]},
        "mode",
        UPSCALE_ADAPTERS,
    ),
    cel("upscale-mode-with-vae", UPSCALE_ONLY | {"vae": VAE}, "mode", UPSCALE_ADAPTERS),
    cel(
        "upscale-mode-with-strength",
        UPSCALE_ONLY | {"strength": 0.5},
        "strength",
        "strength is allowed only with an initImage, and not in mode upscale",
    ),
    cel("upscale-mode-with-hiresfix", UPSCALE_ONLY | {"hiresFix": {}}, "hiresFix", HIRES_MODE),
    schema(
        "upscale-without-model",
        {"upscale": {"scale": 2}},
        "upscale.model",
        "required",
        "spec.upscale.model: Required value",
    ),
    bound(
        "upscale-scale-9",
        {"upscale": {"model": UPSCALER, "scale": 9}},
        "upscale.scale",
        "maximum",
        "8",
    ),
    bound(
        "upscale-tilesize-4096",
        {"upscale": {"model": UPSCALER, "tileSize": 4096}},
        "upscale.tileSize",
        "maximum",
        "2048",
    ),
    schema(
        "upscale-model-not-a-name",
        {"upscale": {"model": "Real_ESRGAN"}},
        "upscale.model",
        "pattern",
        "spec.upscale.model in body should match",
    ),
    # restoreFaces
    schema(
        "restorefaces-without-model",
        {"restoreFaces": {"strength": 0.5}},
        "restoreFaces.model",
        "required",
        "spec.restoreFaces.model: Required value",
    ),
    bound(
        "restorefaces-strength-above-1",
        {"restoreFaces": {"model": RESTORER, "strength": 1.5}},
        "restoreFaces.strength",
        "maximum",
        "1",
    ),
    # embeddings and vae
    schema(
        "embeddings-11",
        {"embeddings": [f"embedding-{index}" for index in range(11)]},
        "embeddings",
        "maxItems",
        "spec.embeddings: Too many: 11: must have at most 10 items",
    ),
    schema(
        "embedding-not-a-name",
        {"embeddings": ["Easy_Negative"]},
        "embeddings[0]",
        "pattern",
        "spec.embeddings[0] in body should match",
    ),
    schema("vae-not-a-name", {"vae": "VAE"}, "vae", "pattern", "spec.vae in body should match"),
    # output
    schema(
        "output-format-gif",
        {"output": {"format": "gif"}},
        "output.format",
        "enum",
        'spec.output.format: Unsupported value: "gif"',
    ),
    bound("output-quality-0", {"output": {"quality": 0}}, "output.quality", "minimum", "1"),
    bound("output-quality-101", {"output": {"quality": 101}}, "output.quality", "maximum", "100"),
    # controlNets
    cel(
        "controlnet-and-controlnets",
        {"controlNet": CONTROL, "controlNets": [CONTROL]},
        "controlNet",
        "controlNet and controlNets are exclusive (controlNet is the deprecated form of one entry)",
    ),
    cel(
        "controlnet-guidance-window-empty",
        {"controlNets": [CONTROL, CONTROL | {"guidanceStart": 0.6, "guidanceEnd": 0.6}]},
        "controlNets[1].guidanceStart",
        GUIDANCE_WINDOW_RULE,
    ),
    cel(
        "upscale-mode-with-controlnets",
        UPSCALE_ONLY | {"controlNets": [CONTROL]},
        "mode",
        UPSCALE_ADAPTERS,
    ),
    schema(
        "controlnets-5",
        {"controlNets": [CONTROL] * 5},
        "controlNets",
        "maxItems",
        "spec.controlNets: Too many: 5: must have at most 4 items",
    ),
    schema(
        "controlnet-type-normal",
        {"controlNets": [CONTROL | {"type": "normal"}]},
        "controlNets[0].type",
        "enum",
        'spec.controlNets[0].type: Unsupported value: "normal"',
    ),
    # ipAdapters
    cel(
        "upscale-mode-with-ipadapters",
        UPSCALE_ONLY | {"ipAdapters": [IMAGE_PROMPT]},
        "mode",
        UPSCALE_ADAPTERS,
    ),
    bound(
        "ipadapter-scale-above-2",
        {"ipAdapters": [IMAGE_PROMPT | {"scale": 2.5}]},
        "ipAdapters[0].scale",
        "maximum",
        "2",
    ),
    # video: img2vid and txt2vid
    cel("video-on-txt2img", {"video": {"frames": 4}}, "video", VIDEO_RULE),
    cel("img2vid-without-video", IMG2VID | {"video": None}, "video", VIDEO_RULE),
    cel(
        "txt2vid-without-motionadapter",
        TXT2VID | {"video": {"frames": 4}},
        "video.motionAdapter",
        MOTION_ADAPTER_RULE,
    ),
    cel(
        "img2vid-with-motionadapter",
        IMG2VID | {"video": {"motionAdapter": MOTION_ADAPTER}},
        "video.motionAdapter",
        MOTION_ADAPTER_RULE,
    ),
    cel(
        "txt2vid-with-initimage",
        TXT2VID | {"initImage": IMAGE},
        "initImage",
        "initImage is not allowed when mode is txt2img or txt2vid",
    ),
    cel(
        "txt2vid-batch-of-2",
        TXT2VID | {"batchSize": 2},
        "batchSize",
        "batchSize must be 1 when mode is img2vid or txt2vid",
    ),
    cel("txt2vid-with-ipadapters", TXT2VID | {"ipAdapters": [IMAGE_PROMPT]}, "mode", VIDEO_EXTRAS),
    cel(
        "img2vid-with-loras",
        IMG2VID | {"loras": [{"model": LORA}]},
        "mode",
        "mode img2vid allows no loras, embeddings or vae",
    ),
    bound("video-frames-65", TXT2VID | {"video": {"frames": 65}}, "video.frames", "maximum", "64"),
    schema(
        "video-format-avi",
        IMG2VID | {"video": {"format": "avi"}},
        "video.format",
        "enum",
        'spec.video.format: Unsupported value: "avi"',
    ),
    # removeBackground
    cel(
        "removebackground-to-jpeg",
        {"removeBackground": {"model": BACKGROUND_REMOVER}, "output": {"format": "jpeg"}},
        "removeBackground",
        "removeBackground needs output.format png or webp (jpeg has no alpha channel)",
    ),
]


@dataclass(frozen=True)
class Accepted:
    id: str  # a DNS label: also the name of the object
    overrides: dict[str, Any]  # on BASE
    cost: Decimal  # credits (diffleet_core.pricing) at the checkpoint's family
    family: str = "sd15"  # of the checkpoint the spec names

    @property
    def spec(self) -> dict[str, Any]:
        return changed(BASE, self.overrides)


# BASE alone: 512x512 at sd15, one credit.
ACCEPTED: list[Accepted] = [
    # 768x512 canvas: 256x512 added, half a unit, rounded up.
    Accepted("outpaint", OUTPAINT, Decimal(1)),
    # 1 + the 1024x1024 second pass (4 units) at half price.
    Accepted("hiresfix", {"hiresFix": {}}, Decimal(3)),
    # 1 + the 1024x1024 result (4 units) at a quarter.
    Accepted("upscale-after-txt2img", {"upscale": {"model": UPSCALER, "scale": 2}}, Decimal(2)),
    # nothing generated: the 2048x2048 result (16 units) at a quarter.
    Accepted("upscale-only", UPSCALE_ONLY, Decimal(4)),
    Accepted("restorefaces", {"restoreFaces": {"model": RESTORER}}, Decimal("1.25")),
    Accepted(
        "embeddings-and-vae",
        {"prompt": f"a lighthouse, {EMBEDDING}", "embeddings": [EMBEDDING], "vae": VAE},
        Decimal("1.1"),
    ),
    Accepted("jpeg", {"output": {"format": "jpeg", "quality": 80}}, Decimal(1)),
    Accepted("webp", {"output": {"format": "webp"}}, Decimal(1)),
    # object removal: inpaint without a prompt
    Accepted(
        "inpaint-without-prompt",
        {"mode": "inpaint", "initImage": IMAGE, "maskImage": MASK, "prompt": ""},
        Decimal(1),
    ),
    # per image: 1 generated, hires 768x768 (3 units) at half, upscaled and restored
    # 1536x1536 (9 units) at a quarter each: (1 + 1.5 + 2.25 + 2.25) x 2 images.
    Accepted(
        "every-step",
        {
            "batchSize": 2,
            "hiresFix": {"scale": 1.5},
            "upscale": {"model": UPSCALER, "scale": 2},
            "restoreFaces": {"model": RESTORER},
        },
        Decimal(14),
    ),
    # 1 + 1 per ControlNet (the depth map sent as it is: no detector needed).
    Accepted(
        "controlnets",
        {
            "controlNets": [
                CONTROL,
                {"model": DEPTH_CONTROLNET, "image": IMAGE, "preprocess": "none"},
            ]
        },
        Decimal(3),
    ),
    # 1 + 1 per T2I-Adapter, as per ControlNet (the second's image sent as it is).
    Accepted(
        "t2i-adapters",
        {
            "controlNets": [
                {"model": T2I_ADAPTER, "image": IMAGE},
                {"model": T2I_ADAPTER, "image": IMAGE, "preprocess": "none"},
            ]
        },
        Decimal(3),
    ),
    # 1 + 0.5 per IP-Adapter.
    Accepted("ipadapter", {"ipAdapters": [IMAGE_PROMPT]}, Decimal("1.5")),
    # no image: 4 frames of 512x512 at half price.
    Accepted("txt2vid", TXT2VID, Decimal(2)),
    # 4 frames of 512x512 at half price, svd counting twice; no prompt needed.
    Accepted("img2vid", IMG2VID | {"model": SVD, "prompt": ""}, Decimal(4), "svd"),
    # 1 + the 512x512 result (1 unit) at a tenth.
    Accepted(
        "removebackground", {"removeBackground": {"model": BACKGROUND_REMOVER}}, Decimal("1.1")
    ),
]


# A valid ModelCache (a checkpoint folder) under the tenant's prefix of the models bucket.
CACHE: dict[str, Any] = {
    "source": "s3://diffleet-models/{namespace}/model/",
    "format": "diffusers",
    "baseModel": "sd15",
}


@dataclass(frozen=True)
class RefusedCache:
    id: str  # a DNS label: also the name of the refused object
    overrides: dict[str, Any]  # on CACHE
    field: str  # the field both doors name
    message: str  # the CRD's CEL message, the API's too

    @property
    def spec(self) -> dict[str, Any]:
        return changed(CACHE, self.overrides)


SINGLE_FILE: dict[str, Any] = {
    "format": "safetensors",
    "source": "s3://diffleet-models/{namespace}/model.safetensors",
}
REFUSED_CACHES: list[RefusedCache] = [
    RefusedCache(
        "upscaler-with-basemodel", SINGLE_FILE | {"type": "upscaler"}, "baseModel", BASE_MODEL_RULE
    ),
    RefusedCache(
        "restorer-with-basemodel", SINGLE_FILE | {"type": "restorer"}, "baseModel", BASE_MODEL_RULE
    ),
    RefusedCache("safety-with-basemodel", {"type": "safety"}, "baseModel", BASE_MODEL_RULE),
    RefusedCache(
        "embedding-without-basemodel",
        SINGLE_FILE | {"type": "embedding", "baseModel": None},
        "baseModel",
        BASE_MODEL_RULE,
    ),
    RefusedCache("embedding-folder", {"type": "embedding"}, "format", SINGLE_FILE_RULE),
    RefusedCache(
        "restorer-folder", {"type": "restorer", "baseModel": None}, "format", SINGLE_FILE_RULE
    ),
    RefusedCache(
        "safety-single-file",
        SINGLE_FILE | {"type": "safety", "baseModel": None},
        "format",
        FOLDER_RULE,
    ),
    RefusedCache(
        "detector-with-basemodel",
        {"type": "detector", "controlType": "depth"},
        "baseModel",
        BASE_MODEL_RULE,
    ),
    RefusedCache(
        "ip-adapter-folder",
        {"type": "ip-adapter", "imageEncoder": "clip-test"},
        "format",
        SINGLE_FILE_RULE,
    ),
    RefusedCache(
        "motion-adapter-single-file",
        SINGLE_FILE | {"type": "motion-adapter"},
        "format",
        FOLDER_RULE,
    ),
    RefusedCache(
        "controlnet-without-controltype", {"type": "controlnet"}, "controlType", CONTROL_TYPE_RULE
    ),
    RefusedCache(
        "t2i-adapter-without-controltype",
        {"type": "t2i-adapter"},
        "controlType",
        CONTROL_TYPE_RULE,
    ),
    RefusedCache(
        "t2i-adapter-without-basemodel",
        {"type": "t2i-adapter", "controlType": "canny", "baseModel": None},
        "baseModel",
        BASE_MODEL_RULE,
    ),
    # diffusers loads a T2IAdapter from its folder only (config.json beside the weights).
    RefusedCache(
        "t2i-adapter-single-file",
        SINGLE_FILE | {"type": "t2i-adapter", "controlType": "canny"},
        "format",
        FOLDER_RULE,
    ),
    RefusedCache(
        "vae-with-controltype",
        {"type": "vae", "controlType": "depth"},
        "controlType",
        CONTROL_TYPE_RULE,
    ),
    RefusedCache(
        "detector-of-openpose",
        {"type": "detector", "controlType": "openpose", "baseModel": None},
        "controlType",
        DETECTOR_RULE,
    ),
    RefusedCache(
        "ip-adapter-without-imageencoder",
        SINGLE_FILE | {"type": "ip-adapter"},
        "imageEncoder",
        IMAGE_ENCODER_RULE,
    ),
    RefusedCache(
        "lora-with-imageencoder",
        SINGLE_FILE | {"type": "lora", "imageEncoder": "clip-test"},
        "imageEncoder",
        IMAGE_ENCODER_RULE,
    ),
]
