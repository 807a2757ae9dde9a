"""Video jobs through the whole platform (kubectl, operator, RabbitMQ, a real diffusers
worker on the CPU, S3): img2vid with tiny-svd into an MP4, txt2vid with tiny-sd15, the
tiny-motion adapter and a LoRA into an animated GIF and WebP. Each file holds the frames
and fps of its spec and its parameters; a seed gives the same file again."""

import io
from typing import Any

import av
import numpy as np
from PIL import Image, ImageSequence

from diffleet_worker.video import read_video_parameters
from tests.support.groups import DIFFUSERS
from tests.support.platform import Process
from tests.support.stack import Kubectl
from tests.worker.conftest import circle, read_output, run_jobs, upload_image

pytestmark = DIFFUSERS

RED = (220, 30, 30)
CLIP = {"width": 64, "height": 64, "steps": 2, "seed": 5}


def mp4_frames(data: bytes) -> tuple[list[np.ndarray], float]:
    """The decoded frames of an MP4 and its frame rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate or 0)


def animated_frames(data: bytes) -> tuple[str | None, list[int]]:
    """The format of an animated image and each frame's duration in milliseconds."""
    with Image.open(io.BytesIO(data)) as image:
        durations = []
        for frame in ImageSequence.Iterator(image):
            frame.load()  # WebP reads a frame's duration with its pixels
            durations.append(frame.info["duration"])
        return image.format, durations


def test_img2vid_gives_an_mp4_of_the_spec_frames_and_fps_with_its_parameters(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    spec: dict[str, Any] = {
        **CLIP,
        "model": "tiny-svd",
        "mode": "img2vid",
        "prompt": "",
        "initImage": upload_image(circle(RED), "svd"),
        "video": {"frames": 4, "fps": 8, "motionBucketId": 100, "format": "mp4"},
    }
    done = run_jobs(kubectl, studio_namespace, {"svd": spec, "svd-again": spec})
    output = done["svd"]["outputs"][0]
    assert output["format"] == "mp4"
    assert output["uri"].endswith(".mp4")
    assert (output["frames"], output["fps"], output["durationSeconds"]) == (4, 8, 0.5)
    assert (output["width"], output["height"]) == (64, 64)
    assert done["svd"]["progress"] == {"step": 2, "totalSteps": 2}
    data = read_output(output)
    frames, fps = mp4_frames(data)
    assert (len(frames), fps) == (4, 8.0)
    assert frames[0].shape == (64, 64, 3)
    assert output["sha256"] == done["svd-again"]["outputs"][0]["sha256"]  # the same seed
    text = read_video_parameters(data) or ""
    assert "Steps: 2, CFG scale: " in text  # no sampler: SVD's own scheduler runs
    assert "Seed: 5, Size: 64x64, Model hash: " in text
    assert "Frames: 4, FPS: 8, Motion bucket id: 100, Noise augmentation strength: 0.02" in text


def test_txt2vid_with_a_lora_gives_animated_gif_and_webp_the_same_for_a_seed(
    kubectl: Kubectl, studio_namespace: str, studio: Process
) -> None:
    clip = {
        **CLIP,
        "model": "tiny-sd15",
        "mode": "txt2vid",
        "prompt": "a red circle",
        "loras": [{"model": "tiny-lora", "weight": 0.8}],
    }
    video = {"frames": 4, "fps": 10, "motionAdapter": "tiny-motion"}
    done = run_jobs(
        kubectl,
        studio_namespace,
        {
            "gif": {**clip, "video": video | {"format": "gif"}},
            "gif-again": {**clip, "video": video | {"format": "gif"}},
            "webp": {**clip, "video": video | {"format": "webp"}},
        },
    )
    gif, webp = done["gif"]["outputs"][0], done["webp"]["outputs"][0]
    assert gif["sha256"] == done["gif-again"]["outputs"][0]["sha256"]
    assert (gif["format"], webp["format"]) == ("gif", "webp")
    for output, container in ((gif, "GIF"), (webp, "WEBP")):
        assert (output["frames"], output["fps"], output["durationSeconds"]) == (4, 10, 0.4)
        data = read_output(output)
        assert animated_frames(data) == (container, [100] * 4)
        text = read_video_parameters(data) or ""
        assert text.startswith("a red circle\nSteps: 2, Sampler: Euler a, ")
        assert "Frames: 4, FPS: 10, Motion adapter hash: " in text
        assert ", Motion adapter: tiny-motion, Lora hashes: " in text
