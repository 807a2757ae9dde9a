"""The OpenAI Images API's requests, answer and error body, with OpenAI's field names.
Their OpenAPI components are named for the door (OpenAI...): the Automatic1111 door has
requests of its own."""

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffleet_core.resources.generation_job import MAX_PROMPT_LENGTH, MAX_SEED

EndUser = Annotated[str | None, Field(default=None, max_length=256)]


class OpenAIImageRequest(BaseModel):
    """The fields every Images API request has; unknown fields are refused, as OpenAI
    refuses them."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        max_length=253,
        description="A ModelCache (checkpoint); OpenAI's models (dall-e-*, gpt-image-*) and"
        " none run the platform's default",
    )
    n: int | None = Field(default=None, ge=1, le=8, description="Images: the job's batchSize")
    size: str | None = Field(
        default=None,
        max_length=16,
        description='"WxH" (multiples of 8 from 64 to 2048), or "auto"',
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="url (presigned, the default) or b64_json"
    )
    user: EndUser = Field(description="The end user (annotated on the job)")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="diffleet's own: the job's seed"
    )

    @property
    def end_user(self) -> str | None:
        return self.user


class OpenAIOutputRequest(OpenAIImageRequest):
    """The fields of the requests that take a prompt (generations and edits)."""

    prompt: str = Field(max_length=MAX_PROMPT_LENGTH)
    quality: str | None = Field(
        default=None, max_length=16, description="Denoising steps, by openai_quality_steps"
    )
    output_format: Literal["png", "jpeg", "webp", "gif", "svg"] | None = Field(
        default=None, description="png, jpeg or webp"
    )
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="The jpeg or webp quality (0 is 1)"
    )
    background: Literal["transparent", "opaque", "auto"] | None = None
    safety_identifier: EndUser = Field(description="The end user; wins over `user`")
    stream: bool | None = Field(default=None, description="Not supported: false only")
    partial_images: int | None = Field(default=None, description="Not supported: 0 only")
    complexity: str | None = Field(default=None, description="Not supported")
    frame_count: int | None = Field(default=None, description="Not supported")
    frame_duration_ms: int | None = Field(default=None, description="Not supported")
    svg: dict[str, Any] | None = Field(default=None, description="Not supported")

    @property
    def end_user(self) -> str | None:
        """safety_identifier is OpenAI's newer name of `user`."""
        return self.safety_identifier or self.user


class OpenAIGenerationRequest(OpenAIOutputRequest):
    """POST /v1/images/generations (JSON)."""

    style: str | None = Field(
        default=None,
        max_length=253,
        description="vivid or natural (by openai_style_presets), else a StylePreset's name",
    )
    moderation: Literal["low", "auto"] | None = Field(
        default=None, description="Either: the tenant's content policy applies"
    )


class OpenAIFormRequest(BaseModel):
    """A multipart form: a field the SDK sends as None arrives as "", meaning absent."""

    @model_validator(mode="before")
    @classmethod
    def empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value != ""}
        return data


class OpenAIEditRequest(OpenAIFormRequest, OpenAIOutputRequest):
    """POST /v1/images/edits (multipart)."""

    image: UploadFile | None = Field(default=None, description="The image (png, jpeg, webp)")
    images: list[UploadFile] | None = Field(
        default=None, alias="image[]", description="The image, as a list of one"
    )
    mask: UploadFile | None = Field(
        default=None, description="Same size as image; its transparent pixels are edited"
    )
    markup: UploadFile | None = Field(default=None, description="Not supported")
    input_fidelity: str | None = Field(default=None, description="Not supported")


class OpenAIVariationRequest(OpenAIFormRequest, OpenAIImageRequest):
    """POST /v1/images/variations (multipart)."""

    image: UploadFile = Field(description="The image (png, jpeg, webp)")


class OpenAIImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int = Field(description="Unix time the job finished")
    data: list[OpenAIImageData]
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None


class OpenAIErrorObject(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    job_id: str | None = Field(default=None, description="The job of a 504 (still running)")


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorObject
