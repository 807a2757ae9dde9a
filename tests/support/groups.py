"""pytest-xdist groups of tests that must not run at once in a parallel run (`make pytest`):
a group's tests run in one worker, one after another."""

import pytest

# Real diffusers on the CPU (a worker process, or torch in the test): two at once would
# share 2 cores with every other worker's processes and slow the whole run.
DIFFUSERS = pytest.mark.xdist_group("diffusers")
# Karpenter's NodePools and the nodes it makes are shared by the whole cluster: a test
# waiting for its node to be consolidated away must not see another test's pods on it.
KARPENTER = pytest.mark.xdist_group("karpenter")
