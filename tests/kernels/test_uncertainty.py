"""uncertainty: the Triton kernels against the torch reference, the reference against torch built-ins."""

import math

import pytest
import torch

from augkd.errors import InputError
from augkd.kernels import Uncertainty, uncertainty
from augkd.kernels.reference import uncertainty_torch

_SHAPES = [(1, 1), (8, 64), (41, 10), (37, 1001)]
# bf16 runs on CPU (interpreter) and on GPUs with bf16 support (sm80+); bf16 results round once more, so the
# tolerances are relative (the interpreter also truncates fp32 -> bf16 where GPUs round to nearest).
_SKIP_BF16 = pytest.mark.skipif(
    torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="this GPU has no bf16 support"
)
_DTYPES = (
    "dtype, atol, rtol",
    [
        (torch.float32, 1e-5, 1e-5),
        (torch.float16, 1e-3, 1e-3),
        pytest.param(torch.bfloat16, 1e-2, 5e-2, id="bfloat16", marks=_SKIP_BF16),
    ],
)
_FLOAT_FIELDS = ("lse", "energy", "entropy", "max_prob")


def _run(backend, logits, tau=1.0, weights=None, used=_FLOAT_FIELDS):
    """Forward, then backward of Σ_k Σ_i w_k,i · out_k,i over the ``used`` outputs (others get no gradient)."""
    x = logits.detach().clone().requires_grad_(True)
    out = uncertainty(x, tau, backend=backend)
    total = sum((getattr(out, k) * weights[k]).sum() for k in used)
    (grad,) = torch.autograd.grad(total, x)
    return out, grad


def _compare(logits, atol, rtol, tau=1.0, used=_FLOAT_FIELDS):
    b = logits.shape[0]
    weights = {k: torch.randn(b, device=logits.device) for k in _FLOAT_FIELDS}
    ref, g_ref = _run("torch", logits, tau, weights, used)
    tri, g_tri = _run("triton", logits, tau, weights, used)
    assert isinstance(tri, Uncertainty)
    for k in _FLOAT_FIELDS:
        assert getattr(tri, k).dtype == torch.float32
        torch.testing.assert_close(getattr(tri, k), getattr(ref, k), atol=atol, rtol=rtol, msg=k)
    assert tri.argmax.dtype == torch.int64
    torch.testing.assert_close(tri.argmax, ref.argmax)
    assert g_tri.dtype == logits.dtype
    torch.testing.assert_close(g_tri, g_ref, atol=atol, rtol=rtol)


@pytest.mark.interpret
@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize(*_DTYPES)
def test_uncertainty_matches_reference(shape, dtype, atol, rtol, device):
    logits = (torch.randn(*shape, device=device) * 3).to(dtype)
    _compare(logits, atol, rtol, tau=1.5)


@pytest.mark.interpret
def test_uncertainty_large_batch(device):
    """2048 x 65, float32 only (many rows per program; one dtype is enough under the interpreter)."""
    _compare(torch.randn(2048, 65, device=device) * 3, 1e-5, 1e-5, tau=1.0)


@pytest.mark.interpret
@pytest.mark.parametrize("used", [("energy",), ("entropy",), ("max_prob",), ("lse", "entropy")])
def test_uncertainty_grad_of_some_outputs(used, device):
    """Unused outputs get no upstream gradient (None): their terms are skipped, the rest still match."""
    _compare(torch.randn(13, 29, device=device), 1e-5, 1e-5, tau=2.0, used=used)


@pytest.mark.interpret
@pytest.mark.parametrize("case", ["all_equal", "huge", "one_class", "ties"])
@pytest.mark.parametrize("tau", [1.0, 0.5, 10.0])
def test_uncertainty_edge_rows(case, tau, device):
    if case == "all_equal":
        logits = torch.full((5, 37), -2.0, device=device)
    elif case == "huge":
        logits = torch.randint(0, 3, (5, 37), device=device).float() * 1e4 - 1e4
    elif case == "one_class":
        logits = torch.randn(5, 1, device=device)
    else:
        logits = torch.randint(0, 3, (5, 37), device=device).float()  # many tied maxima per row
    # For |z| ~ 1e4 the reference's own autograd is the less accurate side: logsumexp's backward takes
    # exp(z - lse) with lse rounded at 1e4 (fp32 ulp ~1e-3), a relative error of about 1e-3 in p. The kernel
    # works with z - max z (exact) and log S; test_uncertainty_huge_logits_against_float64 checks it tightly.
    atol = 2e-3 / tau if case == "huge" else 1e-4
    _compare(logits, atol, 1e-5, tau=tau)
    out, grad = _run("triton", logits, tau, {k: torch.ones(5, device=device) for k in _FLOAT_FIELDS})
    assert all(torch.isfinite(getattr(out, k)).all() for k in _FLOAT_FIELDS) and torch.isfinite(grad).all()


@pytest.mark.interpret
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_uncertainty_huge_logits_against_float64(tau, device):
    """With logits of ±1e4 the kernel matches a float64 computation to 1e-5 (forward and gradient)."""
    logits = torch.randint(0, 3, (6, 37), device=device).float() * 1e4 - 1e4
    w = torch.randn(4, 6, device=device, dtype=torch.float64)
    x64 = logits.double().requires_grad_(True)
    lse = torch.logsumexp(x64 / tau, -1)
    p = torch.softmax(x64 / tau, -1)
    ent = -(p * torch.log_softmax(x64 / tau, -1)).sum(-1)
    mp = p.max(-1).values
    (g64,) = torch.autograd.grad((w[0] * lse - w[1] * tau * lse + w[2] * ent + w[3] * mp).sum(), x64)
    x = logits.clone().requires_grad_(True)
    out = uncertainty(x, tau, backend="triton")
    total = (w[0] * out.lse + w[1] * out.energy + w[2] * out.entropy + w[3] * out.max_prob).sum()
    (g,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(out.lse.double(), lse.detach(), atol=0, rtol=1e-7)
    torch.testing.assert_close(out.entropy.double(), ent.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g.double(), g64, atol=1e-5, rtol=1e-5)


def test_uncertainty_reference_against_torch_builtins():
    """Energy = -τ·logsumexp(x/τ); entropy = Categorical entropy; known values for all-equal rows."""
    x = torch.randn(11, 23) * 4
    tau = 2.5
    out = uncertainty_torch(x, tau)
    torch.testing.assert_close(out.energy, -tau * torch.logsumexp(x / tau, -1))
    dist = torch.distributions.Categorical(logits=x / tau)
    torch.testing.assert_close(out.entropy, dist.entropy())
    torch.testing.assert_close(out.max_prob, dist.probs.max(-1).values)
    torch.testing.assert_close(out.argmax, x.argmax(-1))
    flat = uncertainty_torch(torch.zeros(2, 37))
    torch.testing.assert_close(flat.entropy, torch.full((2,), math.log(37)))
    torch.testing.assert_close(flat.max_prob, torch.full((2,), 1 / 37))
    assert flat.argmax.tolist() == [0, 0]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize(
    "logits, tau, match",
    [
        (torch.randn(5), 1.0, r"logits must be 2-D \[B, C\], got 1-D with shape \(5,\)"),
        (torch.zeros(0, 4), 1.0, r"logits must not be empty, got shape \(0, 4\)"),
        (torch.zeros(3, 4, dtype=torch.int32), 1.0, r"logits must be a floating-point tensor, got dtype torch.int32"),
        (torch.randn(3, 4), -1.0, r"tau must be a finite number > 0, got -1.0"),
        ([[1.0, 2.0]], 1.0, r"logits must be a torch.Tensor \[B, C\], got list"),
    ],
)
def test_uncertainty_bad_input(backend, logits, tau, match):
    with pytest.raises(InputError, match=match):
        uncertainty(logits, tau, backend=backend)
