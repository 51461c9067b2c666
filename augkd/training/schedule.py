"""Pure schedule functions (unit-tested against the spec's table)."""

from __future__ import annotations

import math


def stage_factor(epoch: int, total_epochs: int, a: float, b: float, kind: str = "linear") -> float:
    """Module 3's stage factor s(e): how much of the real image (and real latent) a mixup keeps.

    linear: s = min(1, b + (1 − b) · e / (a · E));  step: s = min(1, b + (1 − b) · ⌊10 · e / (a · E)⌋ / 10).
    With a = 0.6, b = 0.2, E = 200: s = 0.2, 0.4, 0.6, 0.8, 1.0 at e = 0, 30, 60, 90, 120.
    """
    if total_epochs <= 0:
        return 1.0
    progress = epoch / (a * total_epochs)
    if kind == "step":
        progress = math.floor(10 * progress + 1e-9) / 10
    elif kind != "linear":
        raise ValueError(f"unknown schedule {kind!r}: use linear or step")
    return float(min(1.0, b + (1.0 - b) * progress))


def cosine_factor(epoch: int, total_epochs: int) -> float:
    """CosineAnnealingLR (eta_min 0) stepped once per epoch: lr(e) / lr = (1 + cos(pi · e / E)) / 2."""
    if total_epochs <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total_epochs) / total_epochs))


def warmup_factor(step: int, warmup_steps: int = 5, factor: float = 1.0 / 3.0) -> float:
    """PyTorch ConstantLR defaults: ``factor`` for the first ``warmup_steps`` steps, then 1."""
    return factor if step < warmup_steps else 1.0
