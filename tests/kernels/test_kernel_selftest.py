"""run_selftest: in-process rows, the TRITON_INTERPRET child process, skipped rows, and a detected failure."""

import pytest
import torch

from augkd.kernels import selftest

_KEYS = {"op", "device", "dtype", "check", "max_abs_err", "tol", "passed", "ms_triton", "ms_torch", "note"}
_N_ROWS = 4 * 2 * 2  # ops x dtypes x (forward, backward)


@pytest.mark.interpret
def test_selftest_in_process_passes(device):
    rows = selftest.run_selftest([device])
    assert len(rows) == _N_ROWS
    assert all(_KEYS <= row.keys() for row in rows)
    failed = [r for r in rows if r["status"] != "passed"]
    assert not failed, selftest.format_table(failed)
    assert {r["op"] for r in rows} == {"kd_loss", "uncertainty", "fused_mixup", "latent_mix"}


@pytest.mark.interpret
def test_selftest_reports_a_wrong_kernel(monkeypatch, device):
    """A Triton result that is off by 1e-3 must show up as failed rows (the check can fail)."""
    real = selftest._OPS["latent_mix"]

    def broken(*args, backend, **kw):
        out = real(*args, backend=backend, **kw)
        return out + 1e-3 if backend == "triton" else out

    monkeypatch.setitem(selftest._OPS, "latent_mix", broken)
    monkeypatch.setattr(selftest, "_TOL", {torch.float32: selftest._TOL[torch.float32]})  # one dtype is enough
    rows = selftest._run_here(device)
    status = {(r["op"], r["check"]): r["status"] for r in rows}
    assert status[("latent_mix", "forward")] == "failed"
    assert status[("kd_loss", "forward")] == "passed"


@pytest.mark.interpret  # the child process runs the kernels under the interpreter
def test_selftest_cpu_without_interpreter(monkeypatch):
    """Without TRITON_INTERPRET in this process: skipped rows, or the rows of a child process that has it."""
    monkeypatch.setattr(selftest, "interpret_mode", lambda: False)
    monkeypatch.setattr(selftest, "triton_import_error", lambda: None)
    skipped = selftest.run_selftest(["cpu"], use_subprocess=False)
    assert len(skipped) == _N_ROWS
    assert all(r["status"] == "skipped" and r["passed"] is None and "TRITON_INTERPRET" in r["note"] for r in skipped)
    child = selftest.run_selftest(["cpu"])
    assert len(child) == _N_ROWS
    assert all(r["status"] == "passed" for r in child), selftest.format_table(child)


def test_selftest_without_triton(monkeypatch):
    monkeypatch.setattr(selftest, "triton_import_error", lambda: "ModuleNotFoundError: No module named 'triton'")
    rows = selftest.run_selftest(["cpu"])
    assert all(r["status"] == "skipped" and "triton is not installed" in r["note"] for r in rows)
