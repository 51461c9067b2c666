"""Backend selection for the public kernel ops.

Every public op in :mod:`augkd.kernels` takes ``backend=`` and calls :func:`resolve_backend` with its tensor
arguments. The order of precedence is:

1. the explicit ``backend=`` argument;
2. the process/context default set with :func:`set_backend` / :func:`use_backend`;
3. the environment variable ``AUGKD_KERNEL_BACKEND``;
4. :attr:`Backend.AUTO`.

Under export or tracing (ONNX export, ``torch.export``, TorchScript tracing/scripting) the answer is always
:attr:`Backend.TORCH`, even over an explicit request, so that exported graphs contain plain aten ops. Under
``torch.compile`` (Dynamo tracing) it is also TORCH: the compiler fuses the reference itself, and our Triton
launchers are plain ``autograd.Function`` objects, not ``torch.library.triton_op`` registrations.

This module never imports triton at import time and never initialises CUDA.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from enum import Enum
from typing import Any

import torch

from augkd.errors import ConfigError, KernelUnavailableError

logger = logging.getLogger(__name__)

ENV_BACKEND = "AUGKD_KERNEL_BACKEND"
_TRUTHY = frozenset({"1", "true", "on", "yes"})


class Backend(str, Enum):  # noqa: UP042 -- StrEnum is 3.11+, the package supports 3.10
    """Which implementation a public kernel op runs."""

    AUTO = "auto"
    """Triton when it can run (triton importable and every tensor on CUDA, or ``TRITON_INTERPRET=1``), else TORCH."""

    TRITON = "triton"
    """The fused Triton kernels. Raises :class:`~augkd.errors.KernelUnavailableError` where they cannot run."""

    TORCH = "torch"
    """The eager pure-torch reference in :mod:`augkd.kernels.reference` (the CPU and export path)."""

    COMPILE = "compile"
    """``torch.compile`` of the reference, built lazily once per op and cached for the process."""


_DEFAULT: ContextVar[Backend | None] = ContextVar("augkd_kernel_backend", default=None)


def parse_backend(value: Backend | str | None) -> Backend | None:
    """Turn a user value into a :class:`Backend`.

    Args:
        value: A Backend, its string value (case-insensitive), or None.

    Returns:
        The Backend, or None when ``value`` is None or an empty string.

    Raises:
        ConfigError: The string names no backend.
    """
    if value is None or isinstance(value, Backend):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        try:
            return Backend(text)
        except ValueError:
            pass
    valid = ", ".join(b.value for b in Backend)
    raise ConfigError(f"unknown kernel backend {value!r}; expected one of: {valid}")


def set_backend(backend: Backend | str | None) -> None:
    """Set the default backend for the current context (None restores env/AUTO)."""
    _DEFAULT.set(parse_backend(backend))


def get_backend() -> Backend:
    """The backend requested when an op is called without ``backend=`` (before AUTO is resolved)."""
    default = _DEFAULT.get()
    if default is not None:
        return default
    from_env = parse_backend(os.environ.get(ENV_BACKEND))
    return from_env if from_env is not None else Backend.AUTO


@contextlib.contextmanager
def use_backend(backend: Backend | str | None) -> Iterator[Backend | None]:
    """Context manager that sets the default backend inside a ``with`` block.

    Example:
        >>> with use_backend("torch"):
        ...     loss = kd_loss(student_logits, teacher_logits, u=0.0)
    """
    token = _DEFAULT.set(parse_backend(backend))
    try:
        yield _DEFAULT.get()
    finally:
        _DEFAULT.reset(token)


def interpret_mode() -> bool:
    """Whether Triton kernels run under the CPU interpreter.

    Triton reads ``TRITON_INTERPRET`` when a ``@triton.jit`` function is decorated, i.e. when our kernel
    modules are imported. Once they are imported, the mode they were built in is what counts; before that,
    the current environment decides.
    """
    common = sys.modules.get("augkd.kernels.triton._common")
    if common is not None:
        return bool(common.INTERPRET)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUTHY


@functools.cache
def triton_import_error() -> str | None:
    """None when triton imports, else the reason it does not (cached)."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"{type(exc).__name__}: {exc}"
    return None


def is_exporting() -> bool:
    """True inside ONNX export, ``torch.export``, TorchScript tracing/scripting or Dynamo tracing."""
    checks: list[Callable[[], bool]] = [
        torch.onnx.is_in_onnx_export,
        torch.jit.is_tracing,
        torch.jit.is_scripting,
    ]
    compiler = getattr(torch, "compiler", None)
    for name in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, name, None)
        if fn is not None:
            checks.append(fn)
    return any(fn() for fn in checks)


def triton_unavailable_reason(*tensors: torch.Tensor | None) -> str | None:
    """None when the Triton kernels can run on these tensors, else a one-line reason with the fix."""
    err = triton_import_error()
    if err is not None:
        return f"triton is not installed: {err}; install a torch build that ships triton, or use backend torch"
    if interpret_mode():
        return None
    for t in tensors:
        if t is not None and t.device.type != "cuda":
            return (
                f"tensor on {t.device.type}; set TRITON_INTERPRET=1 before importing augkd to emulate, "
                "or use backend torch"
            )
    return None


def resolve_backend(requested: Backend | str | None, *tensors: torch.Tensor | None) -> Backend:
    """Pick the backend that will run an op on ``tensors``.

    Args:
        requested: The op's ``backend=`` argument (None: context default, then env, then AUTO).
        *tensors: The op's tensor arguments (None entries are ignored).

    Returns:
        TRITON, TORCH or COMPILE (never AUTO).

    Raises:
        ConfigError: ``requested`` or ``AUGKD_KERNEL_BACKEND`` is not a backend name.
        KernelUnavailableError: TRITON was requested explicitly and cannot run here.
    """
    backend = parse_backend(requested)
    if backend is None:
        backend = get_backend()
    if is_exporting():
        return Backend.TORCH
    if backend in (Backend.TORCH, Backend.COMPILE):
        return backend
    reason = triton_unavailable_reason(*tensors)
    if backend is Backend.TRITON:
        if reason is not None:
            raise KernelUnavailableError(f"backend 'triton' cannot run: {reason}")
        return Backend.TRITON
    if reason is not None:
        logger.debug("AUTO kernel backend falls back to torch: %s", reason)
        return Backend.TORCH
    return Backend.TRITON


def available_backends(device: torch.device | str | None = None) -> list[Backend]:
    """Backends that can run on ``device`` (default: CUDA when present, else CPU), AUTO excluded.

    Does not initialise CUDA unless ``device`` is a CUDA device or None with CUDA present.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    out = [Backend.TORCH, Backend.COMPILE]
    if triton_import_error() is None and (dev.type == "cuda" or interpret_mode()):
        out.insert(0, Backend.TRITON)
    return out


_COMPILED: dict[str, Callable[..., Any]] = {}


def compiled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)``, built on first use and cached under ``name`` for the process."""
    cached = _COMPILED.get(name)
    if cached is None:
        cached = torch.compile(fn)
        _COMPILED[name] = cached
    return cached
