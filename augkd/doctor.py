"""``augkd doctor``: what this machine can run (torch, CUDA, Triton, onnxruntime providers, TensorRT)."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _ort_providers() -> dict[str, Any]:
    """Providers onnxruntime lists, and those that really load (a session on a 1-node model per provider)."""
    out: dict[str, Any] = {"available": [], "loaded": [], "errors": {}}
    try:
        import onnxruntime as ort
    except Exception as exc:  # a broken install (e.g. both flavours) raises all sorts of errors
        out["errors"]["import"] = f"{exc.__class__.__name__}: {exc}"
        return out
    out["available"] = list(ort.get_available_providers())
    try:
        import onnx
        from onnx import TensorProto, helper

        node = helper.make_node("Identity", ["x"], ["y"])
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        blob = model.SerializeToString()
        _ = onnx
    except Exception as exc:
        out["errors"]["onnx"] = str(exc)
        return out
    import contextlib
    import io

    ort.set_default_logger_severity(4)  # the failed providers' own logs are summarised in the table instead
    for prov in out["available"]:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                sess = ort.InferenceSession(blob, providers=[prov])
            if prov in sess.get_providers():
                out["loaded"].append(prov)
            else:
                out["errors"][prov] = f"session fell back to {sess.get_providers()}"
        except Exception as exc:
            out["errors"][prov] = str(exc).strip().splitlines()[0][:200]
    return out


def diagnose() -> dict[str, Any]:
    """A dict describing the environment, with plain true/false answers."""
    import torch

    from augkd.training.precision import cpu_supports_bf16
    from augkd.utils import augkd_version

    info: dict[str, Any] = {
        "augkd": augkd_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_supports_bf16(),
    }
    try:
        triton = importlib.import_module("triton")
        info["triton"] = getattr(triton, "__version__", "unknown")
    except Exception as exc:
        info["triton"] = None
        info["triton_error"] = str(exc).splitlines()[0]
    flavours = {d: _version(d) for d in ("onnxruntime", "onnxruntime-gpu")}
    info["onnxruntime_packages"] = {k: v for k, v in flavours.items() if v}
    info["onnxruntime_conflict"] = all(flavours.values())
    info["onnxruntime_providers"] = _ort_providers()
    info["onnx"] = _version("onnx")
    trt_ver = None
    try:
        trt = importlib.import_module("tensorrt")
        trt_ver = getattr(trt, "__version__", "unknown")
    except Exception as exc:
        info["tensorrt_error"] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    info["tensorrt"] = trt_ver
    info["tensorrt_usable"] = bool(trt_ver) and info["cuda_available"]
    return info


def doctor_rows(info: dict[str, Any]) -> list[dict[str, str]]:
    """Human-readable rows for the doctor table."""
    prov = info["onnxruntime_providers"]
    rows = [
        ("augkd", info["augkd"]),
        ("python", info["python"]),
        ("torch", f"{info['torch']} (CUDA build {info['torch_cuda_build']})"),
        ("CUDA GPU", ", ".join(info["gpus"]) if info["cuda_available"] else "no (CPU only)"),
        ("CPU bf16 (AVX-512 BF16/AMX)", "yes" if info["cpu_bf16"] else "no"),
        ("triton", info["triton"] or f"not importable ({info.get('triton_error', '')})"),
        (
            "Triton kernels run",
            "on GPU"
            if info["cuda_available"] and info["triton"]
            else "only under TRITON_INTERPRET=1 (CPU emulation); torch reference otherwise",
        ),
        ("onnxruntime", ", ".join(f"{k} {v}" for k, v in info["onnxruntime_packages"].items()) or "not installed"),
        (
            "onnxruntime flavours",
            "CONFLICT: both onnxruntime and onnxruntime-gpu are installed; uninstall one"
            if info["onnxruntime_conflict"]
            else "ok (exactly one)",
        ),
        ("ORT providers listed", ", ".join(prov["available"]) or "-"),
        ("ORT providers that load", ", ".join(prov["loaded"]) or "none"),
        ("TensorRT", info["tensorrt"] or "not installed (pip install 'augkd[tensorrt]' on a CUDA machine)"),
        ("TensorRT usable", "yes" if info["tensorrt_usable"] else "no"),
    ]
    for p, err in prov["errors"].items():
        rows.append((f"ORT {p}", f"does not load: {err}"))
    return [{"check": k, "result": str(v)} for k, v in rows]
