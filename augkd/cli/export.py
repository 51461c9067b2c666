"""``augkd export SOURCE``: ONNX (+ ONNX Runtime int8, TensorRT) with parity and accuracy checks and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from augkd.cli._options import JsonOpt, OutOpt, QuietOpt, VerboseOpt
from augkd.cli._util import cli_errors, print_json, print_table, setup_logging

FormatOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--format",
        "-f",
        help=(
            "onnx, ort-int8, tensorrt-fp16, tensorrt-int8 (repeatable or comma-separated; default: onnx and ort-int8)."
        ),
    ),
]


def _rows(report: dict) -> list[dict]:
    lat = {(r["backend"], r["batch_size"]): r["p50_ms"] for r in report.get("latency", [])}
    rows = []
    for a in report["artifacts"]:
        p, acc = a.get("parity") or {}, a.get("accuracy") or {}
        backend = {"onnx": "ort"}.get(a["format"], a["format"])
        rows.append(
            {
                "format": a["format"],
                "file": a["file"],
                "KiB": a["size_bytes"] / 1024,
                "max |Δ|": p.get("max_abs_diff"),
                "top-1 agree %": p.get("top1_agreement", 0) * 100 if p else None,
                "Acc@1 %": acc.get("acc1", 0) * 100 if acc else None,
                "ref Acc@1 %": acc.get("reference_acc1", 0) * 100 if acc else None,
                "drop pts": acc.get("drop_points"),
                "p50 ms b1": lat.get((backend, 1)),
                "p50 ms b32": lat.get((backend, 32)),
                "checks": "ok" if all(c["passed"] for c in a["checks"]) else "FAIL",
            }
        )
    return rows


def _show(report: dict, json_out: bool, saved: bool = True) -> None:
    if json_out:
        print_json(report)
        return
    torch_lat = {r["batch_size"]: r["p50_ms"] for r in report.get("latency", []) if r["backend"] == "torch"}
    title = (
        f"{report['model']['arch']} → {report['out_dir']} (torch Acc@1 {report['model']['torch_acc1'] * 100:.2f}%"
        + (f", torch p50 b1 {torch_lat[1]:.3f} ms" if 1 in torch_lat else "")
        + ")"
    )
    print_table(_rows(report), title=title)
    if saved:
        typer.echo(f"report: {Path(report['out_dir']) / 'export_report.md'}")


SourceArg = Annotated[
    str, typer.Argument(help="A run directory, or a student .safetensors checkpoint with its .json sidecar.")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Student-domain dataset (built-in name or image folder) when the checkpoint records none.",
    ),
]
ExporterOpt = Annotated[
    str, typer.Option("--exporter", help="auto (dynamo, legacy fallback recorded), dynamo or legacy.")
]
OpsetOpt = Annotated[int, typer.Option("--opset", help="ONNX opset (>= 17).")]
PreprocessingOpt = Annotated[
    bool, typer.Option("--with-preprocessing", help="The graph takes uint8 NCHW images and normalises them itself.")
]
SoftmaxOpt = Annotated[bool, typer.Option("--softmax", help="Output probabilities instead of logits.")]
SimplifyOpt = Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify the graph with onnxslim.")]
AtolOpt = Annotated[float, typer.Option("--atol", help="fp32 parity: largest allowed max |Δ output| against PyTorch.")]
AgreementOpt = Annotated[
    float, typer.Option("--min-agreement", help="fp32 parity: smallest allowed top-1 agreement (fraction).")
]
ParitySamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--parity-samples", help="Test images for parity/accuracy (default: the whole test split, at most 2000)."
    ),
]
CalibrationOpt = Annotated[int, typer.Option("--calibration", help="Training images for int8 calibration.")]
CalibrationMethodOpt = Annotated[
    str, typer.Option("--calibration-method", help="ONNX Runtime int8 calibration: minmax, percentile or entropy.")
]
QuantFormatOpt = Annotated[str, typer.Option("--quant-format", help="ONNX Runtime int8 format: qdq or qoperator.")]
ActivationTypeOpt = Annotated[
    str, typer.Option("--activation-type", help="ONNX Runtime int8 activations: uint8 or int8.")
]
ExcludeFirstLastOpt = Annotated[
    bool, typer.Option("--exclude-first-last", help="Keep the first and last Conv/Gemm in float (int8).")
]
MaxAccDropOpt = Annotated[
    float,
    typer.Option(
        "--max-acc-drop", help="Largest allowed Acc@1 drop in points of int8/fp16 artifacts against fp32 ONNX."
    ),
]
LatencyOpt = Annotated[
    bool, typer.Option("--latency/--no-latency", help="Time each artifact (and torch) at batch 1 and 32.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="torch and ONNX Runtime threads (default: physical cores).", min=1),
]


@cli_errors
def export_cmd(
    source: SourceArg,
    formats: FormatOpt = None,
    out: OutOpt = None,
    data: DataOpt = None,
    exporter: ExporterOpt = "auto",
    opset: OpsetOpt = 18,
    with_preprocessing: PreprocessingOpt = False,
    softmax: SoftmaxOpt = False,
    simplify: SimplifyOpt = True,
    atol: AtolOpt = 1e-4,
    min_agreement: AgreementOpt = 0.999,
    parity_samples: ParitySamplesOpt = None,
    calibration: CalibrationOpt = 256,
    calibration_method: CalibrationMethodOpt = "minmax",
    quant_format: QuantFormatOpt = "qdq",
    activation_type: ActivationTypeOpt = "uint8",
    exclude_first_last: ExcludeFirstLastOpt = False,
    max_acc_drop: MaxAccDropOpt = 1.0,
    latency: LatencyOpt = True,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Export a run's student to ONNX (+ int8 / TensorRT), check parity and accuracy on its test split, report."""
    setup_logging(verbose, quiet)
    from augkd.export import ExportCheckError, build_export_config, export_model
    from augkd.export.errors import ResultNotSavedError

    cfg = build_export_config({
        "formats": formats, "data": data, "threads": threads,
        "onnx": {"exporter": exporter, "opset": opset, "with_preprocessing": with_preprocessing, "softmax": softmax,
                 "simplify": simplify},
        "checks": {"atol": atol, "min_agreement": min_agreement, "max_acc_drop": max_acc_drop,
                   "parity_samples": parity_samples},
        "int8": {"calibration": calibration, "method": calibration_method, "activation_type": activation_type,
                 "quant_format": quant_format, "exclude_first_last": exclude_first_last},
        "latency": {"enabled": latency},
    })  # fmt: skip
    try:
        report = export_model(source, cfg, out)
    except ExportCheckError as exc:
        _show(exc.report.to_json_dict(), json_out)  # the table on stdout helps; then the one-line error
        raise
    except ResultNotSavedError as exc:
        _show(exc.result, json_out, saved=False)  # the figures on stdout, then the one-line error
        raise
    _show(report.to_json_dict(), json_out)
