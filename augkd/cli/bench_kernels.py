"""``augkd bench kernels``: microbenchmarks of the fused ops (torch eager, torch.compile, Triton)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from augkd.cli._options import JsonOpt, OutOpt, QuietOpt, VerboseOpt
from augkd.cli._util import cli_errors, print_json, print_table, setup_logging


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@cli_errors
def kernels_cmd(
    ops: Annotated[
        Optional[str], typer.Option("--ops", help="Comma-separated: kd_loss, uncertainty, fused_mixup (default all).")
    ] = None,
    providers: Annotated[
        Optional[str],
        typer.Option("--providers", help="Comma-separated: torch, compile, triton (Triton on CUDA only)."),
    ] = None,
    modes: Annotated[Optional[str], typer.Option("--modes", help="Comma-separated: forward, backward, full.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda (default: CUDA when present).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A few small sizes only.")] = False,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Time the fused kernels against the torch reference (median, p20, p80; GB/s) and write a CSV."""
    setup_logging(verbose, quiet)
    import csv
    import io

    from augkd.errors import StorageError
    from augkd.kernels.bench import run_kernel_bench
    from augkd.utils import atomic_write_text

    rows = run_kernel_bench(_split(ops), _split(providers), _split(modes), device=device, quick=quick)
    not_saved: StorageError | None = None
    if out is not None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
        try:
            atomic_write_text(out, buf.getvalue())
        except StorageError as exc:  # print the timings first, then the one-line error
            not_saved = exc
    if json_out:
        print_json(rows)
    else:
        cols = ["op", "provider", "mode", "metric", "unit", "x_name", "x_value", "p50", "p20", "p80"]
        print_table([r for r in rows if r.get("metric") == "time"], title="kernel microbenchmarks", columns=cols)
    if not_saved is not None:
        raise StorageError(f"{not_saved}; the results are printed on stdout only", not_saved.path, not_saved.errno)
    if out is not None and not json_out:
        typer.echo(f"results: {out}")
