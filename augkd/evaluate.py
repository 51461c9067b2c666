"""Top-k accuracy of classifiers on in-memory image sets, and the frozen-teacher wrapper."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augkd.data.images import ImageSet, iterate_batches

logger = logging.getLogger(__name__)


class Normalize(nn.Module):
    """(x − mean) / std per channel, for x in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FrozenTeacher(nn.Module):
    """A frozen teacher that takes [0, 1] RGB images at the working size.

    It adapts them to the teacher's own input (resize to its input size, grey if it has one input
    channel) and normalisation, and stays in eval mode with ``requires_grad_(False)``: gradients still
    flow *through* it to the input when a loss needs them (Modules 1 and 2), never into its weights.

    Calls without autograd (``torch.no_grad``/``inference_mode``: Module 1's student steps, Module 3's KD
    targets, evaluation) run a copy with every conv–BatchNorm pair folded into one conv (``torch.fx``
    ``fuse``; same function up to float rounding, ~20% less time for the ccexam teacher on CPU, where BN is
    a separate pass over each activation). Calls that need gradients, and the BN-statistics hooks of
    Module 1, use the original network. A network ``fuse`` cannot trace runs unfused.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], input_size: int, in_chans: int = 3):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.norm = Normalize(mean, std)
        self.input_size, self.in_chans = input_size, in_chans

    def train(self, mode: bool = True) -> FrozenTeacher:  # always eval: BN running stats stay frozen
        return super().train(False)

    def _weights_key(self) -> tuple[tuple[int, int, torch.dtype], ...]:
        """Storage, in-place version and dtype of every weight: changes on .to(), load_state_dict, copy_."""
        return tuple((t.data_ptr(), t._version, t.dtype) for t in (*self.net.parameters(), *self.net.buffers()))

    def folded(self) -> nn.Module:
        """The network with conv–BN pairs folded, rebuilt whenever the weights moved or changed (the plain net
        if it has no BatchNorm2d or ``fuse`` cannot trace it)."""
        key = self._weights_key()
        cached = self.__dict__.get("_folded")
        if cached is not None and cached[0] == key:
            return cached[1]
        net: nn.Module = self.net
        if any(isinstance(m, nn.BatchNorm2d) for m in self.net.modules()):
            from torch.fx.experimental.optimization import fuse

            try:
                net = fuse(self.net).requires_grad_(False)
            except Exception as exc:  # control flow fx cannot trace: run unfused
                logger.info("teacher conv-BN folding skipped (%s): no-grad teacher calls run unfused", exc)
        self.__dict__["_folded"] = (key, net)  # not a submodule: no state_dict entry, not moved by .to()
        return net

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB images at the working size → the teacher's own input (size, channels, normalisation)."""
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.in_chans == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net if torch.is_grad_enabled() else self.folded()
        return net(self.prepare(x))


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 3, 5)) -> dict[int, int]:
    """Number of rows whose label is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: ImageSet, batch_size: int = 1024, device: torch.device | str = "cpu",
    normalize: nn.Module | None = None,
) -> torch.Tensor:  # fmt: skip
    """Logits for every image of ``data`` (in order), model in eval mode; inputs [0,1] then ``normalize``."""
    was_training = model.training
    model.eval()
    outs = []
    for x, _ in iterate_batches(data, batch_size, shuffle=False):
        x = x.to(device)
        if normalize is not None:
            x = normalize(x)
        outs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, data.num_classes)


def accuracy(
    model: nn.Module, data: ImageSet, batch_size: int = 1024, device: torch.device | str = "cpu",
    normalize: nn.Module | None = None,
) -> dict[str, float]:  # fmt: skip
    """Acc@1/3/5 (fractions in [0, 1]) of ``model`` on ``data``."""
    logits = predict_logits(model, data, batch_size, device, normalize)
    n = max(len(data), 1)
    hits = topk_correct(logits, data.labels)
    return {"acc1": hits[1] / n, "acc3": hits[3] / n, "acc5": hits[5] / n, "n": float(len(data))}
