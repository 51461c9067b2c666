"""A finished run's Module 1 as the probes read it: its config, data (its own split), teacher and frozen generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_module1_run(run: Path, threads: int) -> tuple[Any, Any, Any, Any]:
    """(config, data, teacher, generator) of the run directory ``run``, after ``threads`` torch threads and seed 0.

    The generator is the run's ``checkpoints/module1/generator.safetensors`` in train mode (BatchNorm on the
    batch's statistics, as in Module 1), its parameters frozen."""
    import torch

    from augkd.checkpoint import load_state_dict_file
    from augkd.config import load_config
    from augkd.data import load_domain
    from augkd.models import create_model
    from augkd.training.pipeline import load_teacher

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(run / "config.yaml")
    data = load_domain(cfg.data, run)
    teacher, _ = load_teacher(cfg, data)
    gc = cfg.generator
    g = create_model("augkd_generator", latent_dim=gc.latent_dim, image_size=cfg.data.image_size, width=gc.width)
    g.train()
    g.load_state_dict(load_state_dict_file(run / "checkpoints" / "module1" / "generator.safetensors"))
    for p in g.parameters():
        p.requires_grad_(False)
    return cfg, data, teacher, g
