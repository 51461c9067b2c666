"""In-memory image sets: decoded once to uint8 tensors at the working size, then batched on tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ImageSet:
    """Images as uint8 ``[N, 3, S, S]``, labels int64 ``[N]``, and the class names (index order)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable files skipped with skip_bad_files

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, S, S], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        paths = [self.paths[i] for i in idx.tolist()] if self.paths else []
        return ImageSet(self.images[idx], self.labels[idx], self.class_names, paths)

    def as_float(self) -> torch.Tensor:
        """All images as float32 in [0, 1]."""
        return self.images.float().div_(255.0)


def to_uint8_rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float/uint8 images ``[N, C, H, W]`` (C = 1 or 3, values 0..255) → uint8 ``[N, 3, size, size]``."""
    x = images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        chunks = [
            F.interpolate(c, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            for c in x.split(1024)
        ]
        x = torch.cat(chunks)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.round().clamp_(0, 255).to(torch.uint8).contiguous()


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4, hflip: bool = False) -> torch.Tensor:
    """Random crop with zero padding ``pad`` (and optional horizontal flip) on a float batch ``[B, C, S, S]``."""
    b, _, s, _ = x.shape
    if pad > 0:
        c, w = x.shape[1], s + 2 * pad
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        ar = torch.arange(s)
        rows = (oy[:, None] + ar)[:, None, :, None].expand(b, c, s, w)  # [B, C, S, S+2p]: source row per output row
        cols = (ox[:, None] + ar)[:, None, None, :].expand(b, c, s, s)  # [B, C, S, S]: source column
        x = padded.gather(2, rows).gather(3, cols)
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: bool = False,
    hflip: bool = False,
    drop_last: bool = False,
    index: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x float [B,3,S,S] in [0,1], y int64 [B])`` batches from the uint8 cache."""
    n = len(data)
    order = index if index is not None else (torch.randperm(n, generator=generator) if shuffle else torch.arange(n))
    step = min(batch_size, len(order)) if drop_last else batch_size
    for start in range(0, len(order), step):
        idx = order[start : start + step]
        if drop_last and len(idx) < step:
            break
        x = data.images[idx].float().div_(255.0)
        if augment:
            assert generator is not None, "augmentation needs a torch.Generator"
            x = augment_batch(x, generator, hflip=hflip)
        yield x, data.labels[idx]
