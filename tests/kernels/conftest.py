"""Fixtures for the kernel tests.

``TRITON_INTERPRET`` must be in the environment before any Triton kernel module is imported (Triton reads it
when a kernel is decorated), so it is set here, at conftest import, before the tests import anything.
Tests marked ``interpret`` run the Triton kernels: compiled on a CUDA device, under the interpreter on CPU.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


def _triton_skip_reason(device: str) -> str | None:
    from augkd.kernels._dispatch import interpret_mode, triton_import_error

    err = triton_import_error()
    if err is not None:
        return f"triton is not installed: {err}"
    if not device.startswith("cuda") and not interpret_mode():
        return "Triton kernels need CUDA or TRITON_INTERPRET=1 (set before import)"
    return None


@pytest.fixture(scope="session")
def device() -> str:
    """The device the kernel tests run on: ``AUGKD_TEST_DEVICE``, else CUDA when present, else CPU."""
    return os.environ.get("AUGKD_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seed_and_skip(request: pytest.FixtureRequest, device: str):
    """Seed the RNG for every test; skip ``interpret`` tests where the Triton kernels cannot run."""
    if request.node.get_closest_marker("interpret") is not None:
        reason = _triton_skip_reason(device)
        if reason is not None:
            pytest.skip(reason)
    torch.manual_seed(0)
    yield
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
