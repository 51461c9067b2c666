"""Backend dispatch: precedence, AUTO fallback, explicit-TRITON errors, export/tracing, COMPILE parity, imports."""

import os
import subprocess
import sys

import pytest
import torch

import augkd.kernels as K
from augkd.errors import ConfigError, KernelUnavailableError
from augkd.kernels import Backend, _dispatch, _ops, resolve_backend


@pytest.fixture
def no_interpret(monkeypatch):
    """Pretend the kernels were not built for the interpreter (the env var is read at kernel import)."""
    monkeypatch.setattr(_dispatch, "interpret_mode", lambda: False)
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)


@pytest.fixture
def with_interpret(monkeypatch):
    monkeypatch.setattr(_dispatch, "interpret_mode", lambda: True)
    monkeypatch.setattr(_dispatch, "triton_import_error", lambda: None)
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)


def test_auto_on_cpu_without_interpreter_is_torch(no_interpret):
    x = torch.randn(2, 3)
    assert resolve_backend(None, x) is Backend.TORCH
    assert resolve_backend("auto", x) is Backend.TORCH
    assert Backend.TRITON not in K.available_backends("cpu")


def test_auto_with_interpreter_is_triton(with_interpret):
    assert resolve_backend(None, torch.randn(2, 3)) is Backend.TRITON
    assert K.available_backends("cpu")[0] is Backend.TRITON


def test_explicit_triton_on_cpu_without_interpreter_raises(no_interpret):
    with pytest.raises(KernelUnavailableError, match=r"tensor on cpu; set TRITON_INTERPRET=1 before importing augkd"):
        resolve_backend("triton", torch.randn(2, 3))
    with pytest.raises(KernelUnavailableError, match="or use backend torch"):
        K.kd_loss(torch.randn(2, 3), torch.randn(2, 3), u=0.0, backend=Backend.TRITON)


def test_triton_missing(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_import_error", lambda: "ModuleNotFoundError: No module named 'triton'")
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    with pytest.raises(KernelUnavailableError, match=r"triton is not installed: ModuleNotFoundError"):
        resolve_backend("triton", torch.randn(2))
    assert resolve_backend("auto", torch.randn(2)) is Backend.TORCH


def test_precedence_argument_context_env(monkeypatch, with_interpret):
    x = torch.randn(2, 3)
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "compile")
    assert resolve_backend(None, x) is Backend.COMPILE
    with K.use_backend("torch"):
        assert resolve_backend(None, x) is Backend.TORCH
        assert resolve_backend("triton", x) is Backend.TRITON  # the argument wins
    assert resolve_backend(None, x) is Backend.COMPILE
    K.set_backend("torch")
    try:
        assert resolve_backend(None, x) is Backend.TORCH
    finally:
        K.set_backend(None)
    assert resolve_backend(None, x) is Backend.COMPILE


def test_invalid_backend_names(monkeypatch):
    expected = r"unknown kernel backend 'cuda'; expected one of: auto, triton, torch, compile"
    with pytest.raises(ConfigError, match=expected):
        resolve_backend("cuda", torch.randn(2))
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "fast")
    with pytest.raises(ConfigError, match=r"unknown kernel backend 'fast'"):
        resolve_backend(None, torch.randn(2))
    assert resolve_backend("TORCH", torch.randn(2)) is Backend.TORCH  # case-insensitive


@pytest.mark.parametrize(
    "owner, name",
    [(torch.onnx, "is_in_onnx_export"), (torch.compiler, "is_exporting"), (torch.jit, "is_tracing")],
)
def test_export_forces_torch_over_explicit_triton(monkeypatch, with_interpret, owner, name):
    monkeypatch.setattr(owner, name, lambda: True)
    assert resolve_backend("triton", torch.randn(2)) is Backend.TORCH
    assert resolve_backend("auto", torch.randn(2)) is Backend.TORCH


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the input checks compare traced shapes
def test_jit_trace_records_the_reference(device):
    """Under torch.jit.trace an explicit triton request still traces plain aten ops (no Python autograd op).

    On ``device`` (CUDA when present): the eager calls outside the trace then run the compiled kernel, which CPU
    tensors could only do under the interpreter. ``check_trace`` is off because it re-runs the function eagerly,
    that is through the Triton kernel, and compares at a tighter tolerance than the kernel is held to.
    """
    student, teacher = torch.randn(2, 4, 6, device=device)
    traced = torch.jit.trace(
        lambda s, t: K.kd_loss(s, t, u=0.0, tau=2.0, backend="triton"), (student, teacher), check_trace=False
    )
    graph = str(traced.graph)
    assert "log_softmax" in graph and "PythonOp" not in graph
    torch.testing.assert_close(traced(student, teacher), K.kd_loss(student, teacher, u=0.0, tau=2.0, backend="torch"))


def test_torch_export_records_the_reference(device):
    """torch.export sets torch.compiler.is_exporting(): the exported program holds aten ops only."""

    class Head(torch.nn.Module):
        def forward(self, s, t):
            return K.uncertainty(s, 2.0, backend="triton").energy + K.kd_loss(s, t, u=0.0, backend="triton")

    student, teacher = torch.randn(2, 3, 5, device=device)
    program = torch.export.export(Head(), (student, teacher))
    graph = str(program.graph)
    assert "logsumexp" in graph and "triton" not in graph.lower()
    torch.testing.assert_close(program.module()(student, teacher), Head()(student, teacher))


def test_too_many_classes_falls_back_or_raises(monkeypatch, with_interpret):
    monkeypatch.setattr(_ops, "MAX_FUSED_COLS", 8)
    x = torch.randn(2, 9)
    out = K.uncertainty(x)  # AUTO: silently the reference
    torch.testing.assert_close(out.lse, torch.logsumexp(x, -1))
    with pytest.raises(KernelUnavailableError, match=r"9 classes exceed the 8"):
        K.uncertainty(x, backend="triton")


@pytest.mark.interpret
def test_auto_runs_triton_under_interpreter(monkeypatch, device):
    """AUTO picks the Triton kernels where they can run: the autograd graph holds our Function."""
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    s = torch.randn(4, 5, device=device, requires_grad=True)
    loss = K.kd_loss(s, torch.randn(4, 5, device=device), u=0.0)
    assert "KDLossFunction" in type(loss.grad_fn).__name__


@pytest.mark.slow  # compiling forward and backward takes 15-30 s on a 2-core CPU
def test_compile_matches_torch_on_cpu():
    """COMPILE (torch.compile of the reference, built once and cached) gives the eager reference's numbers."""
    student, teacher = torch.randn(2, 16, 10)
    target = torch.randint(0, 10, (16,))
    u = torch.rand(16)
    grads = {}
    for backend in ("torch", "compile"):
        s = student.clone().requires_grad_(True)
        t = teacher.clone().requires_grad_(True)
        loss = K.kd_loss(s, t, target, u=u, tau=4.0, backend=backend)
        loss.backward()
        grads[backend] = (loss.detach(), s.grad, t.grad)
    for a, b in zip(grads["compile"], grads["torch"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert "kd_loss" in _dispatch._COMPILED


def test_import_is_light():
    """`import augkd.kernels` imports neither triton nor the Triton modules and does not initialise CUDA."""
    code = (
        "import sys, torch, augkd.kernels as K; "
        "print(int('triton' in sys.modules), int('augkd.kernels.triton' in sys.modules), "
        "int(torch.cuda.is_initialized()), int(callable(K.run_selftest)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "0", "0", "1"]
