"""augkd: out-of-domain knowledge distillation (AuG-KD) with Triton kernels and deployment export.

Heavy pieces load lazily: ``import augkd`` does not import triton, onnx, onnxruntime or tensorrt
and does not initialise CUDA.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from augkd.utils import augkd_version

__version__ = augkd_version()

_LAZY = {
    "distill": "augkd.training",
    "compare": "augkd.training",
    "DistillResult": "augkd.training",
    "DistillConfig": "augkd.config",
    "TeacherTrainConfig": "augkd.config",
    "load_config": "augkd.config",
    "create_model": "augkd.models",
    "list_models": "augkd.models",
    "register_model": "augkd.models",
    "load_model": "augkd.checkpoint",
    "save_model": "augkd.checkpoint",
    "kd_loss": "augkd.kernels",
    "uncertainty": "augkd.kernels",
    "fused_mixup": "augkd.kernels",
    "latent_mix": "augkd.kernels",
    "Backend": "augkd.kernels",
    "export_onnx": "augkd.export",
    "export_model": "augkd.export",
    "measure_latency": "augkd.export",
    "train_teacher": "augkd.teacher",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from augkd.checkpoint import load_model, save_model
    from augkd.config import DistillConfig, TeacherTrainConfig, load_config
    from augkd.export import export_model, export_onnx, measure_latency
    from augkd.kernels import Backend, fused_mixup, kd_loss, latent_mix, uncertainty
    from augkd.models import create_model, list_models, register_model
    from augkd.teacher import train_teacher
    from augkd.training import DistillResult, compare, distill


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augkd' has no attribute {name!r}")
