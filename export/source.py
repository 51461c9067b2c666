"""What ``augkd export`` / ``augkd bench`` were pointed at: a run directory or a checkpoint, loaded once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from augkd.checkpoint import ModelMeta
from augkd.errors import InputError

__all__ = ["Source", "load_source"]


@dataclass
class Source:
    """A loaded student: the model (eval mode), its sidecar, where it came from and a fingerprint of its weights."""

    spec: str
    model: nn.Module
    meta: ModelMeta
    weights: Path | None  # the checkpoint file (None for a built-in pretrained name)
    folder: Path | None  # the run directory, or the checkpoint's folder
    fingerprint: str  # sha256 prefix of the weights file: detects artifacts exported from other weights

    def default_dir(self, name: str) -> Path:
        """``<run dir>/<name>`` or ``<checkpoint folder>/<name>``."""
        if self.folder is None:
            raise InputError(f"{self.spec!r} is a built-in model name, not a file: pass --out DIR")
        return self.folder / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_source(source: str | Path) -> Source:
    """Load a run directory (its ``student.safetensors``), a checkpoint file, or a built-in pretrained name."""
    from augkd.checkpoint import load_model, resolve_checkpoint_path

    spec = str(source)
    if not spec.strip():
        raise InputError("no source given: pass a run directory or a .safetensors checkpoint")
    model, meta = load_model(source)
    path = Path(source)
    if path.exists():
        weights = resolve_checkpoint_path(path)
        folder = path if path.is_dir() else path.parent
        fingerprint = _sha256(weights)
    else:
        weights, folder, fingerprint = None, None, hashlib.sha256(f"builtin:{spec}".encode()).hexdigest()[:16]
    return Source(spec=spec, model=model.eval(), meta=meta, weights=weights, folder=folder, fingerprint=fingerprint)
