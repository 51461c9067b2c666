"""Pure-torch references of the augkd kernel ops: the specification, the CPU path and the export path.

Each ``<op>_torch`` states its math in the docstring and computes in float32 whatever the input dtype. The
Triton kernels in :mod:`augkd.kernels.triton` are tested against these functions, never against
hard-coded numbers. The references assume already-validated inputs (the public ops in
:mod:`augkd.kernels` validate before dispatching); they contain no data-dependent Python control flow, so
``torch.compile`` traces each one into a single graph (the COMPILE backend).

Where the ops are used in AuG-KD (Tang et al., "AuG-KD: Anchor-Based Mixup Generation for
Out-of-Domain Knowledge Distillation", ICLR 2024):

- ``kd_loss_torch``: the KD losses of Module 1 (pure KL, τ = 1, plus the teacher-side gradient for the
  generator step) and Module 3 (u·CE + (1−u)·τ²·KL with τ = 10).
- ``uncertainty_torch``: the energy score of Module 2 (−τ·logsumexp(o/τ)) and entropy/confidence logs.
- ``fused_mixup_torch`` / ``latent_mix_torch``: the pixel and latent mixups of Module 3, with the
  per-channel input normalisation n(·) folded in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "Uncertainty",
    "fused_mixup_torch",
    "kd_loss_torch",
    "latent_mix_torch",
    "uncertainty_torch",
]


def _per_sample(value: float | torch.Tensor, like: torch.Tensor, ndim: int) -> float | torch.Tensor:
    """A float, or a detached float32 tensor that broadcasts per sample against a rank-``ndim`` tensor."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    v = value.detach().to(device=like.device, dtype=torch.float32)
    if v.dim() == 1:
        v = v.reshape((-1,) + (1,) * (ndim - 1))
    return v


def fused_mixup_torch(
    x_gen: torch.Tensor,
    x_real: torch.Tensor,
    s: float | torch.Tensor,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel mixup followed by per-channel normalisation, for NCHW images.

    Math, per sample b, channel c and pixel (h, w)::

        x_m[b, c, h, w] = (1 - s_b) * x_gen[b, c, h, w] + s_b * x_real[b, c, h, w]
        out[b, c, h, w] = (x_m[b, c, h, w] - mean[c]) / std[c]        # skipped when mean/std are None

    Gradients: ``d out / d x_gen = (1 - s_b) / std[c]`` and ``d out / d x_real = s_b / std[c]``. ``s``, ``mean``
    and ``std`` are constants (detached; no gradient).

    Args:
        x_gen: Generated images [B, C, H, W].
        x_real: Real images [B, C, H, W], same shape.
        s: Mixing factor: a float, a 0-d tensor, or a [B] tensor (one per sample).
        mean: Per-channel mean [C], or None.
        std: Per-channel standard deviation [C], or None.

    Returns:
        [B, C, H, W] in the promoted dtype of ``x_gen`` and ``x_real``, computed in float32.
    """
    out_dtype = torch.promote_types(x_gen.dtype, x_real.dtype)
    sv = _per_sample(s, x_gen, 4)
    x = (1.0 - sv) * x_gen.float() + sv * x_real.float()
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).detach().reshape(1, -1, 1, 1)
        sd = torch.as_tensor(std, dtype=torch.float32, device=x.device).detach().reshape(1, -1, 1, 1)
        x = (x - m) / sd
    return x.to(out_dtype)


def latent_mix_torch(z_a: torch.Tensor, z: torch.Tensor, s: float | torch.Tensor) -> torch.Tensor:
    """Latent mixup ``z_m = (1 - s_b) * z_a + s_b * z`` for [B, L] latents.

    Gradients: ``(1 - s_b)`` to ``z_a`` and ``s_b`` to ``z``; ``s`` is a constant.

    Args:
        z_a: Anchored latents [B, L].
        z: Encoder latents [B, L], same shape.
        s: Mixing factor: a float, a 0-d tensor, or a [B] tensor.

    Returns:
        [B, L] in the promoted dtype of ``z_a`` and ``z``, computed in float32.
    """
    out_dtype = torch.promote_types(z_a.dtype, z.dtype)
    sv = _per_sample(s, z_a, 2)
    return ((1.0 - sv) * z_a.float() + sv * z.float()).to(out_dtype)


class Uncertainty(NamedTuple):
    """Per-row uncertainty statistics of logits at temperature τ (each of shape [B])."""

    lse: torch.Tensor
    """``logsumexp(x / τ)`` (float32, differentiable)."""
    energy: torch.Tensor
    """``-τ · logsumexp(x / τ)``, the energy score of Liu et al. 2020 (float32, differentiable)."""
    entropy: torch.Tensor
    """``H(softmax(x / τ))`` in nats (float32, differentiable)."""
    max_prob: torch.Tensor
    """``softmax(x / τ)[argmax]`` (float32, differentiable through the chosen index)."""
    argmax: torch.Tensor
    """Index of the first maximal logit (int64, not differentiable)."""


def uncertainty_torch(logits: torch.Tensor, tau: float = 1.0) -> Uncertainty:
    """Energy, entropy and confidence of each row of ``logits`` [B, C].

    Math, with ``z = x / τ`` and ``p = softmax(z)`` per row::

        lse      = logsumexp(z)
        energy   = -τ · lse
        entropy  = -Σ_j p_j log p_j            (nats; log p = log_softmax(z), so entries with p_j = 0 add 0)
        argmax   = first j with z_j = max z
        max_prob = p[argmax] = exp(max z - lse)

    Gradients (w.r.t. x_j): ``d lse = p_j / τ``, ``d energy = -p_j``,
    ``d entropy = -p_j (log p_j + H) / τ``, ``d max_prob = p_a (δ_aj - p_j) / τ`` with a = argmax.
    Logits must be finite.

    Args:
        logits: [B, C] floating-point logits.
        tau: Temperature τ > 0.

    Returns:
        :class:`Uncertainty` of [B] tensors; float32 except ``argmax`` (int64).
    """
    z = logits.float() / tau
    lse = torch.logsumexp(z, dim=-1)
    log_p = F.log_softmax(z, dim=-1)  # shifts by the row max: exact for logits of ±1e4, unlike z - lse
    p = log_p.exp()
    entropy = -(p * log_p).sum(dim=-1)
    argmax = torch.argmax(z, dim=-1)
    max_prob = p.gather(-1, argmax.unsqueeze(-1)).squeeze(-1)
    return Uncertainty(lse=lse, energy=-tau * lse, entropy=entropy, max_prob=max_prob, argmax=argmax)


def kd_loss_torch(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None = None,
    u: float | torch.Tensor = 0.5,
    tau: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Knowledge-distillation loss: ``u · CE(student, target) + (1 - u) · τ² · KL(teacher ‖ student)``.

    Math, per row i, with ``p = softmax(teacher_i / τ)`` and ``q = softmax(student_i / τ)``::

        CE_i   = logsumexp(student_i) - student_i[target_i]                (temperature 1, not divided by τ)
        KL_i   = Σ_j p_j (log p_j - log q_j)                                (KL(teacher ‖ student))
        loss_i = u_i · CE_i + (1 - u_i) · τ² · KL_i

    ``reduction="mean"`` averages ``loss_i`` over the B rows: for the KL part this is torch's
    ``F.kl_div(..., reduction="batchmean")`` (sum over classes and rows, divided by B), and for the CE part
    it is ``F.cross_entropy(..., reduction="mean")``. ``"sum"`` sums the rows, ``"none"`` returns [B].

    Gradients::

        d loss_i / d student_ij = u_i (softmax(student_i)_j - [j = target_i]) + (1 - u_i) · τ · (q_j - p_j)
        d loss_i / d teacher_ij = (1 - u_i) · τ · p_j · ((log p_j - log q_j) - KL_i)

    ``u`` is a constant (no gradient). When ``target`` is None the CE term is left out (``u`` must be 0; the
    public op checks it).

    Args:
        student: Student logits [B, C].
        teacher: Teacher logits [B, C].
        target: Class indices, int64 [B], or None.
        u: CE weight in [0, 1]: a float, a 0-d tensor, or a [B] tensor.
        tau: Temperature τ > 0 of the KL term.
        reduction: "mean", "sum" or "none".

    Returns:
        The float32 loss: a scalar, or [B] for ``reduction="none"``.

    When ``torch.compile`` traces this function and a gradient is needed, the rows are computed by
    :class:`KDLossClosedForm` (same math, closed-form backward, one ``exp`` per softmax entry), which the
    compiler fuses far better than autograd's log-softmax graph; eager calls and export use the plain
    formula below.
    """
    uv = _per_sample(u, student, 1)
    if _compiling_with_grad(student, teacher):
        loss = KDLossClosedForm.apply(student, teacher, target, uv, tau)
    else:
        s32 = student.float()
        log_q = F.log_softmax(s32 / tau, dim=-1)
        log_p = F.log_softmax(teacher.float() / tau, dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
        loss = (1.0 - uv) * (tau * tau) * kl
        if target is not None:
            loss = loss + uv * F.cross_entropy(s32, target, reduction="none")
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _compiling_with_grad(*tensors: torch.Tensor) -> bool:
    """True while torch.compile (not export) traces a call that needs gradients."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return False
    compiler = torch.compiler
    return compiler.is_compiling() and not compiler.is_exporting() and not torch.onnx.is_in_onnx_export()


def _log_softmax_and_softmax(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_softmax(z), softmax(z))`` over the last dim with a single ``exp`` per entry."""
    d = z - z.amax(dim=-1, keepdim=True)
    e = d.exp()
    total = e.sum(dim=-1, keepdim=True)
    return d - total.log(), e / total


class KDLossClosedForm(torch.autograd.Function):
    """Per-row KD loss of :func:`kd_loss_torch` with hand-written gradients (the torch.compile path).

    Forward: the rows ``u·CE + (1-u)·τ²·KL`` as in :func:`kd_loss_torch`. Backward, with ``g`` the upstream
    gradient of each row (``q = softmax(s/τ)``, ``p = softmax(t/τ)``, ``σ = softmax(s)``)::

        d / d s_j = g · (u (σ_j - [j = target]) + (1 - u) τ (q_j - p_j))
        d / d t_j = g · (1 - u) τ p_j ((log p_j - log q_j) - KL)

    (derived in :mod:`augkd.kernels.triton.kd_loss`). Saved: ``q``, ``p`` and ``σ`` as float32 [B, C] (no
    ``exp`` is recomputed in the backward, which dominates the CPU cost), the target and ``u``; plus
    ``log p - log q`` and KL when the teacher needs a gradient. Eager calls work too (the tests use them).
    """

    @staticmethod
    def forward(ctx, student, teacher, target, u, tau):  # type: ignore[override]
        s32 = student.float()
        log_q, q = _log_softmax_and_softmax(s32 / tau)
        log_p, p = _log_softmax_and_softmax(teacher.float() / tau)
        log_ratio = log_p - log_q
        kl = (p * log_ratio).sum(dim=-1)
        loss = (1.0 - u) * (tau * tau) * kl
        sig = None
        if target is not None:
            log_sig, sig = _log_softmax_and_softmax(s32)
            loss = loss - u * log_sig.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        need_t = ctx.needs_input_grad[1]
        u_t = u if isinstance(u, torch.Tensor) else None
        ctx.save_for_backward(q, p, sig, target, u_t, log_ratio if need_t else None, kl if need_t else None)
        ctx.u_float, ctx.tau, ctx.dtypes = (None if u_t is not None else u), tau, (student.dtype, teacher.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_rows):  # type: ignore[override]
        q, p, sig, target, u_t, log_ratio, kl = ctx.saved_tensors
        u = u_t.unsqueeze(-1) if u_t is not None and u_t.dim() == 1 else (u_t if u_t is not None else ctx.u_float)
        tau = ctx.tau
        w = grad_rows.float().unsqueeze(-1)
        grad_s = grad_t = None
        if ctx.needs_input_grad[0]:
            g = (1.0 - u) * tau * (q - p)
            if target is not None:
                onehot = torch.arange(q.shape[-1], device=q.device) == target.unsqueeze(-1)
                g = g + u * (sig - onehot.float())
            grad_s = (w * g).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_t = (w * (1.0 - u) * tau * p * (log_ratio - kl.unsqueeze(-1))).to(ctx.dtypes[1])
        return grad_s, grad_t, None, None, None
