"""``export_model``: checkpoint → ONNX (+ int8, TensorRT) → parity/accuracy on the run's test split → report.

The options are one :class:`~augkd.export.config.ExportConfig`. Checks (all thresholds are in its ``checks``):

- ``onnx`` (fp32): max |Δ output| against PyTorch ≤ ``atol`` and top-1 agreement ≥ ``min_agreement``;
- ``ort-int8``, ``tensorrt-fp16``, ``tensorrt-int8``: Acc@1 drop against the fp32 ONNX model on the test
  split ≤ ``max_acc_drop`` points (their max |Δ|, agreement and SQNR against PyTorch are reported).

A failed check raises :class:`~augkd.export.errors.ExportCheckError` AFTER the artifacts and
``export_report.json`` / ``.md`` are written, so the failure can be inspected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from augkd.errors import StorageError
from augkd.export.artifacts import ARTIFACT_FILES, FINGERPRINT_KEY
from augkd.export.config import DEFAULT_FORMATS, EXPORT_FORMATS, ExportConfig, build_export_config, parse_formats
from augkd.export.errors import ExportCheckError, ResultNotSavedError
from augkd.export.report import ArtifactReport, ExportReport, LatencyRow

if TYPE_CHECKING:
    from augkd.export.config import Int8Options
    from augkd.export.data import EvaluationData
    from augkd.export.source import Source

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_FORMATS", "EXPORT_FORMATS", "PARITY_CAP", "export_model", "parse_formats"]

PARITY_CAP = 2000  # default cap on parity/accuracy images (the whole test split when smaller)


def export_model(
    source: str | Path,
    config: ExportConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> ExportReport:
    """Export a run's student (or a checkpoint) and check every artifact on the run's student-domain test split.

    Args:
        source: a run directory or a ``.safetensors`` checkpoint with its JSON sidecar.
        config: the options (an :class:`ExportConfig`, or a nested mapping validated by
            :func:`~augkd.export.config.build_export_config`; default: every default, formats ``onnx, ort-int8``).
        out_dir: output folder (default ``<run dir>/export`` or ``<checkpoint folder>/export``).

    Returns:
        The :class:`ExportReport` (also written to ``out_dir``).

    Raises:
        ConfigError: an invalid option (before any work).
        ExportCheckError: a parity or accuracy check failed (artifacts and report are written first).
        ResultNotSavedError: the report could not be written (its ``result`` holds it); other write failures
            raise :class:`~augkd.errors.StorageError` naming the file.
    """
    cfg = build_export_config(config)
    if cfg.needs_tensorrt:
        from augkd.export.tensorrt import require_tensorrt

        require_tensorrt()  # fail before any work, with what is missing
    ctx = _open_context(source, out_dir, cfg)
    onnx_info = ctx.export_fp32(cfg.onnx.exporter, cfg.onnx.opset, cfg.onnx.simplify)
    checks = cfg.checks
    artifacts = [ctx.check_onnx(checks.atol, checks.min_agreement)]
    if "ort-int8" in cfg.formats:
        artifacts.append(ctx.ort_int8(cfg.int8, checks.max_acc_drop))
    for fmt in (f for f in cfg.formats if f.startswith("tensorrt")):
        artifacts.append(ctx.tensorrt(fmt, cfg.int8.calibration, checks.max_acc_drop, cfg.tensorrt.max_batch))
    lat = cfg.latency
    rows = ctx.latency(list(cfg.formats), lat.batches, lat.iters) if lat.enabled else []
    report = _build_report(ctx, cfg, onnx_info, artifacts, rows)
    _write_report(report, ctx.out)
    return report


def _open_context(source: str | Path, out_dir: str | Path | None, cfg: ExportConfig) -> _Context:
    """Load the source, create the output folder, pick the test images the checks run on."""
    from augkd.export.data import evaluation_data
    from augkd.export.runtime import physical_cores
    from augkd.export.source import load_source

    src = load_source(source)
    out = Path(out_dir) if out_dir is not None else src.default_dir("export")
    out.mkdir(parents=True, exist_ok=True)
    n_threads = cfg.threads or physical_cores()
    ev = evaluation_data(src.spec, src.meta, cfg.data)
    images, labels = ev.test_batch(min(len(ev.test), cfg.checks.parity_samples or PARITY_CAP))
    with_preprocessing = cfg.onnx.with_preprocessing
    model_input = images if with_preprocessing else ev.normalize(images)
    logger.info("checking on %d %s images of %s", len(images), ev.test_split, ev.dataset)
    return _Context(
        src=src,
        out=out,
        ev=ev,
        model_input=model_input,
        labels=labels,
        threads=n_threads,
        with_preprocessing=with_preprocessing,
        softmax=cfg.onnx.softmax,
    )


def _build_report(
    ctx: _Context, cfg: ExportConfig, onnx_info: Any, artifacts: list[ArtifactReport], rows: list[LatencyRow]
) -> ExportReport:
    from augkd.export.parity import accuracy
    from augkd.export.report import count_macs, count_parameters, environment_info, now_iso

    src, meta, ev = ctx.src, ctx.src.meta, ctx.ev
    model_info = {
        "arch": meta.arch,
        "model_kwargs": meta.model_kwargs,
        "num_classes": meta.num_classes,
        "class_names": meta.class_names,
        "input_size": meta.input_size,
        "in_chans": meta.in_chans,
        "mean": meta.mean,
        "std": meta.std,
        "parameters": count_parameters(src.model),
        "macs": count_macs(src.model, meta.input_size, meta.in_chans),
        "macs_method": _macs_method(),
        "torch_acc1": accuracy(ctx.reference, ctx.labels),
        "fingerprint": src.fingerprint,
    }
    calibration = min(cfg.int8.calibration, len(ev.train)) if len(cfg.formats) > 1 else None
    return ExportReport(
        created=now_iso(),
        source=src.spec,
        out_dir=str(ctx.out),
        environment=environment_info(),
        model=model_info,
        data={
            "origin": ev.origin,
            "dataset": ev.dataset,
            "test_split": ev.test_split,
            "parity_samples": len(ctx.model_input),
            "test_split_size": len(ev.test),
            "train_split_size": len(ev.train),
            "calibration_samples": calibration,
        },
        onnx=onnx_info.to_dict(),
        artifacts=artifacts,
        latency=rows,
        options=cfg.report_options(ctx.threads),
        failures=[c.message for a in artifacts for c in a.checks if not c.passed],
        notes=ctx.notes,
    )


def _write_report(report: ExportReport, out: Path) -> None:
    """Write ``export_report.json`` / ``.md``, then raise :class:`ExportCheckError` if a check failed."""
    try:
        report.write(out)
    except StorageError as exc:  # the artifacts' figures are not lost: the caller prints them, then the error
        raise ResultNotSavedError(exc, report.to_json_dict()) from exc
    if report.failures:
        more = f" (+{len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        raise ExportCheckError(
            f"export check failed: {report.failures[0]}{more}; artifacts and report kept in {out}", report
        )


def _macs_method() -> str:
    from augkd.export.report import MACS_METHOD

    return MACS_METHOD


@dataclass
class _Context:
    """State shared by the export steps (one instance per :func:`export_model` call)."""

    src: Source
    out: Path
    ev: EvaluationData
    model_input: torch.Tensor  # the test images as the graph takes them (normalised floats or uint8)
    labels: torch.Tensor
    threads: int
    with_preprocessing: bool
    softmax: bool
    notes: list[str] = field(default_factory=list)
    reference: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # torch outputs on model_input
    onnx_outputs: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # fp32 ONNX Runtime outputs
    onnx_path: Path = field(default_factory=Path)

    # -- fp32 ONNX -----------------------------------------------------------------------------------------------
    def export_fp32(self, exporter: str, opset: int, simplify: bool) -> Any:
        from augkd.export.onnx import ExportWrapper, export_onnx
        from augkd.export.runtime import run_batched

        meta = self.src.meta
        self.onnx_path = self.out / ARTIFACT_FILES["onnx"]
        info = export_onnx(
            self.src.model,
            self.onnx_path,
            meta.input_size,
            in_chans=meta.in_chans,
            mean=meta.mean,
            std=meta.std,
            with_preprocessing=self.with_preprocessing,
            softmax=self.softmax,
            exporter=exporter,
            opset=opset,
            simplify=simplify,
            class_names=meta.class_names,
            metadata={FINGERPRINT_KEY: self.src.fingerprint, "augkd.arch": meta.arch, "augkd.source": self.src.spec},
        )
        if info.fallback_reason:
            self.notes.append(f"dynamo exporter failed, legacy used: {info.fallback_reason}")
        c = meta.in_chans
        wrapper = ExportWrapper(
            self.src.model,
            meta.mean[:c] if self.with_preprocessing else None,
            meta.std[:c] if self.with_preprocessing else None,
            self.softmax,
        ).eval()
        with torch.no_grad():
            self.reference = run_batched(wrapper, self.model_input)  # exactly the module that was exported
        return info

    def _artifact(self, fmt: str, precision: str, backend: str) -> ArtifactReport:
        path = self.out / ARTIFACT_FILES[fmt]
        return ArtifactReport(
            format=fmt, file=path.name, size_bytes=path.stat().st_size, precision=precision, backend=backend
        )

    def _ort_outputs(self, path: Path) -> tuple[torch.Tensor, str]:
        from augkd.export.runtime import OrtRunner, run_batched

        runner = OrtRunner(path, self.threads, "cpu")
        x = np.ascontiguousarray(self.model_input.numpy())
        return run_batched(runner, x), runner.provider

    def check_onnx(self, atol: float, min_agreement: float) -> ArtifactReport:
        from augkd.export.parity import accuracy, accuracy_result, compare_outputs, parity_checks

        self.onnx_outputs, provider = self._ort_outputs(self.onnx_path)
        art = self._artifact("onnx", "fp32", f"onnxruntime {provider}")
        art.parity = compare_outputs(self.reference, self.onnx_outputs, "torch fp32")
        art.accuracy = accuracy_result(
            self.onnx_outputs, self.labels, accuracy(self.reference, self.labels), "torch fp32", self.ev.test_split
        )
        art.checks = parity_checks("onnx", art.parity, atol, min_agreement)
        logger.info(
            "onnx parity: max |Δ| %.3g, top-1 agreement %.4f", art.parity.max_abs_diff, art.parity.top1_agreement
        )
        return art

    def _reduced(self, art: ArtifactReport, outputs: torch.Tensor, max_acc_drop: float) -> ArtifactReport:
        from augkd.export.parity import accuracy, accuracy_check, accuracy_result, compare_outputs

        art.parity = compare_outputs(self.reference, outputs, "torch fp32")
        art.accuracy = accuracy_result(
            outputs, self.labels, accuracy(self.onnx_outputs, self.labels), "onnx fp32", self.ev.test_split
        )
        art.checks = [accuracy_check(art.format, art.accuracy, max_acc_drop)]
        logger.info("%s: Acc@1 %.4f (fp32 ONNX %.4f)", art.format, art.accuracy.acc1, art.accuracy.reference_acc1)
        return art

    def _calibration_inputs(self, n: int) -> torch.Tensor:
        cal = self.ev.calibration_images(n)
        return cal if self.with_preprocessing else self.ev.normalize(cal)

    # -- ONNX Runtime int8 ---------------------------------------------------------------------------------------
    def ort_int8(self, int8: Int8Options, max_acc_drop: float) -> ArtifactReport:
        from augkd.export.quantize import quantize_ort_int8

        path = self.out / ARTIFACT_FILES["ort-int8"]
        cal = self._calibration_inputs(int8.calibration).numpy()
        info = quantize_ort_int8(self.onnx_path, path, cal, **int8.quantize_kwargs())
        outputs, provider = self._ort_outputs(path)
        art = self._artifact("ort-int8", "int8", f"onnxruntime {provider}")
        art.details = {"quantization": info}
        return self._reduced(art, outputs, max_acc_drop)

    # -- TensorRT ------------------------------------------------------------------------------------------------
    def tensorrt(self, fmt: str, calibration: int, max_acc_drop: float, max_batch: int) -> ArtifactReport:
        from augkd.export.runtime import run_batched
        from augkd.export.tensorrt import TensorRTRunner, build_engine

        precision = fmt.split("-", 1)[1]
        path = self.out / ARTIFACT_FILES[fmt]
        cal = self._calibration_inputs(calibration) if precision == "int8" else None
        info = build_engine(
            self.onnx_path,
            path,
            precision=precision,
            max_batch=max_batch,
            opt_batch=min(32, max_batch),
            calibration_inputs=cal,
            timing_cache=self.out / "trt_timing.cache",
            calibration_cache=self.out / "model.int8.calib" if cal is not None else None,
        )
        runner = TensorRTRunner(path)

        def run(x: torch.Tensor) -> torch.Tensor:
            y = runner(x)
            runner.synchronize()
            return y

        outputs = run_batched(run, self.model_input, batch_size=min(256, max_batch))
        art = self._artifact(fmt, precision, runner.provider)
        art.details = {"build": info}
        return self._reduced(art, outputs, max_acc_drop)

    # -- quick latency -------------------------------------------------------------------------------------------
    def latency(self, fmts: list[str], batches: Sequence[int], iters: int) -> list[LatencyRow]:
        from augkd.export.latency import (
            ort_backend,
            release,
            tensorrt_backend,
            time_backend,
            torch_backend,
            torch_threads,
        )
        from augkd.export.onnx import ExportWrapper

        images, _ = self.ev.test_batch(max(batches))
        normalize = self.ev.normalize
        rows: list[dict[str, Any]] = []
        plan: list[tuple[str, Path | None]] = [("torch", None), ("ort", self.onnx_path)]
        plan += [(f, self.out / ARTIFACT_FILES[f]) for f in fmts if f != "onnx"]
        with torch_threads(self.threads):
            for name, path in plan:
                if name == "torch":  # normalised float input prepared outside the timed region, as for ORT fp32
                    module = ExportWrapper(self.src.model, None, None, self.softmax).eval()
                    backend = torch_backend(module, normalize, self.threads, torch.device("cpu"))
                elif name.startswith("tensorrt"):
                    backend = tensorrt_backend(path, normalize)  # type: ignore[arg-type]
                    backend.name = name
                else:
                    backend = ort_backend(name, path, normalize, self.threads)  # type: ignore[arg-type]
                rows += time_backend(backend, images, batches, warmup=3, iters=iters, duration=None)
                release(backend)
        return [LatencyRow(**r) for r in rows]
