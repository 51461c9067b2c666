"""The training engine shared by every method: run context, stages, per-epoch checkpoints and resume.

A method is a list of :class:`Stage` objects (Module 1, Module 2, Module 3, supervised/KD). The
engine runs them in order; after every epoch it writes ``checkpoints/state.pt`` atomically (networks,
optimisers, schedulers, best weights, RNG states, metrics), so a killed run resumes exactly where the
last completed epoch ended. A NaN/inf loss raises :class:`TrainingError` and leaves that file intact.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.checkpoint import load_state, save_state
from augkd.config import DistillConfig
from augkd.data import DomainData
from augkd.errors import TrainingError
from augkd.evaluate import FrozenTeacher, Normalize, accuracy
from augkd.utils import atomic_write_text

logger = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True on x86 CPUs with AVX-512 BF16 or AMX (where bf16 matmuls are fast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(requested: str, device: torch.device) -> str:
    """auto → bf16 on CUDA (if supported) and on CPUs with AVX-512 BF16/AMX, else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


@dataclass
class RunContext:
    """Everything a stage needs: config, data, frozen teacher, networks, device, precision, RNG."""

    cfg: DistillConfig
    run_dir: Path
    data: DomainData
    teacher: FrozenTeacher
    nets: dict[str, nn.Module]
    device: torch.device
    precision: str
    student_norm: Normalize
    data_gen: torch.Generator = field(default_factory=torch.Generator)
    on_epoch_end: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

    @property
    def backend(self) -> str | None:
        """The configured kernel backend; None for "auto" so AUGKD_KERNEL_BACKEND can still choose."""
        b = self.cfg.kernels.backend
        return None if b == "auto" else b

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when the run uses bf16, else a no-op."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def student_accuracy(self, split: str = "eval") -> dict[str, float]:
        data = getattr(self.data, split)
        return accuracy(self.nets["student"], data, self.cfg.train.eval_batch_size, self.device, self.student_norm)

    def check_finite(self, losses: dict[str, torch.Tensor], where: str) -> None:
        """Stop on a NaN/inf loss; the last epoch's checkpoint stays as it is."""
        loss = losses["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise TrainingError(
                f"loss became {float(loss.detach())} in {where}; the last good checkpoint is kept in "
                f"{self.run_dir / 'checkpoints' / 'state.pt'}: lower the learning rate or use fp32 "
                "(--set train.precision=fp32) and resume with --resume"
            )


class Stage:
    """One trainable phase. Subclasses fill in ``setup``, ``train_epoch`` and ``validate``."""

    name = "stage"
    trains: tuple[str, ...] = ()  # networks this stage updates (saved as the stage's checkpoints)
    selected: tuple[str, ...] | None = None  # networks restored to their best epoch at the end (default: trains)
    higher_is_better = True

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.best_score: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, dict[str, torch.Tensor]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}

    def setup(self, ctx: RunContext) -> None:
        """Build optimisers and schedulers; set train/eval modes and requires_grad."""

    def train_epoch(self, ctx: RunContext, epoch: int) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(self, ctx: RunContext, epoch: int) -> tuple[float, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError

    def images(self, ctx: RunContext, out_dir: Path) -> None:
        """Write this stage's pictures (optional)."""

    # --- selection -------------------------------------------------------------------------------
    def update_best(self, ctx: RunContext, score: float, epoch: int) -> bool:
        better = self.best_score is None or (
            score > self.best_score if self.higher_is_better else score < self.best_score
        )
        if better:
            self.best_score, self.best_epoch = score, epoch
            keep = self.selected if self.selected is not None else self.trains
            self.best_state = {n: copy.deepcopy(ctx.nets[n].state_dict()) for n in keep}
        return better

    def finish(self, ctx: RunContext) -> None:
        """Restore the best weights (selected on the eval split)."""
        for n, sd in self.best_state.items():
            ctx.nets[n].load_state_dict(sd)

    # --- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.best_state = state["best_state"]
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])


def set_trainable(net: nn.Module, trainable: bool) -> None:
    """Train mode + gradients, or eval mode + frozen weights (gradients still flow through)."""
    net.train(trainable)
    net.requires_grad_(trainable)


@contextlib.contextmanager
def frozen_weights(net: nn.Module) -> Iterator[None]:
    """Temporarily stop weight gradients of ``net`` (mode unchanged), e.g. the student in the G step."""
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(f)


class MetricsLog:
    """Per-epoch metric rows, rewritten atomically to ``metrics.csv`` (kept in the resume state)."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = rows or []

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(self.path, buf.getvalue())


def save_stage_nets(ctx: RunContext, stage: Stage) -> None:
    """Per-module checkpoints: the networks a stage trained (its best epoch), as plain tensors."""
    from safetensors.torch import save_file

    from augkd.utils import atomic_write

    out = ctx.run_dir / "checkpoints" / stage.name
    for n in stage.trains:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in ctx.nets[n].state_dict().items()}
        atomic_write(out / f"{n}.safetensors", lambda p, st=state: save_file(st, str(p)))


def load_stage_nets(ctx: RunContext, run_dir: Path, stage_name: str, names: tuple[str, ...]) -> None:
    """Load networks saved by :func:`save_stage_nets` in another run (e.g. a shared Module 1)."""
    from augkd.checkpoint import load_state_dict_file

    for n in names:
        ctx.nets[n].load_state_dict(load_state_dict_file(run_dir / "checkpoints" / stage_name / f"{n}.safetensors"))


def run_stages(ctx: RunContext, stages: list[Stage], progress: Any | None = None) -> dict[str, Any]:
    """Run ``stages`` in order with per-epoch checkpoints; resume from ``checkpoints/state.pt`` if present."""
    ckpt = ctx.run_dir / "checkpoints" / "state.pt"
    start_stage, start_epoch, log_rows, timings = 0, 0, [], {}
    resume_state: dict[str, Any] | None = None
    if ckpt.is_file():
        resume_state = load_state(ckpt)
        start_stage, start_epoch = int(resume_state["stage_index"]), int(resume_state["epoch"])
        log_rows, timings = list(resume_state["metrics"]), dict(resume_state.get("timings", {}))
        for n, sd in resume_state["nets"].items():
            ctx.nets[n].load_state_dict(sd)
        torch.set_rng_state(resume_state["rng"])
        ctx.data_gen.set_state(resume_state["data_rng"])
        logger.info("resuming at stage %d (%s), epoch %d", start_stage, stages[min(start_stage, len(stages) - 1)].name,
                    start_epoch)  # fmt: skip
    log = MetricsLog(ctx.run_dir / "metrics.csv", log_rows)

    def save(stage_index: int, epoch: int, stage: Stage | None) -> None:
        state = {
            "stage_index": stage_index,
            "epoch": epoch,
            "nets": {n: net.state_dict() for n, net in ctx.nets.items()},
            "stage_state": stage.state_dict() if stage is not None else None,
            "rng": torch.get_rng_state(),
            "data_rng": ctx.data_gen.get_state(),
            "metrics": log.rows,
            "timings": timings,
        }
        save_state(ckpt, state)

    for si, stage in enumerate(stages):
        if si < start_stage:
            continue
        stage.setup(ctx)
        first = 0
        if resume_state is not None and si == start_stage and resume_state.get("stage_state") is not None:
            stage.load_state_dict(resume_state["stage_state"])
            first = start_epoch
        task = progress.add_task(stage.name, total=stage.epochs, completed=first) if progress is not None else None
        for epoch in range(first, stage.epochs):
            t0 = time.perf_counter()
            train_metrics = stage.train_epoch(ctx, epoch)
            t1 = time.perf_counter()
            score, val_metrics = stage.validate(ctx, epoch)
            stage.update_best(ctx, score, epoch)
            row = {"stage": stage.name, "epoch": epoch, **train_metrics, **val_metrics,
                   "train_s": t1 - t0, "eval_s": time.perf_counter() - t1}  # fmt: skip
            log.append(row)
            timings[stage.name] = timings.get(stage.name, 0.0) + (time.perf_counter() - t0)
            for cb in ctx.on_epoch_end:
                cb(row)
            save(si, epoch + 1, stage)
            if task is not None:
                progress.update(task, advance=1)
        stage.finish(ctx)
        save_stage_nets(ctx, stage)
        if ctx.cfg.train.save_images:
            stage.images(ctx, ctx.run_dir / "images")
        logger.info("%s done (best epoch %d, score %s)", stage.name, stage.best_epoch, stage.best_score)
        save(si + 1, 0, None)
    return {"metrics": log.rows, "timings": timings}
