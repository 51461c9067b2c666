"""Fixtures for the export tests: small students trained for real (int8 accuracy checks need trained weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _train_student(arch: str, dataset: str, image_size: int, steps: int, **kwargs):
    """Plain-CE training on the dataset's train split; returns (model, meta, DataConfig)."""
    from augkd.checkpoint import ModelMeta
    from augkd.config import DataConfig
    from augkd.data import iterate_batches, load_domain
    from augkd.models import create_model

    torch.manual_seed(0)
    cfg = DataConfig(dataset=dataset, image_size=image_size)
    dom = load_domain(cfg)
    model = create_model(arch, dom.num_classes, **kwargs)
    meta = ModelMeta(
        arch=arch,
        num_classes=dom.num_classes,
        model_kwargs=kwargs,
        class_names=dom.class_names,
        input_size=image_size,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        extra={"data": cfg.model_dump(mode="json")},
    )
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    step = 0
    model.train()
    while step < steps:
        for x, y in iterate_batches(dom.train, 64, shuffle=True, generator=gen):
            loss = F.cross_entropy(model((x - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    _recalibrate_bn(model, dom.train, mean, std)
    return model.eval(), meta, cfg


def _recalibrate_bn(model: torch.nn.Module, train, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Recompute BatchNorm running statistics over the training split (exact averages, not the lagging EMA)."""
    from augkd.data import iterate_batches

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    with torch.no_grad():
        for x, _ in iterate_batches(train, 256, shuffle=False):
            model((x - mean) / std)
    for bn in bns:
        bn.momentum = 0.1


@pytest.fixture(scope="session")
def digits_student(tmp_path_factory) -> Path:
    """A cnn_tiny trained briefly on `digits` at 32×32, saved as a checkpoint whose sidecar records its data."""
    from augkd.checkpoint import save_model

    model, meta, _ = _train_student("cnn_tiny", "digits", 32, steps=600)
    path = tmp_path_factory.mktemp("ckpt") / "student.safetensors"
    save_model(model, path, meta)
    return path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, digits_student) -> Path:
    """A run directory like `augkd distill` writes: config.yaml, split.json, student.safetensors + .json.

    Its config uses split_seed 7, unlike the sidecar's default split (seed 0), so the tests can tell which
    split was used.
    """
    import shutil

    from augkd.checkpoint import read_meta, save_model
    from augkd.config import DataConfig, DistillConfig, save_config
    from augkd.data import load_domain

    run = tmp_path_factory.mktemp("run")
    data = DataConfig(dataset="digits", image_size=32, split_seed=7)
    save_config(DistillConfig(data=data), run / "config.yaml")
    load_domain(data, run_dir=run)  # writes run/split.json
    meta = read_meta(digits_student.with_suffix(".json"))
    from augkd.checkpoint import load_model

    model, _ = load_model(digits_student)
    save_model(model, run / "student.safetensors", meta.model_copy(update={"extra": {}}))
    assert (run / "split.json").is_file()
    shutil.rmtree(run / "export", ignore_errors=True)
    return run
