"""Fixtures of the test-model tests: one torch thread (the machine is shared, and two
threads contending for a busy core are many times slower than one)."""

from collections.abc import Iterator

import pytest
import torch

from hack.models.provision import LocalModel, local_model


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def tiny_sd15() -> LocalModel:
    return local_model("tiny-sd15")
