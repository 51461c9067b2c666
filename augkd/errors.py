"""Exception types raised by augkd library code.

Library code raises these and never calls ``sys.exit``; the CLI boundary (``augkd.cli.main``) turns
them into a one-line message and a non-zero exit. Every message says what was wrong, the value that
was given, and how to fix it.
"""

from __future__ import annotations

import os


class AugKDError(Exception):
    """Base class of every error augkd reports to a user."""


class ConfigError(AugKDError):
    """An invalid configuration value, unknown key or malformed override."""


class InputError(AugKDError):
    """Bad user input: a missing/corrupt file, wrong class count, bad tensor shape, ..."""


class MissingDependencyError(AugKDError):
    """An optional dependency (extra) is needed for the requested feature."""


class KernelUnavailableError(AugKDError):
    """An explicitly requested kernel backend cannot run here."""


class TrainingError(AugKDError):
    """Training cannot go on (for example a NaN/inf loss); the last good checkpoint is kept."""


class StorageError(AugKDError):
    """A file or folder could not be written or read: no space left, read-only, permission, a file in the way.

    ``path`` is the file or folder it was about, ``errno`` the OS error number when one is known.
    """

    def __init__(self, message: str, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


# torch.save's C++ writer reports a failed write (a full disk, most often) without an errno
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "iostream error", "file write failed")
LOW_SPACE_BYTES = 64 * 2**20  # a write that fails without an errno while less than this is free: a full disk


def os_errno(exc: BaseException) -> int | None:
    """The OS error number behind ``exc``: an ``OSError``'s, or one named in the message of a wrapped error
    (safetensors: "No space left on device (os error 28)")."""
    import errno as errno_mod
    import re

    if isinstance(exc, OSError) and exc.errno:
        return int(exc.errno)
    text = str(exc)
    m = re.search(r"os error (\d+)", text)
    if m:
        return int(m.group(1))
    if "No space left on device" in text:
        return errno_mod.ENOSPC
    return None


def free_bytes(path: str | os.PathLike[str] | None) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing ancestor); None when unknown."""
    import shutil
    from pathlib import Path

    if path is None:
        return None
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = float(n) / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _file_in_the_way(path: str | None) -> str | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it is not a directory."""
    from pathlib import Path

    if path is None:
        return None
    for p in (Path(path), *Path(path).parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else str(p)
    return None


def storage_error(
    exc: BaseException, path: str | os.PathLike[str] | None = None, action: str | None = None
) -> StorageError | None:
    """``exc`` as a one-line :class:`StorageError` naming ``path`` (default: the error's own file name) and the
    reason, or None when ``exc`` is not a filesystem error.

    Handles ``OSError`` (by errno), errors that carry an errno in their message (safetensors) and torch.save's
    errno-less "inline_container ... unexpected pos" / "iostream error" (a full disk when little space is free).
    Call it before removing a partly written file, so that the free space it reports is the space left.
    """
    import errno as e

    code = os_errno(exc)
    torch_write = code is None and isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURES)
    if code is None and not torch_write:
        return None
    target = None if path is None else str(path)
    if target is None and isinstance(exc, OSError) and exc.filename is not None:
        target = os.fsdecode(exc.filename)
    free = free_bytes(target) if code in (None, e.ENOSPC, e.EDQUOT) else None
    if torch_write and free is not None and free < LOW_SPACE_BYTES:
        code = e.ENOSPC
    elsewhere = "write somewhere else (--out)"
    if code in (e.ENOSPC, e.EDQUOT):
        what = "no space left on its device" if code == e.ENOSPC else "disk quota exceeded"
        reason = what + (f" ({_size(free)} free)" if free is not None else "")
        advice = f"free some space or {elsewhere}; files written before are kept as they were"
    elif code == e.EROFS:
        reason, advice = "read-only file system", elsewhere
    elif code in (e.EACCES, e.EPERM):
        reason, advice = "permission denied", elsewhere
    elif code in (e.ENOTDIR, e.EEXIST) and _file_in_the_way(target) is not None:
        blocker = _file_in_the_way(target)
        reason = "it is a file, not a directory" if blocker == target else f"{blocker} is a file, not a directory"
        advice = "pass a directory, or a path that does not exist yet, to --out"
    elif code == e.EISDIR:
        reason, advice = "it is a directory", "pass a file path"
    elif code is not None:
        reason, advice = os.strerror(code).lower(), ""
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"the write failed ({first})"
        advice = "is the disk full or failing? check it and run again"
    if action is None:
        action = "write" if torch_write or code in (e.ENOSPC, e.EDQUOT, e.EROFS, e.EEXIST) else "access"
    where = f" {target}" if target else ""
    return StorageError(f"cannot {action}{where}: {reason}" + (f"; {advice}" if advice else ""), target, code)
