"""TensorRT 10 engines from the exported ONNX: fp16, and int8 calibrated on the run's training images.

Written against the TensorRT 10 Python API: ``trt.Builder`` → ``create_network`` (explicit batch, the
only mode in TensorRT 10) → ``trt.OnnxParser`` → ``create_builder_config`` with an optimisation profile
(min/opt/max batch), ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` + an ``IInt8EntropyCalibrator2`` fed
from device buffers (torch CUDA tensors' ``data_ptr``), a timing cache kept in a file →
``build_serialized_network``. Engines run through ``Runtime.deserialize_cuda_engine`` and
``execute_async_v3`` on torch's current CUDA stream with ``set_tensor_address``.

Only where ``tensorrt`` imports and a CUDA GPU exists; otherwise :func:`require_tensorrt` raises a
one-line :class:`~augkd.errors.MissingDependencyError` saying what is missing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from augkd.errors import MissingDependencyError
from augkd.export.errors import ExportError

logger = logging.getLogger(__name__)

__all__ = [
    "TensorRTRunner",
    "build_engine",
    "require_tensorrt",
    "tensorrt_available",
    "tensorrt_selftest",
]

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = "pip install 'augkd[tensorrt]'"


def _probe() -> tuple[Any | None, str, bool, str]:
    """(the tensorrt module or None, what was found about it, CUDA present, what was found about CUDA)."""
    try:
        import tensorrt as trt

        trt_found = f"tensorrt {trt.__version__}"
    except Exception as exc:  # ImportError, or a broken install raising OSError on its shared libraries
        trt, trt_found = None, "no tensorrt module" if isinstance(exc, ImportError) else f"tensorrt broken ({exc})"
    cuda = torch.cuda.is_available()
    cuda_found = f"CUDA device {torch.cuda.get_device_name(0)}" if cuda else "no CUDA device"
    return trt, trt_found, cuda, cuda_found


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT export can run here, and what was found (e.g. ``"no tensorrt module, no CUDA device"``)."""
    trt, trt_found, cuda, cuda_found = _probe()
    return trt is not None and cuda, f"{trt_found}, {cuda_found}"


def _missing_message(found: str) -> str:
    return f"TensorRT export needs a CUDA GPU and the 'tensorrt' extra: {INSTALL_HINT} (found: {found})"


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a MissingDependencyError naming what is missing and how to get it."""
    trt, trt_found, cuda, cuda_found = _probe()
    if trt is None or not cuda:
        raise MissingDependencyError(_missing_message(f"{trt_found}, {cuda_found}"))
    return trt


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32}
    for trt_name, torch_dtype in (
        ("uint8", torch.uint8),
        ("bool", torch.bool),
        ("int64", torch.int64),
        ("bfloat16", torch.bfloat16),
    ):
        if hasattr(trt, trt_name):
            table[getattr(trt, trt_name)] = torch_dtype
    if dtype not in table:
        raise ExportError(f"TensorRT tensor type {dtype} has no torch equivalent")
    return table[dtype]


def _make_calibrator(trt: Any, inputs: torch.Tensor, batch_size: int, cache_path: Path | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` that feeds ``inputs`` (CPU ``[N, C, S, S]``) batch by batch from the GPU."""
    from augkd.utils import atomic_write_bytes

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT requires the explicit base __init__
            self.batch_size = max(1, min(batch_size, len(inputs)))
            n_full = len(inputs) // self.batch_size  # every batch must have exactly batch_size images
            self._batches = [inputs[i * self.batch_size : (i + 1) * self.batch_size] for i in range(n_full)]
            self._device = torch.empty((self.batch_size, *inputs.shape[1:]), dtype=inputs.dtype, device="cuda")
            self._next = 0

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._next >= len(self._batches):
                return None
            self._device.copy_(self._batches[self._next])
            self._next += 1
            torch.cuda.current_stream().synchronize()  # the copy must land before TensorRT reads the buffer
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return None  # always calibrate afresh: a stale cache from another model would be silently wrong

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                atomic_write_bytes(cache_path, bytes(memoryview(cache)))

    return _EntropyCalibrator()


def build_engine(
    onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp16", max_batch: int = 256,
    opt_batch: int = 32, calibration_inputs: torch.Tensor | None = None, calibration_batch: int = 32,
    timing_cache: str | Path | None = None, calibration_cache: str | Path | None = None, workspace_mb: int = 2048,
) -> dict[str, Any]:  # fmt: skip
    """Build and serialise a TensorRT engine for an ONNX model with a dynamic batch axis.

    Args:
        onnx_path: the fp32 ONNX model (input ``[batch, C, S, S]``).
        engine_path: the ``.engine`` file to write.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"`` (int8 also enables fp16 for layers left in float).
        max_batch: largest batch of the optimisation profile (smallest is 1).
        opt_batch: the batch the builder tunes kernels for.
        calibration_inputs: model inputs for int8 calibration (CPU tensor of the ONNX input's dtype).
        calibration_batch: images per calibration batch.
        timing_cache: file to read and update with the builder's timing cache (speeds up rebuilds).
        calibration_cache: file to write the int8 calibration table to.
        workspace_mb: builder workspace memory limit.
    """
    trt = require_tensorrt()
    from augkd.utils import atomic_write_bytes

    if precision not in PRECISIONS:
        raise ExportError(f"unknown TensorRT precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    t0 = time.perf_counter()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = _parse_onnx(trt, network, trt_logger, onnx_path)  # noqa: F841  (owns the weights: kept alive)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    inp = network.get_input(0)
    chw = tuple(inp.shape)[1:]
    opt_batch = max(1, min(opt_batch, max_batch))
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, *chw), (opt_batch, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if precision == "int8":
        calibrator = _set_int8_calibration(
            trt, builder, config, inp.name, chw, calibration_inputs, calibration_batch, calibration_cache
        )
    cache_file, cache = _set_timing_cache(config, timing_cache)  # cache: kept alive until the build ends
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build a {precision} engine for {str(onnx_path)!r} (see the log above)")
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    if cache_file is not None:
        atomic_write_bytes(cache_file, bytes(memoryview(config.get_timing_cache().serialize())))
    info = {"precision": precision, "profile": {"min": 1, "opt": opt_batch, "max": max_batch},
            "build_seconds": time.perf_counter() - t0, "tensorrt_version": trt.__version__,
            "timing_cache": str(cache_file) if cache_file else None,
            "calibration_batches": len(calibrator._batches) if calibrator is not None else 0}  # fmt: skip
    logger.info("TensorRT %s engine built in %.1f s: %s", precision, info["build_seconds"], engine_path)
    return info


def _parse_onnx(trt: Any, network: Any, trt_logger: Any, onnx_path: str | Path) -> Any:
    """Parse the ONNX file into ``network``; the parser (it owns the weights: keep it until the engine is built)."""
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {str(onnx_path)!r}: {errors[0] if errors else 'unknown error'}")
    return parser


def _set_int8_calibration(
    trt: Any,
    builder: Any,
    config: Any,
    input_name: str,
    chw: tuple[int, ...],
    calibration_inputs: torch.Tensor | None,
    calibration_batch: int,
    calibration_cache: str | Path | None,
) -> Any:
    """Enable int8 with an entropy calibrator over ``calibration_inputs`` and its own profile; the calibrator."""
    if calibration_inputs is None or len(calibration_inputs) == 0:
        raise ExportError("TensorRT int8 needs calibration images (the run's train split)")
    config.set_flag(trt.BuilderFlag.INT8)
    calibrator = _make_calibrator(
        trt, calibration_inputs, calibration_batch, Path(calibration_cache) if calibration_cache else None
    )
    config.int8_calibrator = calibrator
    cal_profile = builder.create_optimization_profile()  # calibration runs at exactly the calibrator's batch
    cal_shape = (calibrator.batch_size, *chw)
    cal_profile.set_shape(input_name, cal_shape, cal_shape, cal_shape)
    config.set_calibration_profile(cal_profile)
    return calibrator


def _set_timing_cache(config: Any, timing_cache: str | Path | None) -> tuple[Path | None, Any]:
    """Give the builder the timing cache read from ``timing_cache`` (empty if absent); (its file, the cache)."""
    cache_file = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU/version is ignored, not fatal
    return cache_file, cache


class TensorRTRunner:
    """Run a serialised engine on torch CUDA tensors (one input, first output), on torch's current stream."""

    def __init__(self, engine: str | Path | bytes) -> None:
        trt = require_tensorrt()
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        data = engine if isinstance(engine, bytes) else Path(engine).read_bytes()
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ExportError("TensorRT could not deserialise the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise ExportError(f"expected an engine with one input and an output, got inputs {self.inputs}")
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.inputs[0]))
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.outputs[0]))
        self.provider = f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to("cuda", self.input_dtype).contiguous()
        name_in = self.inputs[0]
        self.context.set_input_shape(name_in, tuple(x.shape))
        self.context.set_tensor_address(name_in, x.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            outs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise ExportError("TensorRT execute_async_v3 failed")
        return outs[self.outputs[0]]

    def synchronize(self) -> None:
        torch.cuda.current_stream().synchronize()


def tensorrt_selftest() -> dict[str, Any]:
    """Build, run and check tiny fp32/fp16 engines against torch; ``{"status": "skipped", ...}`` without TensorRT."""
    ok, found = tensorrt_available()
    if not ok:
        return {"status": "skipped", "reason": _missing_message(found)}
    from torch import nn

    from augkd.export.onnx import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()
    result: dict[str, Any] = {"status": "ok", "checks": []}
    try:
        trt = require_tensorrt()
        result.update(tensorrt_version=trt.__version__, gpu=torch.cuda.get_device_name(0))
        with tempfile.TemporaryDirectory(prefix="augkd-trt-selftest-") as tmp:
            onnx_path = Path(tmp) / "tiny.onnx"
            export_onnx(model, onnx_path, 16, exporter="legacy", simplify=False)
            x = torch.randn(5, 3, 16, 16)
            with torch.no_grad():
                ref = model(x)
            for precision, tol in (("fp32", 1e-3), ("fp16", 2e-2)):
                engine_path = Path(tmp) / f"tiny.{precision}.engine"
                info = build_engine(onnx_path, engine_path, precision=precision, max_batch=8, opt_batch=4)
                runner = TensorRTRunner(engine_path)
                for b in (1, 5):
                    out = runner(x[:b].cuda()).float().cpu()
                    diff = float((out - ref[:b]).abs().max())
                    passed = diff <= tol
                    result["checks"].append(
                        {
                            "precision": precision,
                            "batch": b,
                            "max_abs_diff": diff,
                            "tolerance": tol,
                            "passed": passed,
                            "build_seconds": info["build_seconds"],
                        }
                    )
                    if not passed:
                        result["status"] = "failed"
    except Exception as exc:  # the selftest reports, it does not raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.update(status="failed", reason=f"{type(exc).__name__}: {first}")
    return result
