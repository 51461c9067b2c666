"""Microbenchmarks of the kernel ops: torch (eager reference), compile (torch.compile of it), triton, copy.

:func:`run_kernel_bench` returns tidy rows (one per op, provider, mode, metric and size) that
``benchmarks/bench_kernels.py`` writes to CSV/JSON and ``augkd bench kernels`` prints. Every provider runs
the public op with ``backend=<provider>``, so the timings include the same argument checks a user pays.

Providers:
    - ``torch``: the eager reference; ``compile``: ``torch.compile`` of the reference (compiled once per op,
      recompiled by torch for new shapes; compilation happens in the warm-up and is not timed);
    - ``triton``: the Triton kernels, only on CUDA (the CPU interpreter is never timed);
    - ``copy``: ``torch.Tensor.copy_`` of one image tensor, the bandwidth yardstick for ``fused_mixup``.

Modes: ``forward``; ``backward`` (the backward alone: each repetition runs a fresh, untimed forward, because a
compiled backward cannot be replayed with ``retain_graph``); ``full`` (forward + backward).

Compilation: by default the compiled code is dropped (``torch._dynamo.reset()``) whenever a size other than the
batch changes, so each class count / image size is compiled for static sizes, as in training.

Timing: on CUDA ``triton.testing.do_bench`` with quantiles [0.5, 0.2, 0.8] for forward/full, and CUDA events
around each backward for backward; on CPU a ``time.perf_counter`` loop after warm-up whose repetitions
alternate between the providers (so that load from other processes hits all providers alike), reporting the
median and the 20th/80th percentiles.

Bytes counted for GB/s (the minimum each op must move; e = bytes per element of the inputs, N = B·C or
B·C·H·W, rows = B):
    - ``kd_loss``: forward reads student and teacher (2·N·e) and the targets (8·rows); backward reads both
      logits and writes the student gradient (3·N·e); full = 5·N·e + 8·rows. The teacher needs no gradient
      here (the Module-3 case).
    - ``uncertainty``: forward reads the logits (N·e) and writes 4 float32 + 1 int64 per row (24·rows);
      backward reads the logits and writes their gradient (2·N·e); full = 3·N·e + 24·rows.
    - ``fused_mixup``: forward reads two images and writes one (3·N·e); backward reads the upstream
      gradient and writes two (3·N·e); full = 6·N·e. ``copy`` moves 2·N·e.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any

import torch

from . import fused_mixup, kd_loss, uncertainty
from ._dispatch import interpret_mode, triton_import_error

OPS = ("kd_loss", "uncertainty", "fused_mixup")
PROVIDERS = ("torch", "compile", "triton", "copy")
MODES = ("forward", "backward", "full")
ROW_FIELDS = (
    "op",
    "provider",
    "mode",
    "metric",
    "unit",
    "x_name",
    "x_value",
    "p50",
    "p20",
    "p80",
    "extra_config_json",
    "device_name",
    "torch_version",
    "triton_version",
    "augkd_version",
    "git_sha",
    "timestamp",
)

_BATCHES = (256, 1024, 2048, 4096)
_CLASSES = (10, 31, 65, 1000)
_IMAGE_BATCHES = {32: (256, 1024, 2048, 4096), 224: (64, 256, 1024, 2048)}
_IMAGE_BATCHES_CPU = {32: (256, 1024, 2048, 4096), 224: (16, 64)}
_QUICK_BATCHES, _QUICK_CLASSES, _QUICK_IMAGES = (256, 2048), (10, 65), {32: (256,), 224: (16,)}
_CPU_BUDGET_S = 1.0  # measured time per (case, provider) on CPU, spread over the repetitions
_KD_U, _KD_TAU = 0.5, 10.0  # AuG-KD Module 3: 0.5 CE + 0.5 τ² KL with τ = 10
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_UTC = timezone.utc  # noqa: UP017 -- datetime.UTC is Python 3.11+, augkd supports 3.10
_OP_PROVIDERS = ("torch", "compile", "triton")  # providers that run the op itself (copy is a yardstick)


@dataclass
class Case:
    """One benchmark case: an op at one size, with the callables each mode times."""

    op: str
    x_name: str
    x_value: int
    config: dict[str, Any]
    elems: int  # N, elements of one input
    rows: int
    element_size: int
    forward: dict[str, Callable[[], Any]] = field(default_factory=dict)  # provider -> forward callable
    leaves: list[torch.Tensor] = field(default_factory=list)
    grad_outputs: Callable[[Any], tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None


def _kd_case(b: int, c: int, device: str, dtype: torch.dtype) -> Case:
    student = torch.randn(b, c, device=device, dtype=dtype, requires_grad=True)
    teacher = torch.randn(b, c, device=device, dtype=dtype)
    target = torch.randint(0, c, (b,), device=device)
    cfg = {"B": b, "C": c, "dtype": str(dtype).replace("torch.", ""), "u": _KD_U, "tau": _KD_TAU, "teacher_grad": False}
    case = Case("kd_loss", "B", b, cfg, b * c, b, student.element_size(), leaves=[student])
    case.forward = {p: partial(kd_loss, student, teacher, target, _KD_U, _KD_TAU, backend=p) for p in _OP_PROVIDERS}
    case.grad_outputs = lambda loss: ([loss], [torch.ones_like(loss)])
    return case


def _uncertainty_case(b: int, c: int, device: str, dtype: torch.dtype) -> Case:
    logits = torch.randn(b, c, device=device, dtype=dtype, requires_grad=True)
    g_energy, g_entropy = torch.randn(2, b, device=device)
    cfg = {"B": b, "C": c, "dtype": str(dtype).replace("torch.", ""), "tau": 1.0, "grads": "energy,entropy"}
    case = Case("uncertainty", "B", b, cfg, b * c, b, logits.element_size(), leaves=[logits])
    case.forward = {p: partial(uncertainty, logits, 1.0, backend=p) for p in _OP_PROVIDERS}
    case.grad_outputs = lambda out: ([out.energy, out.entropy], [g_energy, g_entropy])
    return case


def _mixup_case(b: int, hw: int, device: str, dtype: torch.dtype) -> Case:
    shape = (b, 3, hw, hw)
    x_gen = torch.rand(shape, device=device, dtype=dtype, requires_grad=True)
    x_real = torch.rand(shape, device=device, dtype=dtype, requires_grad=True)
    s = torch.rand(b, device=device)
    grad_out = torch.randn(shape, device=device, dtype=dtype)
    cfg = {"B": b, "C": 3, "H": hw, "W": hw, "dtype": str(dtype).replace("torch.", ""), "s": "per-sample"}
    case = Case("fused_mixup", "B", b, cfg, x_gen.numel(), b, x_gen.element_size(), leaves=[x_gen, x_real])
    case.forward = {p: partial(fused_mixup, x_gen, x_real, s, _MEAN, _STD, backend=p) for p in _OP_PROVIDERS}
    dst = torch.empty_like(x_real, requires_grad=False)
    src = x_real.detach()
    case.forward["copy"] = lambda: dst.copy_(src)
    case.grad_outputs = lambda out: ([out], [grad_out])
    return case


def _cases(ops: Iterable[str], device: str, quick: bool, dtype: torch.dtype) -> Iterable[Case]:
    batches = _QUICK_BATCHES if quick else _BATCHES
    classes = _QUICK_CLASSES if quick else _CLASSES
    images = _QUICK_IMAGES if quick else (_IMAGE_BATCHES if device.startswith("cuda") else _IMAGE_BATCHES_CPU)
    for op in ops:
        if op in ("kd_loss", "uncertainty"):
            make = _kd_case if op == "kd_loss" else _uncertainty_case
            for c in classes:
                for b in batches:
                    yield make(b, c, device, dtype)
        elif op == "fused_mixup":
            for hw, bs in images.items():
                for b in bs:
                    yield _mixup_case(b, hw, device, dtype)


def _bytes(case: Case, mode: str, provider: str) -> int:
    n, e, rows = case.elems, case.element_size, case.rows
    if provider == "copy":
        return 2 * n * e
    if case.op == "kd_loss":
        return {"forward": 2 * n * e + 8 * rows, "backward": 3 * n * e, "full": 5 * n * e + 8 * rows}[mode]
    if case.op == "uncertainty":
        return {"forward": n * e + 24 * rows, "backward": 2 * n * e, "full": 3 * n * e + 24 * rows}[mode]
    return {"forward": 3 * n * e, "backward": 3 * n * e, "full": 6 * n * e}[mode]


def _step(case: Case, provider: str, mode: str) -> tuple[Callable[[], Any] | None, Callable[[], Any]]:
    """(untimed setup or None, timed callable) for one repetition of ``mode``."""
    fwd = case.forward[provider]
    grad_outputs = case.grad_outputs
    if mode == "forward" or grad_outputs is None:
        return None, fwd
    if mode == "full":

        def full() -> Any:
            outs, grads = grad_outputs(fwd())
            return torch.autograd.grad(outs, case.leaves, grads)

        return None, full
    state: dict[str, Any] = {}

    def setup() -> None:
        state["outs"], state["grads"] = grad_outputs(fwd())

    return setup, lambda: torch.autograd.grad(state["outs"], case.leaves, state["grads"])


def _quantiles(samples_ms: list[float]) -> tuple[float, float, float]:
    qs = statistics.quantiles(samples_ms, n=10, method="inclusive")  # deciles: qs[1] = p20, qs[7] = p80
    return statistics.median(samples_ms), qs[1], qs[7]


def _time_cpu_round_robin(steps: dict[str, tuple], budget_s: float) -> dict[str, tuple[float, float, float]]:
    """Median/p20/p80 in ms per provider; repetitions alternate between providers."""
    est = {}
    for name, (setup, fn) in steps.items():
        for _ in range(3):  # warm-up (compilation happens here)
            if setup:
                setup()
            t0 = time.perf_counter()
            fn()
            est[name] = time.perf_counter() - t0
    reps = max(10, min(200, int(budget_s / max(sum(est.values()), 1e-6))))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, (setup, fn) in steps.items():
            if setup:
                setup()
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: _quantiles(s) for name, s in samples.items()}


def _time_cuda(setup: Callable[[], Any] | None, fn: Callable[[], Any], leaves: list[torch.Tensor]):
    import triton.testing

    if setup is None:
        p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], grad_to_none=leaves)
        return p50, p20, p80
    for _ in range(5):
        setup()
        fn()
    samples = []
    for _ in range(100):
        setup()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return _quantiles(samples)


def environment(device: str) -> dict[str, Any]:
    """Versions, device and machine facts recorded with every row (and in the JSON sidecar)."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "n/a"
    try:
        from importlib.metadata import version

        augkd_version = version("augkd")
    except Exception:
        augkd_version = "unknown"
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except Exception:
        sha = "unknown"
    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = f"{_cpu_model()} ({torch.get_num_threads()} threads)"
    return {
        "device_name": device_name,
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "augkd_version": augkd_version,
        "git_sha": sha,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _providers_for(device: str, requested: Iterable[str] | None) -> list[str]:
    wanted = list(requested) if requested is not None else list(PROVIDERS)
    unknown = sorted(set(wanted) - set(PROVIDERS))
    if unknown:
        from augkd.errors import ConfigError

        raise ConfigError(f"unknown bench provider(s) {unknown}; expected some of {list(PROVIDERS)}")
    can_triton = device.startswith("cuda") and triton_import_error() is None and not interpret_mode()
    return [p for p in wanted if p != "triton" or can_triton]


def run_kernel_bench(
    ops: Iterable[str] | None = None,
    providers: Iterable[str] | None = None,
    modes: Iterable[str] | None = None,
    device: str | None = None,
    quick: bool = False,
    dtype: torch.dtype = torch.float32,
    fresh_compile: bool = True,
) -> list[dict[str, Any]]:
    """Time the kernel ops and return tidy rows (see :data:`ROW_FIELDS`).

    Args:
        ops: Subset of :data:`OPS` (default all).
        providers: Subset of :data:`PROVIDERS` (default all; ``triton`` is dropped off CUDA or under the
            interpreter, ``copy`` applies to ``fused_mixup`` forward only).
        modes: Subset of :data:`MODES` (default all).
        device: "cuda", "cuda:1", "cpu"... (default: CUDA when present, else CPU).
        quick: A few small sizes only (seconds per op on CPU, apart from compilation).
        dtype: Input dtype.
        fresh_compile: Reset ``torch._dynamo`` (which drops every compiled function in this process) whenever
            the sizes other than the batch change, so that the compile provider is measured with those sizes
            static, as in a training run (C and the image size are fixed there), instead of with the
            shape-generic code that Dynamo switches to after seeing several class counts.

    Returns:
        For each (op, size, provider, mode): a ``time`` row (ms) and a ``bandwidth`` row (GB/s, from the byte
        counts in this module's docstring; its p20/p80 come from the p80/p20 times).

    Raises:
        ConfigError: an unknown op, provider or mode.
    """
    from augkd.errors import ConfigError

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ops = list(ops) if ops is not None else list(OPS)
    modes = list(modes) if modes is not None else list(MODES)
    for kind, values, valid in (("op", ops, OPS), ("mode", modes, MODES)):
        bad = sorted(set(values) - set(valid))
        if bad:
            raise ConfigError(f"unknown bench {kind}(s) {bad}; expected some of {list(valid)}")
    providers = _providers_for(device, providers)
    env = environment(device)
    rows: list[dict[str, Any]] = []
    group: tuple | None = None
    for case in _cases(ops, device, quick, dtype):
        shape_group = (case.op, *sorted((k, v) for k, v in case.config.items() if k != case.x_name))
        if "compile" in providers and fresh_compile and shape_group != group:
            _reset_compiled()
        group = shape_group
        for mode in modes:
            names = [p for p in providers if p in case.forward and (p != "copy" or mode == "forward")]
            steps = {p: _step(case, p, mode) for p in names}
            if device.startswith("cuda"):
                timings = {p: _time_cuda(*steps[p], case.leaves) for p in names}
            else:
                timings = _time_cpu_round_robin(steps, _CPU_BUDGET_S / 4 if quick else _CPU_BUDGET_S)
            for p in names:
                rows.extend(_rows_for(case, p, mode, timings[p], env))
    return rows


def _reset_compiled() -> None:
    """Forget compiled code: the next COMPILE call traces and compiles for the shapes it sees."""
    from ._dispatch import _COMPILED

    _COMPILED.clear()
    torch._dynamo.reset()


def _rows_for(case: Case, provider: str, mode: str, t: tuple[float, float, float], env: dict) -> list[dict]:
    p50, p20, p80 = t
    gb = _bytes(case, mode, provider) / 1e9
    base = {
        "op": case.op,
        "provider": provider,
        "mode": mode,
        "x_name": case.x_name,
        "x_value": case.x_value,
        "extra_config_json": json.dumps(case.config, sort_keys=True),
        **env,
        "timestamp": datetime.now(_UTC).isoformat(timespec="seconds"),
    }
    time_row = {**base, "metric": "time", "unit": "ms", "p50": p50, "p20": p20, "p80": p80}
    bw_row = {**base, "metric": "bandwidth", "unit": "GB/s", "p50": gb / (p50 / 1e3)}
    bw_row.update({"p20": gb / (p80 / 1e3), "p80": gb / (p20 / 1e3)})
    return [{k: r[k] for k in ROW_FIELDS} for r in (time_row, bw_row)]
