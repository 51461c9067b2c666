"""``augkd bench``: benchmarks. ``augkd bench latency SOURCE`` times each backend × batch size on the same images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from augkd.cli._options import JsonOpt, OutOpt, QuietOpt, VerboseOpt
from augkd.cli._util import cli_errors, print_json, print_table, setup_logging

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: latency of exported models (and kernels).")

_COLUMNS = ["backend", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "samples/s", "provider", "threads", "note"]


def _table_rows(rows: list[dict]) -> list[dict]:
    return [
        {
            "backend": r["backend"],
            "batch": r["batch_size"],
            "p50 ms": r["p50_ms"],
            "p90 ms": r["p90_ms"],
            "p99 ms": r["p99_ms"],
            "mean ms": r["mean_ms"],
            "samples/s": r["throughput"],
            "provider": r["provider"],
            "threads": r["threads"],
            "note": r.get("note"),
        }
        for r in rows
    ]


@bench_app.command("latency")
@cli_errors
def latency_cmd(
    source: Annotated[
        str, typer.Argument(help="A run directory, or a student .safetensors checkpoint with its .json sidecar.")
    ],
    backends: Annotated[
        str | None,
        typer.Option(
            "--backends",
            "-b",
            help="Comma-separated: torch, compile, ort, ort-int8, tensorrt (default: torch,ort,ort-int8).",
        ),
    ] = None,
    batch: Annotated[str, typer.Option("--batch", help="Comma-separated batch sizes.")] = "1,8,32",
    out: OutOpt = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Student-domain dataset when the checkpoint records none (images for timing and int8 calibration).",
        ),
    ] = None,
    export_dir: Annotated[
        Path | None,
        typer.Option(
            "--export-dir",
            help="Where model.onnx / model.int8.onnx are (default: SOURCE/export); missing ones are exported.",
            file_okay=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="torch and ONNX Runtime intra-op threads (default: physical cores).", min=1),
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls per backend and batch size.", min=0)] = 10,
    iters: Annotated[int, typer.Option("--iters", help="Timed calls per backend and batch size.", min=1)] = 50,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds per backend and batch size instead of --iters.", min=0.01),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda or auto: where torch and ONNX Runtime run.")
    ] = "cpu",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Latency (p50/p90/p99 ms) and throughput of torch, torch.compile, ONNX Runtime fp32/int8 and TensorRT."""
    setup_logging(verbose, quiet)
    from augkd.export import bench_latency
    from augkd.export.errors import ResultNotSavedError

    try:
        result = bench_latency(source, backends, batch, out, data=data, export_dir=export_dir, threads=threads,
                               warmup=warmup, iters=iters, duration=duration, device=device)  # fmt: skip
    except ResultNotSavedError as exc:  # timed, but the files could not be written: print, then the error
        _show(exc.result, json_out)
        raise
    _show(result, json_out)


def _show(result: dict, json_out: bool) -> None:
    if json_out:
        print_json(result)
        return
    m = result["model"]
    print_table(
        _table_rows(result["rows"]),
        title=f"latency: {m['arch']} at {m['input_size']}px, {result['settings']['threads']} threads",
        columns=_COLUMNS,
    )
    for note in result["notes"]:
        typer.echo(note)
    if "files" in result:
        typer.echo(f"results: {result['files']['md']} (+ .json, .png)")
