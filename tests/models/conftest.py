"""Fixtures of the test-model tests: one torch thread (tests/support/torch_threads.py)."""

import pytest

from hack.models.provision import LocalModel, local_model
from tests.support.torch_threads import one_torch_thread

__all__ = ["one_torch_thread"]


@pytest.fixture(scope="package")
def tiny_sd15() -> LocalModel:
    return local_model("tiny-sd15")
