"""Test-wide setup. TRITON_INTERPRET must be set before any kernel module is imported."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_backend(request, monkeypatch):
    """Seed every test; outside tests/kernels, the fused ops use the torch reference (the interpreter is slow)."""
    torch.manual_seed(0)
    if "tests/kernels" not in str(request.node.fspath).replace(os.sep, "/"):
        monkeypatch.setenv("AUGKD_KERNEL_BACKEND", "torch")
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
