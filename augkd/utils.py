"""Small shared helpers: atomic writes, seeding, device resolution, provenance."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "seed_everything",
    "resolve_device",
    "git_sha",
    "augkd_version",
    "cpu_name",
]


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``writer(tmp_path)`` writes a temp file in the same folder, then rename.

    A crash or SIGKILL in the middle leaves either the old file or the new one, never a torn file. A failed
    write (no space left, read-only, permission, a file where a folder should be; torch.save's errno-less
    "unexpected pos") removes the temp file and raises :class:`augkd.errors.StorageError` naming ``path``.
    """
    from augkd.errors import storage_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        err = storage_error(exc, path, "write")
        if err is None:
            raise
        raise err from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        err = storage_error(exc, path, "write") if isinstance(exc, Exception) else None  # free space: temp still there
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)
        if err is not None:
            raise err from exc
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write raw bytes."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_MALLOC_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory in the process instead of handing large blocks back to the OS.

    By default glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
    ``mmap`` and unmaps it on free, so each training step's big activations (a 1280×64×32×32 bf16 map is
    168 MB) are page-faulted and zeroed again: about 350 k minor page faults per Module-1 iteration on the
    benchmark configuration. ``mallopt(M_MMAP_MAX, 0)`` + a 2 GB ``M_TRIM_THRESHOLD`` make large blocks come
    from the heap and stay there, so later steps reuse them (the PyTorch CPU tuning guide's advice to use
    jemalloc/tcmalloc, without preloading another allocator). Returns whether it was applied: False off
    glibc (macOS, musl, Windows).

    Trade-offs: the process keeps its peak memory (large blocks live on the main heap, which only shrinks
    from the top once 2 GB are free; 2.29 vs 2.01 GB max RSS on the Module-1 benchmark), forked children
    inherit the setting, and it cannot be undone: it is process-wide and idempotent, so
    ``train.malloc: system`` only means "do not apply it" in a process that has not applied it yet. Only
    the main thread's arena benefits (other threads' arenas still map blocks over 64 MB). Under a
    preloaded jemalloc/tcmalloc ``mallopt`` is glibc's and changes nothing.
    """
    global _MALLOC_KEPT
    if _MALLOC_KEPT is not None:
        return _MALLOC_KEPT
    _MALLOC_KEPT = False
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p  # glibc only: musl has no such symbol
        if not libc.gnu_get_libc_version():
            return False
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        _MALLOC_KEPT = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    return _MALLOC_KEPT


def apply_process_settings(train: Any, device: torch.device) -> None:  # noqa: F821
    """This process's share of ``train`` (a ``TrainConfig``): ``threads`` (torch.set_num_threads) and, on CPU
    runs, ``malloc: keep`` (:func:`keep_freed_memory`). Called by every training entry point."""
    import torch

    if train.threads:
        torch.set_num_threads(train.threads)
    if train.malloc == "keep" and torch.device(device).type == "cpu":
        keep_freed_memory()


def resolve_device(device: str = "auto") -> torch.device:  # noqa: F821
    """Turn ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` into a ``torch.device``."""
    import torch

    from augkd.errors import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here: use --device cpu")
    return dev


def git_sha(short: bool = True) -> str:
    """The git commit of the augkd source tree, or ``"unknown"`` outside a checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def augkd_version() -> str:
    """The installed augkd version (``importlib.metadata``), ``"0+unknown"`` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("augkd")
    except PackageNotFoundError:
        return "0+unknown"


def cpu_name() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
