"""benchmarks/probe_anchor_source.py: the source-retrieval measure by construction, and the image-for-image
alignment of mnist-m with mnist5k it relies on."""

from __future__ import annotations

import pytest
import torch
from bench_scripts import load_benchmark

probe = load_benchmark("probe_anchor_source")


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_retrieval_perfect_views_and_one_view_per_class():
    sources = _images(12, 0)
    y = torch.tensor([0] * 4 + [1] * 8)
    rate, chance = probe.retrieval(sources.clone(), sources, y)
    assert rate == 1.0
    assert chance == pytest.approx((4 * (1 / 4) + 8 * (1 / 8)) / 12)
    # one view per class (every anchor of a class the same image): exactly one hit per class, i.e. chance
    one = torch.stack([sources[0] if c == 0 else sources[5] for c in y.tolist()])
    rate, chance = probe.retrieval(one, sources, y)
    assert rate == pytest.approx(2 / 12)
    # features (pixels=False): rows compared as given
    f = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    noise = 0.01 * torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
    assert probe.retrieval(f + noise, f, y, pixels=False)[0] == 1.0


def test_mnistm_images_are_their_mnist5k_digits():
    from augkd.data import load_dataset

    m, d = load_dataset("mnist-m", 32), load_dataset("mnist5k", 32)
    assert torch.equal(m.labels, d.labels)
    idx = torch.arange(0, len(m.labels), 25)[:200]  # every class, 200 images
    rate, chance = probe.retrieval(m.images[idx], d.images[idx], m.labels[idx])
    assert chance < 0.06 and rate > 0.4  # measured 0.66 on the eval split: each image finds its own digit
