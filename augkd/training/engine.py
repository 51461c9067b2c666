"""The training engine shared by every method: run context, stages, per-epoch checkpoints and resume.

A method is a list of :class:`Stage` objects (Module 1, Module 2, Module 3, supervised/KD). The
engine runs them in order; after every epoch it writes ``checkpoints/state.pt`` atomically (networks,
optimisers, schedulers, best weights, RNG states, metrics), so a killed run resumes exactly where the
last completed epoch ended. A NaN/inf loss raises :class:`TrainingError` and leaves that file intact.

Training runs through Lightning Fabric (:mod:`augkd.training.dist`): when a stage starts, the networks it
trains are set up with ``fabric.setup_module`` (DDP-wrapped when several processes run) and its
optimisers with ``fabric.setup_optimizers``; frozen networks, evaluation and checkpoints use the plain
modules. Every context holds a launched Fabric (one process: a no-op launch); scripts and benchmarks build
theirs as ``augkd distill`` does, with ``dist.make_fabric`` and ``pipeline.build_context``.

``augkd teacher`` runs on the same engine (:class:`augkd.teacher.TeacherStage`): its context holds the
``TeacherTrainConfig`` as ``cfg`` (the engine reads only ``cfg.train`` and ``cfg.data``, which both configs
have), the network it trains as ``nets["teacher"]`` and no frozen teacher (see :mod:`augkd.teacher`).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.checkpoint import load_state, load_state_dict_file, save_state, save_weights
from augkd.config import DistillConfig
from augkd.data import DomainData
from augkd.data.images import ImageSet
from augkd.errors import TrainingError
from augkd.evaluate import Normalize, accuracy, predict_logits, topk_correct
from augkd.models.teacher import FrozenTeacher
from augkd.utils import atomic_write_text

logger = logging.getLogger(__name__)


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
    fabric: Any  # a launched lightning_fabric.Fabric (dist.make_fabric), one process or several
    data_gen: torch.Generator = field(default_factory=torch.Generator)
    on_epoch_end: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    # Called after every optimisation step with the step's losses averaged over ranks (floats). The
    # average is an all-reduce, so every rank must register the same callbacks; none = no extra cost.
    on_step_end: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    trained: dict[str, nn.Module] = field(default_factory=dict)  # Fabric-wrapped nets of the running stage

    @property
    def rank(self) -> int:
        return int(self.fabric.global_rank)

    @property
    def world_size(self) -> int:
        return int(self.fabric.world_size)

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the only process that writes files."""
        return self.rank == 0

    def net(self, name: str) -> nn.Module:
        """The network to call when its weights are trained by the running stage (DDP-wrapped under DDP).

        Frozen uses (targets, no-grad passes, evaluation) call ``ctx.nets[name]`` directly: no gradient
        synchronisation, no collective, so ranks may evaluate shards of different sizes.
        """
        return self.trained.get(name, self.nets[name])

    def backward(self, loss: torch.Tensor) -> None:
        """``fabric.backward`` (precision-aware; DDP averages the gradients of wrapped nets)."""
        self.fabric.backward(loss)

    def batches(
        self,
        split: str,
        batch_size: int,
        stage: str,
        epoch: int,
        *,
        shuffle: bool = True,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``split`` for one epoch (a shard; see ``dist.rank_batches``).

        ``augment`` asks for the configured augmentation (``data.augment``/``data.hflip``).
        """
        from augkd.training.dist import rank_batches

        d = self.cfg.data
        return rank_batches(
            getattr(self.data, split),
            batch_size,
            shuffle_gen=self.data_gen,
            rank=self.rank,
            world=self.world_size,
            seed=self.cfg.train.seed,
            stage=stage,
            epoch=epoch,
            shuffle=shuffle,
            augment=augment and d.augment,
            hflip=d.hflip,
            drop_last=drop_last,
        )

    def reduce_mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average per-rank metrics over ranks (identical on every rank afterwards)."""
        from augkd.training.dist import all_reduce_mean

        return all_reduce_mean(self.fabric, metrics, self.device)

    def step_end(self, stage: str, epoch: int, step: int, losses: dict[str, torch.Tensor]) -> None:
        """Run the ``on_step_end`` callbacks with rank-averaged losses (nothing to do when there are none)."""
        if not self.on_step_end:
            return
        row = self.reduce_mean({k: float(v.detach().float()) for k, v in losses.items()})
        info = {"stage": stage, "epoch": epoch, "step": step, **row}
        for cb in self.on_step_end:
            cb(info)

    @property
    def backend(self) -> str | None:
        """The configured kernel backend; None for "auto" so AUGKD_KERNEL_BACKEND can still choose."""
        b = self.cfg.kernels.backend
        return None if b == "auto" else b

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Fabric's autocast (bf16 under ``bf16-mixed``, a no-op under ``32-true``)."""
        return self.fabric.autocast()  # type: ignore[no-any-return]

    def student_accuracy(self, split: str = "eval") -> dict[str, float]:
        """Acc@1/3/5 of the student on the whole ``split`` (sharded over ranks, hit counts all-reduced)."""
        return self.accuracy(self.nets["student"], getattr(self.data, split), self.student_norm)

    def accuracy(self, model: nn.Module, data: ImageSet, normalize: nn.Module | None = None) -> dict[str, float]:
        """Acc@1/3/5 of ``model`` (a plain module) on all of ``data``: each rank scores a disjoint shard."""
        from augkd.training.dist import all_reduce_sum, eval_shard

        if self.world_size == 1:
            return accuracy(model, data, self.cfg.train.eval_batch_size, self.device, normalize)
        part = data.subset(eval_shard(len(data), self.rank, self.world_size))
        logits = predict_logits(model, part, self.cfg.train.eval_batch_size, self.device, normalize)
        hits = topk_correct(logits, part.labels)
        h1, h3, h5 = all_reduce_sum(self.fabric, [hits[1], hits[3], hits[5]], self.device)
        n = max(len(data), 1)
        return {"acc1": h1 / n, "acc3": h3 / n, "acc5": h5 / n, "n": float(len(data))}

    def check_finite(self, losses: dict[str, torch.Tensor], where: str) -> None:
        """Stop on a NaN/inf loss (on any rank: every rank stops together); the last checkpoint stays as it is."""
        from augkd.training.dist import any_rank

        loss = losses["loss"]
        bad = not bool(torch.isfinite(loss.detach()).all())
        if any_rank(bad, self.world_size, self.device):
            value = float(loss.detach()) if bad else "non-finite on another rank"
            raise TrainingError(f"loss became {value} in {where}; {self._nan_advice(where)}")

    def _nan_advice(self, where: str) -> str:
        """What to do after a NaN/inf loss, true to this run: is there a checkpoint, is it already fp32?"""
        key = _lr_key(where)
        lr = getattr(getattr(self.cfg, key.split(".")[0]), key.split(".")[1])
        lower = f"--set {key}={lr / 10:g}"  # a tenth of the current learning rate, as an example
        ckpt = self.run_dir / "checkpoints" / "state.pt"
        if not ckpt.is_file():
            fix = f"a lower learning rate ({lower}; now {lr:g})"
            if self.precision != "fp32":
                fix = f"fp32 (--set train.precision=fp32) or {fix}"
            return (
                "no epoch completed, so there is no checkpoint to resume from: start again (the same --out is "
                f"fine) with {fix}"
            )
        resume = f"augkd distill --resume {self.run_dir}"
        if self.precision != "fp32":
            return (
                f"the last good checkpoint is kept in {ckpt}: resume it in fp32 with `{resume} --set "
                f"train.precision=fp32`, or with a lower learning rate ({lower}; now {lr:g})"
            )
        return (
            f"the last good checkpoint is kept in {ckpt}: resume it with a lower learning rate (now {lr:g}): "
            f"`{resume} {lower}`"
        )


def _lr_key(where: str) -> str:
    """The config key of the learning rate of the step named ``where`` ("module1 generator step", "kd", ...)."""
    words = [*where.split(), ""]
    if words[0] == "module1":
        return {"generator": "module1.g_lr", "encoder": "module1.e_lr"}.get(words[1], "module1.s_lr")
    if words[0] in ("module2", "module3"):
        return f"{words[0]}.lr"
    return "kd.lr"  # scratch, kd, finetune


class Stage:
    """One trainable phase. Subclasses fill in ``setup``, ``train_epoch`` and ``validate``."""

    name = "stage"
    trains: tuple[str, ...] = ()  # networks this stage updates (saved as the stage's checkpoints)
    selected: tuple[str, ...] | None = None  # networks restored to their best epoch at the end (default: trains)
    higher_is_better = True
    save_nets = True  # write the trained networks to checkpoints/<stage>/ when the stage ends

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.best_score: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, dict[str, torch.Tensor]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.fabric_optimizers: dict[str, Any] = {}  # the same optimisers, set up by Fabric (attach_stage)

    def setup(self, ctx: RunContext) -> None:
        """Build optimisers and schedulers; set train/eval modes and requires_grad."""

    def optimize(self, ctx: RunContext, key: str, loss: torch.Tensor) -> None:
        """One step of optimiser ``key`` on ``loss``: zero_grad, ``fabric.backward`` (DDP all-reduce), step."""
        opt = self.fabric_optimizers.get(key, self.optimizers[key])
        opt.zero_grad(set_to_none=True)
        ctx.backward(loss)
        opt.step()

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
        """Restore the stage's progress; the learning rates and epoch count stay those of the current config.

        On a plain resume they are the same as in the checkpoint. After ``--resume --set module3.lr=...``
        (or ``...epochs=...``) the optimiser state keeps its moments and the schedule its position, with
        the learning rate rescaled to the new base and the cosine length set to the new epoch count.
        """
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.best_state = state["best_state"]
        base = {k: [g.get("initial_lr", g["lr"]) for g in o.param_groups] for k, o in self.optimizers.items()}
        t_max = {k: getattr(s, "T_max", None) for k, s in self.schedulers.items()}
        for k, o in self.optimizers.items():
            opt_state = dict(state["optimizers"][k])
            sch_state = dict(state["schedulers"][k]) if k in self.schedulers else None
            _rescale_saved_lrs(opt_state, sch_state, base[k])
            o.load_state_dict(opt_state)
            if sch_state is not None:
                self.schedulers[k].load_state_dict(sch_state)
        for k, s in self.schedulers.items():
            if k not in self.optimizers:
                s.load_state_dict(state["schedulers"][k])
            if t_max[k] is not None:
                s.T_max = t_max[k]


def _rescale_saved_lrs(opt_state: dict[str, Any], sch_state: dict[str, Any] | None, new_base: list[float]) -> None:
    """Rescale a saved optimiser (and its scheduler's) learning rates to the current config's base rates.

    Edits the saved state dicts before they are loaded (copies of the lists it changes), so that neither a
    live optimiser nor a scheduler's private attributes are written; a group whose base is unchanged keeps
    its values exactly.
    """
    if len(opt_state["param_groups"]) != len(new_base):
        return  # the optimiser's own load_state_dict then refuses the checkpoint with its clear message
    groups = [dict(g) for g in opt_state["param_groups"]]
    opt_state["param_groups"] = groups
    # the scheduler's per-group lists, copied: the scheduler's base rates and last rates (what get_last_lr returns)
    lr_lists = {k: list(v) for k, v in (sch_state or {}).items() if k in ("base_lrs", "_last_lr") and v}
    if sch_state is not None:
        sch_state.update(lr_lists)
    for i, group in enumerate(groups):
        old, new = group.get("initial_lr", group["lr"]), new_base[i]
        if old == new or not old:
            continue
        ratio = new / old
        group["lr"] = group["lr"] * ratio
        if "initial_lr" in group:
            group["initial_lr"] = new
        for lrs in lr_lists.values():
            lrs[i] = lrs[i] * ratio


_FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam(params: Any, **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused (single-kernel) update where torch has one for the parameters' device.

    Same update rule as the default for-loop implementation (up to float rounding); on this 2-core CPU one
    step over the encoder's 3.6 M parameters takes 1.3 ms fused vs 21 ms for-loop (MobileNetV3-Small 1.4 vs
    6.8 ms), and Module 1 makes eleven steps per iteration.
    """
    params = [dict(g, params=list(g["params"])) if isinstance(g, dict) else g for g in params]
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(tensors) and all(p.device.type in _FUSED_ADAM_DEVICES and p.is_floating_point() for p in tensors)
    return torch.optim.Adam(params, fused=fused, **kwargs)


def set_trainable(net: nn.Module, trainable: bool) -> None:
    """Train mode + gradients, or eval mode + frozen weights (gradients still flow through)."""
    net.train(trainable)
    net.requires_grad_(trainable)


@contextlib.contextmanager
def frozen_bn_stats(net: nn.Module) -> Iterator[None]:
    """Temporarily keep the BatchNorm running statistics (and batch counts) of ``net`` as they are.

    Train-mode forwards inside still normalise with the batch's own statistics (the gradient is unchanged);
    only the running estimates that eval mode uses are left alone (momentum 0; the counts are restored so a
    cumulative-average BatchNorm, momentum None, is not shifted either)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, count) in zip(bns, saved, strict=True):
            m.momentum = mom
            if count is not None:
                m.num_batches_tracked.copy_(count)


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


def _as_fp32(value: Any) -> Any:
    return value.float() if torch.is_tensor(value) and value.is_floating_point() else value


def _fp32_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The class's forward with autocast off and floating-point tensor inputs (positional or keyword) in fp32."""
    args = tuple(_as_fp32(a) for a in args)
    kwargs = {k: _as_fp32(v) for k, v in kwargs.items()}
    param = next(self.parameters(), None)
    tensors = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
    dev = param.device.type if param is not None else (tensors[0].device.type if tensors else "cpu")
    with torch.autocast(device_type=dev, enabled=False):
        return type(self).forward(self, *args, **kwargs)


def keep_fp32(net: nn.Module) -> nn.Module:
    """Make ``net`` compute in fp32 inside bf16 autocast (``train.fp32_nets``); weights and state_dict unchanged.

    The instance's ``forward`` is rebound, so this holds inside Fabric's precision context and DDP, which call
    the module, and a deep copy stays bound to the copy. Inputs are cast to fp32 on entry: an input that a
    caller already rounded to bf16 keeps that rounding. augkd saves state dicts only (safetensors); a net
    treated this way is not meant to be pickled whole.
    """
    net.forward = types.MethodType(_fp32_forward, net)  # type: ignore[method-assign]
    return net


class MetricsLog:
    """Per-epoch metric rows, rewritten atomically to ``metrics.csv`` (kept in the resume state)."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None, write: bool = True) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = rows or []
        self.write = write  # False on ranks other than 0: rows are kept, nothing is written

    def append(self, row: dict[str, Any], flush: bool = True) -> None:
        """Add ``row``; with ``flush=False`` the file is rewritten by the next :meth:`flush` (after the checkpoint)."""
        self.rows.append(row)
        if flush:
            self.flush()

    def flush(self) -> None:
        """Rewrite ``metrics.csv`` from the rows (a no-op on ranks other than 0)."""
        if not self.write:
            return
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(self.path, buf.getvalue())


def stage_net_path(run_dir: Path, stage_name: str, net: str) -> Path:
    """Where :func:`save_stage_nets` keeps network ``net`` of stage ``stage_name``."""
    return run_dir / "checkpoints" / stage_name / f"{net}.safetensors"


def save_stage_nets(ctx: RunContext, stage: Stage) -> None:
    """Per-module checkpoints: the networks a stage trained (its best epoch), as plain tensors."""
    for n in stage.trains:
        save_weights(ctx.nets[n], stage_net_path(ctx.run_dir, stage.name, n))


def load_stage_nets(ctx: RunContext, run_dir: Path, stage_name: str, names: tuple[str, ...]) -> None:
    """Load networks saved by :func:`save_stage_nets` in another run (e.g. a shared Module 1)."""
    for n in names:
        ctx.nets[n].load_state_dict(load_state_dict_file(stage_net_path(run_dir, stage_name, n)))


def attach_stage(ctx: RunContext, stage: Stage) -> None:
    """Set up the networks ``stage`` trains and its optimisers with Fabric (DDP-wrapped with several ranks).

    Only trained networks are set up: DDP needs parameters that receive gradients, and the frozen teacher
    (never in ``ctx.nets``) and frozen generator/encoder stay plain modules. Fabric's ``DDP`` broadcasts
    rank 0's weights when it wraps, so every rank starts the stage from the same networks.
    """
    ctx.trained = {}
    stage.fabric_optimizers = {}
    for n in stage.trains:
        ctx.trained[n] = ctx.fabric.setup_module(ctx.nets[n])
    for k, opt in stage.optimizers.items():
        stage.fabric_optimizers[k] = ctx.fabric.setup_optimizers(opt)


def detach_stage(ctx: RunContext, stage: Stage) -> None:
    """Drop the stage's Fabric wrappers (the plain modules hold the same parameters)."""
    ctx.trained = {}
    stage.fabric_optimizers = {}


def prepare_stage(ctx: RunContext, stage: Stage) -> None:
    """``stage.setup`` then :func:`attach_stage`: what the engine does before a stage's first epoch."""
    stage.setup(ctx)
    attach_stage(ctx, stage)


def sync_trained_buffers(ctx: RunContext, stage: Stage) -> None:
    """Average the BatchNorm running statistics of the stage's networks over ranks (DDP keeps weights equal)."""
    from augkd.training.dist import average_buffers

    for n in stage.trains:
        average_buffers(ctx.fabric, ctx.nets[n])


def epoch_line(stage: Stage, epoch: int, row: dict[str, Any]) -> str:
    """``module1 epoch 3/6  g_loss 1.234  eval_acc1 0.512  1.2 s``: the epoch's loss, first eval metric and time."""
    parts = [f"{stage.name} epoch {epoch + 1}/{stage.epochs}"]
    loss = next(
        (k for k, v in row.items() if k.endswith("loss") and not k.startswith("eval_") and isinstance(v, float)), None
    )
    ev = next((k for k, v in row.items() if k.startswith("eval_") and isinstance(v, float)), None)
    parts += [f"{k} {row[k]:.4g}" for k in (loss, ev) if k is not None]
    parts.append(f"{row.get('train_s', 0.0) + row.get('eval_s', 0.0):.1f} s")
    return "  ".join(parts)


def run_stages(ctx: RunContext, stages: list[Stage], progress: Any | None = None) -> dict[str, Any]:
    """Run ``stages`` in order with per-epoch checkpoints; resume from ``checkpoints/state.pt`` if present.

    Under DDP every rank runs this loop in lockstep; only rank 0 writes ``metrics.csv``, the checkpoints
    and the pictures. The checkpoint holds plain state dicts and every rank's RNG state, so it resumes
    with any number of processes (the same number resumes exactly).
    """
    run = _resume_run(ctx, stages)
    for si, stage in enumerate(stages):
        if si < run.start_stage:
            continue
        _run_stage_epochs(ctx, run, si, stage, progress)
        _finish_stage(ctx, stage)
        _save_checkpoint(ctx, run, si + 1, 0, None)
    return {"metrics": run.log.rows, "timings": run.timings}


@dataclass
class _StagesRun:
    """What :func:`run_stages` carries from epoch to epoch: the checkpoint path, metrics, timings, resume point."""

    ckpt: Path
    log: MetricsLog
    timings: dict[str, float]
    start_stage: int = 0
    start_epoch: int = 0
    resume_state: dict[str, Any] | None = None


def _resume_run(ctx: RunContext, stages: list[Stage]) -> _StagesRun:
    """Where :func:`run_stages` starts: the beginning, or the checkpoint's stage and epoch (networks, RNG restored)."""
    from augkd.training.dist import restore_rng

    ckpt = ctx.run_dir / "checkpoints" / "state.pt"
    start_stage, start_epoch, log_rows, timings = 0, 0, [], {}
    resume_state: dict[str, Any] | None = None
    if ckpt.is_file():
        resume_state = load_state(ckpt)
        start_stage, start_epoch = int(resume_state["stage_index"]), int(resume_state["epoch"])
        log_rows, timings = list(resume_state["metrics"]), dict(resume_state.get("timings", {}))
        for n, sd in resume_state["nets"].items():
            ctx.nets[n].load_state_dict(sd)
        restore_rng(resume_state, ctx.cfg.train.seed, ctx.rank, ctx.world_size, ctx.device)
        ctx.data_gen.set_state(resume_state["data_rng"])
        if ctx.is_main:
            logger.info(
                "resuming at stage %d (%s), epoch %d",
                start_stage,
                stages[min(start_stage, len(stages) - 1)].name,
                start_epoch,
            )
    log = MetricsLog(ctx.run_dir / "metrics.csv", log_rows, write=ctx.is_main)
    return _StagesRun(ckpt, log, timings, start_stage, start_epoch, resume_state)


def _save_checkpoint(ctx: RunContext, run: _StagesRun, stage_index: int, epoch: int, stage: Stage | None) -> None:
    """Write ``checkpoints/state.pt`` (rank 0): the next stage and epoch to run, networks, RNG states, metrics."""
    from augkd.training.dist import gather_rng_states

    rng = gather_rng_states(ctx.fabric, ctx.device)  # collective: every rank takes part
    if not ctx.is_main:
        return
    state = {
        "stage_index": stage_index,
        "epoch": epoch,
        "nets": {n: net.state_dict() for n, net in ctx.nets.items()},
        "stage_state": stage.state_dict() if stage is not None else None,
        "rng": rng["cpu"][0],
        "rng_ranks": rng,
        "world_size": ctx.world_size,
        "data_rng": ctx.data_gen.get_state(),
        "metrics": run.log.rows,
        "timings": run.timings,
    }
    save_state(run.ckpt, state)


def _run_stage_epochs(ctx: RunContext, run: _StagesRun, si: int, stage: Stage, progress: Any | None) -> None:
    """Set up stage ``si`` and run its epochs (from the checkpoint's epoch when resuming into it), each checkpointed."""
    prepare_stage(ctx, stage)
    first = 0
    resume_state = run.resume_state
    if resume_state is not None and si == run.start_stage and resume_state.get("stage_state") is not None:
        stage.load_state_dict(resume_state["stage_state"])
        first = run.start_epoch
    task = progress.add_task(stage.name, total=stage.epochs, completed=first) if progress is not None else None
    for epoch in range(first, stage.epochs):
        t0 = time.perf_counter()
        row = _train_and_select(ctx, stage, epoch, t0)
        run.log.append(row, flush=False)  # metrics.csv after the checkpoint: it never runs ahead of state.pt
        run.timings[stage.name] = run.timings.get(stage.name, 0.0) + (time.perf_counter() - t0)
        for cb in ctx.on_epoch_end:
            cb(row)
        _save_checkpoint(ctx, run, si, epoch + 1, stage)
        run.log.flush()
        if task is not None:
            progress.update(task, advance=1)
        elif ctx.is_main:  # no bars (stderr not a terminal, or a library call): one plain line per epoch
            logger.info("%s", epoch_line(stage, epoch, row))


def _train_and_select(ctx: RunContext, stage: Stage, epoch: int, t0: float) -> dict[str, Any]:
    """Train one epoch (started at ``t0``), average buffers over ranks, validate, keep the best: the metrics row."""
    train_metrics = stage.train_epoch(ctx, epoch)
    sync_trained_buffers(ctx, stage)
    t1 = time.perf_counter()
    score, val_metrics = stage.validate(ctx, epoch)
    stage.update_best(ctx, score, epoch)
    return {
        "stage": stage.name,
        "epoch": epoch,
        **train_metrics,
        **val_metrics,
        "train_s": t1 - t0,
        "eval_s": time.perf_counter() - t1,
    }


def _finish_stage(ctx: RunContext, stage: Stage) -> None:
    """Restore the stage's best weights and drop its Fabric wrappers; rank 0 saves its networks and pictures."""
    stage.finish(ctx)
    detach_stage(ctx, stage)
    if ctx.is_main:
        if stage.save_nets:
            save_stage_nets(ctx, stage)
        if ctx.cfg.train.save_images:
            stage.images(ctx, ctx.run_dir / "images")
        score = "none" if stage.best_score is None else f"{stage.best_score:.4g}"
        logger.info("%s done (best epoch %d, score %s)", stage.name, stage.best_epoch, score)
