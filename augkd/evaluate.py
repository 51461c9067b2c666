"""Top-k accuracy of classifiers on in-memory image sets, and the input normalisation layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from augkd.data.images import ImageSet, iterate_batches


class Normalize(nn.Module):
    """(x − mean) / std per channel, for x in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 3, 5)) -> dict[int, int]:
    """Number of rows whose label is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: ImageSet,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    normalize: nn.Module | None = None,
) -> torch.Tensor:
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
    model: nn.Module,
    data: ImageSet,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    normalize: nn.Module | None = None,
) -> dict[str, float]:
    """Acc@1/3/5 (fractions in [0, 1]) of ``model`` on ``data``."""
    logits = predict_logits(model, data, batch_size, device, normalize)
    n = max(len(data), 1)
    hits = topk_correct(logits, data.labels)
    return {"acc1": hits[1] / n, "acc3": hits[3] / n, "acc5": hits[5] / n, "n": float(len(data))}
