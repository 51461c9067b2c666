"""ONNX Runtime static int8 quantisation (QDQ), calibrated on the run's student-domain TRAIN split.

Pipeline: ``quant_pre_process`` (symbolic shape inference + ORT's basic graph optimisation) →
``quantize_static`` with a :class:`CalibrationDataReader` over real training images → a QDQ model that
ONNX Runtime fuses into integer kernels (QLinearConv, QGemm, ...) at session creation.

Defaults, chosen by measurement (the int8 sweep in ``benchmarks/results/export-*.md`` and ``export-int8-sweep-*.csv``,
``benchmarks/bench_export.py``): QDQ format, per-channel int8 weights, uint8 activations (U8S8: S8S8 activations
were many times slower on the x86 dev CPU), MinMax calibration (Percentile and Entropy were no more accurate on
the demo student and need histograms). On a MobileNetV3 (HardSwish) ONNX Runtime's CPU int8 kernels are not faster
than fp32: see the op profile in the same results file.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from augkd.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)

__all__ = ["CALIBRATION_METHODS", "ACTIVATION_TYPES", "QUANT_FORMATS", "quantize_ort_int8", "quantized_op_counts"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("uint8", "int8")
QUANT_FORMATS = ("qdq", "qoperator")
DEFAULT_CALIBRATION_METHOD = "minmax"


def _import_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise MissingDependencyError(
            "int8 quantisation needs ONNX Runtime: pip install onnxruntime-gpu (Linux x86_64) or onnxruntime"
        ) from exc
    return quantization


def _reader(quantization: Any, input_name: str, data: np.ndarray, batch_size: int) -> Any:
    class _Reader(quantization.CalibrationDataReader):  # type: ignore[misc,name-defined]
        """Feeds the calibration images in fixed-size batches, once."""

        def __init__(self) -> None:
            self._batches = iter([data[i : i + batch_size] for i in range(0, len(data), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch)}

    return _Reader()


def quantized_op_counts(path: str | Path) -> dict[str, Any]:
    """Counts in a QDQ/QOperator model: Q and DQ nodes, and the op types that take a dequantised input."""
    import onnx

    model = onnx.load(str(path))
    nodes = model.graph.node
    dq_outputs = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = collections.Counter(
        n.op_type
        for n in nodes
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in n.input)
    )
    for n in nodes:  # QOperator format: integer ops directly
        if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "ConvInteger", "MatMulInteger"):
            quantized[n.op_type] += 1
    float_ops = collections.Counter(
        n.op_type
        for n in nodes
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and n.op_type not in quantized
    )
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in nodes),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in nodes),
        "quantized_ops": dict(sorted(quantized.items())),
        "float_ops": dict(sorted(float_ops.items())),
    }


def first_last_nodes(path: str | Path, op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")) -> list[str]:
    """Names of the first and last compute nodes (often kept in float for accuracy)."""
    import onnx

    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in op_types and n.name]
    return sorted({names[0], names[-1]}) if names else []


def quantize_ort_int8(
    fp32_path: str | Path, out_path: str | Path, calibration_inputs: np.ndarray, *,
    method: str = DEFAULT_CALIBRATION_METHOD, activation_type: str = "uint8", quant_format: str = "qdq",
    per_channel: bool = True, reduce_range: bool = False, op_types: list[str] | None = None,
    exclude_first_last: bool = False, nodes_to_exclude: list[str] | None = None, batch_size: int = 32,
    percentile: float = 99.999,
) -> dict[str, Any]:  # fmt: skip
    """Quantise an fp32 ONNX model to static int8 with real calibration images.

    Args:
        fp32_path: the float ONNX model (dynamic batch).
        out_path: where to write the int8 model (atomically).
        calibration_inputs: model inputs ``[N, C, S, S]`` (normalised float, or uint8 for a preprocessing graph).
        method: calibration: ``"minmax"``, ``"percentile"`` or ``"entropy"``.
        activation_type: ``"uint8"`` (U8S8) or ``"int8"`` (S8S8).
        quant_format: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs) or ``"qoperator"`` (QLinear* ops).
        per_channel: per-output-channel weight scales.
        reduce_range: 7-bit weights (helps CPUs without VNNI avoid saturation).
        op_types: op types to quantise (default: all ONNX Runtime supports).
        exclude_first_last: keep the first and last Conv/Gemm in float.
        nodes_to_exclude: more node names to keep in float.
        batch_size: calibration batch size.
        percentile: the percentile for ``method="percentile"``.

    Returns:
        The settings used, the time taken and the quantised op counts (for the report).
    """
    q = _import_quantization()
    _check_quant_args(method, activation_type, quant_format, calibration_inputs)
    exclude = list(nodes_to_exclude or [])
    if exclude_first_last:
        exclude += first_last_nodes(fp32_path)
    settings = _static_settings(
        q, method, activation_type, quant_format, op_types, per_channel, reduce_range, exclude, percentile
    )
    t0 = time.perf_counter()
    notes = _quantize_static(q, fp32_path, out_path, calibration_inputs, batch_size, settings)
    info: dict[str, Any] = {
        "calibration_method": method,
        "calibration_samples": int(len(calibration_inputs)),
        "calibration_batch_size": batch_size,
        "format": quant_format,
        "activation_type": activation_type,
        "weight_type": "int8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": op_types or "all supported",
        "nodes_excluded": exclude,
        "seconds": time.perf_counter() - t0,
        "notes": notes,
    }
    info.update(quantized_op_counts(out_path))
    logger.info(
        "int8 (%s, %s calibration on %d images): %s",
        quant_format,
        method,
        len(calibration_inputs),
        info["quantized_ops"],
    )
    return info


def _static_settings(
    q: Any,
    method: str,
    activation_type: str,
    quant_format: str,
    op_types: list[str] | None,
    per_channel: bool,
    reduce_range: bool,
    exclude: list[str],
    percentile: float,
) -> dict[str, Any]:
    """The keyword arguments of ONNX Runtime's ``quantize_static`` for these settings (weights always int8)."""
    return {
        "quant_format": q.QuantFormat.QDQ if quant_format == "qdq" else q.QuantFormat.QOperator,
        "op_types_to_quantize": op_types,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "activation_type": q.QuantType.QUInt8 if activation_type == "uint8" else q.QuantType.QInt8,
        "weight_type": q.QuantType.QInt8,
        "nodes_to_exclude": exclude or None,
        "calibrate_method": {
            "minmax": q.CalibrationMethod.MinMax,
            "percentile": q.CalibrationMethod.Percentile,
            "entropy": q.CalibrationMethod.Entropy,
        }[method],
        "extra_options": {"CalibPercentile": percentile} if method == "percentile" else {},
    }


def _check_quant_args(method: str, activation_type: str, quant_format: str, calibration_inputs: np.ndarray) -> None:
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r}: use one of {', '.join(CALIBRATION_METHODS)}")
    if activation_type not in ACTIVATION_TYPES:
        raise InputError(f"unknown activation type {activation_type!r}: use one of {', '.join(ACTIVATION_TYPES)}")
    if quant_format not in QUANT_FORMATS:
        raise InputError(f"unknown quantisation format {quant_format!r}: use one of {', '.join(QUANT_FORMATS)}")
    if len(calibration_inputs) == 0:
        raise InputError("int8 calibration needs at least one image; the run's train split is empty")


def _quantize_static(
    q: Any,
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_inputs: np.ndarray,
    batch_size: int,
    settings: dict[str, Any],
) -> list[str]:
    """Pre-process (shape inference; skipped if it fails), calibrate and write the int8 model; the notes."""
    from augkd.utils import atomic_write

    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="augkd-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        input_name = _input_name(fp32_path)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                q.quant_pre_process(str(fp32_path), str(pre))
            except Exception as exc:  # symbolic shape inference can fail on exotic graphs: keep going without it
                notes.append(f"quant_pre_process failed ({type(exc).__name__}); quantised the exported graph as is")
                pre = Path(fp32_path)
            reader = _reader(q, input_name, calibration_inputs, batch_size)

            def write(p: Path) -> None:
                q.quantize_static(str(pre), str(p), reader, **settings)

            atomic_write(out_path, write)
    return notes


def _input_name(path: str | Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise InputError(f"{str(path)!r} has inputs {names}: int8 calibration expects exactly one image input")
    return names[0]
