"""``augkd distill``, ``augkd compare``, ``augkd teacher`` and ``augkd methods``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from augkd.cli._options import ConfigOpt, JsonOpt, OutOpt, QuietOpt, SetOpt, VerboseOpt
from augkd.cli._util import cli_errors, print_json, print_table, setup_logging, show_progress
from augkd.methods import METHODS, methods_help

# AuG-KD, its ablations and the baselines of the paper's main table
COMPARE_DEFAULT = ("scratch", "kd", "dfkd", "dfkd-ft", "augkd", "augkd-no-anchor", "augkd-no-mixup")

if TYPE_CHECKING:
    from augkd.config import TeacherTrainConfig
    from augkd.training.dist import DistSpec


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _result_rows(res: dict) -> list[dict]:
    return [
        {"metric": k, "student": res["test"][k], "teacher (source only)": res["teacher_test"][k]}
        for k in ("acc1", "acc3", "acc5")
    ]


MethodOpt = Annotated[
    Optional[str],
    typer.Option("--method", "-m", help=methods_help()),
]
SeedsOpt = Annotated[
    Optional[str], typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2,3,4 (one run each).")
]
ResumeOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--resume",
        file_okay=False,
        help="Continue the run in this directory with its own config.yaml. Only learning rates, epoch counts "
        "and precision may change, with --set: module1.epochs, module1.g_lr, module1.s_lr, module1.e_lr, "
        "module2.epochs, module2.lr, module3.epochs, module3.lr, kd.epochs, kd.lr, train.precision (for a stage "
        "that has not finished; recorded in RUN/resume_overrides.json). Any other key, -c, --method, --seeds "
        "and --out are refused.",
    ),
]
DevicesOpt = Annotated[
    Optional[int],
    typer.Option("--devices", help="Processes (GPUs, or CPU processes) per node; default 1, or torchrun's."),
]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="auto or ddp (data-parallel through Lightning Fabric).")]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option("--precision", help="auto, 32-true or bf16-mixed; default: from train.precision."),
]
NumNodesOpt = Annotated[
    Optional[int],
    typer.Option("--num-nodes", help="Machines; default 1, or torchrun's --nnodes."),
]


@cli_errors
def distill_cmd(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    out: OutOpt = None,
    method: MethodOpt = None,
    seeds: SeedsOpt = None,
    resume: ResumeOpt = None,
    devices: DevicesOpt = None,
    strategy: StrategyOpt = "auto",
    precision: PrecisionOpt = None,
    num_nodes: NumNodesOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Distil the teacher into a student on the student-domain data (default: the AuG-KD method).

    Data-parallel: ``--devices N --strategy ddp`` on one machine, or under ``torchrun`` (see README,
    "Scaling out"). Only rank 0 prints the result and writes the run directory.
    """
    setup_logging(verbose, quiet)
    from augkd.config import load_config
    from augkd.training import compare, distill
    from augkd.training.dist import global_rank, teardown

    spec = _dist_spec(devices, strategy, precision, num_nodes)
    extra = list(overrides or []) + ([f"method={method}"] if method else [])
    try:
        if resume is not None:
            _check_resume_args(config, method, seeds, out)
            res = distill(
                load_config(None),
                resume,
                resume=True,
                progress=show_progress(quiet),
                dist=spec,
                resume_overrides=list(overrides or []),
            ).to_dict()
            if global_rank() == 0:
                _report(res, json_out)
            return
        cfg = load_config(config, extra)
        seed_list = _seeds(seeds)
        out_dir = out or Path("runs") / cfg.method
        if seed_list:
            summary = compare(cfg, [cfg.method], seed_list, out_dir, progress=show_progress(quiet), dist=spec)
            if global_rank() == 0:
                _report_summary(summary, out_dir, json_out)
            return
        res = distill(cfg, out_dir, progress=show_progress(quiet), dist=spec).to_dict()
        if global_rank() == 0:
            _report(res, json_out)
    finally:
        teardown()


def _check_resume_args(config: Path | None, method: str | None, seeds: str | None, out: Path | None) -> None:
    """With --resume the run keeps its own config and directory: refuse what would otherwise be ignored."""
    from augkd.errors import ConfigError
    from augkd.training.resume import RESUME_KEYS

    given = [
        flag
        for flag, v in (("-c/--config", config), ("--method", method), ("--seeds", seeds), ("--out", out))
        if v is not None
    ]
    if given:
        raise ConfigError(
            f"{given[0]} cannot be used with --resume: a resumed run keeps its own RUN/config.yaml and directory; "
            f"only --set {', '.join(RESUME_KEYS)} can change"
        )


def _dist_spec(devices: int | None, strategy: str, precision: str | None, num_nodes: int | None) -> DistSpec:
    from augkd.training.dist import STRATEGIES, DistSpec
    from augkd.training.precision import PRECISIONS

    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if devices is not None and devices < 1:
        raise typer.BadParameter(f"--devices must be >= 1, got {devices}")
    if num_nodes is not None and num_nodes < 1:
        raise typer.BadParameter(f"--num-nodes must be >= 1, got {num_nodes}")
    return DistSpec(devices=devices, strategy=strategy, precision=precision, num_nodes=num_nodes)


def _report(res: dict, json_out: bool) -> None:
    if json_out:
        print_json(res)
    else:
        print_table(_result_rows(res), title=f"{res['method']} (seed {res['seed']}): test split of {res['run_dir']}")
        typer.echo(f"student: {res['student_path']}")


def _report_summary(summary: dict, out_dir: Path, json_out: bool) -> None:
    if json_out:
        print_json(summary)
        return
    from augkd.training.pipeline import summary_markdown

    typer.echo(summary_markdown(summary))
    typer.echo(f"summary: {out_dir / 'summary.json'}")


@cli_errors
def compare_cmd(
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated methods: " + methods_help())] = ",".join(
        COMPARE_DEFAULT
    ),
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0,1,2,3,4",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run methods × seeds on the same split and write summary.json, summary.md and a bar chart."""
    setup_logging(verbose, quiet)
    from augkd.config import load_config
    from augkd.training import compare

    cfg = load_config(config, list(overrides or []))
    out_dir = out or Path("runs") / "compare"
    summary = compare(
        cfg,
        [m.strip() for m in methods.split(",") if m.strip()],
        _seeds(seeds) or [0],
        out_dir,
        progress=show_progress(quiet),
        resume=True,
    )
    _report_summary(summary, out_dir, json_out)


TeacherResumeOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--resume",
        file_okay=False,
        help="Continue the teacher run in this directory from its last completed epoch, with its own "
        "config.yaml (-c, --set and --out are refused).",
    ),
]


@cli_errors
def teacher_cmd(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    out: OutOpt = None,
    resume: TeacherResumeOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a teacher on a teacher-domain dataset (writes teacher.safetensors + JSON sidecar).

    Every epoch is checkpointed: --resume DIR continues a killed run. Data-parallel under ``torchrun``.
    """
    setup_logging(verbose, quiet)
    from augkd.config import TeacherTrainConfig, load_config
    from augkd.teacher import train_teacher
    from augkd.training.dist import global_rank, teardown

    try:
        if resume is not None:
            _check_teacher_resume_args(config, overrides, out)
            res = _with_bars(quiet, lambda prog: train_teacher(None, resume, progress=prog, resume=True))
        else:
            cfg = load_config(config, list(overrides or []), model=TeacherTrainConfig)
            if config is None:
                _say_default_teacher(cfg, bool(overrides))
            out_dir = out or Path("runs") / "teacher"
            res = _with_bars(quiet, lambda prog: train_teacher(cfg, out_dir, progress=prog))
        if global_rank() != 0:
            return
        if json_out:
            print_json(res)
        else:
            typer.echo(f"teacher: {res['teacher']} (best epoch {res['best_epoch']}, eval acc@1 {res['eval_acc1']:.4f})")
    finally:
        teardown()


def _check_teacher_resume_args(config: Path | None, overrides: list[str] | None, out: Path | None) -> None:
    """With --resume the run keeps its own config and directory: refuse what would otherwise be ignored."""
    from augkd.errors import ConfigError

    given = [f for f, v in (("-c/--config", config), ("--set", overrides), ("--out", out)) if v]
    if given:
        raise ConfigError(
            f"{given[0]} cannot be used with --resume: a resumed teacher run keeps its own RUN/config.yaml and "
            "directory"
        )


def _say_default_teacher(cfg: TeacherTrainConfig, overridden: bool) -> None:
    import logging

    logging.getLogger("augkd.cli").info(
        (
            "no -c config: training the default teacher, %s on %s for %d epochs (%s); pass -c FILE "
            "(e.g. configs/teacher-office31.yaml) or --set to choose"
        ),
        cfg.model.arch,
        cfg.data.dataset,
        cfg.epochs,
        "with your --set overrides" if overridden else "augkd.config.TeacherTrainConfig's defaults",
    )


def _with_bars(quiet: bool, train: Callable[[Any], dict]) -> dict:
    """``train(progress)`` with rich progress bars, or ``train(None)`` when ``quiet`` or stderr is no terminal."""
    if show_progress(quiet):
        from augkd.progress import make_progress

        with make_progress() as prog:
            return train(prog)
    return train(None)


@cli_errors
def methods_cmd(json_out: JsonOpt = False) -> None:
    """List the methods: their stages and, for the data-free baselines, the Module 1 settings they fix."""
    rows = [
        {
            "method": m.name,
            "stages": " → ".join(m.stages),
            "what": m.help,
            "module1 settings": ", ".join(f"{k}={v}" for k, v in m.module1.items()),
        }
        for m in METHODS.values()
    ]
    if json_out:
        print_json(rows)
    else:
        print_table(rows, title="augkd methods (-m NAME, --methods A,B)")
