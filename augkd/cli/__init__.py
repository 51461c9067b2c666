"""The ``augkd`` command line: thin typer commands over library functions.

Results go to stdout (``--json`` for machine-readable output); logs and progress go to stderr.
A user error (:class:`augkd.errors.AugKDError`) prints one line and exits 1; ``AUGKD_DEBUG=1`` shows
the traceback. Heavy imports (torch, onnx) happen inside command bodies so ``augkd --help`` is fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="augkd",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Out-of-domain knowledge distillation (AuG-KD) and deployment export.",
)

# --- command registration (one module per command) ---
from augkd.cli import doctor as _doctor
from augkd.cli import evaluate as _evaluate
from augkd.cli import train_cmds as _train

app.command("distill")(_train.distill_cmd)
app.command("compare")(_train.compare_cmd)
app.command("teacher")(_train.teacher_cmd)
app.command("eval")(_evaluate.eval_cmd)
app.command("methods")(_train.methods_cmd)
app.command("doctor")(_doctor.doctor_cmd)
# export / bench (augkd.cli.export, augkd.cli.bench) register below
from augkd.cli import bench as _bench, export as _export

app.command("export")(_export.export_cmd)
app.add_typer(_bench.bench_app, name="bench")
from augkd.cli import bench_kernels as _bench_kernels

_bench.bench_app.command("kernels")(_bench_kernels.kernels_cmd)
# --- end of registration ---


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (standalone mode: usage errors exit 2, user errors exit 1)."""
    app(args=argv, prog_name="augkd")
