"""StylePreset (diffleet.io/v1alpha1): a named look that a GenerationJob picks with
spec.style: prompt templates and defaults for the fields the job leaves out
(diffleet_core.styles applies it).

The bounds here are those of crds/stylepresets.diffleet.io.yaml and GenerationJobSpec's,
and the placeholder rule is the CRD's CEL rule, with the same message."""

from typing import Self

from pydantic import Field, StrictInt, model_validator

from diffleet_core.resources.base import SpecModel
from diffleet_core.resources.generation_job import MAX_PROMPT_LENGTH, LoraRef, Sampler
from diffleet_core.resources.text import Text

KIND = "StylePreset"
PLURAL = "stylepresets"
# Stands for the job's prompt in `prompt`, and for its negative prompt in `negativePrompt`.
PLACEHOLDER = "{prompt}"
PLACEHOLDER_RULE = "prompt must contain the placeholder {prompt} (where the job's prompt goes)"
MAX_DESCRIPTION_LENGTH = 500


class StylePresetSpec(SpecModel):
    """Templates of the prompts, and values for the fields a job leaves out."""

    description: Text | None = Field(
        default=None, max_length=MAX_DESCRIPTION_LENGTH, description="What the style looks like."
    )
    prompt: Text | None = Field(
        default=None,
        max_length=MAX_PROMPT_LENGTH,
        description="Template of the prompt: {prompt} stands for the job's prompt.",
    )
    negative_prompt: Text | None = Field(
        default=None,
        max_length=MAX_PROMPT_LENGTH,
        description="Template of the negative prompt: {prompt} stands for the job's negative"
        " prompt; without it the job's is appended after a comma.",
    )
    sampler: Sampler | None = Field(default=None, description="Sampler of a job that names none.")
    steps: StrictInt | None = Field(
        default=None, ge=1, le=150, description="Denoising steps of a job that names none."
    )
    width: StrictInt | None = Field(
        default=None, ge=64, le=2048, multiple_of=8, description="Width of a job that names none."
    )
    height: StrictInt | None = Field(
        default=None, ge=64, le=2048, multiple_of=8, description="Height of a job that names none."
    )
    loras: list[LoraRef] | None = Field(
        default=None, max_length=5, description="LoRAs of a job that names none."
    )

    @model_validator(mode="after")
    def check_rules(self) -> Self:
        """The CRD's CEL rule, with the same message."""
        if self.prompt is not None and PLACEHOLDER not in self.prompt:
            raise ValueError(PLACEHOLDER_RULE)
        return self
