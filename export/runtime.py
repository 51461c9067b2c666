"""Running artifacts: ONNX Runtime sessions with pinned threads, CPU topology, batched inference.

ONNX Runtime falls back to the CPU provider silently when a requested provider cannot load (for
example CUDA without a GPU), so every session reports ``session.get_providers()``: what it REALLY uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from augkd.errors import InputError, MissingDependencyError
from augkd.utils import cpu_name

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

__all__ = ["OrtRunner", "physical_cores", "cpu_name", "ort_session", "run_batched", "PROVIDERS"]

PROVIDERS = ("cpu", "cuda", "auto")


def _available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once); at least 1."""
    cpus = _available_cpus()
    cores: set[str] = set()
    for cpu in cpus:
        sib = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(sib.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "ONNX Runtime is not installed: pip install onnxruntime-gpu (Linux x86_64) or onnxruntime"
        ) from exc
    return onnxruntime


def ort_session(
    path: str | Path, threads: int | None = None, provider: str = "cpu", opt_level: str = "all"
) -> onnxruntime.InferenceSession:
    """An InferenceSession with ``threads`` intra-op threads, 1 inter-op thread and all graph optimisations.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: :func:`physical_cores`).
        provider: ``"cpu"``, ``"cuda"`` (CUDA then CPU) or ``"auto"`` (CUDA only where torch sees a GPU).
        opt_level: graph optimisation level: ``"basic"``, ``"extended"`` or ``"all"`` (layout optimisations).
    """
    ort = _import_ort()
    if provider not in PROVIDERS:
        raise InputError(f"unknown ONNX Runtime provider {provider!r}: use one of {', '.join(PROVIDERS)}")
    if not Path(path).is_file():
        raise InputError(f"ONNX file not found: {str(path)!r}")
    opts = ort.SessionOptions()
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if opt_level not in levels:
        raise InputError(f"unknown graph optimisation level {opt_level!r}: use one of {', '.join(levels)}")
    opts.graph_optimization_level = levels[opt_level]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: a provider that fails to load is reported via get_providers()
    want_cuda = provider == "cuda" or (provider == "auto" and torch.cuda.is_available())
    providers = ["CPUExecutionProvider"]
    if want_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ONNX Runtime cannot load {str(path)!r}: {first}") from exc


class OrtRunner:
    """Call an ONNX model like a function: numpy (or torch) batch in, first output out as numpy."""

    def __init__(
        self, path: str | Path, threads: int | None = None, provider: str = "cpu", opt_level: str = "all"
    ) -> None:
        self.path = str(path)
        self.threads = threads or physical_cores()
        self.session = ort_session(path, self.threads, provider, opt_level)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        self.output_name = self.session.get_outputs()[0].name
        self.providers: list[str] = list(self.session.get_providers())

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session really loaded)."""
        return self.providers[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]  # type: ignore[no-any-return]

    def prepare(self, images_uint8: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """The model's input for uint8 images: themselves for a preprocessing graph, else normalised floats."""
        if self.input_dtype == np.uint8:
            return np.ascontiguousarray(images_uint8.numpy())
        return np.ascontiguousarray(normalize(images_uint8).numpy())


def run_batched(
    fn: Callable[[Any], Any], inputs: Iterable[Any] | torch.Tensor | np.ndarray, batch_size: int = 256
) -> torch.Tensor:
    """Run ``fn`` over ``inputs`` in chunks of ``batch_size`` and concatenate the outputs as a float32 CPU tensor."""
    n = len(inputs)  # type: ignore[arg-type]
    outs = []
    for start in range(0, n, batch_size):
        out = fn(inputs[start : start + batch_size])  # type: ignore[index]
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(np.asarray(out))
        outs.append(out.detach().to("cpu", torch.float32))
    return torch.cat(outs)
