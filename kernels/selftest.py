"""Self-test of the Triton kernels against the torch references, for ``augkd doctor --selftest``.

:func:`run_selftest` runs every op forward and backward on small shapes, on each device: CUDA (compiled
kernels) when present, and the CPU through the Triton interpreter. Triton reads ``TRITON_INTERPRET`` when
the kernel modules are imported, so when this process was not started with it, the CPU rows come from a
child process ``python -m augkd.kernels.selftest --json --device cpu`` run with ``TRITON_INTERPRET=1``.

Run from a shell::

    python -m augkd.kernels.selftest            # a table
    python -m augkd.kernels.selftest --json     # the rows as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from ._dispatch import interpret_mode, triton_import_error
from ._ops import fused_mixup, kd_loss, latent_mix, uncertainty

Row = dict[str, Any]
_FIELDS = ("op", "device", "dtype", "check", "max_abs_err", "tol", "passed", "ms_triton", "ms_torch", "note")
# Tolerances (atol, rtol) per input dtype: a check passes when |triton - torch| <= atol + rtol * |torch| everywhere.
# bf16 needs a relative term: a bf16 output is rounded once, and the Triton *interpreter* (3.8) converts fp32 to bf16
# by truncation where torch rounds to nearest, so outputs may differ by one bf16 ulp (up to 2**-7 relative).
_TOL = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (1e-2, 1e-2)}
_CHILD_TIMEOUT_S = 300


def _case_inputs(op: str, device: str, dtype: torch.dtype, gen: torch.Generator) -> tuple[list[torch.Tensor], dict]:
    """Differentiable inputs and fixed keyword arguments of one op's test case (small shapes)."""

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    if op == "kd_loss":
        target = torch.randint(0, 10, (64,), generator=gen).to(device)
        return [rand(64, 10, scale=3), rand(64, 10, scale=3)], {"target": target, "u": 0.5, "tau": 4.0}
    if op == "uncertainty":
        return [rand(64, 31, scale=3)], {"tau": 1.0}
    if op == "fused_mixup":
        s = torch.rand(4, generator=gen).to(device)
        stats = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        return [rand(4, 3, 32, 32), rand(4, 3, 32, 32)], {"s": s, **stats}
    return [rand(64, 100), rand(64, 100)], {"s": torch.rand(64, generator=gen).to(device)}  # latent_mix


_OPS: dict[str, Callable[..., Any]] = {
    "kd_loss": kd_loss,
    "uncertainty": lambda x, backend, **kw: torch.stack(uncertainty(x, backend=backend, **kw)[:4]),
    "fused_mixup": fused_mixup,
    "latent_mix": latent_mix,
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _fwd_bwd(op: str, inputs: list[torch.Tensor], kwargs: dict, backend: str, device: str, weight: torch.Tensor):
    """Forward and backward of Σ weight · op(...); returns (output, gradients, ms forward, ms forward+backward)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    _sync(device)
    t0 = time.perf_counter()
    out = _OPS[op](*leaves, backend=backend, **kwargs)
    _sync(device)
    t1 = time.perf_counter()
    grads = torch.autograd.grad((out.float() * weight).sum(), leaves)
    _sync(device)
    t2 = time.perf_counter()
    return out.detach().float(), [g.float() for g in grads], (t1 - t0) * 1e3, (t2 - t0) * 1e3


def _check_op(op: str, device: str, dtype: torch.dtype) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    inputs, kwargs = _case_inputs(op, device, dtype, gen)
    out_ref, _, _, _ = _fwd_bwd(op, inputs, kwargs, "torch", device, torch.tensor(1.0, device=device))
    weight = torch.randn(out_ref.shape, generator=gen).to(device)  # a non-unit upstream gradient
    _fwd_bwd(op, inputs, kwargs, "triton", device, weight)  # warm-up: compiles (or interprets) once
    out_tri, g_tri, ms_tri_f, ms_tri_fb = _fwd_bwd(op, inputs, kwargs, "triton", device, weight)
    out_ref, g_ref, ms_ref_f, ms_ref_fb = _fwd_bwd(op, inputs, kwargs, "torch", device, weight)
    atol, rtol = _TOL[dtype]
    note = "ms_triton is the CPU interpreter: not a speed figure" if not device.startswith("cuda") else ""
    rows = []
    for check, pairs, ms_t, ms_r in (
        ("forward", [(out_tri, out_ref)], ms_tri_f, ms_ref_f),
        ("backward", list(zip(g_tri, g_ref, strict=True)), ms_tri_fb, ms_ref_fb),
    ):
        err = max((a - b).abs().max().item() for a, b in pairs)
        ok = all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in pairs)  # NaN fails
        rows.append(_row(op, device, dtype, check, err, atol, ok, ms_t, ms_r, note, rtol))
    return rows


def _row(op, device, dtype, check, err, tol, passed, ms_triton, ms_torch, note, rtol) -> Row:
    status = "skipped" if passed is None else "passed" if passed else "failed"
    values = (op, device, str(dtype).replace("torch.", ""), check, err, tol, passed, ms_triton, ms_torch, note)
    return {**dict(zip(_FIELDS, values, strict=True)), "rtol": rtol, "status": status}


def _rows_without_result(device: str, reason: str, passed: bool | None, dtypes=None, ops=None) -> list[Row]:
    return [
        _row(op, device, dtype, check, None, *_TOL[dtype][:1], passed, None, None, reason, _TOL[dtype][1])
        for op in ops or _OPS
        for dtype in dtypes or _TOL
        for check in ("forward", "backward")
    ]


def _skipped(device: str, reason: str) -> list[Row]:
    return _rows_without_result(device, reason, None)


def _run_here(device: str) -> list[Row]:
    rows: list[Row] = []
    for op in _OPS:
        for dtype in _TOL:
            try:
                rows.extend(_check_op(op, device, dtype))
            except Exception as exc:  # report the failure as a row; the self-test itself must not crash
                msg = f"error: {type(exc).__name__}: {exc}"
                rows.extend(_rows_without_result(device, msg, False, dtypes=[dtype], ops=[op]))
    return rows


def _run_child(device: str) -> list[Row]:
    """The CPU rows from a child process started with TRITON_INTERPRET=1."""
    cmd = [sys.executable, "-m", "augkd.kernels.selftest", "--json", "--device", device]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=_CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return _skipped(device, f"skipped: the interpreter child process took over {_CHILD_TIMEOUT_S} s")
    try:  # exit status 1 only means that a check failed: the rows are still on stdout
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return _skipped(device, f"skipped: the interpreter child process failed ({tail})")


def run_selftest(devices: list[str] | None = None, *, use_subprocess: bool = True) -> list[Row]:
    """Check every Triton kernel against its torch reference, forward and backward, on each device.

    Args:
        devices: Devices to test, e.g. ``["cuda", "cpu"]``. Default: CUDA when present, and the CPU.
        use_subprocess: On CPU without ``TRITON_INTERPRET=1`` in this process, run the CPU rows in a child
            process with it set (about 10-30 s); when False, report them as skipped.

    Returns:
        One row per (op, device, dtype, check) with keys ``op, device, dtype, check ("forward"/"backward"),
        max_abs_err, tol, passed, ms_triton, ms_torch, note`` plus ``rtol`` and ``status`` ("passed",
        "failed" or "skipped"; ``passed`` is None when skipped). A check passes when
        ``|triton - torch| <= tol + rtol * |torch|`` for every element of the output (forward) or of every
        input gradient (backward, with a random upstream gradient). ``ms_*`` are single-call wall times
        after one warm-up; on CPU ``ms_triton`` times the interpreter.
    """
    if devices is None:
        devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    rows: list[Row] = []
    err = triton_import_error()
    for device in devices:
        if err is not None:
            rows.extend(_skipped(device, f"skipped: triton is not installed ({err})"))
        elif device.startswith("cuda") or interpret_mode():
            rows.extend(_run_here(device))
        elif use_subprocess:
            rows.extend(_run_child(device))
        else:
            rows.extend(_skipped(device, "skipped: no CUDA and TRITON_INTERPRET=1 is not set"))
    return rows


def format_table(rows: list[Row]) -> str:
    """A plain-text table of self-test rows."""
    fmt = "{:<12} {:<6} {:<9} {:<8} {:>11} {:>7} {:>7} {:<7} {}"
    out = [fmt.format("op", "device", "dtype", "check", "max_abs_err", "tol", "rtol", "status", "note")]
    for r in rows:
        err = "-" if r["max_abs_err"] is None else f"{r['max_abs_err']:.2e}"
        cells = (r["op"], r["device"], r["dtype"], r["check"], err, f"{r['tol']:.0e}", f"{r['rtol']:.0e}")
        out.append(fmt.format(*cells, r["status"], r["note"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit status 1 when a check failed."""
    parser = argparse.ArgumentParser(prog="python -m augkd.kernels.selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--device", action="append", help="device to test (repeatable); default: cuda if present, cpu")
    args = parser.parse_args(argv)
    rows = run_selftest(args.device)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return int(any(r["passed"] is False for r in rows))


if __name__ == "__main__":
    sys.exit(main())
