"""The generation parameters of an output, in the text format image tools widely read and
write (Automatic1111's infotext): the prompt, then "Negative prompt: ...", then one line
of "Key: value, ..." in A1111's key names where it has one for the feature. encoding.py
puts the text into the output file."""

from collections.abc import Iterable

from diffleet_core.messages import DispatchedJob, ModelRef
from diffleet_core.resources.generation_job import SAMPLER_LABELS, Mode
from diffleet_worker.preprocessors import module_name

HASH_LENGTH = 10
# A1111's name of latent upscaling in hires fix; the other way resizes the decoded image.
LATENT_UPSCALER, PIXEL_UPSCALER = "Latent", "Lanczos"


def short_hash(model: ModelRef) -> str:
    return model.digest[:HASH_LENGTH]


def parameters_text(order: DispatchedJob, seed: int, strength: float | None) -> str:
    """The text of the image made with `seed`; `strength` is the denoising strength the
    run applied to the init image (None without one)."""
    spec = order.spec
    fields: dict[str, str] = {}
    if spec.mode is not Mode.UPSCALE:
        fields |= _generation(order, seed, strength)
    else:
        fields |= _face_restoration(order)
        fields["Size"] = f"{spec.width}x{spec.height}"
    if spec.upscale is not None:
        fields["Postprocess upscale by"] = f"{spec.upscale.scale:g}"
        fields["Postprocess upscaler"] = spec.upscale.model
    if spec.remove_background is not None and order.background_remover is not None:
        fields["Background removal"] = spec.remove_background.model
        fields["Background removal hash"] = short_hash(order.background_remover)
    lines = [spec.prompt] if spec.prompt else []  # as A1111, no line for an empty prompt
    if spec.negative_prompt:
        lines.append(f"Negative prompt: {spec.negative_prompt}")
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
    return "\n".join(lines)


def _face_restoration(order: DispatchedJob) -> dict[str, str]:
    restore = order.spec.restore_faces
    if restore is None:
        return {}
    return {"Face restoration": restore.model, "Face restoration strength": f"{restore.strength:g}"}


def _generation(order: DispatchedJob, seed: int, strength: float | None) -> dict[str, str]:
    """The keys of a denoising run, in A1111's order."""
    spec = order.spec
    fields = {"Steps": str(spec.steps)}
    if spec.mode is not Mode.IMG2VID:  # SVD samples with its checkpoint's own scheduler
        fields["Sampler"] = SAMPLER_LABELS[spec.sampler]
    fields |= {"CFG scale": f"{spec.guidance_scale:g}", "Seed": str(seed)}
    fields |= _face_restoration(order)
    fields["Size"] = f"{spec.width}x{spec.height}"
    fields["Model hash"] = short_hash(order.model)
    fields["Model"] = order.model.name
    if order.vae is not None:
        fields["VAE hash"] = short_hash(order.vae)
        fields["VAE"] = order.vae.name
    if spec.hires_fix is not None:
        fields["Denoising strength"] = f"{spec.hires_fix.strength:g}"
    elif spec.mode is not Mode.TXT2IMG and not spec.mode.is_video and strength is not None:
        fields["Denoising strength"] = f"{strength:g}"
    if spec.outpaint is not None:
        pad = spec.outpaint
        fields["Outpaint"] = (
            f'"Left: {pad.left}, Right: {pad.right}, Top: {pad.top}, Bottom: {pad.bottom}, '
            f'Feather: {pad.feather_pixels}"'
        )
    if spec.hires_fix is not None:
        fields["Hires upscale"] = f"{spec.hires_fix.scale:g}"
        fields["Hires steps"] = str(spec.hires_fix.steps)
        fields["Hires upscaler"] = LATENT_UPSCALER if spec.hires_fix.latent else PIXEL_UPSCALER
    fields |= _video(order)
    if order.loras:
        weights = [lora.weight for lora in spec.loras or []]
        fields["Lora hashes"] = _quoted(f"{m.name}: {short_hash(m)}" for m in order.loras)
        fields["Lora weights"] = _quoted(
            f"{m.name}: {w:g}" for m, w in zip(order.loras, weights, strict=True)
        )
    if order.embeddings:
        fields["TI hashes"] = _quoted(f"{m.name}: {short_hash(m)}" for m in order.embeddings)
    fields |= _controls(order)
    fields |= _ip_adapters(order)
    if order.style is not None:  # the prompts and fields above are the styled ones
        fields["Style"] = order.style
    return fields


def _ip_adapters(order: DispatchedJob) -> dict[str, str]:
    """One "IP-Adapter <i>" key per entry (A1111 has none; its ControlNet extension's
    units are the model for the value)."""
    encoder = order.image_encoder.name if order.image_encoder is not None else ""
    return {
        f"IP-Adapter {index}": (
            f'"Model: {entry.model} [{short_hash(model)}], Image encoder: {encoder}, '
            f'Weight: {entry.scale:g}"'
        )
        for index, (entry, model) in enumerate(
            zip(order.spec.ip_adapters or [], order.ip_adapters, strict=True)
        )
    }


def _controls(order: DispatchedJob) -> dict[str, str]:
    """One "ControlNet <i>" key per entry, as A1111's ControlNet extension writes them."""
    fields = {}
    for index, (entry, control_type) in enumerate(
        zip(order.spec.controls, order.control_types, strict=True)
    ):
        module = module_name(control_type, entry.preprocess)
        fields[f"ControlNet {index}"] = (
            f'"Module: {module}, Model: {entry.model}, Weight: {entry.conditioning_scale:g}, '
            f'Guidance Start: {entry.guidance_start:g}, Guidance End: {entry.guidance_end:g}"'
        )
    return fields


def _video(order: DispatchedJob) -> dict[str, str]:
    """The clip's keys (A1111 has none): frames and fps; SVD's conditioning, or the
    AnimateDiff motion adapter."""
    video = order.spec.video
    if video is None:
        return {}
    fields = {"Frames": str(video.frames), "FPS": str(video.fps)}
    if order.spec.mode is Mode.IMG2VID:
        fields["Motion bucket id"] = str(video.motion_bucket_id)
        fields["Noise augmentation strength"] = f"{video.noise_aug_strength:g}"
    if order.motion_adapter is not None:
        fields["Motion adapter hash"] = short_hash(order.motion_adapter)
        fields["Motion adapter"] = order.motion_adapter.name
    return fields


def _quoted(items: Iterable[str]) -> str:
    return '"' + ", ".join(items) + '"'
