"""kd_loss: the Triton kernels against the torch reference, the reference against torch's own losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from augkd.errors import InputError
from augkd.kernels import kd_loss
from augkd.kernels.reference import KDLossClosedForm, kd_loss_torch

# (B, C): one class, a power of two, odd/prime sizes, more rows than one tile, wider than one tile of rows.
_SHAPES = [(1, 1), (4, 16), (41, 10), (37, 1001)]
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


def _run(backend, student, teacher, target=None, u=0.5, tau=1.0, reduction="mean", grad_out=None, grads=(0, 1)):
    """Forward and backward through kd_loss on fresh leaves; returns (loss, [grads of the requested inputs])."""
    s = student.detach().clone().requires_grad_(0 in grads)
    t = teacher.detach().clone().requires_grad_(1 in grads)
    loss = kd_loss(s, t, target, u=u, tau=tau, reduction=reduction, backend=backend)
    if grad_out is None:
        grad_out = torch.ones_like(loss)
    leaves = [x for i, x in enumerate((s, t)) if i in grads]
    return loss, list(torch.autograd.grad(loss, leaves, grad_out)) if leaves else []


def _compare(student, teacher, atol, rtol, grads=(0, 1), **kw):
    loss_ref, g_ref = _run("torch", student, teacher, grads=grads, **kw)
    loss_tri, g_tri = _run("triton", student, teacher, grads=grads, **kw)
    assert loss_tri.dtype == torch.float32
    torch.testing.assert_close(loss_tri, loss_ref, atol=atol, rtol=rtol)
    for a, b, x in zip(g_tri, g_ref, (student, teacher), strict=False):
        assert a.dtype == x.dtype
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@pytest.mark.interpret
@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize(*_DTYPES)
def test_kd_loss_matches_reference(shape, dtype, atol, rtol, device):
    b, c = shape
    student = (torch.randn(b, c, device=device) * 3).to(dtype)
    teacher = (torch.randn(b, c, device=device) * 3).to(dtype)
    target = torch.randint(0, c, (b,), device=device)
    _compare(student, teacher, atol, rtol, target=target, u=0.3, tau=2.0)


@pytest.mark.interpret
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kd_loss_grad_not_last(reduction, device):
    """A random upstream gradient (the loss feeds another op) for every reduction."""
    student, teacher = torch.randn(2, 33, 65, device=device)
    target = torch.randint(0, 65, (33,), device=device)
    shape = (33,) if reduction == "none" else ()
    grad_out = torch.randn(shape, device=device)
    _compare(student, teacher, 1e-5, 1e-5, target=target, u=0.5, tau=4.0, reduction=reduction, grad_out=grad_out)


@pytest.mark.interpret
def test_kd_loss_large_batch(device):
    """2048 x 65 (AuG-KD's Office-31 head size): many programs, several rows per program."""
    student, teacher = torch.randn(2, 2048, 65, device=device) * 2
    target = torch.randint(0, 65, (2048,), device=device)
    u = torch.rand(2048, device=device)
    _compare(student, teacher, 1e-5, 1e-5, target=target, u=u, tau=10.0)


@pytest.mark.interpret
@pytest.mark.parametrize("tau", [0.5, 1.0, 10.0])
def test_kd_loss_per_sample_u_and_tau(tau, device):
    student, teacher = torch.randn(2, 19, 31, device=device)
    target = torch.randint(0, 31, (19,), device=device)
    u = torch.rand(19, device=device)
    u[0], u[1] = 0.0, 1.0
    _compare(student, teacher, 1e-5, 1e-5, target=target, u=u, tau=tau)


@pytest.mark.interpret
def test_kd_loss_pure_kd_and_teacher_grad(device):
    """Module 1's generator loss -KL(T || S): gradients reach both the teacher and the student logits."""
    student, teacher = torch.randn(2, 24, 10, device=device) * 4
    for backend in ("torch", "triton"):
        s = student.clone().requires_grad_(True)
        t = teacher.clone().requires_grad_(True)
        (-kd_loss(s, t, None, u=0.0, tau=1.0, backend=backend)).backward()
        if backend == "torch":
            ref = (s.grad, t.grad)
        else:
            torch.testing.assert_close(s.grad, ref[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(t.grad, ref[1], atol=1e-5, rtol=1e-5)
    # The closed form of the docstring: d(τ² KL)/dt_j = τ p_j ((log p_j - log q_j) - KL), here with τ = 1.
    log_p, log_q = F.log_softmax(teacher, -1), F.log_softmax(student, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1, keepdim=True)
    closed = -(log_p.exp() * ((log_p - log_q) - kl)) / student.shape[0]
    torch.testing.assert_close(t.grad, closed, atol=1e-5, rtol=1e-5)


@pytest.mark.interpret
@pytest.mark.parametrize("which", [(0,), (1,)])
def test_kd_loss_one_input_requires_grad(which, device):
    """Only the student (the usual KD step) or only the teacher asks for a gradient."""
    student, teacher = torch.randn(2, 9, 12, device=device)
    target = torch.randint(0, 12, (9,), device=device)
    _compare(student, teacher, 1e-5, 1e-5, target=target, u=0.25, tau=3.0, grads=which)


@pytest.mark.interpret
@pytest.mark.parametrize(
    "case",
    ["all_equal", "huge", "one_class", "identical_rows"],
)
@pytest.mark.parametrize("tau", [1.0, 0.5, 10.0])
def test_kd_loss_edge_rows(case, tau, device):
    b, c = (6, 1) if case == "one_class" else (6, 37)
    if case == "all_equal":
        student = torch.full((b, c), 3.0, device=device)
        teacher = torch.zeros(b, c, device=device)
    elif case == "huge":
        student = torch.randint(0, 2, (b, c), device=device).float() * 2e4 - 1e4
        teacher = torch.randint(0, 2, (b, c), device=device).float() * 2e4 - 1e4
    else:
        student = torch.randn(b, c, device=device)
        teacher = student.clone()
    target = torch.randint(0, c, (b,), device=device)
    # ±1e4 logits: the gradients are O(100); compiled on a GPU, exp and FMA rounding give ~1.5e-5 relative error
    rtol = 1e-4 if case == "huge" else 1e-5
    _compare(student, teacher, 1e-4, rtol, target=target, u=0.5, tau=tau)
    loss, grads = _run("triton", student, teacher, target=target, u=0.5, tau=tau)
    assert torch.isfinite(loss).all() and all(torch.isfinite(g).all() for g in grads)


def test_kd_loss_edge_values_of_reference():
    """Known values: all-equal logits give CE = log C, zero KL; one class gives zero loss and gradients."""
    c = 37
    x = torch.zeros(5, c, requires_grad=True)
    target = torch.zeros(5, dtype=torch.long)
    loss = kd_loss_torch(x, torch.ones(5, c), target, u=0.25, tau=2.0)
    torch.testing.assert_close(loss, torch.tensor(0.25 * math.log(c)))
    one = torch.randn(5, 1, requires_grad=True)
    loss1 = kd_loss_torch(one, torch.randn(5, 1), target, u=0.5, tau=3.0)
    loss1.backward()
    assert loss1.item() == 0.0 and torch.count_nonzero(one.grad) == 0


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_loss_reference_equals_torch_losses(tau):
    """u=0: τ² · kl_div(batchmean); u=1: cross_entropy(mean); the definition 'mean = batchmean' holds."""
    student, teacher = torch.randn(2, 13, 7)
    target = torch.randint(0, 7, (13,))
    kl = F.kl_div(F.log_softmax(student / tau, -1), F.softmax(teacher / tau, -1), reduction="batchmean")
    torch.testing.assert_close(kd_loss_torch(student, teacher, None, u=0.0, tau=tau), tau**2 * kl)
    ce = F.cross_entropy(student, target)
    torch.testing.assert_close(kd_loss_torch(student, teacher, target, u=1.0, tau=tau), ce)
    mixed = kd_loss_torch(student, teacher, target, u=0.3, tau=tau, reduction="sum")
    torch.testing.assert_close(mixed, 13 * (0.3 * ce + 0.7 * tau**2 * kl))


@pytest.mark.interpret
def test_kd_loss_strided_and_mixed_dtype_inputs(device):
    """Row-strided views are read in place; student and teacher may have different float dtypes."""
    big = torch.randn(10, 80, device=device)
    student = big[:, :65]
    teacher = torch.randn(10, 65, device=device).to(torch.float16)
    target = torch.randint(0, 65, (10,), device=device)
    _compare(student, teacher, 1e-3, 1e-3, target=target, u=0.5, tau=2.0)


@pytest.mark.interpret
def test_kd_loss_out_of_range_target_is_nan_in_kernel(device):
    """The kernel never reads out of bounds: a bad target (not checked on CUDA) gives a NaN row, loudly."""
    from augkd.kernels.triton.kd_loss import kd_loss_launch

    student, teacher = torch.randn(2, 4, 5, device=device)
    target = torch.tensor([0, 5, 2, -1], device=device)
    u = torch.tensor(0.5, device=device)
    loss = kd_loss_launch(student, teacher, target, u, 1.0, "none")
    assert torch.isnan(loss[[1, 3]]).all() and torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"student": torch.randn(3, 4, 5)}, r"student must be 2-D \[B, C\] logits, got 3-D"),
        ({"teacher": torch.randn(3, 5)}, r"same shape, got \(3, 4\) and \(3, 5\)"),
        ({"target": torch.zeros(3)}, r"target must have dtype torch.int64.*got torch.float32"),
        ({"target": torch.zeros(2, dtype=torch.long)}, r"target must have shape \[B\]=\(3,\), got \(2,\)"),
        ({"target": torch.tensor([0, 1, 4])}, r"class indices in \[0, 3\], got values in \[0, 4\]"),
        ({"target": None, "u": 0.5}, r"u must be 0 when target is None"),
        ({"target": None, "u": torch.tensor([0.0, 0.0, 0.1])}, r"u must be 0 when target is None"),
        ({"u": torch.rand(4)}, r"u must be a 0-d tensor or have shape \[B\]=\(3,\), got shape \(4,\)"),
        ({"tau": 0.0}, r"tau must be a finite number > 0, got 0.0"),
        ({"reduction": "batchmean"}, r"reduction must be one of mean, sum, none, got 'batchmean'"),
        ({"student": torch.zeros(3, 4, dtype=torch.long)}, r"student must be a floating-point tensor"),
    ],
)
def test_kd_loss_bad_input(backend, kwargs, match):
    args = {"student": torch.randn(3, 4), "teacher": torch.randn(3, 4), "target": torch.tensor([0, 1, 3])}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        kd_loss(**args, backend=backend)


@pytest.mark.parametrize("with_target", [True, False])
@pytest.mark.parametrize("u_kind", ["float", "per_sample"])
def test_kd_loss_closed_form_matches_autograd(with_target, u_kind):
    """The torch.compile path of the reference (hand-written backward) against autograd of the plain formula."""
    student, teacher = torch.randn(2, 11, 7) * 3
    target = torch.randint(0, 7, (11,)) if with_target else None
    u = (torch.rand(11) if u_kind == "per_sample" else 0.4) if with_target else 0.0
    grad_rows = torch.randn(11)
    results = []
    for closed in (False, True):
        s, t = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
        if closed:
            rows = KDLossClosedForm.apply(s, t, target, u, 3.0)
        else:
            rows = kd_loss_torch(s, t, target, u=u, tau=3.0, reduction="none")
        results.append((rows, *torch.autograd.grad(rows, (s, t), grad_rows)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
