"""AuG-KD's loss terms, computed through the ``augkd.kernels`` ops (whichever backend the dispatcher picks)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from augkd.kernels import kd_loss, uncertainty

if TYPE_CHECKING:
    from augkd.config import Module1Config, Module2Config


class BNStatsHook:
    """Forward hooks on every BatchNorm2d of a (frozen) network: the batch statistics of their inputs.

    ``loss()`` = ‖μ_batch − μ_running‖₂ + ‖σ²_batch − σ²_running‖₂ over all layers' channels
    concatenated (unsquared L2 norms, unbiased variance over N, H, W), as the official code.
    """

    def __init__(self, net: nn.Module) -> None:
        self.layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        self._means: list[torch.Tensor] = []
        self._vars: list[torch.Tensor] = []
        self.enabled = False
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        self.run_mean = torch.cat([m.running_mean.detach().float() for m in self.layers]) if self.layers else None
        self.run_var = torch.cat([m.running_var.detach().float() for m in self.layers]) if self.layers else None

    @property
    def num_channels(self) -> int:
        return sum(m.num_features for m in self.layers)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = inputs[0].float()
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a free [N·H·W, C] view: one pass per channel
            var, mean = torch.var_mean(x, dim=0, correction=1)
        else:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)
        self._means.append(mean)
        self._vars.append(var)

    def loss(self) -> torch.Tensor:
        """The BN-matching loss of the last forward pass (and clear the record)."""
        assert self.run_mean is not None and self.run_var is not None and self._means, "no BN statistics recorded"
        mean, var = torch.cat(self._means), torch.cat(self._vars)
        self._means, self._vars = [], []
        rm, rv = self.run_mean.to(mean.device), self.run_var.to(var.device)
        return torch.linalg.vector_norm(mean - rm) + torch.linalg.vector_norm(var - rv)

    def clear(self) -> None:
        self._means, self._vars = [], []

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def generator_loss(
    t_logits: torch.Tensor, s_logits: torch.Tensor, bn_loss: torch.Tensor | None, cfg: Module1Config,
    backend: str | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """L_G = −w_adv·KL(T‖S) + w_ce·CE(T, argmax T) + w_balance·Σ p̄ log₁₀ p̄ + w_bn·BN (Module 1)."""
    kl = kd_loss(s_logits.float(), t_logits.float(), None, u=0.0, tau=1.0, backend=backend)
    unc = uncertainty(t_logits.float(), tau=1.0, backend=backend)
    # CE(t, argmax t) = logsumexp(t) − max(t) = −energy − max(t) at τ = 1
    ce = (-unc.energy - t_logits.float().max(dim=1).values).mean()
    p_bar = F.softmax(t_logits.float(), dim=1).mean(dim=0)
    balance = (p_bar * torch.log10(p_bar.clamp_min(1e-12))).sum()
    bn = bn_loss if bn_loss is not None else torch.zeros((), device=t_logits.device)
    total = -cfg.w_adv * kl + cfg.w_ce * ce + cfg.w_balance * balance + cfg.w_bn * bn
    return {"loss": total, "kl": kl.detach(), "ce": ce.detach(), "balance": balance.detach(), "bn": bn.detach()}


def encoder_loss(
    z_hat: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kld_weight: float
) -> torch.Tensor:
    """(1/B)[Σ‖ẑ − z‖² + w·(−½)Σ(1 + log σ² − μ² − σ²)] (the official VAE encoder loss)."""
    b = z.shape[0]
    mse = (z_hat - z).pow(2).sum()
    kld = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
    return (mse + kld_weight * kld) / b


def mask_penalty(m: torch.Tensor, invariant: float, form: str) -> torch.Tensor:
    """per_sample: mean_i |mean_j m_ij − (1 − α)|;  batch_total (official, B2): |Σ m − (1 − α)·L| / B."""
    if form == "per_sample":
        return (m.mean(dim=1) - (1.0 - invariant)).abs().mean()
    return (m.sum() - (1.0 - invariant) * m.shape[1]).abs() / m.shape[0]


def anchor_loss(
    t_logits: torch.Tensor,
    y: torch.Tensor,
    m: torch.Tensor,
    cfg: Module2Config,
    backend: str | None = None,
) -> dict[str, torch.Tensor]:
    """L_A = mean energy(T(G(z_a))) + w_mask·mask penalty + w_ce·CE(T(G(z_a)), y) (Module 2)."""
    energy = uncertainty(t_logits.float(), tau=cfg.tau, backend=backend).energy.mean()
    mask = mask_penalty(m.float(), cfg.invariant, cfg.mask_form)
    ce = F.cross_entropy(t_logits.float(), y)
    total = energy + cfg.w_mask * mask + cfg.w_ce * ce
    return {"loss": total, "energy": energy.detach(), "mask": mask.detach(), "ce": ce.detach(),
            "mask_mean": m.detach().float().mean()}  # fmt: skip


def student_kd_loss(
    s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor | None, u: float, tau: float,
    backend: str | None = None,
) -> torch.Tensor:  # fmt: skip
    """u·CE(S, y) + (1 − u)·τ²·KL(softmax(T/τ) ‖ softmax(S/τ)), mean over rows."""
    if u >= 1.0 and y is not None:
        return F.cross_entropy(s_logits.float(), y)
    return kd_loss(s_logits.float(), t_logits.float(), y if u > 0 else None, u=u, tau=tau, backend=backend)


def is_finite(x: torch.Tensor) -> bool:
    v = float(x.detach())
    return math.isfinite(v)
