"""The frozen teacher: a pretrained classifier wrapped to take [0, 1] RGB images at the working size."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augkd.evaluate import Normalize

logger = logging.getLogger(__name__)


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
