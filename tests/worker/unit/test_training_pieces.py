"""The trainer's pure pieces (issue 20): which examples a step takes, the checkpoint's
round trip through its file and the optimizer, the LoRA file's bytes, and the keys a
training stores under."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffleet_core.storage import (
    checkpoint_key,
    trained_lora_key,
    training_prefix,
    validation_image_key,
)
from diffleet_worker.training import batches, checkpoints, output


def test_each_epoch_takes_every_example_once() -> None:
    taken = [index for step in range(6) for index in batches.indices(3, step, 2, 4)]
    assert sorted(taken[:4]) == sorted(taken[4:8]) == [0, 1, 2, 3]
    assert taken[:4] != taken[4:8] or taken[4:8] != taken[8:]  # epochs are reshuffled


def test_a_step_draws_from_the_seed_and_the_step_alone() -> None:
    assert batches.indices(5, 7, 3, 10) == batches.indices(5, 7, 3, 10)
    first = torch.randn(4, generator=batches.step_generator(5, 7))
    assert torch.equal(first, torch.randn(4, generator=batches.step_generator(5, 7)))
    assert not torch.equal(first, torch.randn(4, generator=batches.step_generator(5, 8)))
    assert not torch.equal(first, torch.randn(4, generator=batches.step_generator(6, 7)))


def training(seed: int) -> tuple[dict[str, torch.nn.Parameter], torch.optim.AdamW]:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(3, 2)
    parameters = dict(sorted(layer.named_parameters()))
    return parameters, torch.optim.AdamW(parameters.values(), lr=0.1)


def step(parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.AdamW, n: int) -> None:
    inputs = torch.randn(5, 3, generator=torch.Generator().manual_seed(n))
    loss = (inputs @ parameters["weight"].T + parameters["bias"]).square().sum()
    optimizer.zero_grad()
    torch.autograd.backward(loss)
    optimizer.step()


def test_a_checkpoint_resumes_the_optimizer_exactly() -> None:
    through, through_optimizer = training(0)
    for n in range(6):
        step(through, through_optimizer, n)

    stopped, stopped_optimizer = training(0)
    for n in range(3):
        step(stopped, stopped_optimizer, n)
    data = checkpoints.encode(checkpoints.capture(3, stopped, stopped_optimizer))
    saved = checkpoints.decode(data)
    assert saved.step == 3

    resumed, resumed_optimizer = training(1)  # other initial weights: all are restored
    checkpoints.restore(saved, resumed, resumed_optimizer)
    for n in range(3, 6):
        step(resumed, resumed_optimizer, n)
    for name, parameter in through.items():
        assert torch.equal(parameter, resumed[name])


def test_a_checkpoint_of_other_parameters_is_refused() -> None:
    parameters, optimizer = training(0)
    saved = checkpoints.capture(1, {"weight": parameters["weight"]}, optimizer)
    with pytest.raises(ValueError, match="not this training's"):
        checkpoints.restore(saved, parameters, optimizer)


def test_a_training_stores_under_its_uid() -> None:
    prefix = training_prefix("team", "ink", "u1")
    assert prefix == "team/trainings/ink/u1/"
    assert checkpoint_key("team", "ink", "u1", 100) == f"{prefix}checkpoints/000100.safetensors"
    assert validation_image_key("team", "ink", "u1", 100, 2) == f"{prefix}validation/000100/2.png"
    assert trained_lora_key("team", "ink-lora", "u1") == (
        "team/trainings/ink-lora/u1/ink-lora.safetensors"
    )
    # Checkpoint keys sort by step, up to the largest step a spec allows.
    assert checkpoint_key("t", "n", "u", 99999) < checkpoint_key("t", "n", "u", 100000)


def test_the_lora_file_is_the_same_bytes_for_the_same_training(tmp_path: Path) -> None:
    state = {"unet.a.lora.down.weight": torch.ones(2, 3), "unet.a.lora.up.weight": torch.zeros(3)}
    meta = {f"ss_key_{n}": str(n) for n in range(20)}
    data = output.lora_file(state, meta)
    assert output.lora_file(state, dict(reversed(meta.items()))) == data
    (tmp_path / "lora.safetensors").write_bytes(data)
    with safe_open(tmp_path / "lora.safetensors", framework="pt") as lora:
        assert lora.metadata() == meta
        assert torch.equal(lora.get_tensor("unet.a.lora.down.weight"), torch.ones(2, 3))
