"""The four public ops of :mod:`augkd.kernels` (re-exported there): argument checks, then one backend's code.

Each checks its arguments (:mod:`augkd.kernels._checks`), picks a backend (:mod:`augkd.kernels._dispatch`) and
runs the Triton launcher (imported lazily), the torch reference or its ``torch.compile`` version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from augkd.errors import KernelUnavailableError

from ._checks import MAX_FUSED_COLS, channel_stats, prepare_kd_args, prepare_mix_args, prepare_uncertainty_args
from ._dispatch import Backend, compiled, get_backend, parse_backend, resolve_backend
from .reference import Uncertainty, fused_mixup_torch, kd_loss_torch, latent_mix_torch, uncertainty_torch

logger = logging.getLogger("augkd.kernels")  # the package's logger, as before the move

BackendArg = Backend | str | None


def _pick(backend: BackendArg, *tensors: torch.Tensor | None, n_cols: int | None = None) -> Backend:
    """Resolve the backend; rows wider than the Triton row kernels allow go to torch (or raise if explicit)."""
    requested = parse_backend(backend) or get_backend()
    chosen = resolve_backend(requested, *tensors)
    if chosen is Backend.TRITON and n_cols is not None and n_cols > MAX_FUSED_COLS:
        reason = f"{n_cols} classes exceed the {MAX_FUSED_COLS} a triton row kernel holds"
        if requested is Backend.TRITON:
            raise KernelUnavailableError(f"backend 'triton' cannot run: {reason}; use backend torch")
        logger.debug("AUTO kernel backend falls back to torch: %s", reason)
        return Backend.TORCH
    return chosen


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None = None,
    u: float | torch.Tensor = 0.5,
    tau: float = 1.0,
    reduction: str = "mean",
    *,
    backend: BackendArg = None,
) -> torch.Tensor:
    """KD loss ``u · CE(student, target) + (1 - u) · τ² · KL(teacher ‖ student)``, per row, then reduced.

    See :func:`augkd.kernels.reference.kd_loss_torch` for the exact math. ``reduction="mean"`` averages the
    per-row losses over the B rows, which for the KL part equals torch's ``kl_div(reduction="batchmean")``.
    Differentiable w.r.t. ``student`` and ``teacher`` (the teacher gradient is computed only when
    ``teacher.requires_grad``); ``u`` and ``target`` get no gradient. The loss is float32 for any logits
    dtype (as torch autocast does for ``cross_entropy`` / ``kl_div``); gradients come in the logits' dtypes.

    Args:
        student: Student logits [B, C].
        teacher: Teacher logits [B, C] (same shape and device).
        target: Class indices, int64 [B], or None for pure KD (then ``u`` must be 0).
        u: CE weight: a float, a 0-d tensor or a [B] tensor (per sample).
        tau: Temperature τ > 0 of the KL term (the CE term is at temperature 1).
        reduction: "mean", "sum" or "none".
        backend: "auto", "triton", "torch" or "compile" (default: context/env default, then auto).

    Returns:
        A float32 scalar, or [B] for ``reduction="none"``.

    Raises:
        InputError: bad shapes/dtypes/devices, out-of-range targets (CPU tensors), ``tau <= 0``, a non-zero
            ``u`` without ``target``, an unknown reduction.
        KernelUnavailableError: backend "triton" was requested and cannot run here.
        ConfigError: ``backend`` is not a backend name.
    """
    s, t, y, uv, tau_f, red = prepare_kd_args(student, teacher, target, u, tau, reduction)
    chosen = _pick(backend, s, t, y, n_cols=s.shape[1])
    if chosen is Backend.TRITON:
        from .triton.kd_loss import kd_loss_launch

        return kd_loss_launch(s, t, y, uv, tau_f, red)
    fn = compiled("kd_loss", kd_loss_torch) if chosen is Backend.COMPILE else kd_loss_torch
    return fn(s, t, y, uv, tau_f, red)


def uncertainty(logits: torch.Tensor, tau: float = 1.0, *, backend: BackendArg = None) -> Uncertainty:
    """Per-row logsumexp, energy, entropy, max probability and argmax of ``softmax(logits / τ)``.

    See :func:`augkd.kernels.reference.uncertainty_torch` for the math. ``lse``, ``energy``, ``entropy`` and
    ``max_prob`` are float32 and differentiable w.r.t. ``logits`` (``max_prob`` through the argmax index);
    ``argmax`` is int64 and not differentiable. Logits must be finite.

    Args:
        logits: [B, C] floating-point logits.
        tau: Temperature τ > 0.
        backend: "auto", "triton", "torch" or "compile".

    Returns:
        ``Uncertainty(lse, energy, entropy, max_prob, argmax)``, each of shape [B].

    Raises:
        InputError: ``logits`` is not a non-empty 2-D floating tensor, or ``tau <= 0``.
        KernelUnavailableError: backend "triton" was requested and cannot run here.
    """
    x, tau_f = prepare_uncertainty_args(logits, tau)
    chosen = _pick(backend, x, n_cols=x.shape[1])
    if chosen is Backend.TRITON:
        from .triton.uncertainty import uncertainty_launch

        return uncertainty_launch(x, tau_f)
    fn = compiled("uncertainty", uncertainty_torch) if chosen is Backend.COMPILE else uncertainty_torch
    return Uncertainty(*fn(x, tau_f))


def fused_mixup(
    x_gen: torch.Tensor,
    x_real: torch.Tensor,
    s: float | torch.Tensor,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    *,
    backend: BackendArg = None,
) -> torch.Tensor:
    """Pixel mixup and per-channel normalisation in one pass: ``((1 - s) · x_gen + s · x_real - mean) / std``.

    See :func:`augkd.kernels.reference.fused_mixup_torch`. Differentiable w.r.t. ``x_gen`` and ``x_real``;
    ``s``, ``mean`` and ``std`` are constants. Normalisation is skipped when both ``mean`` and ``std`` are None.
    Non-contiguous (e.g. channels-last) inputs are copied to NCHW-contiguous first on the Triton path.

    Args:
        x_gen: Generated images [B, C, H, W].
        x_real: Real images [B, C, H, W].
        s: Mixing factor: a float, a 0-d tensor or a [B] tensor (per sample).
        mean: Per-channel mean (C numbers or a [C] tensor), or None.
        std: Per-channel std (C numbers or a [C] tensor), or None.
        backend: "auto", "triton", "torch" or "compile".

    Returns:
        [B, C, H, W] in the promoted dtype of the two inputs.

    Raises:
        InputError: wrong rank/dtype, mismatched shapes or devices, bad ``s``/``mean``/``std``.
        KernelUnavailableError: backend "triton" was requested and cannot run here.
    """
    a, b, sv = prepare_mix_args("x_gen", x_gen, "x_real", x_real, s, 4, "[B, C, H, W] images")
    stats = channel_stats(mean, std, a.shape[1], a.device)
    m, sd = stats if stats is not None else (None, None)
    chosen = _pick(backend, a, b)
    if chosen is Backend.TRITON:
        from .triton.fused_mixup import mixup_launch

        return mixup_launch(a, b, sv, m, sd)
    fn = compiled("fused_mixup", fused_mixup_torch) if chosen is Backend.COMPILE else fused_mixup_torch
    return fn(a, b, sv, m, sd)


def latent_mix(
    z_a: torch.Tensor, z: torch.Tensor, s: float | torch.Tensor, *, backend: BackendArg = None
) -> torch.Tensor:
    """Latent mixup ``(1 - s) · z_a + s · z`` for [B, L] latents (Module 3 of AuG-KD).

    See :func:`augkd.kernels.reference.latent_mix_torch`. Differentiable w.r.t. ``z_a`` and ``z``. Shares the
    Triton kernels of :func:`fused_mixup` ([B, L] viewed as B planes of one channel, no normalisation).

    Args:
        z_a: Anchored latents [B, L].
        z: Latents [B, L].
        s: Mixing factor: a float, a 0-d tensor or a [B] tensor.
        backend: "auto", "triton", "torch" or "compile".

    Returns:
        [B, L] in the promoted dtype of the two inputs.

    Raises:
        InputError: wrong rank/dtype, mismatched shapes or devices, bad ``s``.
        KernelUnavailableError: backend "triton" was requested and cannot run here.
    """
    a, b, sv = prepare_mix_args("z_a", z_a, "z", z, s, 2, "[B, L] latents")
    chosen = _pick(backend, a, b)
    if chosen is Backend.TRITON:
        from .triton.fused_mixup import mixup_launch

        return mixup_launch(a, b, sv)
    fn = compiled("latent_mix", latent_mix_torch) if chosen is Backend.COMPILE else latent_mix_torch
    return fn(a, b, sv)
