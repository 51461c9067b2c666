"""Deployment: ONNX export, ONNX Runtime static int8, TensorRT engines, parity checks and latency benchmarks.

``export_model(source, config, out_dir)`` is the one entry point ``augkd export`` calls (``config``: an
:class:`ExportConfig`, built from a mapping with ``build_export_config``); ``measure_latency``
is the single timing harness every backend goes through (``augkd bench latency``).

This package imports cheaply: onnx, onnxruntime, onnxslim and tensorrt are imported inside the functions
that need them, and the public names below load their submodule on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from augkd.export.config import ExportConfig, build_export_config
    from augkd.export.data import EvaluationData, evaluation_data
    from augkd.export.errors import ExportCheckError, ExportError
    from augkd.export.latency import bench_latency, measure_latency
    from augkd.export.onnx import export_onnx
    from augkd.export.pipeline import EXPORT_FORMATS, export_model
    from augkd.export.quantize import quantize_ort_int8
    from augkd.export.report import ExportReport
    from augkd.export.tensorrt import tensorrt_available, tensorrt_selftest

__all__ = [
    "EXPORT_FORMATS",
    "EvaluationData",
    "ExportConfig",
    "ExportCheckError",
    "ExportError",
    "ExportReport",
    "bench_latency",
    "build_export_config",
    "evaluation_data",
    "export_model",
    "export_onnx",
    "measure_latency",
    "quantize_ort_int8",
    "tensorrt_available",
    "tensorrt_selftest",
]

_LAZY = {
    "ExportConfig": "config",
    "build_export_config": "config",
    "EvaluationData": "data",
    "evaluation_data": "data",
    "ExportCheckError": "errors",
    "ExportError": "errors",
    "bench_latency": "latency",
    "measure_latency": "latency",
    "export_onnx": "onnx",
    "EXPORT_FORMATS": "pipeline",
    "export_model": "pipeline",
    "quantize_ort_int8": "quantize",
    "ExportReport": "report",
    "tensorrt_available": "tensorrt",
    "tensorrt_selftest": "tensorrt",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"augkd.export.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'augkd.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
