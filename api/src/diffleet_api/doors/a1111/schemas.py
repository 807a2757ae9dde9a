"""A1111's requests and answers, with its field names and defaults. Their names say the
door: they are components of the OpenAPI document beside diffleet's own."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from diffleet_api.errors import FieldError


class A1111GenerationRequest(BaseModel):
    """The fields txt2img and img2img share, with A1111's names and defaults."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(default=-1, description="-1: random (info reports the seed used)")
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None
    script_args: list[Any] | None = None
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = None


class A1111Txt2ImgRequest(A1111GenerationRequest):
    enable_hr: bool = False
    denoising_strength: float | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class A1111Img2ImgRequest(A1111GenerationRequest):
    init_images: list[str] = Field(min_length=1, description="One base64 image (or data URI)")
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = Field(default=None, description="base64 image: white = repaint")
    mask_blur: int = Field(default=4, ge=0, le=64)
    inpainting_fill: Literal[0, 1, 2, 3] = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: Literal[0, 1] = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class A1111ImageAnswer(BaseModel):
    images: list[str] = Field(description="base64 PNG images")
    parameters: dict[str, Any] = Field(description="The request, as A1111 echoes it")
    info: str = Field(description="JSON: seed, all_seeds, sampler_name, infotexts, ...")


class A1111ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class A1111Progress(BaseModel):
    progress: float = Field(ge=0, le=1)
    eta_relative: float = Field(ge=0)
    state: A1111ProgressState
    current_image: str | None = Field(description="base64 PNG: the latest live preview")
    textinfo: str | None = None


class A1111SdModel(BaseModel):
    title: str = Field(description='"name [hash]", as sd_model_checkpoint may name it')
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class A1111Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str] = Field(default_factory=dict)


class A1111Scheduler(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class A1111Options(BaseModel):
    """The A1111 options this door keeps: the caller's default checkpoint."""

    model_config = ConfigDict(extra="allow")

    sd_model_checkpoint: str | None = None


class A1111Scripts(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class A1111ErrorBody(BaseModel):
    error: str = Field(description="The kind of error (validation, unauthenticated, ...)")
    detail: str
    body: str = ""
    errors: list[FieldError] = Field(default_factory=list)
