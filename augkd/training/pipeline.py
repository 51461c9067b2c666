"""``augkd.distill(config)``: one run of one method, plus multi-seed and multi-method comparisons.

Every run goes through Lightning Fabric (:mod:`augkd.training.dist`): one process by default, or
data-parallel with ``dist=DistSpec(devices=N)`` / under ``torchrun``. Every rank loads the data and
builds the networks; only global rank 0 writes into the run directory.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from augkd.checkpoint import ModelMeta, load_model, save_model
from augkd.config import DataConfig, DistillConfig, config_to_dict, load_config, save_config
from augkd.data import DomainData, load_domain
from augkd.errors import ConfigError, InputError
from augkd.evaluate import Normalize
from augkd.methods import get_method
from augkd.models import create_model
from augkd.models.teacher import FrozenTeacher
from augkd.training.dist import DistSpec, make_fabric, rank_seed
from augkd.training.engine import RunContext, Stage, keep_fp32, load_stage_nets, run_stages, stage_net_path
from augkd.training.precision import fabric_precision_name, legacy_precision
from augkd.training.stages import DataFreeStage, MixupStage, build_stages
from augkd.utils import (
    apply_process_settings,
    atomic_write_json,
    atomic_write_text,
    augkd_version,
    git_sha,
    seed_everything,
)

logger = logging.getLogger(__name__)


@dataclass
class DistillResult:
    """What one ``augkd distill`` run produced."""

    run_dir: str
    method: str
    seed: int
    test: dict[str, float]
    teacher_test: dict[str, float]
    best_eval_acc1: float | None
    timings: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    student_path: str = ""
    world_size: int = 1
    fabric_precision: str = "32-true"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name_list(names: list[str], limit: int = 12) -> str:
    """``[a, b, ...]`` on one line: the first ``limit`` names, then how many there are."""
    shown = ", ".join(names[:limit])
    return f"[{shown}, … ({len(names)} in all)]" if len(names) > limit else f"[{shown}]"


def load_teacher(cfg: DistillConfig, data: DomainData) -> tuple[FrozenTeacher, ModelMeta]:
    """Load the frozen teacher and check its label space against the student-domain data.

    The class count must match. When the teacher's sidecar names its classes (built-in teachers name
    them "0".."9"), the data's classes (folder names, in sorted order) must be the same names in the
    same order. A list file's classes are bare label numbers, so only its count is checked (and its
    labels were checked against the teacher's range when it was read, :func:`_load_data`).
    """
    from augkd.data import BUILTIN_DATASETS

    net, meta = load_model(cfg.teacher.checkpoint)
    ds = cfg.data.dataset
    list_file = ds not in BUILTIN_DATASETS and Path(ds).is_file()
    if meta.num_classes != data.num_classes:
        raise InputError(
            f"teacher {cfg.teacher.checkpoint!r} has {meta.num_classes} classes but dataset {ds!r} has "
            f"{data.num_classes}: the student domain must share the teacher's label space"
        )
    names = [str(c) for c in meta.class_names]
    if names and not list_file and names != data.class_names:
        order = " (the same names in another order)" if sorted(names) == sorted(data.class_names) else ""
        raise InputError(
            f"the classes of dataset {ds!r} {_name_list(data.class_names)} differ from the classes of teacher "
            f"{cfg.teacher.checkpoint!r} {_name_list(names)}{order}: name the class folders as the teacher's classes"
        )
    return FrozenTeacher(net, meta.mean, meta.std, meta.input_size, meta.in_chans), meta


def _resolve_config(
    cfg: DistillConfig, run_dir: Path, resume: bool, overrides: list[str] | None = None
) -> tuple[DistillConfig, dict[str, Any]]:
    """The run's config: ``cfg``, or on resume the run directory's own ``config.yaml`` with the allowed
    ``overrides`` (:mod:`augkd.training.resume`), and the changes they make (``{}`` for none)."""
    if resume:
        from augkd.training.resume import resume_config

        return resume_config(run_dir, overrides)
    if overrides:
        raise ConfigError("resume_overrides apply to a resumed run only: pass them in the config of a new run")
    return cfg, {}


def _prepare_run_dir(cfg: DistillConfig, run_dir: Path, resume: bool, fabric: Any) -> None:
    """Check the run directory on every rank, then let rank 0 write ``config.yaml`` (a new run)."""
    if not resume:
        state = run_dir / "checkpoints" / "state.pt"
        if state.is_file() or (run_dir / "student.safetensors").is_file():
            raise InputError(
                f"run directory {str(run_dir)!r} already holds a run: pass --resume to continue it or a new --out"
            )
    fabric.barrier()  # every rank has checked before rank 0 writes anything
    if not resume and fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")


def load_run_data(data_cfg: DataConfig, run_dir: Path, fabric: Any, num_classes: int | None = None) -> DomainData:
    """A run's data on every rank: rank 0 loads (and writes ``split.json``) first; the other ranks then read
    the same split. ``num_classes``: the label range of a list file (:func:`augkd.data.load_domain`)."""
    if fabric.world_size == 1:
        return load_domain(data_cfg, run_dir, num_classes)
    data = load_domain(data_cfg, run_dir, num_classes) if fabric.is_global_zero else None
    fabric.barrier()
    if data is None:  # the split is a pure function of the data config; split.json is read when visible
        data = load_domain(data_cfg, run_dir if (run_dir / "split.json").is_file() else None, num_classes)
    return data


def _load_data(cfg: DistillConfig, run_dir: Path, fabric: Any) -> DomainData:
    """:func:`load_run_data`; a list file's labels must lie in the teacher's classes (a bad label is reported
    with its line)."""
    from augkd.checkpoint import peek_num_classes

    return load_run_data(cfg.data, run_dir, fabric, peek_num_classes(cfg.teacher.checkpoint))


def _build_nets(cfg: DistillConfig, num_classes: int) -> dict[str, torch.nn.Module]:
    nc = num_classes
    nets: dict[str, torch.nn.Module] = {"student": create_model(cfg.student.arch, nc, **cfg.student.kwargs)}
    g = cfg.generator
    if get_method(cfg.method).uses_module1:
        nets["generator"] = create_model(
            "augkd_generator", latent_dim=g.latent_dim, image_size=cfg.data.image_size, width=g.width
        )
        nets["encoder"] = create_model(
            "augkd_encoder", nc, latent_dim=g.latent_dim, image_size=cfg.data.image_size, width=g.encoder_width
        )
        mask = "sigmoid" if cfg.module2.mask_form == "per_sample" else "official"
        nets["anchor"] = create_model("augkd_anchor", nc, latent_dim=g.latent_dim, mask=mask)
    return nets


def place_nets(
    cfg: DistillConfig, teacher: FrozenTeacher, nets: dict[str, torch.nn.Module], device: torch.device
) -> None:
    """Move the teacher and networks to ``device``; channels_last and ``train.fp32_nets`` as configured."""
    teacher.to(device)
    for name, net in nets.items():
        net.to(device)
        if cfg.train.channels_last and name in ("student", "generator", "encoder"):
            net.to(memory_format=torch.channels_last)
    if cfg.train.channels_last:
        teacher.to(memory_format=torch.channels_last)
    for name in cfg.train.fp32_nets:
        if name == "teacher" or name in nets:
            keep_fp32(teacher if name == "teacher" else nets[name])
        else:
            logger.warning("train.fp32_nets: method %s has no %s network; ignored", cfg.method, name)


def build_context(
    cfg: DistillConfig,
    run_dir: Path,
    fabric: Any,
    on_epoch_end: list[Callable[[dict[str, Any]], None]] | None = None,
    on_step_end: list[Callable[[dict[str, Any]], None]] | None = None,
) -> RunContext:
    """Everything a run needs, on every rank: data, frozen teacher, networks, RNG.

    Rank 0 loads the data first (writing ``split.json``); the teacher is a plain module on every rank
    (never set up by Fabric, never wrapped in DDP); the networks are built from ``train.seed`` on every
    rank (identical initial weights), and only then does each rank re-seed with ``train.seed + rank``.
    """
    seed_everything(cfg.train.seed)
    device = fabric.device
    data = _load_data(cfg, run_dir, fabric)
    teacher, _ = load_teacher(cfg, data)
    nets = _build_nets(cfg, data.num_classes)
    if fabric.world_size > 1:
        seed_everything(rank_seed(cfg.train.seed, fabric.global_rank))  # different latents per rank
    place_nets(cfg, teacher, nets, device)
    norm = Normalize(cfg.data.mean, cfg.data.std).to(device)
    gen = torch.Generator().manual_seed(cfg.train.seed + 1)  # the shuffle: identical on every rank
    precision = legacy_precision(fabric_precision_name(fabric))
    return RunContext(
        cfg,
        run_dir,
        data,
        teacher,
        nets,
        device,
        precision,
        norm,
        fabric,
        gen,
        list(on_epoch_end or []),
        list(on_step_end or []),
    )


def distill(
    cfg: DistillConfig,
    run_dir: str | Path = "runs/distill",
    resume: bool = False,
    progress: bool = False,
    dist: DistSpec | None = None,
    fabric: Any = None,
    on_epoch_end: list[Callable[[dict[str, Any]], None]] | None = None,
    on_step_end: list[Callable[[dict[str, Any]], None]] | None = None,
    resume_overrides: list[str] | None = None,
) -> DistillResult:
    """Run ``cfg.method`` end to end; writes the run directory and returns the test metrics.

    Args:
        cfg: The run's config (ignored on ``resume``: the run directory's ``config.yaml`` is used).
        run_dir: The run directory (same layout whatever the number of processes).
        resume: Continue the run in ``run_dir`` from its last checkpoint (any number of processes).
        progress: Show progress bars (rank 0).
        dist: Processes, nodes, strategy and precision (default: one process, or torchrun's layout).
        fabric: An already launched ``lightning_fabric.Fabric`` to reuse (``compare`` runs many).
        on_epoch_end: Callbacks with each epoch's metric row (every rank).
        on_step_end: Callbacks with each step's rank-averaged losses (every rank must pass the same ones).
        resume_overrides: On ``resume``, ``["key=value", ...]`` changes to learning rates, epoch counts or
            precision (``augkd.training.resume.RESUME_KEYS``); recorded in the run directory.
    """
    run_dir = Path(run_dir)
    cfg, changes = _resolve_config(cfg, run_dir, resume, resume_overrides)
    if fabric is None:
        fabric = make_fabric(cfg.train, dist)
    _prepare_run_dir(cfg, run_dir, resume, fabric)
    if changes and fabric.is_global_zero:
        from augkd.training.resume import record_resume_overrides

        record_resume_overrides(run_dir, cfg, changes)
    apply_process_settings(cfg.train, fabric.device)
    main, fprec = fabric.is_global_zero, fabric_precision_name(fabric)
    ctx = build_context(cfg, run_dir, fabric, on_epoch_end, on_step_end)
    device, data, teacher, nets, precision = ctx.device, ctx.data, ctx.teacher, ctx.nets, ctx.precision
    teacher_test = ctx.accuracy(teacher, data.test)
    if main:
        logger.info("teacher source-only test acc@1 %.4f; precision %s; device %s; %d process(es)",
                    teacher_test["acc1"], fprec, device, fabric.world_size)  # fmt: skip
    stages = build_stages(cfg)
    if cfg.module1.init_from and stages and isinstance(stages[0], DataFreeStage):
        _reuse_module1(cfg, ctx)
        stages = stages[1:]
    t0 = time.perf_counter()
    out = _run_stages_with_bars(ctx, stages, progress and main)
    test = ctx.student_accuracy("test")  # the test split is read once, here (all ranks, counts all-reduced)
    evals = [r["eval_acc1"] for r in out["metrics"] if "eval_acc1" in r]
    student_path = run_dir / "student.safetensors"
    result = DistillResult(str(run_dir), cfg.method, cfg.train.seed, test, teacher_test, max(evals) if evals else None,
                           {**out["timings"], "total_s": time.perf_counter() - t0}, precision, str(student_path),
                           fabric.world_size, fprec)  # fmt: skip
    if main:
        _save_student(cfg, run_dir, nets["student"], data, test)
        _write_pictures(cfg, run_dir, out["metrics"], stages)
        _write_summary(cfg, run_dir, result, device, resume)
    fabric.barrier()  # the run directory is complete before any rank returns
    return result


def _run_stages_with_bars(ctx: RunContext, stages: list[Stage], bars: bool) -> dict[str, Any]:
    """:func:`run_stages`, with rich progress bars on stderr when ``bars``."""
    if not bars:
        return run_stages(ctx, stages, None)
    from augkd.progress import make_progress  # rich loads only when bars are shown

    with make_progress() as prog:
        return run_stages(ctx, stages, prog)


def _write_summary(
    cfg: DistillConfig, run_dir: Path, result: DistillResult, device: torch.device, resume: bool
) -> None:
    """``summary.json``: the result, versions, Module 1's health, Module 2's anchor measures, resume overrides."""
    summary = {
        **result.to_dict(),
        "augkd_version": augkd_version(),
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    health = _module1_health(cfg, run_dir)
    if health is not None:
        summary["module1_health"] = health
    if (run_dir / "checkpoints" / "module2" / "anchors.json").is_file():
        summary["anchors"] = json.loads((run_dir / "checkpoints" / "module2" / "anchors.json").read_text())
    if resume:
        from augkd.training.resume import read_resume_overrides

        summary["resume_overrides"] = read_resume_overrides(run_dir)
    atomic_write_json(run_dir / "summary.json", summary)


def _module1_health(cfg: DistillConfig, run_dir: Path) -> dict[str, Any] | None:
    """Module 1's health figures (``checkpoints/module1/health.json`` of this run, or of ``module1.init_from``)."""
    for d in (run_dir, Path(cfg.module1.init_from) if cfg.module1.init_from else None):
        if d is not None and (d / "checkpoints" / "module1" / "health.json").is_file():
            return json.loads((d / "checkpoints" / "module1" / "health.json").read_text())
    return None


MODULE1_KEYS = ("teacher", "student", "data", "generator", "module1")


def _module1_signature(cfg: DistillConfig) -> dict[str, Any]:
    d = config_to_dict(cfg)
    sig = {k: d[k] for k in MODULE1_KEYS}
    sig["module1"] = {k: v for k, v in sig["module1"].items() if k != "init_from"}
    # data.recolor changes only the real images of the later stages (and augment/hflip likewise): Module 1 never
    # trains on real images
    sig["data"] = {k: v for k, v in sig["data"].items() if k != "recolor"}
    if cfg.module1.stats_target == "teacher":  # Module 1 then never reads the labelled training images:
        sig["data"] = {k: v for k, v in sig["data"].items() if k != "shots_per_class"}  # one serves every K
    sig["seed"] = cfg.train.seed
    return sig


def _reuse_module1(cfg: DistillConfig, ctx: RunContext) -> None:
    """Load another run's Module 1 networks after checking it was trained with the same settings."""
    src = Path(str(cfg.module1.init_from))
    if not (src / "config.yaml").is_file() or not stage_net_path(src, "module1", "student").is_file():
        raise InputError(f"module1.init_from={str(src)!r} is not a run directory with a finished Module 1")
    other = load_config(src / "config.yaml")
    a, b = _module1_signature(cfg), _module1_signature(other)
    if a != b:
        key = next(k for k in a if a[k] != b[k])
        raise InputError(
            f"module1.init_from={str(src)!r} was trained with different {key!r} settings; its Module 1 cannot be reused"
        )
    load_stage_nets(ctx, src, "module1", DataFreeStage.trains)
    logger.info("Module 1 reused from %s", src)


def _save_student(
    cfg: DistillConfig, run_dir: Path, student: torch.nn.Module, data: DomainData, test: dict[str, float]
) -> Path:
    meta = ModelMeta(
        arch=cfg.student.arch,
        num_classes=data.num_classes,
        model_kwargs=dict(cfg.student.kwargs),
        class_names=data.class_names,
        input_size=cfg.data.image_size,
        in_chans=3,
        mean=list(cfg.data.mean),
        std=list(cfg.data.std),
        metrics={f"test_{k}": v for k, v in test.items() if k != "n"},
        extra={
            "method": cfg.method,
            "seed": cfg.train.seed,
            "data": config_to_dict(cfg.data),
            "teacher": cfg.teacher.checkpoint,
        },
    )
    student = student.to(memory_format=torch.contiguous_format)
    return save_model(student, run_dir / "student.safetensors", meta)


def _write_pictures(cfg: DistillConfig, run_dir: Path, rows: list[dict[str, Any]], stages: list[Any]) -> None:
    if not cfg.train.save_images:
        return
    from augkd.training.plots import plot_curves, plot_schedule

    plot_curves(rows, run_dir / "images" / "training_curves.png")
    for st in stages:
        if isinstance(st, MixupStage) and st.epochs > 0:
            vals = [st.s_at(cfg, e) for e in range(st.epochs)]
            plot_schedule(
                vals,
                run_dir / "images" / "s_schedule.png",
                f"s(e): {cfg.module3.schedule}, a={cfg.module3.a}, b={cfg.module3.b}",
            )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def method_config(cfg: DistillConfig, method: str, seed: int) -> DistillConfig:
    """``cfg`` for ``method`` and ``seed``, validated again so the method's Module 1 settings apply."""
    data = cfg.model_dump()
    data["method"], data["train"]["seed"] = method, seed
    return DistillConfig.model_validate(data)


def compare(
    cfg: DistillConfig,
    methods: list[str],
    seeds: list[int],
    out_dir: str | Path,
    progress: bool = False,
    resume: bool = False,
    dist: DistSpec | None = None,
) -> dict[str, Any]:
    """Run methods × seeds on the same split; write ``summary.json``, ``summary.md`` and a bar chart.

    With ``dist``, one Fabric (one process group) serves every run; only rank 0 writes the summaries.
    """

    try:
        specs = [get_method(m) for m in methods]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = Path(out_dir)
    fabric = make_fabric(cfg.train, dist)
    if fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    teacher: dict[str, float] = {}
    # (seed, Module 1 settings) → the run whose Module 1 the other methods with the same settings reuse
    module1_runs: dict[tuple[int, str], Path] = {}
    for spec in specs:
        method = spec.name
        for seed in seeds:
            rd = out / method / f"seed{seed}"
            sub = method_config(cfg, method, seed)
            key = (seed, sub.module1.model_dump_json(exclude={"init_from"}))
            if (rd / "summary.json").is_file():
                res = json.loads((rd / "summary.json").read_text())
            else:
                shared = module1_runs.get(key)
                if shared is not None and spec.uses_module1 and cfg.module1.init_from is None:
                    sub = sub.model_copy(update={"module1": sub.module1.model_copy(update={"init_from": str(shared)})})
                r = distill(sub, rd, resume=resume and (rd / "config.yaml").is_file(), progress=progress, fabric=fabric)
                res = r.to_dict()
            if spec.uses_module1 and stage_net_path(rd, "module1", "student").is_file():
                module1_runs.setdefault(key, rd)
            results.setdefault(method, []).append(res)
            teacher = res["teacher_test"]
    summary = summarize(results, teacher)
    if fabric.is_global_zero:
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", summary_markdown(summary))
        plot_summary(summary, out / "summary.png")
    fabric.barrier()
    return summary


def summarize(results: dict[str, list[dict[str, Any]]], teacher: dict[str, float]) -> dict[str, Any]:
    rows = {}
    for method, runs in results.items():
        row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for k in ("acc1", "acc3", "acc5"):
            m, s = _mean_std([r["test"][k] for r in runs])
            row[f"{k}_mean"], row[f"{k}_std"] = m, s
        row["acc1_runs"] = [r["test"]["acc1"] for r in runs]
        row["total_s_mean"] = statistics.fmean(r["timings"].get("total_s", 0.0) for r in runs)
        rows[method] = row
    return {"teacher_source_only": teacher, "methods": rows}


def summary_markdown(summary: dict[str, Any]) -> str:
    t = summary["teacher_source_only"]
    lines = ["| method | Acc@1 | Acc@3 | Acc@5 | seeds | time/run (s) |", "|---|---|---|---|---|---|"]
    lines.append(
        f"| teacher (source only) | {100 * t['acc1']:.1f} | {100 * t['acc3']:.1f} | {100 * t['acc5']:.1f} | - | - |"
    )
    for m, r in summary["methods"].items():
        cells = " | ".join(f"{100 * r[f'{k}_mean']:.1f} ± {100 * r[f'{k}_std']:.1f}" for k in ("acc1", "acc3", "acc5"))
        lines.append(f"| {m} | {cells} | {len(r['seeds'])} | {r['total_s_mean']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_summary(summary: dict[str, Any], path: Path) -> None:
    from augkd.training.plots import _plt, _save

    plt = _plt()
    methods = list(summary["methods"])
    means = [100 * summary["methods"][m]["acc1_mean"] for m in methods]
    stds = [100 * summary["methods"][m]["acc1_std"] for m in methods]
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 2, 3.2))
    ax.bar(methods, means, yerr=stds, capsize=3, color="tab:blue")
    ax.axhline(100 * summary["teacher_source_only"]["acc1"], color="k", ls="--", lw=1, label="teacher (source only)")
    ax.set_ylabel("test Acc@1 (%)")
    ax.legend(fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    _save(fig, path)
