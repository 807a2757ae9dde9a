"""The video modes: each returns the frames of one clip.

- img2vid: Stable Video Diffusion animates the init image (the checkpoint is an svd
  pipeline: its own scheduler, so the job's sampler does not apply; guidance rises from 1
  at the first frame to the job's guidanceScale at the last, as SVD's pipeline does).
- txt2vid: AnimateDiff, an SD 1.5 checkpoint's modules with a motion adapter's temporal
  layers (`motion_pipeline`), the job's sampler, VAE, LoRAs and embeddings applied as for
  an image (the runner applies LoRAs and embeddings to that pipeline).

Each step is reported with the first frame's latents (the preview), and a cancelled run
stops at the end of the step (SVD's pipeline has no interrupt flag, so the callback
raises). Low memory: sliced attention and one frame decoded at a time.
"""

from typing import Any

import torch
from diffusers import AnimateDiffPipeline, StableVideoDiffusionPipeline
from PIL import Image

from diffleet_core.resources.conditions import Reason
from diffleet_worker.pipelines.common import Generation, StepEnd, configure, generators
from diffleet_worker.runner import JobCancelledError, RunFailedError

# (batch, frames, channels, height, width) in SVD; (batch, channels, frames, ...) in AnimateDiff.
SVD_FRAME_AXIS, ANIMATEDIFF_FRAME_AXIS = 1, 2
# DiffusionPipeline.from_pipe casts every module, shared ones too, to its `dtype` argument
# (float32 when not given): the calls here pass the hot pipeline's own.


def motion_pipeline(base: Any, generation: Generation) -> Any:
    """AnimateDiff around the hot SD 1.5 pipeline's modules (shared, not copied; the VAE
    override when there is one) and a UNet with the motion adapter's layers, made for
    this run from the checkpoint's UNet: LoRAs apply to it like to the UNet it copies."""
    if generation.motion_adapter is None:
        raise ValueError("motionAdapter is required for txt2vid")
    max_frames = generation.motion_adapter.config.motion_max_seq_length
    if generation.spec.frame_count > max_frames:
        raise RunFailedError(
            Reason.INVALID_SPEC,
            f"video.frames: the motion adapter takes at most {max_frames} frames",
        )
    pipeline = AnimateDiffPipeline.from_pipe(
        base, motion_adapter=generation.motion_adapter, dtype=base.dtype, **generation.components
    )
    pipeline.unet.to(base.device)  # made on the CPU
    return pipeline


def img2vid(base: Any, generation: Generation) -> list[Image.Image]:
    spec = generation.spec
    video = spec.video
    if generation.init_image is None or video is None:
        raise ValueError("initImage and video are required for img2vid")
    # A pipeline object of this run around the hot one's modules: the interrupt flag
    # the runner sets on it dies with it.
    pipeline = StableVideoDiffusionPipeline.from_pipe(base, dtype=base.dtype)
    pipeline.set_progress_bar_config(disable=True)
    if generation.low_memory:
        # Undone by DevicePolicy.restore_attention after the run.
        pipeline.enable_attention_slicing()
    output = pipeline(
        image=generation.init_image,
        height=spec.height,
        width=spec.width,
        num_frames=video.frames,
        num_inference_steps=spec.steps,
        max_guidance_scale=spec.guidance_scale,
        fps=video.fps,
        motion_bucket_id=video.motion_bucket_id,
        noise_aug_strength=video.noise_aug_strength,
        decode_chunk_size=_decode_chunk(generation, video.decode_chunk_size),
        generator=generators(generation.seeds),
        callback_on_step_end=frame_step_end(generation, SVD_FRAME_AXIS),
        callback_on_step_end_tensor_inputs=["latents"],
    )
    frames: list[Image.Image] = output.frames[0]
    return frames


def txt2vid(pipeline: Any, generation: Generation) -> list[Image.Image]:
    """`pipeline`: the run's AnimateDiff pipeline (`motion_pipeline`)."""
    spec = generation.spec
    video = spec.video
    if video is None:
        raise ValueError("video is required for txt2vid")
    configure(pipeline, pipeline, generation)
    output = pipeline(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt or None,
        num_frames=video.frames,
        height=spec.height,
        width=spec.width,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        generator=generators(generation.seeds),
        decode_chunk_size=_decode_chunk(generation, video.decode_chunk_size),
        callback_on_step_end=frame_step_end(generation, ANIMATEDIFF_FRAME_AXIS),
        callback_on_step_end_tensor_inputs=["latents"],
    )
    frames: list[Image.Image] = output.frames[0]
    return frames


def frame_step_end(generation: Generation, frame_axis: int) -> StepEnd:
    """diffusers' callback_on_step_end of a video run: the step reported with the first
    frame's latents; JobCancelledError once the report asked the pipeline to stop."""

    def on_step_end(pipeline: Any, index: int, _: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        first_frame = torch.select(tensors["latents"], frame_axis, 0)
        generation.on_step(pipeline, index + 1, pipeline.num_timesteps, first_frame)
        if getattr(pipeline, "_interrupt", False):
            raise JobCancelledError
        return tensors

    return on_step_end


def _decode_chunk(generation: Generation, chunk: int) -> int:
    """Frames the VAE decodes at once: the job's, or one on the low-memory retry."""
    return 1 if generation.low_memory else chunk
