"""``augkd doctor``: report what this machine can run; ``--selftest`` checks every kernel."""

from __future__ import annotations

from typing import Annotated

import typer

from augkd.cli._options import JsonOpt
from augkd.cli._util import cli_errors, print_json, print_table, setup_logging


@cli_errors
def doctor_cmd(
    selftest: Annotated[
        bool, typer.Option("--selftest", help="Run every kernel against its reference (and TensorRT).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """torch / CUDA / Triton / onnxruntime providers that really load / TensorRT availability."""
    setup_logging(False, True)
    from augkd.doctor import diagnose, doctor_rows

    info = diagnose()
    result: dict = {"environment": info}
    failed = False
    if selftest:
        from augkd.kernels import run_selftest

        rows = run_selftest()
        result["kernel_selftest"] = rows
        failed = any(r.get("passed") is False for r in rows)
        try:
            from augkd.export import tensorrt_selftest

            result["tensorrt_selftest"] = tensorrt_selftest()
            failed = failed or result["tensorrt_selftest"].get("status") == "failed"
        except ImportError:
            result["tensorrt_selftest"] = {"status": "skipped", "reason": "augkd.export has no TensorRT self-test"}
    if json_out:
        print_json(result)
    else:
        print_table(doctor_rows(info), title="augkd doctor")
        if selftest:
            cols = ["op", "device", "dtype", "check", "max_abs_err", "tol", "passed", "ms_triton", "ms_torch", "note"]
            print_table(result["kernel_selftest"], title="kernel self-test (Triton vs torch reference)", columns=cols)
            trt = result["tensorrt_selftest"]
            typer.echo(f"TensorRT self-test: {trt.get('status')} {trt.get('reason', '')}".rstrip())
    if failed:
        raise typer.Exit(1)
