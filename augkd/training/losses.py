"""AuG-KD's loss terms, computed through the ``augkd.kernels`` ops (whichever backend the dispatcher picks)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from augkd.errors import ConfigError
from augkd.kernels import kd_loss, uncertainty
from augkd.models.layers import is_channels_last

if TYPE_CHECKING:
    from augkd.config import Module1Config, Module2Config


class _ChannelMeanVar(torch.autograd.Function):
    """Per-channel mean and unbiased variance of x [N, C, H, W] over (N, H, W), in fp32, any input dtype.

    On CPU: ATen's BatchNorm statistics kernel in batch chunks merged in fp64 (:func:`_cpu_mean_var`).
    Elsewhere: two passes accumulated in fp32 (the mean, then the sum of squared deviations), reading a
    channels_last map through a free [N·H·W, C] view. Neither has the Σx² − M·mean² cancellation when
    |mean| ≫ std, as for near-constant early generator images. Backward is one fused fp32 expression,
    dx = g_mean / M + 2 g_var (x − mean) / (M − 1), cast to x's dtype once — instead of autograd's chain
    of full-size temporaries behind ``torch.var_mean``.
    """

    @staticmethod
    def _flat(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if is_channels_last(x):
            return x.permute(0, 2, 3, 1).reshape(-1, c)
        return x.transpose(0, 1).reshape(c, -1).t()

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        m = x.numel() // max(c, 1)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        if x.device.type == "cpu" and m > 1:
            mean, var = _cpu_mean_var(x, acc)
        else:
            flat = _ChannelMeanVar._flat(x)
            mean = flat.sum(dim=0, dtype=acc) / m
            dev = flat.to(acc) - mean
            var = torch.linalg.vector_norm(dev, dim=0).square() / (m - 1) if m > 1 else mean * float("nan")
        ctx.save_for_backward(x, mean)
        ctx.m = m
        return mean.float(), var.float()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_mean: torch.Tensor, g_var: torch.Tensor) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        m = ctx.m
        shape = (1, -1, 1, 1)
        a = g_var.to(mean.dtype) * (2.0 / max(m - 1, 1))
        b = g_mean.to(mean.dtype) / m - a * mean  # dx = a·x + b per channel, in fp32 (|a·x| ≈ |b| cancels)
        return torch.addcmul(b.view(shape), x.to(mean.dtype), a.view(shape)).to(x.dtype)


_STATS_CHUNK = 16384  # target per-channel values per call of the CPU statistics kernel (see _cpu_mean_var)


def _cpu_mean_var(x: torch.Tensor, acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, unbiased var) through ATen's CPU BatchNorm statistics kernel, in batch chunks.

    ``torch.batch_norm_update_stats`` reads the bf16 (or fp32) map in either layout and accumulates in fp32:
    ~25× faster than generic reductions on a [256, 32, 32, 32] bf16 map (1.3 vs 33 ms, 2 threads). Its
    fp32 running sums lose precision over long reductions (var off by 1e-2 relative at |mean|/std = 400
    over 262 k values), so the batch is cut into chunks of about ``_STATS_CHUNK`` values per channel (one
    sample at least, so maps larger than 128×128 get one sample per chunk) and the chunks are merged in fp64
    (Chan et al.'s pairwise formula): ≤ 4e-5 relative there, ~2 ms.
    """
    n, c = x.shape[0], x.shape[1]
    per_sample = x.numel() // max(n * c, 1)
    k = min(n, max(1, math.ceil(n * per_sample / _STATS_CHUNK)))
    # running buffers in the accumulation dtype make the kernel accumulate in fp32/fp64 (without them it
    # works in the input dtype: bf16 statistics); momentum 0 leaves them as they are, they are not used
    run_mean, run_var = torch.zeros(c, dtype=acc), torch.ones(c, dtype=acc)
    means, vars_b, counts = [], [], []
    for xc in x.chunk(k):  # along N: each chunk keeps x's memory layout
        mu, vb = torch.batch_norm_update_stats(xc, run_mean, run_var, 0.0)  # (mean, biased var)
        means.append(mu.double())
        vars_b.append(vb.double())
        counts.append(xc.shape[0] * per_sample)
    cnt = torch.tensor(counts, dtype=torch.float64).view(-1, 1)
    mu_k, var_k = torch.stack(means), torch.stack(vars_b)
    total = cnt.sum()
    mean = (cnt * mu_k).sum(0) / total
    var = (cnt * (var_k + (mu_k - mean) ** 2)).sum(0) / (total - 1)
    return mean.to(acc), var.to(acc)


def channel_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased var) per channel of a [N, C, H, W] map over (N, H, W), fp32, differentiable."""
    return _ChannelMeanVar.apply(x)


def pooled_mean_var(stats: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance over equal-weight batches from each batch's (mean, var): E[x] = mean of the batch
    means, Var = mean of (batch var + batch mean²) − E[x]²."""
    assert stats, "no batches"
    mean = torch.stack([m for m, _ in stats]).mean(0)
    return mean, torch.stack([v + m * m for m, v in stats]).mean(0) - mean * mean


def layer_rel_terms(
    mean: torch.Tensor, var: torch.Tensor, t_mean: torch.Tensor, t_var: torch.Tensor, sizes: list[int]
) -> list[torch.Tensor]:
    """Each layer's share of the ``layer_rel`` BN term: √mean_c((μ_c − μ*_c)² / σ*²_c) + √mean_c(log²(σ²_c / σ*²_c))
    over that layer's channels (``sizes``: channels per layer of the concatenated per-channel statistics)."""
    floor = 1e-8  # a dead channel (σ*² = 0) or an empty batch variance stays finite
    zm = ((mean - t_mean) ** 2 / t_var.clamp_min(floor)).split(sizes)
    lv = (torch.log(var.clamp_min(floor) / t_var.clamp_min(floor)) ** 2).split(sizes)
    return [(a.mean() + 1e-12).sqrt() + (b.mean() + 1e-12).sqrt() for a, b in zip(zm, lv, strict=True)]


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
        mean, var = channel_mean_var(inputs[0])
        self._means.append(mean)
        self._vars.append(var)

    def loss(self, form: str = "concat") -> torch.Tensor:
        """The BN-matching loss of the last forward pass (and clear the record).

        ``concat`` (official): ‖Δμ‖₂ + ‖Δσ²‖₂ over all layers' channels concatenated. ``layer_sum``: the sum
        over layers of each layer's ‖Δμ_l‖₂ + ‖Δσ²_l‖₂ (DeepInversion, DFQ, CMI); ``layer_mean``: that sum divided
        by the number of layers, so its scale does not grow with the teacher's depth. ``layer_rel`` (augkd's):
        each channel's error in its own target's units, RMS over a layer's channels, mean over layers:
        mean_l [√mean_c((μ_c − μ*_c)² / σ*²_c) + √mean_c(log²(σ²_c / σ*²_c))], so a layer with wide
        activations (whose absolute error is mostly a batch's sampling noise) no longer outweighs the others.
        """
        assert self.run_mean is not None and self.run_var is not None and self._means, "no BN statistics recorded"
        mean, var = torch.cat(self._means), torch.cat(self._vars)
        self._means, self._vars = [], []
        rm, rv = self.run_mean.to(mean.device), self.run_var.to(var.device)
        if form == "concat":
            return torch.linalg.vector_norm(mean - rm) + torch.linalg.vector_norm(var - rv)
        if form not in ("layer_mean", "layer_sum", "layer_rel"):
            raise ValueError(f"unknown BN loss form {form!r}")
        sizes = [m.num_features for m in self.layers]
        if form == "layer_rel":
            return torch.stack(layer_rel_terms(mean, var, rm, rv, sizes)).mean()
        dm, dv = (mean - rm).split(sizes), (var - rv).split(sizes)
        per_layer = [torch.linalg.vector_norm(a) + torch.linalg.vector_norm(b) for a, b in zip(dm, dv, strict=True)]
        return torch.stack(per_layer).mean() if form == "layer_mean" else torch.stack(per_layer).sum()

    def clear(self) -> None:
        self._means, self._vars = [], []

    @torch.no_grad()
    def set_targets_from(self, net: nn.Module, batches: list[torch.Tensor]) -> None:
        """Match the statistics of ``net``'s BN inputs on real images instead of its running statistics:
        each layer's per-channel mean and variance over all images of ``batches`` (:func:`pooled_mean_var`)."""
        if not self.layers:
            return
        self.enabled = True
        stats = []
        for xb in batches:
            net(xb)
            stats.append((torch.cat(self._means), torch.cat(self._vars)))
            self.clear()
        self.enabled = False
        self.run_mean, self.run_var = pooled_mean_var(stats)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def generator_loss(
    t_logits: torch.Tensor,
    s_logits: torch.Tensor,
    bn_loss: torch.Tensor | None,
    cfg: Module1Config,
    backend: str | None = None,
) -> dict[str, torch.Tensor]:
    """L_G = −w_adv·KL(T‖S) + w_ce·CE(T, argmax T) + w_balance·Σ p̄ log₁₀ p̄ + w_bn·BN (Module 1).

    With ``cfg.adv_mask`` the adversarial KL counts only the images where the teacher's and the student's
    top-1 agree (Fast-DFKD): (1/B) Σ_i 1[argmax t_i = argmax s_i]·KL_i; ``adv_frac`` is the share of them.
    """
    if getattr(cfg, "adv_mask", False):
        t32, s32 = t_logits.float(), s_logits.float()
        log_pt = F.log_softmax(t32, dim=1)
        per = (log_pt.exp() * (log_pt - F.log_softmax(s32, dim=1))).sum(dim=1)
        agree = (t32.argmax(dim=1) == s32.argmax(dim=1)).to(per.dtype)
        kl = (per * agree).mean()
        adv_frac = agree.mean()
    else:
        kl = kd_loss(s_logits.float(), t_logits.float(), None, u=0.0, tau=1.0, backend=backend)
        adv_frac = None
    unc = uncertainty(t_logits.float(), tau=1.0, backend=backend)
    # CE(t, argmax t) = logsumexp(t) − max(t) = −energy − max(t) at τ = 1
    ce = (-unc.energy - t_logits.float().max(dim=1).values).mean()
    p_bar = F.softmax(t_logits.float(), dim=1).mean(dim=0)
    balance = (p_bar * torch.log10(p_bar.clamp_min(1e-12))).sum()
    bn = bn_loss if bn_loss is not None else torch.zeros((), device=t_logits.device)
    total = -cfg.w_adv * kl + cfg.w_ce * ce + cfg.w_balance * balance + cfg.w_bn * bn
    out = {"loss": total, "kl": kl.detach(), "ce": ce.detach(), "balance": balance.detach(), "bn": bn.detach()}
    if adv_frac is not None:
        out["adv_frac"] = adv_frac.detach()
    return out


def input_stats_loss(xn: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """‖μ_c − μ*‖₂ + ‖σ²_c − σ²*‖₂ of the teacher's normalised input [N, C, H, W] over (N, H, W); the
    target (μ*, σ²*) is (0, 1) unless given (``module1.stats_target: student_domain``).

    The teacher's normalisation constants are its training data's per-channel mean and std, so images
    from that distribution have mean 0 and variance 1 after it: a BN-statistics term for the input layer,
    which also holds for a teacher without BatchNorm (the ccexam MNIST teacher: mean 0.1307, std 0.3081,
    mostly black images with bright strokes).
    """
    mean, var = channel_mean_var(xn)
    if target is None:
        return torch.linalg.vector_norm(mean) + torch.linalg.vector_norm(var - 1.0)
    return torch.linalg.vector_norm(mean - target[0].to(mean)) + torch.linalg.vector_norm(var - target[1].to(var))


class FeatureHook:
    """Records the input of a network's last ``nn.Linear`` layer (its penultimate features, flattened) on
    every forward pass while ``enabled``: DAFL's activation term and CMI's contrastive term use them."""

    def __init__(self, net: nn.Module) -> None:
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(
                "the teacher has no Linear layer: module1.w_act and w_contrast, and module2.w_encoder and "
                "w_anchor_instance, need its penultimate features (the input of its last Linear layer)"
            )
        self.enabled = False
        self.features: list[torch.Tensor] = []
        self._handle = linears[-1].register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.enabled:
            self.features.append(inputs[0].flatten(1))

    def pop(self) -> torch.Tensor:
        """The features of the last recorded pass (and clear the record)."""
        assert self.features, "no features recorded"
        out, self.features = self.features[-1], []
        return out

    def forward(self, teacher: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, penultimate features) of ``teacher`` (a FrozenTeacher on whose ``net`` this hook sits) on
        ``x``, through the unfolded net, where the hook is, under grad or no_grad as the caller runs; the hook is
        disabled afterwards."""
        self.enabled = True
        try:
            logits = teacher.net(teacher.prepare(x))
            return logits, self.pop()
        finally:
            self.enabled = False

    def remove(self) -> None:
        self._handle.remove()


def activation_loss(f: torch.Tensor) -> torch.Tensor:
    """DAFL's activation term: −mean |f| of the penultimate features (minimised: features pushed up)."""
    return -f.float().abs().mean()


def instance_contrast_loss(f1: torch.Tensor, f2: torch.Tensor, f_neg: torch.Tensor | None, tau: float) -> torch.Tensor:
    """InfoNCE instance discrimination (CMI's diversity term): for each row i of ``f1``, the positive is row
    i of ``f2`` (another view of the same image); the negatives are the other rows of ``f2`` and every row
    of ``f_neg`` (images already in the bank). Features are L2-normalised; similarities are divided by
    ``tau``; the loss is the mean cross-entropy of picking the positive."""
    a, b = F.normalize(f1.float(), dim=1), F.normalize(f2.float(), dim=1)
    keys = b if f_neg is None else torch.cat([b, F.normalize(f_neg.float(), dim=1)])
    logits = a @ keys.t() / tau
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean |x[h+1] − x[h]| + mean |x[w+1] − x[w]| (DeepInversion's TV prior)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def encoder_loss(
    z_hat: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kld_weight: float
) -> torch.Tensor:
    """(1/B)[Σ‖ẑ − z‖² + w·(−½)Σ(1 + log σ² − μ² − σ²)] (the official VAE encoder loss)."""
    b = z.shape[0]
    mse = (z_hat - z).pow(2).sum()
    kld = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
    return (mse + kld_weight * kld) / b


def encoder_real_loss(
    f_rec: torch.Tensor,
    f_real: torch.Tensor,
    t_rec: torch.Tensor,
    y: torch.Tensor,
    w: float,
    inverse: torch.Tensor,
    w_instance: float = 0.0,
    instance_tau: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Module 2's encoder loss on real images (module2.w_encoder): w·[(1 − cos(f(G(E(x))), f(x))) + CE(T(G(E(x))), y)]
    + w_instance·InfoNCE(f(G(E(x))) → f(x)) + ``inverse`` (Module 1's encoder loss on generated images, per latent
    dimension), where f is the teacher's penultimate features. The cosine is the mean over rows; the InfoNCE
    term (:func:`instance_contrast_loss`, temperature ``instance_tau``) asks each G(E(x_i)) to be closer to its
    own x_i than to every other image of the batch, those of its class included (module2.w_instance)."""
    feat = 1.0 - F.cosine_similarity(f_rec.float(), f_real.float(), dim=1).mean()
    ce = F.cross_entropy(t_rec.float(), y)
    total = w * (feat + ce) + inverse
    out = {"feat": feat.detach(), "ce": ce.detach(), "inverse": inverse.detach()}
    if w_instance > 0:
        inst = instance_contrast_loss(f_rec, f_real, None, instance_tau)
        total = total + w_instance * inst
        out["instance"] = inst.detach()
    return {"loss": total, **out}


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
    return {
        "loss": total,
        "energy": energy.detach(),
        "mask": mask.detach(),
        "ce": ce.detach(),
        "mask_mean": m.detach().float().mean(),
    }


def student_kd_loss(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    y: torch.Tensor | None,
    u: float,
    tau: float,
    backend: str | None = None,
) -> torch.Tensor:
    """u·CE(S, y) + (1 − u)·τ²·KL(softmax(T/τ) ‖ softmax(S/τ)), mean over rows."""
    if u >= 1.0 and y is not None:
        return F.cross_entropy(s_logits.float(), y)
    return kd_loss(s_logits.float(), t_logits.float(), y if u > 0 else None, u=u, tau=tau, backend=backend)
