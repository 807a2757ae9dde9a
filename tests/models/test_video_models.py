"""tiny-svd and tiny-motion through the worker's video pipelines, loaded as the worker
loads them: every step reported with the first frame's latents (what the preview draws),
a cancel stopping the run at the end of a step, the same seed giving the same frames,
and LoRAs changing an AnimateDiff clip."""

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType
from diffleet_worker.config import DeviceKind, Precision
from diffleet_worker.device import DevicePolicy
from diffleet_worker.loading import Loader
from diffleet_worker.loras import LoadedLora
from diffleet_worker.loras import applied as loras_applied
from diffleet_worker.pipelines import video
from diffleet_worker.pipelines.common import Generation
from diffleet_worker.previews import preview_png
from diffleet_worker.runner import JobCancelledError, RunFailedError
from hack.models.provision import local_model
from hack.models.video import MOTION_MAX_FRAMES
from tests.support.groups import DIFFUSERS
from tests.support.tiny_models import load_tiny

pytestmark = DIFFUSERS

POLICY = DevicePolicy.choose(DeviceKind.CPU, Precision.FLOAT32, use_xformers=False)
CLIP = {"width": 64, "height": 64, "steps": 2}
RED = Image.new("RGB", (64, 64), (220, 30, 30))


@pytest.fixture(scope="module")
def svd() -> Any:
    return load_tiny(Loader(POLICY), "tiny-svd", ModelType.CHECKPOINT, BaseModelFamily.SVD)


@pytest.fixture(scope="module")
def sd15() -> Any:
    return load_tiny(Loader(POLICY), "tiny-sd15", ModelType.CHECKPOINT)


@pytest.fixture(scope="module")
def motion() -> Any:
    return load_tiny(Loader(POLICY), "tiny-motion", ModelType.MOTION_ADAPTER)


class Steps:
    """The runner's step report: records the steps, previews the latents, and asks the
    pipeline to stop once `cancel_after` steps are done."""

    def __init__(self, family: BaseModelFamily, cancel_after: int | None = None) -> None:
        self.family = family
        self.cancel_after = cancel_after
        self.seen: list[tuple[int, int, tuple[int, ...]]] = []

    def __call__(self, pipeline: Any, step: int, total: int, latents: torch.Tensor | None) -> None:
        assert latents is not None
        self.seen.append((step, total, tuple(latents.shape)))
        assert preview_png(latents, self.family).startswith(b"\x89PNG")
        if self.cancel_after is not None and step >= self.cancel_after:
            pipeline._interrupt = True


def img2vid_run(svd: Any, steps: Steps, **clip: Any) -> list[Image.Image]:
    spec = GenerationJobSpec.model_validate(
        {
            **CLIP,
            "model": "tiny-svd",
            "mode": "img2vid",
            "initImage": "s3://uploads/red.png",
            "video": {"frames": 4} | clip,
        }
    )
    generation = Generation(spec=spec, seeds=[3], policy=POLICY, on_step=steps, init_image=RED)
    return video.img2vid(svd, generation)


def txt2vid_generation(motion: Any, steps: Steps, frames: int = 4) -> Generation:
    spec = GenerationJobSpec.model_validate(
        {
            **CLIP,
            "model": "tiny-sd15",
            "mode": "txt2vid",
            "prompt": "a red circle",
            "video": {"frames": frames, "motionAdapter": "tiny-motion"},
        }
    )
    return Generation(spec=spec, seeds=[3], policy=POLICY, on_step=steps, motion_adapter=motion)


def same(first: list[Image.Image], second: list[Image.Image]) -> bool:
    return len(first) == len(second) and all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, second, strict=True)
    )


def test_img2vid_reports_each_step_with_the_first_frame_and_repeats_for_a_seed(svd: Any) -> None:
    steps = Steps(BaseModelFamily.SVD)
    frames = img2vid_run(svd, steps)
    assert [frame.size for frame in frames] == [(64, 64)] * 4
    assert steps.seen == [(1, 2, (1, 4, 8, 8)), (2, 2, (1, 4, 8, 8))]
    assert same(img2vid_run(svd, Steps(BaseModelFamily.SVD)), frames)
    assert not same(img2vid_run(svd, Steps(BaseModelFamily.SVD), motion_bucket_id=255), frames)


def test_a_cancelled_img2vid_stops_after_the_step_and_the_next_run_is_whole(svd: Any) -> None:
    steps = Steps(BaseModelFamily.SVD, cancel_after=1)
    with pytest.raises(JobCancelledError):
        img2vid_run(svd, steps)
    assert [step for step, _, _ in steps.seen] == [1]
    assert len(img2vid_run(svd, Steps(BaseModelFamily.SVD))) == 4


def test_txt2vid_adds_motion_layers_and_takes_loras(sd15: Any, motion: Any) -> None:
    steps = Steps(BaseModelFamily.SD15)
    generation = txt2vid_generation(motion, steps)
    pipeline = video.motion_pipeline(sd15, generation)
    assert type(pipeline.unet).__name__ == "UNetMotionModel"
    assert type(sd15.unet).__name__ == "UNet2DConditionModel"  # the hot pipeline as it was
    frames = video.txt2vid(pipeline, generation)
    assert len(frames) == 4
    assert [step for step, _, _ in steps.seen] == [1, 2]
    assert all(shape == (1, 4, 8, 8) for _, _, shape in steps.seen)
    assert same(video.txt2vid(video.motion_pipeline(sd15, generation), generation), frames)
    lora = LoadedLora("lora0", local_model("tiny-lora").path, 1.0)
    with loras_applied(pipeline, [lora]):
        assert not same(video.txt2vid(pipeline, generation), frames)
    assert not getattr(sd15.unet, "peft_config", None)  # the hot pipeline's UNet untouched


def test_txt2vid_refuses_more_frames_than_the_adapter_attends_over(sd15: Any, motion: Any) -> None:
    generation = txt2vid_generation(motion, Steps(BaseModelFamily.SD15), MOTION_MAX_FRAMES + 1)
    with pytest.raises(RunFailedError) as refused:
        video.motion_pipeline(sd15, generation)
    assert str(refused.value) == "video.frames: the motion adapter takes at most 32 frames"
    assert refused.value.reason == Reason.INVALID_SPEC
