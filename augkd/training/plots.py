"""Pictures of a run: image grids (generated, anchors, mixups), training curves, the s schedule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from augkd.utils import atomic_write


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, title: str | None = None) -> None:
    """A grid of [0,1] images as PNG."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(nrow * 0.8 + 0.5, grid.shape[1] / grid.shape[2] * nrow * 0.8 + 0.8))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def save_rows(rows: Sequence[torch.Tensor], labels: Sequence[str], path: Path, title: str | None = None) -> None:
    """One labelled row of images per tensor (same count each): e.g. image / anchor, or mixups at several s."""
    from torchvision.utils import make_grid

    plt = _plt()
    n = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.7 + 1.5, len(rows) * 0.85 + 0.6), squeeze=False)
    for ax, imgs, lab in zip(axes[:, 0], rows, labels, strict=True):
        grid = make_grid(imgs.detach().float().clamp(0, 1).cpu(), nrow=n, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Training curves: per stage, the losses and the eval accuracy over epochs."""
    plt = _plt()
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.2), squeeze=False)
    for ax, st in zip(axes[0], stages, strict=True):
        rs = [r for r in rows if r["stage"] == st]
        ep = [r["epoch"] for r in rs]
        keys = [k for k in rs[0] if k not in ("stage", "epoch", "train_s", "eval_s") and isinstance(rs[0][k], float)]
        acc_keys = [k for k in keys if "acc" in k or k.startswith("fid_")]
        loss_keys = [k for k in keys if k not in acc_keys and k not in ("s", "lr")][:5]
        for k in loss_keys:
            ax.plot(ep, [r.get(k, float("nan")) for r in rs], label=k, lw=1)
        ax.set_title(st)
        ax.set_xlabel("epoch")
        if acc_keys:
            ax2 = ax.twinx()
            for k in acc_keys:
                ax2.plot(ep, [r.get(k, float("nan")) for r in rs], "k--", label=k, lw=1.2)
            ax2.set_ylabel("eval accuracy")
            ax2.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="upper left")
    _save(fig, path)


def plot_schedule(values: Sequence[float], path: Path, title: str) -> None:
    """The stage factor s(e) over Module 3's epochs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 2.6))
    ax.plot(range(len(values)), values, marker=".", lw=1)
    ax.set_xlabel("Module 3 epoch")
    ax.set_ylabel("s")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
