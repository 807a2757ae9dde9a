"""One torch thread for tests that run the tiny models in the test process: the machine
is shared, and two threads contending for a busy core are many times slower than one.
A conftest imports `one_torch_thread` to apply it to its package."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
