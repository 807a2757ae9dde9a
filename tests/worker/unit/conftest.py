"""Fixtures of the worker's unit tests: one torch thread for those that run the tiny
models in this process."""

from tests.support.torch_threads import one_torch_thread

__all__ = ["one_torch_thread"]
