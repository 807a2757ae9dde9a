"""The trained file as safetensors: a LoRA (the diffusers LoRA keys the worker's
`load_lora_weights` reads) or an embedding (diffusers' {token: tensor[1, dim]}, which
`load_textual_inversion` reads), and the training's parameters in the metadata under
the kohya-ss names (ss_*) that other tools show, plus diffleet's own where kohya has
none. Nothing in it depends on the time or the machine: a seed gives one file."""

import json

import torch
from safetensors.torch import save

from diffleet_core.resources.training_job import TrainingJobSpec

# kohya's name for Stable Diffusion 1.x; the trainer takes SD 1.5 checkpoints only.
SD15_VERSION = "sd_v1"
NETWORK_MODULE = "peft.lora"
HEADER_LENGTH_BYTES = 8


def metadata(spec: TrainingJobSpec, seed: int, images: int, prediction_type: str) -> dict[str, str]:
    return {
        "ss_base_model_version": SD15_VERSION,
        "ss_sd_model_name": spec.base_model,
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(spec.rank),
        "ss_learning_rate": str(spec.learning_rate),
        "ss_unet_lr": str(spec.learning_rate),
        "ss_text_encoder_lr": str(spec.learning_rate if spec.train_text_encoder else 0.0),
        "ss_network_train_unet_only": str(not spec.train_text_encoder),
        "ss_max_train_steps": str(spec.steps),
        "ss_batch_size_per_device": str(spec.batch_size),
        "ss_resolution": f"({spec.resolution}, {spec.resolution})",
        "ss_seed": str(seed),
        "ss_num_train_images": str(images),
        "ss_optimizer": "torch.optim.AdamW",
        "ss_lr_scheduler": "constant",
        "ss_v2": "False",
        "ss_v_parameterization": str(prediction_type == "v_prediction"),
        "diffleet.dataset": spec.dataset,
        "diffleet.output": spec.output.name,
    }


def embedding_metadata(
    spec: TrainingJobSpec, seed: int, images: int, prediction_type: str
) -> dict[str, str]:
    """The LoRA's keys that describe a textual inversion too, and its own."""
    shared = metadata(spec, seed, images, prediction_type)
    kept = (
        "ss_base_model_version",
        "ss_sd_model_name",
        "ss_learning_rate",
        "ss_max_train_steps",
        "ss_batch_size_per_device",
        "ss_resolution",
        "ss_seed",
        "ss_num_train_images",
        "ss_optimizer",
        "ss_lr_scheduler",
        "ss_v2",
        "ss_v_parameterization",
        "diffleet.dataset",
        "diffleet.output",
    )
    return {key: shared[key] for key in kept} | {
        "diffleet.method": str(spec.method),
        "diffleet.placeholder": spec.placeholder or "",
    }


def lora_file(state: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """The safetensors file (a LoRA's or an embedding's), its header written here:
    safetensors' own writer orders the metadata as a hash map happens to, so the same
    training would give other bytes.

    The format: the header's length (8 bytes, little-endian), the JSON header padded
    with spaces to a multiple of 8 bytes, then the tensors' data, at offsets relative to
    the data's start (so a longer header moves nothing)."""
    plain = save(state)
    length = int.from_bytes(plain[:HEADER_LENGTH_BYTES], "little")
    header = json.loads(plain[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])
    header["__metadata__"] = dict(sorted(meta.items()))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    data = plain[HEADER_LENGTH_BYTES + length :]
    return len(encoded).to_bytes(HEADER_LENGTH_BYTES, "little") + encoded + data
