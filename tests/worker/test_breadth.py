"""Generation breadth through the whole platform (kubectl, operator, RabbitMQ, a real
diffusers worker on the CPU, S3): outpaint, hires fix, img2img and object removal with
micro-shapes, whose colours and positions can be checked; upscaling (spandrel and the SD
x4 pipeline), face restoration, embeddings, the VAE override and several ControlNets with
their preprocessors, image prompts, background removal and style presets with the tiny
models. Each job's parameters are read back from its file, and a job run again with its
seed stores the same bytes."""

import re
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from diffleet_core.resources.generation_job import ControlType
from diffleet_worker import detectors
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.controls import image_digest
from diffleet_worker.device import DevicePolicy
from diffleet_worker.images import canny_edges
from hack.models.provision import local_model
from tests.support.groups import DIFFUSERS
from tests.support.models import dominant_colour
from tests.support.platform import Process, job_manifest, style_preset, wait_for_phase
from tests.support.stack import Kubectl
from tests.worker.conftest import (
    JOB_TIMEOUT,
    circle,
    decode,
    parameters_of,
    read_output,
    run_jobs,
    upload_image,
)

pytestmark = DIFFUSERS

RED, BLUE = (220, 30, 30), (30, 30, 220)
# micro-shapes, at the size it was trained at, with few steps.
SHAPES = {"model": "micro-shapes", "width": 64, "height": 64, "steps": 10}
TINY = {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 4, "seed": 1}


def same_bytes(done: dict[str, Any], name: str) -> bool:
    """Whether job `name` and its same-seed repeat `<name>-again` stored the same file."""
    first, again = (done[job]["outputs"][0]["sha256"] for job in (name, f"{name}-again"))
    return bool(first == again)


def image_of(status: dict[str, Any]) -> Image.Image:
    return decode(read_output(status["outputs"][0])).convert("RGB")


def pixels_of(status: dict[str, Any]) -> np.ndarray:
    return np.asarray(image_of(status), dtype=int)


def test_outpaint_keeps_the_original_and_paints_the_new_area_from_the_prompt(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    original = circle(RED)
    outpaint = {"right": 64, "featherPixels": 8}
    spec = {
        **SHAPES,
        "mode": "outpaint",
        "prompt": "a blue square",
        "initImage": upload_image(original, "outpaint"),
        "outpaint": outpaint,
        "seed": 3,
    }
    done = run_jobs(kubectl, studio_namespace, {"outpaint": spec, "outpaint-again": spec})
    status = done["outpaint"]
    assert (status["outputs"][0]["width"], status["outputs"][0]["height"]) == (128, 64)
    painted = pixels_of(status)
    assert painted.shape == (64, 128, 3)
    # Pixel-exact left of the feather; the new area drawn as the prompt asks.
    assert np.array_equal(painted[:, : 64 - 8], np.asarray(original, dtype=int)[:, : 64 - 8])
    assert dominant_colour(Image.fromarray(painted[:, 64:].astype(np.uint8))) == "blue"
    assert same_bytes(done, "outpaint")
    assert "Outpaint: " in parameters_of(status)


def test_hires_fix_and_img2img_against_the_plain_image_of_the_same_seed(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    common = {**SHAPES, "prompt": "a red circle", "seed": 7}
    hires = {"scale": 2.0, "strength": 0.5, "steps": 6}
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            "plain": common,
            "hires": {**common, "hiresFix": hires},
            "hires-again": {**common, "hiresFix": hires},
            "img2img-blue": {
                **common,
                "mode": "img2img",
                "initImage": upload_image(circle(BLUE), "blue"),
                "strength": 0.3,
            },
        },
    )
    plain = image_of(done["plain"])
    # Hires fix: twice the size, the colours of the first pass kept.
    larger = image_of(done["hires"])
    assert larger.size == (128, 128)
    assert dominant_colour(plain) == dominant_colour(larger) == "red"
    shrunk = np.asarray(larger.resize((64, 64), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(shrunk - np.asarray(plain, dtype=int)).mean() < 40
    assert same_bytes(done, "hires")
    hires_text = parameters_of(done["hires"])
    assert "Hires upscale: 2, Hires steps: 6, Hires upscaler: Latent" in hires_text
    # img2img: the blue init image wins over the prompt's red, and the result lies nearer
    # to it than the plain image does.
    init = np.asarray(circle(BLUE), dtype=int)
    moved = pixels_of(done["img2img-blue"])
    assert dominant_colour(image_of(done["img2img-blue"])) == "blue"
    assert np.abs(moved - init).mean() < np.abs(np.asarray(plain, dtype=int) - init).mean()
    assert "Denoising strength: 0.3" in parameters_of(done["img2img-blue"])


def test_object_removal_fills_the_masked_shape_with_the_background(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    original = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(original).rectangle((20, 20, 44, 44), fill=RED)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((14, 14, 50, 50), fill=255)
    removal = {
        **SHAPES,
        "mode": "inpaint",
        "prompt": "",
        "initImage": upload_image(original, "removal"),
        "maskImage": upload_image(mask, "removal-mask"),
        "seed": 2,
    }
    done = run_jobs(kubectl, studio_namespace, {"removal": removal, "removal-again": removal})
    status = done["removal"]
    region = pixels_of(status)[20:45, 20:45]
    red = (region[..., 0] > 150) & (region[..., 1] < 100) & (region[..., 2] < 100)
    assert red.mean() < 0.05, f"{red.mean():.0%} of the removed square is still red"
    assert region.mean() > 180  # light, as the white around it
    assert "Denoising strength: 1" in parameters_of(status)
    assert same_bytes(done, "removal")


def test_upscale_by_spandrel_and_by_the_sd_x4_pipeline_and_after_a_generated_image(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    source = upload_image(circle(RED), "upscale")
    upscale_only = {"mode": "upscale", "initImage": source, "width": 64, "height": 64}
    esrgan = {
        **upscale_only,
        "width": 128,
        "height": 128,
        "upscale": {"model": "tiny-esrgan-x4", "scale": 4.0, "tileSize": 64},
        "seed": 1,
    }
    sd_x4 = {
        **upscale_only,
        "prompt": "a red circle",
        "upscale": {"model": "tiny-sd-x4-upscaler", "scale": 4.0, "tileSize": 0},
        "seed": 1,
    }
    # A post-processing step of a txt2img job: ESRGAN's x4, then resized to the job's x2.
    generated = TINY | {
        "prompt": "a red circle",
        "upscale": {"model": "tiny-esrgan-x4", "scale": 2.0, "tileSize": 0},
    }
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            "esrgan": esrgan,
            "esrgan-again": esrgan,
            "sd-x4": sd_x4,
            "sd-x4-again": sd_x4,
            "generated-plain": TINY | {"prompt": "a red circle"},
            "generated-upscaled": generated,
        },
    )
    upscaled = image_of(done["esrgan"])
    assert upscaled.size == (512, 512)
    # tiny-esrgan-x4 is near identity: the red circle survives the tiles.
    assert dominant_colour(upscaled) == "red"
    assert "Postprocess upscale by: 4, Postprocess upscaler: tiny-esrgan-x4" in (
        parameters_of(done["esrgan"])
    )
    assert same_bytes(done, "esrgan")
    assert image_of(done["sd-x4"]).size == (256, 256)
    assert done["sd-x4"]["outputs"][0]["width"] == 256
    assert parameters_of(done["sd-x4"]) == (
        "a red circle\n"
        "Size: 64x64, Postprocess upscale by: 4, Postprocess upscaler: tiny-sd-x4-upscaler"
    )
    assert same_bytes(done, "sd-x4")

    output = done["generated-upscaled"]["outputs"][0]
    assert (output["width"], output["height"]) == (128, 128)
    larger = image_of(done["generated-upscaled"])
    assert larger.size == (128, 128)
    # The generated image, upscaled: shrunk back, it is the plain job's image of the seed.
    shrunk = np.asarray(larger.resize((64, 64), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(shrunk - pixels_of(done["generated-plain"])).mean() < 20
    text = parameters_of(done["generated-upscaled"])
    assert "Model: tiny-sd15, " in text
    assert text.endswith("Postprocess upscale by: 2, Postprocess upscaler: tiny-esrgan-x4")


def test_face_restoration_changes_the_image_by_its_strength_and_repeats(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    spec = TINY | {"prompt": "a portrait"}

    def restored(strength: float) -> dict[str, Any]:
        return spec | {"restoreFaces": {"model": "tiny-restoreformer", "strength": strength}}

    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            "faces-none": spec,
            "faces-zero": restored(0.0),
            "faces-full": restored(0.8),
            "faces-full-again": restored(0.8),
        },
    )
    none, zero, full = (
        pixels_of(done[name]) for name in ("faces-none", "faces-zero", "faces-full")
    )
    assert np.array_equal(none, zero)
    assert not np.array_equal(none, full)
    assert same_bytes(done, "faces-full")
    assert "Face restoration: tiny-restoreformer" in parameters_of(done["faces-full"])


def test_an_embedding_and_a_vae_each_change_the_image_and_leave_the_model_clean(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    prompt = {"prompt": "a photo of tiny-embedding"}
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            "base": TINY | prompt,
            "embedding": TINY | prompt | {"embeddings": ["tiny-embedding"]},
            "embedding-again": TINY | prompt | {"embeddings": ["tiny-embedding"]},
            "vae": TINY | prompt | {"vae": "tiny-vae"},
            "vae-again": TINY | prompt | {"vae": "tiny-vae"},
            "base-again": TINY | prompt,
        },
    )
    base = pixels_of(done["base"])
    assert not np.array_equal(base, pixels_of(done["embedding"]))
    assert not np.array_equal(base, pixels_of(done["vae"]))
    # Neither stayed in the hot base pipeline.
    assert np.array_equal(base, pixels_of(done["base-again"]))
    assert "TI hashes: " in parameters_of(done["embedding"])
    assert "VAE: tiny-vae" in parameters_of(done["vae"])
    assert same_bytes(done, "embedding")
    assert same_bytes(done, "vae")


def detected_map(control_type: ControlType, image: Image.Image) -> Image.Image:
    """The tiny detector's map of `image`, computed here as the worker does (one torch
    thread, float32 on the CPU), so its digest matches the worker's."""
    detector = detectors.load(
        local_model(f"tiny-{control_type.value}-detector").path,
        control_type,
        DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return detectors.detect(detector, image)
    finally:
        torch.set_num_threads(threads)


def test_controlnets_each_receive_their_own_conditioning_and_a_sent_map_is_kept(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    image = circle(RED)
    sent_map = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    uri, sent_uri = upload_image(image, "control"), upload_image(sent_map, "depth-map")
    three = TINY | {
        "prompt": "a red circle",
        "controlNets": [
            {"model": "tiny-canny", "image": uri},
            {
                "model": "tiny-depth",
                "image": uri,
                "type": "depth",
                "conditioningScale": 0.8,
                "guidanceEnd": 0.6,
            },
            {"model": "tiny-segmentation", "image": uri, "conditioningScale": 0.5},
        ],
    }
    sent = TINY | {
        "prompt": "a red circle",
        "controlNets": [{"model": "tiny-depth", "image": sent_uri, "preprocess": "none"}],
    }
    done = run_jobs(
        kubectl, studio_namespace, {"three-cn": three, "three-cn-again": three, "sent-map": sent}
    )
    # What each ControlNet received, as the worker logs it: canny edges for the first,
    # each detector's map for the others, the sent map unchanged with preprocess none.
    log = studio.log.read_text(errors="replace")
    received = {
        ("controlNets[0]", "canny", "canny", image_digest(canny_edges(image))),
        ("controlNets[1]", "depth", "depth", image_digest(detected_map(ControlType.DEPTH, image))),
        (
            "controlNets[2]",
            "segmentation",
            "segmentation",
            image_digest(detected_map(ControlType.SEGMENTATION, image)),
        ),
        ("controlNets[0]", "depth", "none", image_digest(sent_map)),
    }
    for field, control_type, module, digest in received:
        line = (
            f"{field}: {control_type} conditioning by preprocessor {module}, 64x64, sha256 {digest}"
        )
        assert line in log
    assert (
        done["three-cn"]["outputs"][0]["sha256"] == done["three-cn-again"]["outputs"][0]["sha256"]
    )
    assert done["three-cn"]["outputs"][0]["sha256"] != done["sent-map"]["outputs"][0]["sha256"]
    parameters = parameters_of(done["three-cn"])
    assert (
        'ControlNet 0: "Module: canny, Model: tiny-canny, Weight: 1, Guidance Start: 0, '
        'Guidance End: 1"'
    ) in parameters
    assert (
        'ControlNet 1: "Module: depth, Model: tiny-depth, Weight: 0.8, Guidance Start: 0, '
        'Guidance End: 0.6"'
    ) in parameters
    assert 'ControlNet 2: "Module: segmentation, Model: tiny-segmentation, Weight: 0.5' in (
        parameters
    )
    assert 'ControlNet 0: "Module: none, Model: tiny-depth' in parameters_of(done["sent-map"])


def test_an_image_prompt_changes_the_picture_and_leaves_the_hot_pipeline_as_it_was(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    plain = TINY | {"prompt": "a circle"}
    prompted = plain | {
        "ipAdapters": [
            {"model": "tiny-ip-adapter", "image": upload_image(circle(RED), "ip"), "scale": 0.8}
        ]
    }
    # In turn: the plain job, the image prompts, the plain job again on the same pipeline.
    before = run_jobs(kubectl, studio_namespace, {"ip-before": plain})["ip-before"]
    done = run_jobs(kubectl, studio_namespace, {"ip": prompted, "ip-again": prompted})
    after = run_jobs(kubectl, studio_namespace, {"ip-after": plain})["ip-after"]
    digest = {name: status["outputs"][0]["sha256"] for name, status in done.items()}
    assert digest["ip"] == digest["ip-again"]
    assert digest["ip"] != before["outputs"][0]["sha256"]
    assert after["outputs"][0]["sha256"] == before["outputs"][0]["sha256"]
    assert np.abs(pixels_of(done["ip"]) - pixels_of(before)).mean() > 1
    assert re.search(
        r'IP-Adapter 0: "Model: tiny-ip-adapter \[[0-9a-f]{10}\], '
        r'Image encoder: tiny-image-encoder, Weight: 0.8"',
        parameters_of(done["ip"]),
    )


def test_background_removal_gives_an_alpha_channel_in_png_and_webp(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    spec = TINY | {"prompt": "a circle", "removeBackground": {"model": "tiny-background-remover"}}
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            "cutout-png": spec,
            "cutout-png-again": spec,
            "cutout-webp": spec | {"output": {"format": "webp", "quality": 100}},
        },
    )
    assert same_bytes(done, "cutout-png")
    png, webp = (
        decode(read_output(done[name]["outputs"][0])) for name in ("cutout-png", "cutout-webp")
    )
    assert png.mode == webp.mode == "RGBA"
    alpha = np.asarray(png.getchannel("A"), dtype=int)
    assert alpha.max() - alpha.min() > 100
    # Lossless WebP holds the same pixels, alpha included.
    assert np.array_equal(np.asarray(png), np.asarray(webp))
    assert done["cutout-webp"]["outputs"][0]["format"] == "webp"
    assert "Background removal: tiny-background-remover" in parameters_of(done["cutout-png"])


def test_a_style_preset_fills_what_the_job_leaves_out_and_the_job_keeps_its_own(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    preset = {"prompt": "{prompt}, plain background", "negativePrompt": "blurry", "steps": 6}
    preset |= {"width": 64, "height": 64, "sampler": "ddim"}
    kubectl.apply(style_preset("studio-plain", **preset), studio_namespace)
    own = {"model": "micro-shapes", "prompt": "a red circle", "seed": 11}
    by_hand = {
        **own,
        **{key: preset[key] for key in ("negativePrompt", "steps", "width", "height", "sampler")},
        "prompt": "a red circle, plain background",
    }
    jobs = {
        "styled": {**own, "style": "studio-plain"},
        "by-hand": by_hand,
        "own-steps": {**own, "style": "studio-plain", "steps": 3},
    }
    for name, spec in jobs.items():  # not apply_job: it would set steps
        kubectl.apply(job_manifest(name, **spec), studio_namespace)
    done = {
        name: wait_for_phase(kubectl, studio_namespace, name, "Succeeded", timeout=JOB_TIMEOUT)
        for name in jobs
    }
    styled = parameters_of(done["styled"])
    assert styled.startswith("a red circle, plain background\nNegative prompt: blurry\n")
    assert "Steps: 6, Sampler: DDIM," in styled
    assert "Style: studio-plain" in styled
    # The preset's values give the image those values give written by hand.
    assert np.array_equal(pixels_of(done["styled"]), pixels_of(done["by-hand"]))
    assert dominant_colour(image_of(done["styled"])) == "red"
    assert "Steps: 3, Sampler: DDIM," in parameters_of(done["own-steps"])
