"""Triton kernels for the KD loss ``u · CE(student, target) + (1 - u) · τ² · KL(teacher ‖ student)``.

Forward: each program loads BLOCK_B whole rows of the student and teacher logits once, computes three
shifted softmax normalisers in float32 (student at temperature 1 for CE, student at τ, teacher at τ),
and writes the per-row loss plus seven float32 statistics per row. With ``b = s / τ``, ``a = t / τ``,
``d_b = b - max b``, ``d_a = a - max a``, ``S_a = Σ exp(d_a)``, ``S_b = Σ exp(d_b)``::

    log p_j = d_a,j - log S_a          log q_j = d_b,j - log S_b
    KL      = Σ_j p_j (log p_j - log q_j) = (Σ_j exp(d_a,j) (d_a,j - d_b,j)) / S_a - log S_a + log S_b
    CE      = max s + log Σ exp(s - max s) - s[target]

KL is not clamped at 0 (rounding can leave it at about -1e-7 for identical rows, as in the reference).
A target outside [0, C) makes that row's loss and student gradient NaN (loud rather than silently wrong;
the public op rejects such targets up front for CPU tensors).

Backward: one pass over the rows, recomputing ``p``, ``q`` and ``softmax(s)`` from the saved logits and the
saved per-row max/log-normalisers (no [B, C] intermediate is saved). With ``w_i`` the upstream weight
(``grad / B`` for "mean", ``grad`` for "sum", ``grad_i`` for "none"):

Student gradient::

    d CE / d s_j        = softmax(s)_j - [j = target]
    d (τ² KL) / d s_j   = τ² · (-Σ_k p_k d log q_k / d s_j) = τ² · (-(1/τ)(p_j - q_j)) = τ (q_j - p_j)

Teacher gradient (needed by the AuG-KD generator step, where -KL(T ‖ S) flows back through the teacher),
using ``d p_k / d a_j = p_k (δ_kj - p_j)`` and ``Σ_k p_k d log p_k / d a_j = Σ_k (δ_kj - p_j) p_k = 0``::

    d KL / d a_j        = Σ_k p_k (δ_kj - p_j)(log p_k - log q_k) = p_j ((log p_j - log q_j) - KL)
    d (τ² KL) / d t_j   = τ² · (1/τ) · d KL / d a_j = τ p_j ((log p_j - log q_j) - KL)

The CE term does not depend on the teacher. Each gradient is computed only when its input requires it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import NEG_LARGE, row_settings, scalar_args

# Rows of the [7, B] statistics buffer saved for backward.
_N_STATS = 7  # m1, log S1 (student, T = 1); m_b, log S_b (student, τ); m_a, log S_a (teacher, τ); KL


@triton.jit
def _row_softmax_stats(z, mask, row_mask, NEG: tl.constexpr):
    """Shifted values, row max and log-normaliser of a [BLOCK_B, BLOCK_C] tile (masked lanes -> NEG)."""
    z = tl.where(mask, z, NEG)
    m = tl.max(z, axis=1)
    d = tl.where(mask, z - m[:, None], NEG)
    e = tl.exp(d)  # 0 on masked lanes
    s_sum = tl.where(row_mask, tl.sum(e, axis=1), 1.0)  # padding rows: keep log finite
    return d, e, m, tl.log(s_sum), s_sum


@triton.jit
def _kd_loss_fwd_kernel(
    s_ptr,  # [B, C] student logits, any float dtype, row stride s_row_stride
    t_ptr,  # [B, C] teacher logits, any float dtype, row stride t_row_stride
    y_ptr,  # [B] int64 targets (unused without HAS_TARGET)
    u_ptr,  # [] or [B] float32 CE weight u (unused without U_IS_TENSOR)
    u_stride,  # 0 (shared u) or 1 (per sample)
    u_value,  # the CE weight when it is a Python float
    loss_ptr,  # [B] float32 out: per-row loss
    stats_ptr,  # [7, B] float32 out: m1, logS1, m_b, logS_b, m_a, logS_a, KL (saved for backward)
    n_rows,
    n_cols,
    s_row_stride,
    t_row_stride,
    tau,
    nan,  # float('nan'), the loss of a row whose target is out of range
    U_IS_TENSOR: tl.constexpr,
    HAS_TARGET: tl.constexpr,
    NEG: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < n_cols)

    s = tl.load(s_ptr + rows[:, None] * s_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + rows[:, None] * t_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.zeros([BLOCK_B], dtype=tl.float32) + u_value
    if U_IS_TENSOR:
        u = tl.load(u_ptr + rows * u_stride, mask=row_mask, other=0.0)

    d_b, e_b, m_b, log_sb, _sb = _row_softmax_stats(s / tau, mask, row_mask, NEG)
    d_a, e_a, m_a, log_sa, s_a = _row_softmax_stats(t / tau, mask, row_mask, NEG)
    kl = tl.sum(tl.where(mask, e_a * (d_a - d_b), 0.0), axis=1) / s_a - log_sa + log_sb
    loss = (1.0 - u) * (tau * tau) * kl

    if HAS_TARGET:
        _d1, _e1, m1, log_s1, _s1 = _row_softmax_stats(s, mask, row_mask, NEG)
        y = tl.load(y_ptr + rows, mask=row_mask, other=0)
        # the target logit, picked from the tile already in registers (no second, possibly OOB, load)
        s_y = tl.sum(tl.where(mask & (cols[None, :] == y[:, None]), s, 0.0), axis=1)
        ce = m1 + log_s1 - s_y
        valid = (y >= 0) & (y < n_cols)
        loss += tl.where(valid, u * ce, nan)
        tl.store(stats_ptr + rows, m1, mask=row_mask)
        tl.store(stats_ptr + n_rows + rows, log_s1, mask=row_mask)

    tl.store(loss_ptr + rows, loss, mask=row_mask)
    tl.store(stats_ptr + 2 * n_rows + rows, m_b, mask=row_mask)
    tl.store(stats_ptr + 3 * n_rows + rows, log_sb, mask=row_mask)
    tl.store(stats_ptr + 4 * n_rows + rows, m_a, mask=row_mask)
    tl.store(stats_ptr + 5 * n_rows + rows, log_sa, mask=row_mask)
    tl.store(stats_ptr + 6 * n_rows + rows, kl, mask=row_mask)


@triton.jit
def _kd_loss_bwd_kernel(
    s_ptr,  # [B, C] student logits, row stride s_row_stride
    t_ptr,  # [B, C] teacher logits, row stride t_row_stride
    y_ptr,  # [B] int64 targets (unused without HAS_TARGET)
    u_ptr,  # [] or [B] float32 CE weight (unused without U_IS_TENSOR)
    u_stride,
    u_value,  # the CE weight when it is a Python float
    stats_ptr,  # [7, B] float32 statistics from the forward
    grad_loss_ptr,  # [] or [B] float32 upstream gradient of the loss
    grad_loss_stride,  # 0 (scalar loss or broadcast) or the [B] gradient's stride
    grad_scale,  # 1 / B for "mean", 1 otherwise
    grad_s_ptr,  # [B, C] out: student gradient, student's dtype, contiguous (unused without NEED_STUDENT)
    grad_t_ptr,  # [B, C] out: teacher gradient, teacher's dtype, contiguous (unused without NEED_TEACHER)
    n_rows,
    n_cols,
    s_row_stride,
    t_row_stride,
    tau,
    nan,  # float('nan'), the gradient of a row whose target is out of range
    U_IS_TENSOR: tl.constexpr,
    HAS_TARGET: tl.constexpr,
    NEED_STUDENT: tl.constexpr,
    NEED_TEACHER: tl.constexpr,
    NEG: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < n_cols)
    out_offs = rows[:, None] * n_cols + cols[None, :]

    s = tl.load(s_ptr + rows[:, None] * s_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + rows[:, None] * t_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.zeros([BLOCK_B], dtype=tl.float32) + u_value
    if U_IS_TENSOR:
        u = tl.load(u_ptr + rows * u_stride, mask=row_mask, other=0.0)
    w = tl.load(grad_loss_ptr + rows * grad_loss_stride, mask=row_mask, other=0.0) * grad_scale
    m_b = tl.load(stats_ptr + 2 * n_rows + rows, mask=row_mask, other=0.0)
    log_sb = tl.load(stats_ptr + 3 * n_rows + rows, mask=row_mask, other=0.0)
    m_a = tl.load(stats_ptr + 4 * n_rows + rows, mask=row_mask, other=0.0)
    log_sa = tl.load(stats_ptr + 5 * n_rows + rows, mask=row_mask, other=0.0)

    log_q = tl.where(mask, (s / tau - m_b[:, None]) - log_sb[:, None], NEG)
    log_p = tl.where(mask, (t / tau - m_a[:, None]) - log_sa[:, None], NEG)
    p = tl.exp(log_p)  # 0 on masked lanes
    kd_w = w * (1.0 - u) * tau  # per-row weight of the KD-term gradients

    if NEED_STUDENT:
        grad_s = kd_w[:, None] * (tl.exp(log_q) - p)
        if HAS_TARGET:
            m1 = tl.load(stats_ptr + rows, mask=row_mask, other=0.0)
            log_s1 = tl.load(stats_ptr + n_rows + rows, mask=row_mask, other=0.0)
            y = tl.load(y_ptr + rows, mask=row_mask, other=0)
            ce_w = tl.where((y >= 0) & (y < n_cols), w * u, nan)
            soft = tl.exp(tl.where(mask, (s - m1[:, None]) - log_s1[:, None], NEG))
            onehot = tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
            grad_s += ce_w[:, None] * (soft - onehot)
        tl.store(grad_s_ptr + out_offs, grad_s.to(grad_s_ptr.dtype.element_ty), mask=mask)

    if NEED_TEACHER:
        kl = tl.load(stats_ptr + 6 * n_rows + rows, mask=row_mask, other=0.0)
        grad_t = kd_w[:, None] * tl.where(mask, p * ((log_p - log_q) - kl[:, None]), 0.0)
        tl.store(grad_t_ptr + out_offs, grad_t.to(grad_t_ptr.dtype.element_ty), mask=mask)


class KDLossFunction(torch.autograd.Function):
    """Autograd wrapper of the KD-loss kernels.

    Saved for backward: the student and teacher logits (references to the inputs, no copy when they are
    row-contiguous), the target (when given), ``u`` (a float in ``ctx``, or its tensor), and a float32 [7, B]
    buffer of per-row statistics (row maxima and log-normalisers of the three softmaxes, and KL). The backward
    recomputes the probabilities from these, so no [B, C] tensor is kept. The teacher gradient is computed only when
    ``teacher.requires_grad``; the student gradient only when ``student.requires_grad``.
    """

    @staticmethod
    def forward(ctx, student, teacher, target, u, tau, reduction):  # type: ignore[override]
        s = student if student.stride(-1) == 1 else student.contiguous()
        t = teacher if teacher.stride(-1) == 1 else teacher.contiguous()
        n_rows, n_cols = s.shape
        loss = torch.empty(n_rows, dtype=torch.float32, device=s.device)
        stats = torch.empty(_N_STATS, n_rows, dtype=torch.float32, device=s.device)
        block_b, block_c, num_warps = row_settings(n_rows, n_cols)
        has_target = target is not None
        u_ptr, u_stride, u_value, u_is_tensor = scalar_args(u, stats)
        _kd_loss_fwd_kernel[(triton.cdiv(n_rows, block_b),)](
            s,
            t,
            target if has_target else stats,
            u_ptr,
            u_stride,
            u_value,
            loss,
            stats,
            n_rows,
            n_cols,
            s.stride(0),
            t.stride(0),
            tau,
            float("nan"),
            U_IS_TENSOR=u_is_tensor,
            HAS_TARGET=has_target,
            NEG=NEG_LARGE,
            BLOCK_B=block_b,
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
        u_tensor = u if u_is_tensor else None
        ctx.save_for_backward(s, t, target, u_tensor, stats)
        ctx.tau, ctx.reduction, ctx.u_float = tau, reduction, None if u_is_tensor else u
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        s, t, target, u_tensor, stats = ctx.saved_tensors
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_s or need_t):
            return None, None, None, None, None, None
        n_rows, n_cols = s.shape
        grad_loss = grad_loss.float()
        grad_s = torch.empty((n_rows, n_cols), dtype=s.dtype, device=s.device) if need_s else None
        grad_t = torch.empty((n_rows, n_cols), dtype=t.dtype, device=t.device) if need_t else None
        block_b, block_c, num_warps = row_settings(n_rows, n_cols)
        has_target = target is not None
        u_ptr, u_stride, u_value, u_is_tensor = scalar_args(u_tensor if u_tensor is not None else ctx.u_float, stats)
        _kd_loss_bwd_kernel[(triton.cdiv(n_rows, block_b),)](
            s,
            t,
            target if has_target else stats,
            u_ptr,
            u_stride,
            u_value,
            stats,
            grad_loss,
            grad_loss.stride(0) if grad_loss.dim() == 1 else 0,
            1.0 / n_rows if ctx.reduction == "mean" else 1.0,
            grad_s if need_s else stats,
            grad_t if need_t else stats,
            n_rows,
            n_cols,
            s.stride(0),
            t.stride(0),
            ctx.tau,
            float("nan"),
            U_IS_TENSOR=u_is_tensor,
            HAS_TARGET=has_target,
            NEED_STUDENT=need_s,
            NEED_TEACHER=need_t,
            NEG=NEG_LARGE,
            BLOCK_B=block_b,
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
        return grad_s, grad_t, None, None, None, None


def kd_loss_launch(student, teacher, target, u, tau, reduction) -> torch.Tensor:
    """Run the kernels on arguments already checked by :func:`~augkd.kernels._checks.prepare_kd_args`."""
    return KDLossFunction.apply(student, teacher, target, u, tau, reduction)
