"""The export report (``export_report.json`` + ``export_report.md``): provenance, model, parity, accuracy, latency.

Every figure in it is measured by the export that wrote it; nothing is copied from elsewhere.
MACs are counted with forward hooks on ``Conv2d`` and ``Linear`` at batch 1 (multiply-accumulates;
BatchNorm, activations, pooling and elementwise ops are not counted).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

__all__ = [
    "AccuracyResult",
    "ArtifactReport",
    "CheckResult",
    "ExportReport",
    "LatencyRow",
    "ParityResult",
    "count_macs",
    "count_parameters",
    "environment_info",
]

MACS_METHOD = "forward hooks on Conv2d/Linear at batch 1 (multiply-accumulates; BN, activations, pooling not counted)"


class ParityResult(BaseModel):
    """An artifact's outputs against a reference on the same inputs."""

    reference: str  # e.g. "torch fp32"
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float  # fraction of samples with the same argmax
    sqnr_db: float | None = None  # signal-to-quantisation-noise ratio of the outputs (inf → None)
    reference_max_abs: float | None = None  # max |reference output|: the scale the differences compare with


class AccuracyResult(BaseModel):
    """Acc@1 of an artifact on the student-domain split, next to its reference."""

    split: str
    samples: int
    acc1: float
    reference: str
    reference_acc1: float
    drop_points: float  # (reference − artifact) × 100


class CheckResult(BaseModel):
    """One pass/fail check with its measured value and threshold."""

    name: str
    passed: bool
    value: float
    threshold: float
    message: str


class ArtifactReport(BaseModel):
    """One exported file and what was measured on it."""

    format: str
    file: str
    size_bytes: int
    precision: str
    backend: str
    parity: ParityResult | None = None
    accuracy: AccuracyResult | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class LatencyRow(BaseModel):
    """One backend × batch size from :func:`augkd.export.latency.measure_latency`."""

    backend: str
    batch_size: int
    mean_ms: float
    p20_ms: float | None = None
    p50_ms: float
    p80_ms: float | None = None
    p90_ms: float
    p99_ms: float
    min_ms: float
    std_ms: float
    throughput: float  # samples per second
    iters: int
    warmup: int
    threads: int | None = None
    provider: str | None = None
    artifact: str | None = None
    note: str | None = None


class ExportReport(BaseModel):
    """Everything ``augkd export`` measured; written as JSON and Markdown next to the artifacts."""

    created: str
    source: str
    out_dir: str
    environment: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    onnx: dict[str, Any]
    artifacts: list[ArtifactReport] = Field(default_factory=list)
    latency: list[LatencyRow] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def artifact(self, fmt: str) -> ArtifactReport:
        """The artifact of format ``fmt`` (KeyError when it was not exported)."""
        for a in self.artifacts:
            if a.format == fmt:
                return a
        raise KeyError(fmt)

    def to_json_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["passed"] = self.passed
        return d

    def write(self, out_dir: str | Path | None = None) -> tuple[Path, Path]:
        """Write ``export_report.json`` and ``export_report.md`` atomically; returns both paths."""
        from augkd.utils import atomic_write_json, atomic_write_text

        out = Path(out_dir or self.out_dir)
        j = atomic_write_json(out / "export_report.json", self.to_json_dict())
        m = atomic_write_text(out / "export_report.md", self.to_markdown())
        return j, m

    def to_markdown(self) -> str:
        return _markdown(self)


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _markdown(r: ExportReport) -> str:
    env, m, o = r.environment, r.model, r.onnx
    lines = [
        f"# Export report: {m.get('arch')} ({'PASSED' if r.passed else 'FAILED'})",
        "",
        f"- source: `{r.source}`; written {r.created} to `{r.out_dir}`",
        f"- augkd {env.get('augkd_version')} (git {env.get('git_sha')}), torch {env.get('torch')}, onnx "
        f"{env.get('onnx')}, onnxruntime {env.get('onnxruntime')}, onnxslim {env.get('onnxslim')}, "
        f"TensorRT {env.get('tensorrt') or 'not installed'}",
        f"- CPU: {env.get('cpu')} ({env.get('physical_cores')} physical cores available); "
        f"GPU: {env.get('gpu') or 'none'}",
        f"- model: {m.get('arch')} {m.get('model_kwargs') or ''}, {m.get('num_classes')} classes, input "
        f"{m.get('in_chans')}×{m.get('input_size')}×{m.get('input_size')}, "
        f"{_fmt(m.get('parameters'), ',')} parameters, "
        f"{_fmt(m.get('macs'), ',')} MACs ({m.get('macs_method')})",
        f"- data: {r.data.get('origin')}; parity/accuracy on {r.data.get('parity_samples')} images of the "
        f"{r.data.get('test_split')} split; calibration {r.data.get('calibration_samples', '–')} train images",
        f"- ONNX: {o.get('exporter')} exporter (asked: {o.get('requested_exporter')}), opset {o.get('opset')}, "
        f"nodes {o.get('nodes_exported')} → {o.get('nodes_final')} after onnxslim"
        + (f"; fallback reason: {o.get('fallback_reason')}" if o.get("fallback_reason") else "")
        + (f"; simplification: {o.get('simplify_note')}" if o.get("simplify_note") else ""),
        f"- input `{o.get('input_name')}` {o.get('input_dtype')} {o.get('input_shape')}, "
        f"output `{o.get('output_name')}`",
        "",
        "## Artifacts",
        "",
        "| format | file | size (KiB) | max abs Δ | mean abs Δ | top-1 agree | SQNR dB | Acc@1 | ref Acc@1 "
        "| drop (pts) | checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in r.artifacts:
        p, acc = a.parity, a.accuracy
        checks = "; ".join(("ok " if c.passed else "FAIL ") + c.name for c in a.checks) or "–"
        lines.append(
            f"| {a.format} | `{a.file}` | {a.size_bytes / 1024:.1f} | {_fmt(p and p.max_abs_diff, '.3g')} | "
            f"{_fmt(p and p.mean_abs_diff, '.3g')} | {_fmt(p and p.top1_agreement * 100, '.2f')}% | "
            f"{_fmt(p and p.sqnr_db, '.1f')} | {_fmt(acc and acc.acc1 * 100, '.2f')} | "
            f"{_fmt(acc and acc.reference_acc1 * 100, '.2f')} | {_fmt(acc and acc.drop_points, '.2f')} | {checks} |"
        )
    if r.latency:
        lines += [
            "",
            "## Latency (quick measurement)",
            "",
            "| backend | batch | p50 ms | p90 ms | p99 ms | mean ms | samples/s | provider | threads |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for row in r.latency:
            lines.append(
                f"| {row.backend} | {row.batch_size} | {row.p50_ms:.3f} | {row.p90_ms:.3f} | {row.p99_ms:.3f} | "
                f"{row.mean_ms:.3f} | {row.throughput:.1f} | {row.provider or '–'} | {_fmt(row.threads)} |"
            )
    if r.failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in r.failures]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def count_parameters(model: Any) -> int:
    """Number of parameters (all, trainable or not)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: Any, input_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image through every ``Conv2d`` and ``Linear`` (forward hooks, batch 1)."""
    import torch
    from torch import nn

    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    return int(total)


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # an optional package that is absent or fails to import
        return None
    return str(getattr(mod, "__version__", "unknown"))


def environment_info() -> dict[str, Any]:
    """Provenance: augkd version and git sha, library versions, CPU and GPU names, load average."""
    import torch

    from augkd.export.runtime import cpu_name, physical_cores
    from augkd.utils import augkd_version, git_sha

    try:
        import onnxruntime as ort

        ort_version, ort_providers = ort.__version__, list(ort.get_available_providers())
    except ImportError:
        ort_version, ort_providers = None, []
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "augkd_version": augkd_version(),
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
        "onnxslim": _version("onnxslim"),
        "onnxruntime": ort_version,
        "onnxruntime_providers_listed": ort_providers,
        "tensorrt": _version("tensorrt"),
        "cpu": cpu_name(),
        "physical_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def now_iso() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
