"""Model registry: ``register_model`` / ``create_model(name, num_classes, **kw)`` / ``list_models(pattern)``.

Every network augkd builds (teachers, students, generator, encoder, anchor) goes through here, so a
checkpoint's sidecar can name its architecture and be rebuilt without repeating arguments.

A leaf: the model files import ``register_model`` from here, and the package ``augkd.models`` imports the
model files (which registers them) before anyone can reach this module.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from augkd.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about an architecture besides how to build it."""

    name: str
    fn: Callable[..., nn.Module]
    kind: str = "classifier"  # classifier | generator | encoder | anchor
    input_size: int | None = None  # fixed input size (pretrained nets); None = any
    in_chans: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pretrained: bool = False  # ships real pretrained weights (loaded by create_model)
    fixed_num_classes: int | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, **info: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn(num_classes=..., **kw) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name=name, fn=fn, description=(fn.__doc__ or "").strip().split("\n")[0], **info)
        return fn

    return deco


def get_model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; an unknown name is a ConfigError listing the known ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown architecture {name!r}: {hint}known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Names of registered architectures matching a glob ``pattern`` (and ``kind``), sorted."""
    return sorted(n for n, i in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (kind is None or i.kind == kind))


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a registered architecture. Pretrained entries (``ccexam-*``) load their shipped weights."""
    info = get_model_info(name)
    if info.fixed_num_classes is not None and num_classes != info.fixed_num_classes:
        raise ConfigError(
            f"{name} is pretrained with {info.fixed_num_classes} classes, the data has {num_classes}: "
            "use a dataset with the same label space or train a teacher with `augkd teacher`"
        )
    try:
        return info.fn(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for architecture {name!r}: {exc}") from exc
