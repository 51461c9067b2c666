"""fused_mixup and latent_mix: the Triton kernels against the torch reference."""

import pytest
import torch

from augkd.errors import InputError
from augkd.kernels import fused_mixup, latent_mix
from augkd.kernels.reference import fused_mixup_torch

_IMAGE_SHAPES = [(1, 1, 1, 1), (3, 3, 32, 32), (2, 3, 7, 45)]  # tiny, CIFAR-sized, odd (315 px, one block)
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
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet n(.)


def _s_value(kind, b, device):
    if kind == "float":
        return 0.3
    if kind == "0d":
        return torch.tensor(0.7, device=device)
    return torch.rand(b, device=device)


def _run(fn, a, b, grad_out, need=(True, True), **kw):
    xa = a.detach().clone().requires_grad_(need[0])
    xb = b.detach().clone().requires_grad_(need[1])
    out = fn(xa, xb, **kw)
    leaves = [x for x, n in zip((xa, xb), need, strict=True) if n]
    return out, torch.autograd.grad(out, leaves, grad_out.to(out.dtype))


def _compare(fn, a, b, atol, rtol, need=(True, True), **kw):
    grad_out = torch.randn(a.shape, device=a.device)
    ref, g_ref = _run(fn, a, b, grad_out, need, backend="torch", **kw)
    tri, g_tri = _run(fn, a, b, grad_out, need, backend="triton", **kw)
    assert tri.dtype == ref.dtype == torch.promote_types(a.dtype, b.dtype)
    torch.testing.assert_close(tri, ref, atol=atol, rtol=rtol)
    for x, y in zip(g_tri, g_ref, strict=True):
        assert x.dtype == y.dtype
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


@pytest.mark.interpret
@pytest.mark.parametrize("shape", _IMAGE_SHAPES)
@pytest.mark.parametrize(*_DTYPES)
@pytest.mark.parametrize("s_kind", ["float", "0d", "per_sample"])
@pytest.mark.parametrize("norm", [True, False])
def test_fused_mixup_matches_reference(shape, dtype, atol, rtol, s_kind, norm, device):
    c = shape[1]
    a = torch.rand(shape, device=device).to(dtype)
    b = torch.rand(shape, device=device).to(dtype)
    stats = {"mean": _MEAN[:c], "std": _STD[:c]} if norm else {}
    _compare(fused_mixup, a, b, atol, rtol, s=_s_value(s_kind, shape[0], device), **stats)


@pytest.mark.interpret
@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_fused_mixup_one_input_requires_grad(need, device):
    a, b = torch.rand(2, 4, 3, 5, 6, device=device)
    mean, std = torch.rand(3, device=device), torch.rand(3, device=device) + 0.5
    _compare(fused_mixup, a, b, 1e-5, 1e-5, need=need, s=torch.rand(4, device=device), mean=mean, std=std)


@pytest.mark.interpret
def test_fused_mixup_mixed_dtypes_and_channels_last(device):
    """A half-precision generator output mixed with float32 real images; channels-last input is accepted."""
    a = torch.rand(2, 3, 9, 9, device=device).half()
    b = torch.rand(2, 3, 9, 9, device=device).to(memory_format=torch.channels_last)
    _compare(fused_mixup, a, b, 1e-3, 1e-3, s=torch.tensor([0.2, 0.9], device=device), mean=_MEAN, std=_STD)


@pytest.mark.interpret
@pytest.mark.parametrize("shape", [(1, 1), (64, 100), (5, 1031)])
@pytest.mark.parametrize("s_kind", ["float", "per_sample"])
def test_latent_mix_matches_reference(shape, s_kind, device):
    z_a, z = torch.randn(2, *shape, device=device)
    _compare(latent_mix, z_a, z, 1e-6, 1e-6, s=_s_value(s_kind, shape[0], device))


def test_fused_mixup_reference_formula():
    """s = 0 gives n(x_gen), s = 1 gives n(x_real); per-sample s mixes each sample with its own factor."""
    a, b = torch.rand(2, 2, 3, 4, 4)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.25, 2.0])
    norm = lambda x: (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    torch.testing.assert_close(fused_mixup_torch(a, b, 0.0, mean, std), norm(a))
    torch.testing.assert_close(fused_mixup_torch(a, b, 1.0, mean, std), norm(b))
    out = fused_mixup_torch(a, b, torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(out[1], 0.5 * a[1] + 0.5 * b[1])
    torch.testing.assert_close(out[0], 0.75 * a[0] + 0.25 * b[0])


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x_gen": torch.rand(3, 8, 8)}, r"x_gen must be 4-D \[B, C, H, W\] images, got 3-D"),
        ({"x_real": torch.rand(2, 3, 8, 9)}, r"same shape, got \(2, 3, 8, 8\) and \(2, 3, 8, 9\)"),
        ({"x_real": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}, r"x_real must be a floating-point tensor"),
        ({"s": torch.rand(3)}, r"s must be a 0-d tensor or have shape \[B\]=\(2,\), got shape \(3,\)"),
        ({"s": "0.5"}, r"s must be a float, a 0-d tensor or a \[B\] tensor, got str"),
        ({"mean": None}, r"mean and std must be given together"),
        ({"std": (1.0, 0.0, 1.0)}, r"std must be non-zero in every channel"),
        ({"mean": (0.5, 0.5)}, r"mean must have one value per channel, shape \(3,\), got \(2,\)"),
    ],
)
def test_fused_mixup_bad_input(backend, kwargs, match):
    args = {"x_gen": torch.rand(2, 3, 8, 8), "x_real": torch.rand(2, 3, 8, 8), "s": 0.5, "mean": _MEAN, "std": _STD}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        fused_mixup(**args, backend=backend)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_latent_mix_bad_input(backend):
    with pytest.raises(InputError, match=r"z_a must be 2-D \[B, L\] latents, got 4-D"):
        latent_mix(torch.rand(2, 3, 1, 1), torch.rand(2, 3, 1, 1), 0.5, backend=backend)
    with pytest.raises(InputError, match=r"z_a and z must have the same shape, got \(2, 3\) and \(2, 4\)"):
        latent_mix(torch.rand(2, 3), torch.rand(2, 4), 0.5, backend=backend)
