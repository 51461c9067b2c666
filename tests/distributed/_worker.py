"""One rank of a data-parallel test run: started by ``torchrun`` (or plainly, for one process) from test_ddp.py.

Modes:
- ``augkd OUT``: the smoke preset (augkd method) with spies that record, per rank, whether the teacher's
  state changed, which modules Fabric set up, and a checksum of the first latents Module 1 drew. Rank 0
  also copies the run directory to ``OUT/snap`` halfway through Module 3 (a checkpoint to resume later).
- ``kd OUT BATCH``: the ``kd`` method on a BN-free, dropout-free student without augmentation, recording
  the rank-averaged loss of every step (the single-process vs. data-parallel equivalence test).

Each rank writes ``OUT/rank<r>.json`` (test bookkeeping, not part of the run directory).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

SMOKE = "configs/smoke.yaml"


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _register_plain_cnn() -> None:
    """A student without BatchNorm or dropout: per-rank batch statistics would make 2×B differ from 2B."""
    from augkd.models.registry import register_model

    @register_model("test_plain_cnn")
    def test_plain_cnn(num_classes: int = 10, width: int = 8) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, num_classes),
        )


def run_augkd(out: Path) -> None:
    import lightning_fabric

    import augkd.training.pipeline as pipeline
    from augkd.config import load_config
    from augkd.training import distill
    from augkd.training.dist import DistSpec

    rec: dict = {"setup_modules": [], "latent_sum": None}
    real_teacher, real_build = pipeline.load_teacher, pipeline._build_nets
    real_setup = lightning_fabric.Fabric.setup_module

    def spy_teacher(cfg, data):
        teacher, meta = real_teacher(cfg, data)
        rec["teacher"] = teacher
        rec["before"] = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
        return teacher, meta

    def spy_build(cfg, nc):
        nets = real_build(cfg, nc)

        def first_latents(module, args):
            if rec["latent_sum"] is None:
                rec["latent_sum"] = float(args[0].double().sum())

        nets["generator"].register_forward_pre_hook(first_latents)
        rec["nets"] = nets
        return nets

    def spy_setup(self, module, *a, **k):
        rec["setup_modules"].append(type(module).__name__)
        rec.setdefault("setup_ids", []).append(id(module))
        return real_setup(self, module, *a, **k)

    def snapshot(row):
        if _rank() == 0 and row["stage"] == "module3" and row["epoch"] == 6:
            shutil.copytree(out / "run", out / "snap")  # checkpoint = end of Module 3 epoch 5

    pipeline.load_teacher, pipeline._build_nets = spy_teacher, spy_build
    lightning_fabric.Fabric.setup_module = spy_setup
    cfg = load_config(SMOKE, ["train.save_images=false"])
    res = distill(cfg, out / "run", dist=DistSpec(strategy="ddp"), on_epoch_end=[snapshot])
    teacher = rec["teacher"]
    after = teacher.state_dict()
    result = {
        "rank": _rank(),
        "world_size": res.world_size,
        "teacher_unchanged": all(torch.equal(rec["before"][k], after[k]) for k in after),
        "teacher_requires_grad": any(p.requires_grad for p in teacher.parameters()),
        "teacher_set_up": any(i in (id(teacher), id(teacher.net)) for i in rec["setup_ids"]),
        "setup_modules": rec["setup_modules"],
        "latent_sum": rec["latent_sum"],
        "test": res.test,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
    }
    (out / f"rank{_rank()}.json").write_text(json.dumps(result))


def run_kd(out: Path, batch: int) -> None:
    from augkd.config import load_config
    from augkd.training import distill
    from augkd.training.dist import DistSpec

    _register_plain_cnn()
    steps: list[dict] = []
    overrides = [
        "method=kd",
        "kd.epochs=2",
        "data.augment=false",
        "student.arch=test_plain_cnn",
        "student.kwargs={}",
        f"train.batch_size={batch}",
        "train.save_images=false",
        "train.precision=fp32",
    ]
    res = distill(load_config(SMOKE, overrides), out / "run", dist=DistSpec(), on_step_end=[steps.append])
    (out / f"rank{_rank()}.json").write_text(json.dumps({"world_size": res.world_size, "steps": steps}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "augkd":
        run_augkd(target)
    elif mode == "kd":
        run_kd(target, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
