"""The diffusers classes these builders use, declared `Any` once here: diffusers'
constructors and loaders are untyped (config-registered __init__s, lazy module
imports), so strict mypy cannot check calls to them anyway."""

from typing import Any

import diffusers
from diffusers.pipelines.stable_diffusion import safety_checker

AutoencoderKL: Any = diffusers.AutoencoderKL
AutoencoderKLTemporalDecoder: Any = diffusers.AutoencoderKLTemporalDecoder
ControlNetModel: Any = diffusers.ControlNetModel
DDIMScheduler: Any = diffusers.DDIMScheduler
DDPMScheduler: Any = diffusers.DDPMScheduler
EulerAncestralDiscreteScheduler: Any = diffusers.EulerAncestralDiscreteScheduler
EulerDiscreteScheduler: Any = diffusers.EulerDiscreteScheduler
MotionAdapter: Any = diffusers.MotionAdapter
PNDMScheduler: Any = diffusers.PNDMScheduler
StableDiffusionControlNetPipeline: Any = diffusers.StableDiffusionControlNetPipeline
StableDiffusionImg2ImgPipeline: Any = diffusers.StableDiffusionImg2ImgPipeline
StableDiffusionPipeline: Any = diffusers.StableDiffusionPipeline
StableDiffusionSafetyChecker: Any = safety_checker.StableDiffusionSafetyChecker
StableDiffusionUpscalePipeline: Any = diffusers.StableDiffusionUpscalePipeline
StableDiffusionXLPipeline: Any = diffusers.StableDiffusionXLPipeline
StableVideoDiffusionPipeline: Any = diffusers.StableVideoDiffusionPipeline
T2IAdapter: Any = diffusers.T2IAdapter
UNet2DConditionModel: Any = diffusers.UNet2DConditionModel
UNetSpatioTemporalConditionModel: Any = diffusers.UNetSpatioTemporalConditionModel
