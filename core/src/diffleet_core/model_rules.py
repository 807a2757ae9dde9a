"""Rules about the models a job names, shared by the API, the operator and the worker:
where a model's name is looked up, and which models fit together."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from diffleet_core.messages import DispatchedJob, ModelRef
from diffleet_core.resources.generation_job import ControlNetSpec, GenerationJobSpec, Mode
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType


def lookup_namespaces(namespace: str, system_namespace: str) -> tuple[str, ...]:
    """Where a job's (or a tenant's) model name is looked for, in order: its own namespace,
    then the platform's (`system_namespace`); once when they are the same."""
    return tuple(dict.fromkeys((namespace, system_namespace)))


@dataclass(frozen=True)
class JobModelRefs:
    """Every model a job runs with, resolved: `model` is its primary model (its
    checkpoint; its upscaler in mode upscale); `control_nets` follow spec.controls."""

    model: ModelRef
    loras: list[ModelRef] = field(default_factory=list)
    control_nets: list[ModelRef] = field(default_factory=list)
    embeddings: list[ModelRef] = field(default_factory=list)
    vae: ModelRef | None = None
    upscaler: ModelRef | None = None
    restorer: ModelRef | None = None
    safety: ModelRef | None = None
    detectors: list[ModelRef] = field(default_factory=list)
    ip_adapters: list[ModelRef] = field(default_factory=list)
    image_encoder: ModelRef | None = None
    motion_adapter: ModelRef | None = None
    background_remover: ModelRef | None = None

    @classmethod
    def of_order(cls, order: DispatchedJob) -> "JobModelRefs":
        return cls(
            model=order.model,
            loras=order.loras,
            control_nets=order.control_nets,
            embeddings=order.embeddings,
            vae=order.vae,
            upscaler=order.upscaler,
            restorer=order.restorer,
            safety=order.safety,
            detectors=order.detectors,
            ip_adapters=order.ip_adapters,
            image_encoder=order.image_encoder,
            motion_adapter=order.motion_adapter,
            background_remover=order.background_remover,
        )


def controls_field(spec: GenerationJobSpec) -> str:
    """The spec field the job's ControlNets are in (the deprecated single one, or the list)."""
    return "controlNet" if spec.control_net is not None else "controlNets"


def control_field(spec: GenerationJobSpec, index: int) -> str:
    """Where entry `index` of spec.controls is, as a refusal names it."""
    return "controlNet" if spec.control_net is not None else f"controlNets[{index}]"


def incompatibilities(models: JobModelRefs, spec: GenerationJobSpec) -> list[str]:
    """What keeps these models from running together in `spec`'s job, one sentence per
    problem, each starting with the field it is about (empty: they fit). The primary model
    is a checkpoint (an upscaler in mode upscale; of family svd exactly in mode img2vid);
    each adapter is of its type and of the checkpoint's family; the models that work on
    pixels are of their types."""
    mode = spec.mode
    model = models.model
    problems = []
    # In mode upscale the primary model is the upscaler, checked with it below.
    if mode is not Mode.UPSCALE and model.type is not ModelType.CHECKPOINT:
        problems.append(f"model: {model.name} is a {model.type.value}, not a checkpoint")
    family = model.base_model
    video_model = family is BaseModelFamily.SVD
    if mode is Mode.IMG2VID and model.type is ModelType.CHECKPOINT and not video_model:
        problems.append(f"model: {model.name} is not an svd checkpoint (mode img2vid needs one)")
    if mode is not Mode.IMG2VID and video_model:
        problems.append(f"model: {model.name} is an svd checkpoint: it runs only in mode img2vid")

    def of_family(ref: ModelRef, kind: ModelType) -> bool:
        return ref.type is kind and ref.base_model is family

    label = family.value if family is not None else "the checkpoint's"
    for lora in models.loras:
        if not of_family(lora, ModelType.LORA):
            problems.append(f"loras: {lora.name} is not a {label} LoRA")
    problems += control_problems(models, spec)
    for adapter in models.ip_adapters:
        if not of_family(adapter, ModelType.IP_ADAPTER):
            problems.append(f"ipAdapters: {adapter.name} is not a {label} IP-Adapter")
    for embedding in models.embeddings:
        if not of_family(embedding, ModelType.EMBEDDING):
            problems.append(f"embeddings: {embedding.name} is not a {label} embedding")
    if models.vae is not None and not of_family(models.vae, ModelType.VAE):
        problems.append(f"vae: {models.vae.name} is not a {label} VAE")
    motion = models.motion_adapter
    if motion is not None and not of_family(motion, ModelType.MOTION_ADAPTER):
        problems.append(f"video.motionAdapter: {motion.name} is not a {label} motion adapter")
    for where, ref, kind in (
        ("upscale.model", models.upscaler, ModelType.UPSCALER),
        ("restoreFaces.model", models.restorer, ModelType.RESTORER),
        ("safetyModel", models.safety, ModelType.SAFETY),
        ("ipAdapters", models.image_encoder, ModelType.IMAGE_ENCODER),
        ("removeBackground.model", models.background_remover, ModelType.BACKGROUND_REMOVER),
        *(
            (f"{controls_field(spec)}.preprocess", ref, ModelType.DETECTOR)
            for ref in models.detectors
        ),
    ):
        if ref is not None and ref.type is not kind:
            problems.append(f"{where}: {ref.name} is of type {ref.type.value}, not {kind.value}")
    return problems


CONDITIONING_LABELS = {ModelType.CONTROLNET: "ControlNet", ModelType.T2I_ADAPTER: "T2I-Adapter"}


def control_problems(models: JobModelRefs, spec: GenerationJobSpec) -> list[str]:
    """Each entry is a ControlNet or a T2I-Adapter of the checkpoint's family, of the type
    it asks for (when it asks); the entries are all of one kind (diffusers has no pipeline
    that takes both); T2I-Adapters also follow adapter_problems."""
    family = models.model.base_model
    label = family.value if family is not None else "the checkpoint's"
    problems = []
    first: ModelRef | None = None
    for index, (entry, ref) in enumerate(zip(spec.controls, models.control_nets, strict=False)):
        where = control_field(spec, index)
        kind = CONDITIONING_LABELS.get(ref.type, "ControlNet")
        if ref.type not in CONDITIONING_LABELS or ref.base_model is not family:
            problems.append(f"{where}.model: {ref.name} is not a {label} {kind}")
            continue
        if entry.type is not None and ref.control_type is not entry.type:
            declared = ref.control_type.value if ref.control_type else "untyped"
            problems.append(
                f"{where}.type: {ref.name} is a {declared} {kind}, not {entry.type.value}"
            )
        if first is None:
            first = ref
        elif ref.type is not first.type:
            problems.append(
                f"{where}.model: {ref.name} is a {kind} and {first.name} a"
                f" {CONDITIONING_LABELS[first.type]}: a job's entries are all ControlNets or"
                " all T2I-Adapters"
            )
        if ref.type is ModelType.T2I_ADAPTER:
            problems += adapter_problems(where, ref, entry, spec.mode)
    if any(ref.type is ModelType.T2I_ADAPTER for ref in models.control_nets):
        if spec.hires_fix is not None:
            problems.append(
                "hiresFix: not allowed with T2I-Adapters (its second pass is image to image,"
                " and diffusers runs T2I-Adapters in text to image only)"
            )
        if spec.ip_adapters and family is BaseModelFamily.SD15:
            problems.append(
                "ipAdapters: not allowed with T2I-Adapters on sd15 (diffusers' SD 1.5"
                " T2I-Adapter pipeline takes no image prompt)"
            )
    return problems


def adapter_problems(where: str, ref: ModelRef, entry: ControlNetSpec, mode: Mode) -> list[str]:
    """A T2I-Adapter runs in mode txt2img only (diffusers has StableDiffusionAdapterPipeline
    and StableDiffusionXLAdapterPipeline, both text to image) and steers every step: its
    features are added to the UNet's at each one, so it has no guidance window."""
    problems = []
    if mode is not Mode.TXT2IMG:
        problems.append(
            f"{where}.model: {ref.name} is a T2I-Adapter: T2I-Adapters run only in mode txt2img"
        )
    for name, value, whole in (
        ("guidanceStart", entry.guidance_start, 0.0),
        ("guidanceEnd", entry.guidance_end, 1.0),
    ):
        if value != whole:
            problems.append(
                f"{where}.{name}: {ref.name} is a T2I-Adapter, which steers every step"
                f" ({name} must be {whole:g})"
            )
    return problems


def image_encoder_problem(encoders: Mapping[str, str | None]) -> str | None:
    """Why the job's IP-Adapters (`encoders`: each adapter's name and its ModelCache's
    imageEncoder) cannot run together: diffusers loads one image encoder per pipeline.
    Adapters without one (not IP-Adapters, refused by their type) are left out."""
    named = {adapter: encoder for adapter, encoder in encoders.items() if encoder is not None}
    if len(set(named.values())) <= 1:
        return None
    listed = ", ".join(f"{adapter} uses {encoder}" for adapter, encoder in named.items())
    return f"ipAdapters: all of a job's IP-Adapters must share one image encoder ({listed})"
