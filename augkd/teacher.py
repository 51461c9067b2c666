"""``augkd teacher``: train a teacher on a teacher-domain dataset (CE, cosine schedule, eval-split selection)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from augkd.checkpoint import ModelMeta, save_model
from augkd.config import TeacherTrainConfig, config_to_dict, save_config
from augkd.data import augment_batch, load_domain
from augkd.errors import TrainingError
from augkd.evaluate import Normalize, accuracy
from augkd.models import create_model
from augkd.utils import apply_process_settings, atomic_write_json, resolve_device, seed_everything

logger = logging.getLogger(__name__)


def train_teacher(
    cfg: TeacherTrainConfig, out_dir: str | Path = "runs/teacher", progress: Any = None
) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` with CE; the best eval-split epoch is saved as ``teacher.safetensors``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    apply_process_settings(cfg.train, device)
    data = load_domain(cfg.data, out)
    model = create_model(cfg.model.arch, data.num_classes, **cfg.model.kwargs).to(device)
    norm = Normalize(cfg.data.mean, cfg.data.std).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    eval_set = data.eval if len(data.eval) else data.train
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history = []
    task = progress.add_task("teacher", total=cfg.epochs) if progress is not None else None
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(data.train), generator=gen)
        losses = []
        for start in range(0, len(perm), cfg.train.batch_size):
            idx = perm[start : start + cfg.train.batch_size]
            x = data.train.images[idx].float().div_(255)
            if cfg.data.augment:
                x = augment_batch(x, gen, hflip=cfg.data.hflip)
            y = data.train.labels[idx].to(device)
            loss = F.cross_entropy(model(norm(x.to(device))), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingError(f"teacher loss became {float(loss)} at epoch {epoch}: lower --set lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        sched.step()
        acc = accuracy(model, eval_set, cfg.train.eval_batch_size, device, norm)
        history.append({"epoch": epoch, "loss": sum(losses) / len(losses), "eval_acc1": acc["acc1"]})
        logger.info("teacher epoch %d: loss %.4f eval acc@1 %.4f", epoch, history[-1]["loss"], acc["acc1"])
        if best is None or acc["acc1"] > best[0]:
            best = (acc["acc1"], epoch, copy.deepcopy(model.state_dict()))
        if task is not None:
            progress.update(task, advance=1)
    assert best is not None
    model.load_state_dict(best[2])
    test = accuracy(model, data.test, cfg.train.eval_batch_size, device, norm) if len(data.test) else {}
    meta = ModelMeta(arch=cfg.model.arch, num_classes=data.num_classes, model_kwargs=dict(cfg.model.kwargs),
                     class_names=data.class_names, input_size=cfg.data.image_size, mean=list(cfg.data.mean),
                     std=list(cfg.data.std),
                     metrics={"eval_acc1": best[0], **{f"test_{k}": v for k, v in test.items()}},
                     extra={"data": config_to_dict(cfg.data), "best_epoch": best[1]})  # fmt: skip
    path = save_model(model.cpu(), out / "teacher.safetensors", meta)
    result = {"teacher": str(path), "best_epoch": best[1], "eval_acc1": best[0], "test": test, "history": history}
    atomic_write_json(out / "summary.json", result)
    return result
