"""Triton kernels for per-row uncertainty statistics of logits (``uncertainty``).

Each program loads a [BLOCK_B, BLOCK_C] tile holding BLOCK_B whole rows, once, and computes in float32,
with ``z = x / τ``, ``m = max_j z_j``, ``d_j = z_j - m`` and ``S = Σ_j exp(d_j)``::

    lse      = m + log S
    energy   = -τ · lse
    entropy  = -Σ_j p_j log p_j = log S - (Σ_j exp(d_j) d_j) / S        (p_j = exp(d_j) / S)
    max_prob = 1 / S                                                      (exp(d_argmax) = 1)
    argmax   = first index of the maximum

Working with the shifted ``d`` keeps logits of ±1e4 exact enough (no ``z - lse`` cancellation).

Backward (derivation; a = argmax, H = entropy, ``log p_j = d_j - log S``), w.r.t. ``x_j``::

    d lse / d z_j      = p_j
    d energy / d z_j   = -τ p_j
    d H / d z_j        = -Σ_k (d p_k / d z_j)(log p_k + 1) = -p_j (log p_j + H)
                         using d p_k / d z_j = p_k (δ_kj - p_j) and Σ_k p_k = 1
    d p_a / d z_j      = p_a (δ_aj - p_j)
    d / d x_j          = (1 / τ) · d / d z_j

so ``grad_x_j = p_j (g_lse / τ - g_energy) - g_H p_j (log p_j + H) / τ + g_max p_a (δ_aj - p_j) / τ``,
one pass over the row. All four float outputs are differentiable; ``argmax`` is not.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import Uncertainty
from ._common import NEG_LARGE, row_settings


@triton.jit
def _uncertainty_fwd_kernel(
    x_ptr,  # [B, C] logits, any float dtype, row stride x_row_stride
    lse_ptr,  # [B] float32 out: logsumexp(x / tau)
    energy_ptr,  # [B] float32 out: -tau * lse
    entropy_ptr,  # [B] float32 out: entropy in nats
    max_prob_ptr,  # [B] float32 out: max softmax probability
    argmax_ptr,  # [B] int64 out
    stats_ptr,  # [2, B] float32 out, saved for backward: row max m of z, log S
    n_rows,
    n_cols,
    x_row_stride,
    tau,
    NEG: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < n_cols)

    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    z = tl.where(mask, x / tau, NEG)  # masked lanes: finite and never the max of a valid row
    m = tl.max(z, axis=1)
    d = tl.where(mask, z - m[:, None], NEG)
    e = tl.exp(d)  # 0 on masked lanes
    s_sum = tl.where(row_mask, tl.sum(e, axis=1), 1.0)  # padding rows: keep log finite
    log_s = tl.log(s_sum)
    lse = m + log_s
    entropy = log_s - tl.sum(tl.where(mask, e * d, 0.0), axis=1) / s_sum
    arg = tl.argmax(z, axis=1)  # ties: smallest index, as torch.argmax

    tl.store(lse_ptr + rows, lse, mask=row_mask)
    tl.store(energy_ptr + rows, -tau * lse, mask=row_mask)
    tl.store(entropy_ptr + rows, entropy, mask=row_mask)
    tl.store(max_prob_ptr + rows, 1.0 / s_sum, mask=row_mask)
    tl.store(argmax_ptr + rows, arg.to(tl.int64), mask=row_mask)
    tl.store(stats_ptr + rows, m, mask=row_mask)
    tl.store(stats_ptr + n_rows + rows, log_s, mask=row_mask)


@triton.jit
def _uncertainty_bwd_kernel(
    x_ptr,  # [B, C] logits, row stride x_row_stride
    grad_x_ptr,  # [B, C] out: gradient, logits' dtype, contiguous
    stats_ptr,  # [2, B] float32: row max m of z, log S
    entropy_ptr,  # [B] float32 forward entropy
    max_prob_ptr,  # [B] float32 forward max probability
    argmax_ptr,  # [B] int64 forward argmax
    g_lse_ptr,  # [B] float32 upstream gradients, strides g_*_stride (0 = broadcast)
    g_energy_ptr,
    g_entropy_ptr,
    g_max_ptr,
    g_lse_stride,
    g_energy_stride,
    g_entropy_stride,
    g_max_stride,
    n_rows,
    n_cols,
    x_row_stride,
    tau,
    HAS_G_LSE: tl.constexpr,
    HAS_G_ENERGY: tl.constexpr,
    HAS_G_ENTROPY: tl.constexpr,
    HAS_G_MAX: tl.constexpr,
    NEG: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < n_cols)

    x = tl.load(x_ptr + rows[:, None] * x_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    m = tl.load(stats_ptr + rows, mask=row_mask, other=0.0)
    log_s = tl.load(stats_ptr + n_rows + rows, mask=row_mask, other=0.0)
    log_p = tl.where(mask, (x / tau - m[:, None]) - log_s[:, None], NEG)
    p = tl.exp(log_p)  # 0 on masked lanes

    coef = tl.zeros([BLOCK_B], dtype=tl.float32)  # per-row multiplier of p_j
    if HAS_G_LSE:
        coef += tl.load(g_lse_ptr + rows * g_lse_stride, mask=row_mask, other=0.0) / tau
    if HAS_G_ENERGY:
        coef -= tl.load(g_energy_ptr + rows * g_energy_stride, mask=row_mask, other=0.0)
    grad = coef[:, None] * p
    if HAS_G_ENTROPY:
        g_h = tl.load(g_entropy_ptr + rows * g_entropy_stride, mask=row_mask, other=0.0) / tau
        h = tl.load(entropy_ptr + rows, mask=row_mask, other=0.0)
        grad -= g_h[:, None] * tl.where(mask, p * (log_p + h[:, None]), 0.0)
    if HAS_G_MAX:
        g_m = tl.load(g_max_ptr + rows * g_max_stride, mask=row_mask, other=0.0) / tau
        p_a = tl.load(max_prob_ptr + rows, mask=row_mask, other=0.0)
        a = tl.load(argmax_ptr + rows, mask=row_mask, other=0)
        onehot = tl.where(cols[None, :] == a[:, None], 1.0, 0.0)
        grad += (g_m * p_a)[:, None] * (onehot - p)
    tl.store(grad_x_ptr + rows[:, None] * n_cols + cols[None, :], grad.to(grad_x_ptr.dtype.element_ty), mask=mask)


class UncertaintyFunction(torch.autograd.Function):
    """Autograd wrapper of the uncertainty kernels.

    Outputs ``(lse, energy, entropy, max_prob, argmax)``. Saved for backward: the logits (a reference, no
    copy beyond ``.contiguous()``), and per row the float32 max ``m`` and ``log S`` ([2, B]), the entropy,
    max probability and argmax ([B] each). Upstream gradients that are None (unused outputs) skip their
    term in the kernel.
    """

    @staticmethod
    def forward(ctx, logits, tau):  # type: ignore[override]
        x = logits if logits.stride(-1) == 1 else logits.contiguous()
        n_rows, n_cols = x.shape
        dev = x.device
        lse, energy, entropy, max_prob = (torch.empty(n_rows, dtype=torch.float32, device=dev) for _ in range(4))
        argmax = torch.empty(n_rows, dtype=torch.int64, device=dev)
        stats = torch.empty(2, n_rows, dtype=torch.float32, device=dev)
        block_b, block_c, num_warps = row_settings(n_rows, n_cols)
        grid = (triton.cdiv(n_rows, block_b),)
        _uncertainty_fwd_kernel[grid](
            x,
            lse,
            energy,
            entropy,
            max_prob,
            argmax,
            stats,
            n_rows,
            n_cols,
            x.stride(0),
            tau,
            NEG=NEG_LARGE,
            BLOCK_B=block_b,
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
        ctx.mark_non_differentiable(argmax)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, stats, entropy, max_prob, argmax)
        ctx.tau = tau
        return lse, energy, entropy, max_prob, argmax

    @staticmethod
    def backward(ctx, g_lse, g_energy, g_entropy, g_max, _g_argmax):  # type: ignore[override]
        x, stats, entropy, max_prob, argmax = ctx.saved_tensors
        grads = (g_lse, g_energy, g_entropy, g_max)
        if not ctx.needs_input_grad[0] or all(g is None for g in grads):
            return None, None
        n_rows, n_cols = x.shape
        grad_x = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
        # Missing gradients get a dummy pointer (never read: their HAS_G_* flag is False) and stride 0.
        ptrs = [g.float() if g is not None else entropy for g in grads]
        strides = [g.stride(0) if g is not None else 0 for g in ptrs]
        block_b, block_c, num_warps = row_settings(n_rows, n_cols)
        grid = (triton.cdiv(n_rows, block_b),)
        _uncertainty_bwd_kernel[grid](
            x,
            grad_x,
            stats,
            entropy,
            max_prob,
            argmax,
            *ptrs,
            *strides,
            n_rows,
            n_cols,
            x.stride(0),
            ctx.tau,
            HAS_G_LSE=g_lse is not None,
            HAS_G_ENERGY=g_energy is not None,
            HAS_G_ENTROPY=g_entropy is not None,
            HAS_G_MAX=g_max is not None,
            NEG=NEG_LARGE,
            BLOCK_B=block_b,
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
        return grad_x, None


def uncertainty_launch(logits: torch.Tensor, tau: float) -> Uncertainty:
    """Run the kernels on arguments already checked by ``prepare_uncertainty_args``."""
    return Uncertainty(*UncertaintyFunction.apply(logits, tau))
