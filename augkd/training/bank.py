"""The memory bank of Module 1's synthesised images (Fast-DFKD, CMI): the student trains on all of them.

Images are kept as uint8 (G's sigmoid output in [0, 1], rounded to 1/255, like real images) in a ring
buffer of ``capacity`` images: the oldest are overwritten once it is full. The bank is part of the stage's
resume state, so a killed run resumes with the same images. Under data-parallel runs every rank keeps a
bank of its own images; the checkpoint holds rank 0's, which every rank reloads on resume.
"""

from __future__ import annotations

from typing import Any

import torch


class ImageBank:
    """A ring buffer of uint8 images [capacity, C, H, W]; allocated on the first :meth:`add`."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"bank capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.images: torch.Tensor | None = None
        self.count = 0  # images stored (≤ capacity)
        self.next = 0  # slot the next image goes to
        self.added = 0  # images ever added (the number synthesised)

    def __len__(self) -> int:
        return self.count

    def add(self, x: torch.Tensor) -> None:
        """Store a batch of images in [0, 1] (any float dtype), overwriting the oldest when full."""
        u8 = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        if self.images is None:
            self.images = torch.zeros((self.capacity, *u8.shape[1:]), dtype=torch.uint8, device=u8.device)
        elif self.images.device != u8.device:  # restored on the CPU, used on an accelerator
            self.images = self.images.to(u8.device)
        n = u8.shape[0]
        if n >= self.capacity:  # keep the newest `capacity` of the batch
            u8, n = u8[-self.capacity :], self.capacity
        idx = (torch.arange(n, device=u8.device) + self.next) % self.capacity
        self.images[idx] = u8
        self.next = int((self.next + n) % self.capacity)
        self.count = min(self.capacity, self.count + n)
        self.added += int(x.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn uniformly with replacement from the stored ones, as float in [0, 1]."""
        if self.images is None or self.count == 0:
            raise RuntimeError("the image bank is empty")
        idx = torch.randint(0, self.count, (n,), generator=generator, device="cpu").to(self.images.device)
        return self.images[idx].float().div_(255.0)

    def state_dict(self) -> dict[str, Any]:
        stored = (
            self.images[: self.count].cpu().clone() if self.images is not None else torch.zeros(0, dtype=torch.uint8)
        )
        return {
            "capacity": self.capacity,
            "images": stored,
            "count": self.count,
            "next": self.next,
            "added": self.added,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"the saved bank holds {state['capacity']} images, this run's module1.bank_size is {self.capacity}"
            )
        self.count, self.next, self.added = int(state["count"]), int(state["next"]), int(state["added"])
        stored = state["images"]
        if self.count == 0:
            self.images = None
            return
        self.images = torch.zeros((self.capacity, *stored.shape[1:]), dtype=torch.uint8, device=device)
        self.images[: self.count] = stored.to(device)
