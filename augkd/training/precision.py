"""Numeric precision of a run, and the hardware checks behind ``auto``: the engine's and Fabric's names.

Two vocabularies meet here: the engine's short names (``train.precision``: ``auto`` / ``fp32`` / ``bf16``;
summary.json's ``precision``) and Lightning Fabric's precision strings (``32-true`` / ``bf16-mixed``;
``--precision`` and summary.json's ``fabric_precision``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("auto", "32-true", "bf16-mixed")
PRECISION_ALIASES = {
    "32": "32-true",
    "fp32": "32-true",
    "32-true": "32-true",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "auto": "auto",
}


def cpu_supports_bf16() -> bool:
    """True on x86 CPUs with AVX-512 BF16 or AMX (where bf16 matmuls are fast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(requested: str, device: torch.device) -> str:
    """auto → bf16 on CUDA (if supported) and on CPUs with AVX-512 BF16/AMX, else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def fabric_precision(requested: str | None, train_precision: str, device_type: str, world_size: int) -> str:
    """A Fabric precision string from ``--precision`` (wins) or ``train.precision``.

    ``fp32`` → ``32-true``; ``bf16`` → ``bf16-mixed``; ``auto`` → ``bf16-mixed`` on GPUs with bf16 and, for a
    single process, on CPUs with AVX-512 BF16/AMX (the engine's earlier behaviour); DDP on CPU stays
    ``32-true`` (gloo all-reduces fp32 gradients either way, and the CPU runs are the exactness tests).
    """
    name = PRECISION_ALIASES.get(requested or "auto", requested or "auto")
    if name == "auto":
        name = PRECISION_ALIASES[train_precision]
    if name != "auto":
        return name
    if device_type == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if world_size == 1 and cpu_supports_bf16() else "32-true"


def legacy_precision(fabric_name: str) -> str:
    """The engine's short name ("bf16"/"fp32") of a Fabric precision string (summary.json, logs)."""
    return "bf16" if fabric_name.startswith("bf16") else "fp32"


def fabric_precision_name(fabric: Any) -> str:
    """The Fabric precision string of a launched Fabric ("32-true", "bf16-mixed")."""
    return str(getattr(fabric.strategy.precision, "precision", "32-true"))
