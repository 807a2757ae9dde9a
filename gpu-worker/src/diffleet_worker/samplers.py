"""The CRD's samplers as diffusers schedulers."""

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffleet_core.resources.generation_job import Sampler

# Scheduler class and the options that make it the named sampler.
SCHEDULERS: dict[Sampler, tuple[Any, dict[str, Any]]] = {
    Sampler.EULER: (EulerDiscreteScheduler, {}),
    Sampler.EULER_A: (EulerAncestralDiscreteScheduler, {}),
    Sampler.HEUN: (HeunDiscreteScheduler, {}),
    Sampler.DPM2: (KDPM2DiscreteScheduler, {}),
    Sampler.DPMPP_2M: (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    Sampler.DPMPP_2M_KARRAS: (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    Sampler.DDIM: (DDIMScheduler, {}),
    Sampler.LMS: (LMSDiscreteScheduler, {}),
    Sampler.UNIPC: (UniPCMultistepScheduler, {}),
    Sampler.LCM: (LCMScheduler, {}),
}


def scheduler_for(sampler: Sampler, model_config: Any) -> Any:
    """A fresh scheduler for `sampler`, from the model's own scheduler config (betas,
    timestep spacing, prediction type), so every sampler denoises the same model."""
    scheduler_class, options = SCHEDULERS[sampler]
    return scheduler_class.from_config(model_config, **options)
