"""CPU time of each generation feature on the tiny models: the worker's pipeline steps
(diffleet_worker.pipelines), called in this process with the worker's CPU device policy,
one image (or clip) each. No stack needed: the models are built locally (hack/models).

Each case runs once to warm up, then ROUNDS times; the rounds alternate between the
cases, so every case sees the same machine load. Reported: the median CPU seconds and
wall seconds of a run, with the spread (min to max) of the CPU seconds.

Writes bench/results/features.md. Run: `make bench-features`.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from diffleet_core.messages import ModelRef
from diffleet_core.resources.generation_job import (
    ControlType,
    GenerationJobSpec,
    OutputFormat,
    VideoFormat,
)
from diffleet_core.resources.model_cache import BaseModelFamily, ModelFormat, ModelType
from diffleet_worker import background, controls, ip_adapters, safety, watermark
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.device import DevicePolicy, configure_torch
from diffleet_worker.embeddings import LoadedEmbedding, applied
from diffleet_worker.encoding import encode
from diffleet_worker.loading import Loader
from diffleet_worker.pipelines import inpaint, outpaint, txt2img, video
from diffleet_worker.pipelines.common import Generation
from diffleet_worker.pipelines.restore import restore
from diffleet_worker.pipelines.upscale import upscale
from diffleet_worker.video import encode_video
from hack.models.provision import local_model

RESULTS = Path(__file__).resolve().parent / "results" / "features.md"
THREADS = 2
S3_URI = "s3://bench/unused"  # images are passed decoded; the spec only needs a URI
MICRO = {"model": "m", "width": 64, "height": 64, "steps": 10, "seed": 3}
TINY = {"model": "m", "width": 64, "height": 64, "steps": 4, "seed": 1}
# The finishing steps (classifier, watermark, encoding) run on an image of SD 1.5's size:
# their cost follows the pixels, and the watermark leaves images under 256 px unmarked.
FINISHED = 512


@dataclass(frozen=True)
class Case:
    label: str
    run: Callable[[], object]


@dataclass
class Figures:
    cpu: list[float]
    wall: list[float]


class Models:
    """The tiny models, loaded as the worker loads them."""

    def __init__(self, policy: DevicePolicy) -> None:
        self.loader = Loader(policy)

    def load(
        self,
        name: str,
        kind: ModelType,
        family: BaseModelFamily | None,
        control_type: ControlType | None = None,
    ) -> Any:
        path = local_model(name).path
        ref = ModelRef(
            namespace="bench",
            name=name,
            source=f"{S3_URI}/{name}",
            format=ModelFormat.DIFFUSERS if path.is_dir() else ModelFormat.SAFETENSORS,
            type=kind,
            base_model=family,
            control_type=control_type,
            digest="0" * 64,
        )
        return self.loader.load(ref, path)


def generation(policy: DevicePolicy, spec: dict[str, Any], **images: Any) -> Generation:
    parsed = GenerationJobSpec.model_validate(spec)
    return Generation(
        spec=parsed,
        seeds=[parsed.seed or 0],
        policy=policy,
        on_step=lambda *_: None,
        **images,
    )


def cases(policy: DevicePolicy) -> list[Case]:
    models = Models(policy)
    sd15 = BaseModelFamily.SD15
    micro = models.load("micro-shapes", ModelType.CHECKPOINT, sd15)
    tiny = models.load("tiny-sd15", ModelType.CHECKPOINT, sd15)
    esrgan = models.load("tiny-esrgan-x4", ModelType.UPSCALER, None)
    sd_x4 = models.load("tiny-sd-x4-upscaler", ModelType.UPSCALER, None)
    restorer = models.load("tiny-restoreformer", ModelType.RESTORER, None)
    vae = models.load("tiny-vae", ModelType.VAE, sd15)
    embedding = [LoadedEmbedding("tiny-embedding", local_model("tiny-embedding").path)]
    canny = models.load("tiny-canny", ModelType.CONTROLNET, sd15)
    depth = models.load("tiny-depth", ModelType.CONTROLNET, sd15)
    depth_detector = models.load("tiny-depth-detector", ModelType.DETECTOR, None, ControlType.DEPTH)
    encoder = models.load("tiny-image-encoder", ModelType.IMAGE_ENCODER, None)
    ip_adapter = ip_adapters.LoadedIpAdapter(local_model("tiny-ip-adapter").path, 0.6)
    remover = models.load("tiny-background-remover", ModelType.BACKGROUND_REMOVER, None)
    svd = models.load("tiny-svd", ModelType.CHECKPOINT, BaseModelFamily.SVD)
    motion = models.load("tiny-motion", ModelType.MOTION_ADAPTER, sd15)
    classifier = models.load("tiny-safety", ModelType.SAFETY, None)

    circle = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(circle).ellipse((14, 14, 50, 50), fill=(220, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((14, 14, 50, 50), fill=255)
    red = MICRO | {"prompt": "a red circle"}
    outpainting = MICRO | {
        "prompt": "a blue square",
        "mode": "outpaint",
        "initImage": S3_URI,
        "outpaint": {"right": 64},
    }
    removal = MICRO | {"prompt": "", "mode": "inpaint", "initImage": S3_URI, "maskImage": S3_URI}
    prompted = TINY | {"prompt": "a photo of tiny-embedding"}
    large = TINY | {"prompt": "a red circle", "width": FINISHED, "height": FINISHED}
    finished = txt2img.run(tiny, generation(policy, large))[0]
    text = "a red circle\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"

    def encoded(output_format: OutputFormat) -> Callable[[], object]:
        return lambda: encode(finished, output_format, 90, text)

    def upscaled(model: Any, size: int, tile: int) -> Callable[[], object]:
        spec = GenerationJobSpec.model_validate(
            {
                "mode": "upscale",
                "initImage": S3_URI,
                "width": size,
                "height": size,
                "steps": 4,
                "upscale": {"model": "u", "tileSize": tile},
            }
        )
        assert spec.upscale is not None
        image, settings = circle.resize((size, size)), spec.upscale
        return lambda: upscale(image, model, spec, settings, 1, lambda: False)

    def controlled(control_types: list[ControlType], nets: list[Any]) -> Callable[[], object]:
        """txt2img with ControlNets of `control_types` on the circle, preprocessing
        (canny edges, the depth detector's map) included in the run."""
        entries = [{"model": "c", "image": S3_URI} for _ in nets]
        plain = generation(policy, prompted | {"controlNets": entries})
        detectors = {ControlType.DEPTH: depth_detector}

        def run() -> object:
            images = [circle] * len(nets)
            made = controls.prepare(plain.spec, control_types, nets, images, detectors)
            return txt2img.run(tiny, replace(plain, controls=made))

        return run

    def image_prompted() -> object:
        """txt2img with tiny-ip-adapter, loading and unloading it included (per job)."""
        entries = [{"model": "i", "image": S3_URI}]
        spec = generation(policy, prompted | {"ipAdapters": entries}, image_prompts=(circle,))
        with ip_adapters.applied(tiny, encoder, [ip_adapter]):
            return txt2img.run(tiny, spec)

    def animated() -> object:
        """img2vid, 4 frames, encoded as an MP4."""
        spec = TINY | {"prompt": "", "mode": "img2vid", "initImage": S3_URI, "video": {"frames": 4}}
        frames = video.img2vid(svd, generation(policy, spec, init_image=circle))
        return encode_video(frames, VideoFormat.MP4, 7, 90, "")

    def clip() -> object:
        """txt2vid, 4 frames (the motion UNet built per run included), encoded as a GIF."""
        adapter = {"frames": 4, "motionAdapter": "a"}
        made = generation(policy, prompted | {"mode": "txt2vid", "video": adapter},
                          motion_adapter=motion)  # fmt: skip
        frames = video.txt2vid(video.motion_pipeline(tiny, made), made)
        return encode_video(frames, VideoFormat.GIF, 7, 90, "")

    def with_embedding() -> object:
        with applied(tiny, embedding):
            return txt2img.run(tiny, generation(policy, prompted))

    return [
        Case("txt2img micro-shapes 64x64, 10 steps (reference)", lambda: txt2img.run(
            micro, generation(policy, red))),
        Case("outpaint micro-shapes 64x64 +64 px right", lambda: outpaint.run(
            micro, generation(policy, outpainting, init_image=circle, strength=1.0))),
        Case("object removal micro-shapes 64x64", lambda: inpaint.run(micro, generation(
            policy, removal, init_image=circle, mask_image=mask, strength=1.0,
            feather_radius=4))),
        Case("hires fix micro-shapes 64->128, latent", lambda: txt2img.run(
            micro, generation(policy, red | {"hiresFix": {"steps": 6}}))),
        Case("hires fix micro-shapes 64->128, Lanczos", lambda: txt2img.run(
            micro, generation(policy, red | {"hiresFix": {"steps": 6, "latent": False}}))),
        Case("upscale tiny-esrgan-x4 128->512, tiles of 64", upscaled(esrgan, 128, 64)),
        Case("upscale tiny-esrgan-x4 128->512, untiled", upscaled(esrgan, 128, 0)),
        Case("upscale tiny-sd-x4-upscaler 64->256, 4 steps", upscaled(sd_x4, 64, 0)),
        Case("restore faces tiny-restoreformer 64x64", lambda: restore(circle, restorer, 0.8, 1)),
        Case("txt2img tiny-sd15 64x64, 4 steps (reference)", lambda: txt2img.run(
            tiny, generation(policy, prompted))),
        Case("txt2img tiny-sd15 with tiny-embedding", with_embedding),
        Case("txt2img tiny-sd15 with the tiny-vae override", lambda: txt2img.run(
            tiny, replace(generation(policy, prompted), vae=vae))),
        Case("txt2img tiny-sd15 with tiny-canny (canny edges)", controlled(
            [ControlType.CANNY], [canny])),
        Case("txt2img tiny-sd15 with tiny-canny + tiny-depth (+ depth detector)", controlled(
            [ControlType.CANNY, ControlType.DEPTH], [canny, depth])),
        Case("txt2img tiny-sd15 with tiny-ip-adapter (loaded and unloaded)", image_prompted),
        Case("img2vid tiny-svd 64x64, 4 frames, 4 steps, to MP4", animated),
        Case("txt2vid tiny-sd15 + tiny-motion 64x64, 4 frames, 4 steps, to GIF", clip),
        Case("remove background tiny-background-remover 64x64", lambda: background.remove(
            circle, remover)),
        Case("output classifier tiny-safety 512x512", lambda: safety.flagged(
            classifier, [finished])),
        Case("invisible watermark 512x512 (dwtDct, 48 bits)", lambda: watermark.apply(
            finished)),
        Case("encode PNG 512x512 with parameters", encoded(OutputFormat.PNG)),
        Case("encode JPEG 512x512 quality 90 with parameters", encoded(OutputFormat.JPEG)),
        Case("encode WebP 512x512 quality 90 with parameters", encoded(OutputFormat.WEBP)),
    ]  # fmt: skip


def measure(all_cases: list[Case], rounds: int) -> dict[str, Figures]:
    figures = {case.label: Figures([], []) for case in all_cases}
    for case in all_cases:
        case.run()  # warm-up: first calls build pipelines and allocate
    for _ in range(rounds):
        for case in all_cases:
            cpu, wall = time.process_time(), time.perf_counter()
            case.run()
            figures[case.label].cpu.append(time.process_time() - cpu)
            figures[case.label].wall.append(time.perf_counter() - wall)
    return figures


def report(figures: dict[str, Figures], rounds: int) -> str:
    lines = [
        "# CPU time per generation feature",
        "",
        f"Measured by `bench/features.py` on {datetime.now(UTC):%Y-%m-%d}: one image (or"
        f" 4-frame clip) per run, the worker's pipeline steps on the CPU in fp32 with"
        f" {THREADS} threads, {rounds} rounds after a warm-up, cases alternating. Seconds"
        " per run: median CPU (min to max) and median wall.",
        "",
        "| feature | CPU s | CPU spread | wall s |",
        "|---|---|---|---|",
    ]
    for label, figure in figures.items():
        lines.append(
            f"| {label} | {statistics.median(figure.cpu):.3f} |"
            f" {min(figure.cpu):.3f} to {max(figure.cpu):.3f} |"
            f" {statistics.median(figure.wall):.3f} |"
        )
    lines += ["", "Reproduce: `make bench-features`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_torch(THREADS, True)
    policy = DevicePolicy.choose(DeviceKind.CPU, Precision.AUTO)
    figures = measure(cases(policy), args.rounds)
    text = report(figures, args.rounds)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
