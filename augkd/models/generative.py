"""AuG-KD's generator G, label-conditioned VAE encoder E and AnchorNet A.

Tang et al., "AuG-KD: Anchor-Based Mixup Generation for Out-of-Domain Knowledge Distillation",
ICLR 2024. Layer layouts follow the official code (docs/decisions.md, "Sizes"); sizes grow
with the image size: an ``s×s`` base (s ≤ 8) and one ×2 stage per doubling, so 32, 64, 128 and 224 work.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augkd.models.layers import flat_linears, is_channels_last
from augkd.models.registry import register_model


def stage_plan(image_size: int) -> tuple[int, int]:
    """(base, stages): the smallest number of ×2 stages so that base = ceil(size / 2**stages) ≤ 8."""
    stages = max(0, math.ceil(math.log2(image_size / 8))) if image_size > 8 else 0
    return math.ceil(image_size / 2**stages), stages


def _uniform_init(module: nn.Module, bound: float = 0.08, conv: bool = True) -> None:
    """The official code's init: Linear (and Conv2d) weights U(-0.08, 0.08), biases zero."""
    types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d) if conv else (nn.Linear,)
    for m in module.modules():
        if isinstance(m, types):
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# Row (and column) taps of nearest ×2 upsampling followed by a 3×3 conv, as a stride-2 4-tap transposed
# conv: output row 2i + a sees low-res rows i − 1, i (a = 0: taps w0, w1 + w2) or i, i + 1 (a = 1: w0 + w1, w2);
# with ``conv_transpose2d(stride=2, padding=1)`` tap k of the 4-tap kernel lands on row p = 2q − 1 + k.
_UP2_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample2x_conv3x3_kernel(w: torch.Tensor) -> torch.Tensor:
    """The ``conv_transpose2d`` kernel [I, O, 4, 4] equal to nearest ×2 upsampling then the conv ``w`` [O, I, 3, 3]."""
    r = torch.tensor(_UP2_TAPS, dtype=w.dtype, device=w.device)
    return torch.einsum("ay,oiyx,bx->ioab", r, w, r)


class UpsampleConv2d(nn.Conv2d):
    """×2 nearest upsampling followed by this 3×3 conv (padding 1), computed without the upsampled map.

    Each output pixel (2i + a, 2j + b) only sees low-res rows/columns {i−1, i} or {i, i+1}, so the pair is
    one stride-2 transposed conv with a 4×4 kernel folded from the 3×3 one: 4/9 of the multiply-adds, no
    upsampled intermediate, and the output is written interleaved by the conv itself. Same result up to
    float rounding; measured 2.3–2.8× faster forward and ~2× faster forward+backward than upsample-then-conv
    for the generator's layers (bf16, oneDNN, CPU). The parameters are those of the plain 3×3 ``nn.Conv2d``
    (same checkpoint keys and init).
    """

    def __init__(self, cin: int, cout: int, bias: bool = False) -> None:
        super().__init__(cin, cout, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, upsample2x_conv3x3_kernel(self.weight), self.bias, stride=2, padding=1)


class Generator(nn.Module):
    """Unconditional DCGAN-style generator: z [B, L] → image [B, 3, S, S] in (0, 1) (sigmoid)."""

    def __init__(self, latent_dim: int = 100, image_size: int = 32, width: int = 256, out_chans: int = 3) -> None:
        super().__init__()
        self.latent_dim, self.image_size = latent_dim, image_size
        self.base, stages = stage_plan(image_size)
        self.width = width
        self.fc = nn.Linear(latent_dim, width * self.base * self.base)
        self.bn0 = nn.BatchNorm2d(width)
        layers: list[nn.Module] = []
        cin = width
        for _ in range(stages):
            cout = max(cin // 2, 8)
            layers += [
                nn.Identity(),  # was nn.Upsample(×2): now inside UpsampleConv2d; the slot keeps checkpoint keys
                UpsampleConv2d(cin, cout, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, out_chans, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.width, self.base, self.base)
        if is_channels_last(self.head.weight):
            # the net was moved to channels_last: so must its first activation (a view of fc's output is NCHW),
            # else every layer below runs NCHW and the nearest upsampling alone costs 9× (measured, bf16 CPU)
            x = x.contiguous(memory_format=torch.channels_last)
        x = torch.sigmoid(self.head(self.blocks(self.bn0(x))))
        if x.shape[-1] != self.image_size:  # sizes that are not base·2^k (e.g. 100): resample once
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


class Encoder(nn.Module):
    """Label-conditioned VAE encoder: (image in [0,1], label) → (z, mu, logvar), each [B, L].

    Training samples z = mu + exp(logvar/2)·eps (eps clipped to [-10, 10]); in eval mode z = mu
    unless ``sample_in_eval`` (the official code always samples, bug B13).
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 100,
        image_size: int = 32,
        width: int = 64,
        in_chans: int = 3,
        sample_in_eval: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes, self.image_size, self.sample_in_eval = num_classes, image_size, sample_in_eval
        base, stages = stage_plan(image_size)
        stages = max(stages, 1)
        self.class_map = nn.Linear(num_classes, image_size * image_size)
        self.data_map = nn.Conv2d(in_chans, in_chans, 1)
        self.bn_in = nn.BatchNorm2d(in_chans + 1)
        layers: list[nn.Module] = []
        cin = in_chans + 1
        for i in range(stages):
            cout = min(width * 2**i, 4 * width)
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
            cin = cout
        self.stages = nn.ModuleList(
            [nn.Sequential(*layers[3 * i : 3 * i + 3]) for i in range(stages)]
        )  # each stage: ×0.5 nearest resize, then conv-BN-LReLU
        self.out = nn.Sequential(nn.Conv2d(cin, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.Tanh())
        self.final_size = math.ceil(image_size / 2**stages)
        feat = 4 * width * self.final_size**2
        self.mu = nn.Linear(feat, latent_dim)
        self.logvar = nn.Linear(feat, latent_dim)
        _uniform_init(self)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, sample: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sample`` overrides the mode rule: True draws z ~ q(z|x, y), False returns mu."""
        b = x.shape[0]
        onehot = F.one_hot(y, self.num_classes).to(x.dtype)
        cmap = self.class_map(onehot).view(b, 1, self.image_size, self.image_size)
        h = self.bn_in(torch.cat([self.data_map(x), cmap], dim=1))
        for stage in self.stages:
            h = stage(F.interpolate(h, size=(math.ceil(h.shape[-2] / 2), math.ceil(h.shape[-1] / 2)), mode="nearest"))
        h = self.out(h)
        mu, logvar = flat_linears(h, self.mu, self.logvar)
        logvar = logvar.clamp(-5.0, 3.0)
        if sample is None:
            sample = self.training or self.sample_in_eval
        if sample:
            eps = torch.randn_like(mu).clamp(-10.0, 10.0)
            z = mu + torch.exp(0.5 * logvar) * eps
        else:
            z = mu
        return z, mu, logvar


class AnchorNet(nn.Module):
    """Class-conditioned latent anchor: z_a = m ⊙ ψ(m ⊙ z) + (1 − m) ⊙ z, returns (z_a, m).

    ``mask="sigmoid"`` (augkd default): m = sigmoid(BN(Lin3(Lin2(Lin1(e(y)))))) ∈ (0, 1).
    ``mask="official"``: m = ReLU(softsign(sigmoid(...) − 0.5)) ∈ [0, 1/3), as the official code.
    """

    def __init__(self, num_classes: int, latent_dim: int = 100, mask: str = "sigmoid") -> None:
        super().__init__()
        if mask not in ("sigmoid", "official"):
            raise ValueError(f"mask must be 'sigmoid' or 'official', got {mask!r}")
        self.num_classes, self.latent_dim, self.mask_kind = num_classes, latent_dim, mask
        L = latent_dim
        self.embed = nn.Linear(num_classes, L)
        self.mask_mlp = nn.Sequential(nn.Linear(L, L), nn.Linear(L, L), nn.Linear(L, L), nn.BatchNorm1d(L))
        self.psi = nn.Sequential(
            nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.LeakyReLU(0.01),
            nn.Conv1d(4, 8, 3, padding=1), nn.BatchNorm1d(8), nn.LeakyReLU(0.01),
            nn.Conv1d(8, 4, 3, padding=1), nn.BatchNorm1d(4), nn.LeakyReLU(0.01),
        )  # fmt: skip
        self.psi_out = nn.Linear(4 * L, L)
        _uniform_init(self, conv=False)  # the official init touches Linear (and Conv2d) only

    def mask(self, y: torch.Tensor) -> torch.Tensor:
        """The class mask m(y), [B, L]."""
        h = self.mask_mlp(self.embed(F.one_hot(y, self.num_classes).to(self.embed.weight.dtype)))
        s = torch.sigmoid(h)
        return s if self.mask_kind == "sigmoid" else F.relu(F.softsign(s - 0.5))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mask(y)
        u = (m * z).unsqueeze(1)
        mapped = self.psi_out(torch.flatten(self.psi(u), 1))
        return m * mapped + (1 - m) * z, m


@register_model("augkd_generator", kind="generator")
def augkd_generator(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """AuG-KD generator (latent → image in (0,1)); ``num_classes`` is ignored (unconditional)."""
    return Generator(**kwargs)


@register_model("augkd_encoder", kind="encoder")
def augkd_encoder(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """AuG-KD label-conditioned VAE encoder."""
    return Encoder(num_classes, **kwargs)


@register_model("augkd_anchor", kind="anchor")
def augkd_anchor(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """AuG-KD AnchorNet (class mask + 1-D conv mapping in latent space)."""
    return AnchorNet(num_classes, **kwargs)
