"""Input validation shared by the public ops, the references and the Triton launchers.

Every failure raises :class:`~augkd.errors.InputError` naming the argument, what was expected and what was
given. None of these checks reads tensor *values* from a CUDA device (no host synchronisation); checks on
values (target range, ``std != 0``) run only for CPU tensors or Python numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from augkd.errors import InputError

Scalar = float | int
ScalarOrTensor = float | int | torch.Tensor

# The Triton row kernels hold one whole row of logits in one block: at most this many classes.
MAX_FUSED_COLS = 65536


def check_tensor(name: str, t: object, ndim: int, layout: str) -> torch.Tensor:
    """Check that ``t`` is a floating-point tensor of rank ``ndim``; ``layout`` names the dims, e.g. '[B, C]'."""
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise InputError(f"{name} must be {ndim}-D {layout}, got {t.dim()}-D with shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Check that two tensors have the same shape and device."""
    if a.shape != b.shape:
        raise InputError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise InputError(f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")


def check_nonempty(name: str, t: torch.Tensor) -> None:
    """Reject tensors with a zero-sized dimension (a row op has nothing to reduce)."""
    if t.numel() == 0:
        raise InputError(f"{name} must not be empty, got shape {tuple(t.shape)}")


def per_sample(name: str, value: ScalarOrTensor, batch: int, device: torch.device) -> float | torch.Tensor:
    """Check a per-sample factor: a Python number stays a float; a 0-d or [B] tensor becomes detached float32.

    A float goes to the kernels as a scalar argument (no host-to-device copy per call); a tensor has shape []
    (one value for all samples) or [B], read with stride 0 or 1.

    Raises:
        InputError: ``value`` has another shape or type, or is not finite (Python numbers only).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise InputError(f"{name} must be a float, a 0-d tensor or a [B] tensor, got {type(value).__name__}")
    if not isinstance(value, torch.Tensor):
        if not math.isfinite(value):
            raise InputError(f"{name} must be finite, got {value}")
        return float(value)
    if value.dim() == 0:
        pass
    elif value.dim() == 1 and value.shape[0] == batch:
        pass
    else:
        raise InputError(f"{name} must be a 0-d tensor or have shape [B]=({batch},), got shape {tuple(value.shape)}")
    if value.is_complex() or value.dtype == torch.bool:
        raise InputError(f"{name} must be a real number tensor, got dtype {value.dtype}")
    return value.detach().to(device=device, dtype=torch.float32).contiguous()


def channel_stats(
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Validate per-channel normalisation constants; returns float32 [C] tensors or None (no normalisation).

    Raises:
        InputError: only one of mean/std is given, a length differs from C, or std has a zero (std given as
            numbers or as a CPU tensor; CUDA tensors are not read back).
    """
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        missing = "mean" if mean is None else "std"
        raise InputError(f"mean and std must be given together (or both None), got {missing}=None")
    if not isinstance(mean, torch.Tensor) and not isinstance(std, torch.Tensor):
        try:
            key = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        except (TypeError, ValueError) as exc:
            raise InputError(f"mean and std must be sequences of numbers or tensors, got {mean!r} and {std!r}") from exc
        return _constant_stats(*key, channels, device)
    return _channel_stats(mean, std, channels, device)


@functools.lru_cache(maxsize=64)
def _constant_stats(
    mean: tuple[float, ...], std: tuple[float, ...], channels: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Constant normalisation given as numbers: converted (and copied to the device) once, then cached."""
    return _channel_stats(mean, std, channels, device)


def _channel_stats(mean, std, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for name, v in (("mean", mean), ("std", std)):
        t = v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float32)
        if t.dim() != 1 or t.shape[0] != channels:
            raise InputError(f"{name} must have one value per channel, shape ({channels},), got {tuple(t.shape)}")
        out.append(t)
    if out[1].device.type == "cpu" and bool((out[1] == 0).any()):
        raise InputError(f"std must be non-zero in every channel, got {out[1].tolist()}")
    return out[0].to(device=device, dtype=torch.float32), out[1].to(device=device, dtype=torch.float32)


def check_logits_pair(student: object, teacher: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Check student/teacher logits: [B, C] floating tensors of one shape and device, non-empty."""
    s = check_tensor("student", student, 2, "[B, C] logits")
    t = check_tensor("teacher", teacher, 2, "[B, C] logits")
    check_same("student", s, "teacher", t)
    check_nonempty("student", s)
    return s, t


def check_target(target: object, batch: int, classes: int, device: torch.device) -> torch.Tensor:
    """Check class-index targets: int64 [B] on the logits' device; range-checked on CPU only."""
    if not isinstance(target, torch.Tensor):
        raise InputError(f"target must be an int64 tensor [B], got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise InputError(f"target must have dtype torch.int64 (class indices), got {target.dtype}")
    if target.dim() != 1 or target.shape[0] != batch:
        raise InputError(f"target must have shape [B]=({batch},), got {tuple(target.shape)}")
    if target.device != device:
        raise InputError(f"target must be on the logits' device {device}, got {target.device}")
    if target.device.type == "cpu" and target.numel() > 0:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= classes:
            raise InputError(f"target must hold class indices in [0, {classes - 1}], got values in [{lo}, {hi}]")
    return target


def check_tau(tau: object) -> float:
    """Check the temperature: a finite Python number > 0."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise InputError(f"tau must be a finite number > 0, got {tau!r}")
    return float(tau)


REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: object) -> str:
    """Check the reduction name."""
    if reduction not in REDUCTIONS:
        raise InputError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return str(reduction)


def prepare_kd_args(
    student: object,
    teacher: object,
    target: object,
    u: ScalarOrTensor,
    tau: object,
    reduction: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float | torch.Tensor, float, str]:
    """Validate the arguments of ``kd_loss``; returns them with ``u`` as a float or a float32 [] / [B] tensor.

    Raises:
        InputError: any bad argument, including a non-zero ``u`` without ``target`` (checked on the device
            for tensor ``u``, which costs one synchronisation in that unusual call only).
    """
    s, t = check_logits_pair(student, teacher)
    n_rows, n_cols = s.shape
    y = None if target is None else check_target(target, n_rows, n_cols, s.device).contiguous()
    tau_f = check_tau(tau)
    red = check_reduction(reduction)
    uv = per_sample("u", u, n_rows, s.device)
    if y is None and (bool((uv != 0).any()) if isinstance(uv, torch.Tensor) else uv != 0):
        shown = uv if not isinstance(uv, torch.Tensor) else f"a tensor starting {uv.flatten()[:4].tolist()}"
        raise InputError(f"u must be 0 when target is None (pure KD, no CE term), got u={shown}")
    return s, t, y, uv, tau_f, red


def prepare_uncertainty_args(logits: object, tau: object) -> tuple[torch.Tensor, float]:
    """Validate the arguments of ``uncertainty``."""
    x = check_tensor("logits", logits, 2, "[B, C]")
    check_nonempty("logits", x)
    return x, check_tau(tau)


def prepare_mix_args(
    name_a: str, a: object, name_b: str, b: object, s: ScalarOrTensor, ndim: int, layout: str
) -> tuple[torch.Tensor, torch.Tensor, float | torch.Tensor]:
    """Validate a pair of tensors to mix and the factor ``s``; returns ``s`` as a float or a float32 tensor."""
    ta = check_tensor(name_a, a, ndim, layout)
    tb = check_tensor(name_b, b, ndim, layout)
    check_same(name_a, ta, name_b, tb)
    return ta, tb, per_sample("s", s, ta.shape[0], ta.device)
