"""``augkd teacher``: train a teacher on a teacher-domain dataset (CE, cosine schedule, eval-split selection).

Teacher training is one :class:`TeacherStage` run by the distillation engine's
:func:`augkd.training.engine.run_stages`, so it gets what every stage gets: a checkpoint after every epoch
(``checkpoints/state.pt``; ``augkd teacher --resume DIR`` continues a killed run exactly), ``metrics.csv``,
the eval-split selection of the best epoch, progress bars, and data-parallel training through Lightning
Fabric (under ``torchrun``, or ``train_teacher(..., dist=DistSpec(devices=N))``; only rank 0 writes).

How the engine's :class:`~augkd.training.engine.RunContext` is reused: it was written for distillation, so
teacher training fills its fields as follows instead of adding a second context class (which would change
the signature of every stage for one field):

- ``cfg`` is the :class:`~augkd.config.TeacherTrainConfig`. The engine and the context's helpers read only
  ``cfg.train`` and ``cfg.data``, which it shares with ``DistillConfig``; :class:`TeacherStage` reads its
  own ``lr``/``wd``/``label_smoothing`` and does its own NaN check (the engine's advice names distillation
  keys).
- ``nets`` holds the one network being trained, ``nets["teacher"]``; ``student_norm`` is the normalisation
  of the teacher-domain data (``data.mean``/``data.std``), the input of that network.
- ``teacher`` (the *frozen* teacher of distillation) is ``None``: there is nothing frozen here.

The training itself is what ``augkd teacher`` always did: Adam on cross-entropy with label smoothing, a
cosine schedule over the epochs, the configured augmentation, fp32 (``train.precision`` is not read, and
channels_last is not used), and the epoch with the best eval-split acc@1 (the train split when the eval
split is empty) kept. The outputs are the same too: ``teacher.safetensors`` with its JSON sidecar,
``config.yaml``, ``split.json`` and ``summary.json`` (the returned dict), now beside ``metrics.csv`` and
``checkpoints/state.pt``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from augkd.checkpoint import ModelMeta, load_state, save_model
from augkd.config import TeacherTrainConfig, config_to_dict, load_config, save_config
from augkd.errors import InputError, TrainingError
from augkd.evaluate import Normalize
from augkd.models import create_model
from augkd.training.dist import DistSpec, any_rank, make_fabric, rank_seed
from augkd.training.engine import RunContext, Stage, run_stages, set_trainable
from augkd.training.pipeline import load_run_data
from augkd.training.precision import fabric_precision_name, legacy_precision
from augkd.utils import apply_process_settings, atomic_write_json, seed_everything

logger = logging.getLogger(__name__)


class TeacherStage(Stage):
    """Train ``nets["teacher"]`` with CE (label smoothing), Adam and a cosine schedule; select on the eval split."""

    name = "teacher"
    trains = ("teacher",)
    save_nets = False  # train_teacher writes teacher.safetensors with its sidecar

    def __init__(self, cfg: TeacherTrainConfig) -> None:
        super().__init__(cfg.epochs)
        self.lr, self.wd, self.label_smoothing = cfg.lr, cfg.wd, cfg.label_smoothing

    def setup(self, ctx: RunContext) -> None:
        net = ctx.nets["teacher"]
        set_trainable(net, True)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.wd)
        self.optimizers = {"teacher": opt}
        self.schedulers = {"teacher": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)}

    def train_epoch(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        ctx.nets["teacher"].train()
        net = ctx.net("teacher")
        losses: list[float] = []
        for i, (x, y) in enumerate(ctx.batches("train", ctx.cfg.train.batch_size, self.name, epoch, augment=True)):
            y = y.to(ctx.device)
            loss = F.cross_entropy(net(ctx.student_norm(x.to(ctx.device))), y, label_smoothing=self.label_smoothing)
            _check_finite(ctx, loss, epoch)
            self.optimize(ctx, "teacher", loss)
            losses.append(float(loss.detach()))
            ctx.step_end(self.name, epoch, i, {"loss": loss.detach()})
        self.schedulers["teacher"].step()
        return ctx.reduce_mean({"loss": sum(losses) / len(losses)})

    def validate(self, ctx: RunContext, epoch: int) -> tuple[float, dict[str, float]]:
        data = ctx.data.eval if len(ctx.data.eval) else ctx.data.train
        acc1 = ctx.accuracy(ctx.nets["teacher"], data, ctx.student_norm)["acc1"]
        return acc1, {"eval_acc1": acc1}


def _check_finite(ctx: RunContext, loss: torch.Tensor, epoch: int) -> None:
    """Stop on a NaN/inf loss (on any rank: every rank stops together); the last checkpoint stays as it is."""
    bad = not bool(torch.isfinite(loss.detach()))
    if any_rank(bad, ctx.world_size, ctx.device):
        value = float(loss.detach()) if bad else "non-finite on another rank"
        raise TrainingError(f"teacher loss became {value} at epoch {epoch}: lower --set lr")


def train_teacher(
    cfg: TeacherTrainConfig | None,
    out_dir: str | Path = "runs/teacher",
    progress: Any = None,
    *,
    resume: bool = False,
    dist: DistSpec | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` with CE; the best eval-split epoch is saved as ``teacher.safetensors``.

    Args:
        cfg: The teacher config (ignored, and may be None, with ``resume``: ``out_dir/config.yaml`` is used).
        out_dir: The run directory. A new run replaces a finished run there; an unfinished one (a killed run
            with ``checkpoints/state.pt``) is refused: pass ``resume=True`` to continue it.
        progress: A ``rich`` progress (``augkd.progress.make_progress``) for a bar per run (rank 0 only).
        resume: Continue the run in ``out_dir`` from its last completed epoch.
        dist: Processes, nodes and strategy (default: one process, or torchrun's layout); the precision
            stays fp32 unless ``dist.precision`` names another.
    """
    out = Path(out_dir)
    if resume:
        cfg = _resume_config(out)
    elif cfg is None:
        raise InputError("train_teacher needs a config unless it resumes a run")
    spec = dist or DistSpec()
    fabric = make_fabric(cfg.train, spec if spec.precision else dataclasses.replace(spec, precision="32-true"))
    _prepare_out_dir(cfg, out, resume, fabric)
    apply_process_settings(cfg.train, fabric.device)
    ctx = _teacher_context(cfg, out, fabric)
    rows = run_stages(ctx, [TeacherStage(cfg)], progress if ctx.is_main else None)["metrics"]
    result = _save_teacher(ctx, rows)
    fabric.barrier()  # the run directory is complete before any rank returns
    return result


def _resume_config(out: Path) -> TeacherTrainConfig:
    if not (out / "config.yaml").is_file():
        raise InputError(f"cannot resume: {str(out)!r} has no config.yaml (is it an `augkd teacher` run directory?)")
    return load_config(out / "config.yaml", model=TeacherTrainConfig)


def _prepare_out_dir(cfg: TeacherTrainConfig, out: Path, resume: bool, fabric: Any) -> None:
    """Check ``out`` on every rank; then rank 0 writes ``config.yaml`` (a new run) and drops a finished run's state."""
    ckpt = out / "checkpoints" / "state.pt"
    if not resume and ckpt.is_file():
        state = load_state(ckpt)
        if int(state["stage_index"]) < 1:
            raise InputError(
                f"{str(out)!r} holds an unfinished teacher run ({int(state['epoch'])} epoch(s) done): pass "
                f"--resume {out} to continue it, or a new --out"
            )
    fabric.barrier()  # every rank has checked before rank 0 writes anything
    if not resume and fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.unlink(missing_ok=True)  # a finished earlier run: a new run starts over and replaces its teacher
        save_config(cfg, out / "config.yaml")
    fabric.barrier()


def _teacher_context(cfg: TeacherTrainConfig, out: Path, fabric: Any) -> RunContext:
    """The engine's context for teacher training (see the module docstring): data, the network, RNG."""
    seed_everything(cfg.train.seed)
    device = fabric.device
    data = load_run_data(cfg.data, out, fabric)
    model = create_model(cfg.model.arch, data.num_classes, **cfg.model.kwargs).to(device)
    if fabric.world_size > 1:
        seed_everything(rank_seed(cfg.train.seed, fabric.global_rank))
    norm = Normalize(cfg.data.mean, cfg.data.std).to(device)
    gen = torch.Generator().manual_seed(cfg.train.seed)  # shuffle and augmentation
    precision = legacy_precision(fabric_precision_name(fabric))
    # cfg is a TeacherTrainConfig and teacher None (nothing frozen): see the module docstring
    nets: dict[str, torch.nn.Module] = {"teacher": model}
    return RunContext(cfg, out, data, None, nets, device, precision, norm, fabric, gen)  # type: ignore[arg-type]


def _save_teacher(ctx: RunContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Score the selected teacher on the test split; rank 0 writes ``teacher.safetensors`` and ``summary.json``."""
    cfg: Any = ctx.cfg  # a TeacherTrainConfig
    data, model = ctx.data, ctx.nets["teacher"]
    best = max(rows, key=lambda r: r["eval_acc1"])  # the first best epoch: the one TeacherStage kept
    test = ctx.accuracy(model, data.test, ctx.student_norm) if len(data.test) else {}
    history = [{"epoch": r["epoch"], "loss": r["loss"], "eval_acc1": r["eval_acc1"]} for r in rows]
    path = ctx.run_dir / "teacher.safetensors"
    result = {
        "teacher": str(path),
        "best_epoch": best["epoch"],
        "eval_acc1": best["eval_acc1"],
        "test": test,
        "history": history,
    }
    if ctx.is_main:
        meta = ModelMeta(
            arch=cfg.model.arch,
            num_classes=data.num_classes,
            model_kwargs=dict(cfg.model.kwargs),
            class_names=data.class_names,
            input_size=cfg.data.image_size,
            mean=list(cfg.data.mean),
            std=list(cfg.data.std),
            metrics={"eval_acc1": best["eval_acc1"], **{f"test_{k}": v for k, v in test.items()}},
            extra={"data": config_to_dict(cfg.data), "best_epoch": best["epoch"]},
        )
        result["teacher"] = str(save_model(model.cpu(), path, meta))
        atomic_write_json(ctx.run_dir / "summary.json", result)
    return result
