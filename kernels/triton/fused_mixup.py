"""Triton kernels for the pixel mixup + normalisation (``fused_mixup``) and the latent mixup (``latent_mix``).

One program handles ``BLOCK_SIZE`` contiguous elements of one (sample, channel) plane, so the per-sample
factor ``s_b`` and the per-channel ``mean[c]`` / ``std[c]`` are scalars loaded once per program. The
grid is ``(B * C, cdiv(H * W, BLOCK_SIZE))``. ``latent_mix`` runs the same kernels on [B, L] latents viewed
as B planes of one channel with L elements and no normalisation.

Forward (all math in float32)::

    out = ((1 - s_b) * x_gen + s_b * x_real - mean[c]) / std[c]

Backward, with ``g = grad_out / std[c]`` (``g = grad_out`` without normalisation)::

    grad_x_gen = (1 - s_b) * g        grad_x_real = s_b * g

``s``, ``mean`` and ``std`` get no gradient (they are schedule/normalisation constants).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import elementwise_settings, scalar_args

_MAX_GRID_Y = 65535


@triton.jit
def _fused_mixup_fwd_kernel(
    gen_ptr,  # [B, C, N] generated images (N = H * W), any float dtype
    real_ptr,  # [B, C, N] real images, any float dtype
    out_ptr,  # [B, C, N] output, promoted dtype
    s_ptr,  # [] or [B] float32 mixing factor (unused without S_IS_TENSOR)
    s_stride,  # 0 (one s for all samples) or 1 (one per sample)
    s_value,  # the mixing factor when it is a Python float
    mean_ptr,  # [C] float32 channel means (unused without HAS_NORM)
    std_ptr,  # [C] float32 channel standard deviations (unused without HAS_NORM)
    n_channels,
    n_inner,
    S_IS_TENSOR: tl.constexpr,
    HAS_NORM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)  # b * C + c
    block = tl.program_id(1).to(tl.int64)
    offs = block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_inner
    base = plane * n_inner

    s = s_value
    if S_IS_TENSOR:
        s = tl.load(s_ptr + (plane // n_channels) * s_stride)
    x_gen = tl.load(gen_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    x_real = tl.load(real_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    x = (1.0 - s) * x_gen + s * x_real
    if HAS_NORM:
        c = plane % n_channels
        x = (x - tl.load(mean_ptr + c)) / tl.load(std_ptr + c)
    tl.store(out_ptr + base + offs, x.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fused_mixup_bwd_kernel(
    grad_out_ptr,  # [B, C, N] upstream gradient, promoted dtype
    grad_gen_ptr,  # [B, C, N] gradient for x_gen, x_gen's dtype (unused without NEED_GEN)
    grad_real_ptr,  # [B, C, N] gradient for x_real, x_real's dtype (unused without NEED_REAL)
    s_ptr,  # [] or [B] float32 mixing factor (unused without S_IS_TENSOR)
    s_stride,  # 0 or 1
    s_value,  # the mixing factor when it is a Python float
    std_ptr,  # [C] float32 (unused without HAS_NORM)
    n_channels,
    n_inner,
    S_IS_TENSOR: tl.constexpr,
    HAS_NORM: tl.constexpr,
    NEED_GEN: tl.constexpr,
    NEED_REAL: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1).to(tl.int64)
    offs = block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_inner
    base = plane * n_inner

    s = s_value
    if S_IS_TENSOR:
        s = tl.load(s_ptr + (plane // n_channels) * s_stride)
    g = tl.load(grad_out_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_NORM:
        g = g / tl.load(std_ptr + plane % n_channels)
    if NEED_GEN:
        tl.store(grad_gen_ptr + base + offs, ((1.0 - s) * g).to(grad_gen_ptr.dtype.element_ty), mask=mask)
    if NEED_REAL:
        tl.store(grad_real_ptr + base + offs, (s * g).to(grad_real_ptr.dtype.element_ty), mask=mask)


def _grid(n_planes: int, n_inner: int) -> tuple[tuple[int, int], int, int]:
    block, num_warps = elementwise_settings(n_inner)
    while triton.cdiv(n_inner, block) > _MAX_GRID_Y:  # only for planes of > 67M elements
        block *= 2
    return (n_planes, triton.cdiv(n_inner, block)), block, num_warps


class FusedMixupFunction(torch.autograd.Function):
    """Autograd wrapper of the mixup kernels, for [B, C, H, W] images or [B, L] latents (C = 1).

    Saved for backward: ``s`` (a float, or a float32 [] / [B] tensor) and ``std`` ([C], or nothing). The images are not
    saved: the gradient depends only on ``grad_out``, ``s`` and ``std``.
    """

    @staticmethod
    def forward(ctx, x_gen, x_real, s, mean, std):  # type: ignore[override]
        x_gen, x_real = x_gen.contiguous(), x_real.contiguous()
        batch = x_gen.shape[0]
        channels = x_gen.shape[1] if x_gen.dim() == 4 else 1
        n_inner = x_gen.numel() // max(batch * channels, 1)
        out = torch.empty(x_gen.shape, dtype=torch.promote_types(x_gen.dtype, x_real.dtype), device=x_gen.device)
        has_norm = mean is not None
        if out.numel() > 0:
            grid, block, num_warps = _grid(batch * channels, n_inner)
            s_ptr, s_stride, s_value, s_is_tensor = scalar_args(s, out)
            _fused_mixup_fwd_kernel[grid](
                x_gen,
                x_real,
                out,
                s_ptr,
                s_stride,
                s_value,
                mean if has_norm else out,
                std if has_norm else out,
                channels,
                n_inner,
                S_IS_TENSOR=s_is_tensor,
                HAS_NORM=has_norm,
                BLOCK_SIZE=block,
                num_warps=num_warps,
            )
        s_tensor = s if isinstance(s, torch.Tensor) else None
        ctx.save_for_backward(s_tensor, std if has_norm else None)
        ctx.meta = (x_gen.dtype, x_real.dtype, channels, n_inner, None if s_tensor is not None else s)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        s_tensor, std = ctx.saved_tensors
        gen_dtype, real_dtype, channels, n_inner, s_float = ctx.meta
        need_gen, need_real = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if grad_out is None or not (need_gen or need_real):
            return None, None, None, None, None
        grad_out = grad_out.contiguous()
        grad_gen = torch.empty(grad_out.shape, dtype=gen_dtype, device=grad_out.device) if need_gen else None
        grad_real = torch.empty(grad_out.shape, dtype=real_dtype, device=grad_out.device) if need_real else None
        if grad_out.numel() > 0:
            grid, block, num_warps = _grid(grad_out.shape[0] * channels, n_inner)
            s_ptr, s_stride, s_value, s_is_tensor = scalar_args(s_tensor if s_tensor is not None else s_float, grad_out)
            _fused_mixup_bwd_kernel[grid](
                grad_out,
                grad_gen if need_gen else grad_out,
                grad_real if need_real else grad_out,
                s_ptr,
                s_stride,
                s_value,
                std if std is not None else grad_out,
                channels,
                n_inner,
                S_IS_TENSOR=s_is_tensor,
                HAS_NORM=std is not None,
                NEED_GEN=need_gen,
                NEED_REAL=need_real,
                BLOCK_SIZE=block,
                num_warps=num_warps,
            )
        return grad_gen, grad_real, None, None, None


def mixup_launch(a: torch.Tensor, b: torch.Tensor, s: float | torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Run the kernels on arguments already checked (``prepare_mix_args`` / ``channel_stats``)."""
    return FusedMixupFunction.apply(a, b, s, mean, std)
