"""Artifact file names, and finding (or exporting on the fly) the artifacts a latency benchmark needs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from augkd.errors import InputError

if TYPE_CHECKING:
    from augkd.export.data import EvaluationData
    from augkd.export.source import Source

logger = logging.getLogger(__name__)

__all__ = ["ARTIFACT_FILES", "BENCH_TO_FORMAT", "ensure_artifacts", "is_fresh"]

ARTIFACT_FILES = {
    "onnx": "model.onnx",
    "ort-int8": "model.int8.onnx",
    "tensorrt-fp16": "model.fp16.engine",
    "tensorrt-int8": "model.int8.engine",
}
BENCH_TO_FORMAT = {"ort": "onnx", "ort-int8": "ort-int8", "tensorrt": "tensorrt-fp16"}
FINGERPRINT_KEY = "augkd.source_fingerprint"


def is_fresh(src: Source, export_dir: Path, fmt: str) -> bool:
    """Whether ``export_dir`` holds a ``fmt`` artifact exported from exactly these weights.

    ``model.onnx`` records the weights' fingerprint in its metadata; derived artifacts (int8, engines)
    count as fresh when that ONNX is fresh and they are not older than it.
    """
    from augkd.export.onnx import onnx_metadata

    base = export_dir / ARTIFACT_FILES["onnx"]
    if not base.is_file():
        return False
    try:
        if onnx_metadata(base).get(FINGERPRINT_KEY) != src.fingerprint:
            return False
    except InputError:
        return False
    path = export_dir / ARTIFACT_FILES[fmt]
    return path.is_file() and (fmt == "onnx" or path.stat().st_mtime >= base.stat().st_mtime)


def ensure_artifacts(
    src: Source,
    backends: list[str],
    export_dir: Path | None,
    fallback_dir: Path,
    evaluation: EvaluationData | None,
    *,
    threads: int | None = None,
    calibration: int = 256,
) -> tuple[dict[str, Path], list[str]]:
    """Paths of the artifacts the bench ``backends`` (``ort``, ``ort-int8``, ``tensorrt``) need, with notes.

    Existing fresh files in ``export_dir`` (default ``<source>/export``) are used; anything missing or
    exported from other weights is exported now into ``fallback_dir`` with default settings.
    """
    from augkd.export.onnx import export_onnx

    if not backends:
        return {}, []
    look = export_dir if export_dir is not None else (src.default_dir("export") if src.folder else None)
    found: dict[str, Path] = {}
    notes: list[str] = []
    fresh_exports: dict[str, Path] = {}

    def fp32_onnx() -> Path:
        if look is not None and is_fresh(src, look, "onnx"):
            return look / ARTIFACT_FILES["onnx"]
        if "onnx" not in fresh_exports:
            path = fallback_dir / ARTIFACT_FILES["onnx"]
            info = export_onnx(src.model, path, src.meta.input_size, in_chans=src.meta.in_chans, mean=src.meta.mean,
                               std=src.meta.std, class_names=src.meta.class_names,
                               metadata={FINGERPRINT_KEY: src.fingerprint, "augkd.arch": src.meta.arch})  # fmt: skip
            notes.append(f"exported {path} on the fly ({info.exporter} exporter): no fresh model.onnx in {look}")
            fresh_exports["onnx"] = path
        return fresh_exports["onnx"]

    for backend in backends:
        fmt = BENCH_TO_FORMAT[backend]
        if look is not None and is_fresh(src, look, fmt):
            found[backend] = look / ARTIFACT_FILES[fmt]
            notes.append(f"{backend}: using {found[backend]}")
            continue
        if fmt == "onnx":
            found[backend] = fp32_onnx()
        elif fmt == "ort-int8":
            if evaluation is None:
                raise InputError(
                    "ort-int8 needs calibration images from the run's train split and none were found: "
                    "pass --data DATASET or run `augkd export` first"
                )
            found[backend] = _quantize_on_the_fly(fp32_onnx(), fallback_dir, evaluation, calibration, notes)
        else:
            found[backend] = _build_engine_on_the_fly(fp32_onnx(), fallback_dir, notes)
    return found, notes


def _quantize_on_the_fly(
    base: Path, fallback_dir: Path, evaluation: EvaluationData, calibration: int, notes: list[str]
) -> Path:
    """Quantise the fp32 ONNX ``base`` to int8 with default settings into ``fallback_dir`` (noted)."""
    from augkd.export.quantize import quantize_ort_int8

    path = fallback_dir / ARTIFACT_FILES["ort-int8"]
    cal = evaluation.calibration_images(calibration)
    inputs = cal if _takes_uint8(base) else evaluation.normalize(cal)
    quantize_ort_int8(base, path, inputs.numpy())
    notes.append(f"ort-int8: quantised {path} on the fly (defaults, {len(cal)} calibration images)")
    return path


def _build_engine_on_the_fly(base: Path, fallback_dir: Path, notes: list[str]) -> Path:
    """Build a TensorRT fp16 engine of the fp32 ONNX ``base`` into ``fallback_dir`` (noted)."""
    from augkd.export.tensorrt import build_engine

    path = fallback_dir / ARTIFACT_FILES["tensorrt-fp16"]
    build_engine(base, path, precision="fp16", timing_cache=fallback_dir / "trt_timing.cache")
    notes.append(f"tensorrt: built fp16 engine {path} on the fly")
    return path


def _takes_uint8(path: Path) -> bool:
    from augkd.export.onnx import onnx_metadata

    return onnx_metadata(path).get("augkd.input_format", "").startswith("uint8")
