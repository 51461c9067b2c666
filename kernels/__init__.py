"""Fused tensor ops of augkd (installed as ``augkd.kernels``): KD loss, uncertainty scores and mixups.

Each op has a pure-torch reference (:mod:`augkd.kernels.reference`, the spec and the CPU/export path), Triton
forward/backward kernels (:mod:`augkd.kernels.triton`, loaded lazily) and one public function (defined in
:mod:`augkd.kernels._ops`, exported here) that dispatches on ``backend=`` (see :mod:`augkd.kernels._dispatch`
for the rules):

- :func:`kd_loss`: ``u · CE(student, target) + (1 - u) · τ² · KL(teacher ‖ student)``, gradients to both logits;
- :func:`uncertainty`: logsumexp, energy, entropy, max probability and argmax per row of logits;
- :func:`fused_mixup`: ``((1 - s) · x_gen + s · x_real - mean) / std`` for NCHW images in one pass;
- :func:`latent_mix`: ``(1 - s) · z_a + s · z`` for [B, L] latents.

Importing this package imports torch only: no triton, no CUDA initialisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dispatch import (
    Backend,
    available_backends,
    get_backend,
    resolve_backend,
    set_backend,
    use_backend,
)
from ._ops import fused_mixup, kd_loss, latent_mix, uncertainty
from .reference import Uncertainty

if TYPE_CHECKING:
    from .selftest import run_selftest as run_selftest

__all__ = [
    "Backend",
    "Uncertainty",
    "available_backends",
    "fused_mixup",
    "get_backend",
    "kd_loss",
    "latent_mix",
    "resolve_backend",
    "run_selftest",
    "set_backend",
    "uncertainty",
    "use_backend",
]


def __getattr__(name: str):  # lazy: the self-test pulls in subprocess/json only when asked for
    if name == "run_selftest":
        from .selftest import run_selftest

        return run_selftest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
