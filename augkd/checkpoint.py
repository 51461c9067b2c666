"""Checkpoints: weights in safetensors plus a JSON sidecar; training state via torch.save/weights_only.

A model checkpoint is two files, ``NAME.safetensors`` and ``NAME.json``. The sidecar names the
architecture, classes, input size and normalisation, so ``augkd eval`` / ``augkd export`` need no
repeated arguments. A user's ``.pt`` state_dict is read with ``torch.load(weights_only=True)``: a
pickle that would run code is refused. All writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from augkd.errors import InputError
from augkd.utils import atomic_write, atomic_write_json, augkd_version

SIDECAR_VERSION = 1


class ModelMeta(BaseModel):
    """The JSON sidecar of a model checkpoint."""

    model_config = ConfigDict(extra="allow")

    format_version: int = SIDECAR_VERSION
    arch: str
    num_classes: int
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    class_names: list[str] = Field(default_factory=list)
    input_size: int = 32
    in_chans: int = 3
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    augkd_version: str = Field(default_factory=augkd_version)
    metrics: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


def _state_for_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared/non-contiguous storage: store independent contiguous copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def sidecar_path(weights: Path) -> Path:
    """``x.safetensors`` / ``x.pt`` → ``x.json``."""
    return weights.with_suffix(".json")


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to the .safetensors file ``path`` atomically (no sidecar); returns ``path``.

    Read it back with :func:`load_state_dict_file`.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = _state_for_safetensors(model)
    atomic_write(path, lambda p: save_file(state, str(p), metadata=metadata))
    return path


def save_model(model: nn.Module, path: str | Path, meta: ModelMeta) -> Path:
    """Write ``path`` (.safetensors) and its JSON sidecar atomically; returns the weights path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    save_weights(model, path, {"arch": meta.arch})
    atomic_write_json(sidecar_path(path), meta.model_dump(mode="json"))
    return path


def read_meta(path: str | Path) -> ModelMeta:
    """Read and validate a checkpoint's JSON sidecar."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint sidecar not found: {str(path)!r}; it is written next to the .safetensors file")
    try:
        return ModelMeta.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"checkpoint sidecar {str(path)!r} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(
            f"checkpoint sidecar {str(path)!r} is invalid: {'.'.join(map(str, err['loc']))}: {err['msg']}"
        ) from exc


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a .pt/.pth state_dict read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"checkpoint not found: {str(path)!r}; pass a .safetensors file, a .pt state_dict or a run directory"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"checkpoint {str(path)!r} is not a readable safetensors file ({exc})".splitlines()[0]
            ) from exc
    _check_torch_header(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal below says what matters
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise InputError(
                f"refusing to load {str(path)!r}: it is a pickle that needs arbitrary code to load ({found.group(1)}; "
                "only plain tensor state_dicts are accepted); re-save it as safetensors"
            ) from exc
        raise InputError(
            f"refusing to load {str(path)!r}: it is a pickle that the safe (weights-only) loader cannot read "
            "(only plain tensor state_dicts saved by torch.save are accepted); re-save it as safetensors"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise InputError(f"checkpoint {str(path)!r} is corrupt or not a torch file ({exc})".splitlines()[0]) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    _check_state_dict(path, obj)
    return obj


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_PICKLE_PROTOCOLS = range(2, 6)  # legacy torch.save / plain pickles start with PROTO (0x80) and the protocol


def _check_torch_header(path: Path) -> None:
    """Refuse, before ``torch.load``, a file that is neither a zip archive nor a pickle (text, YAML, empty...)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise InputError(f"cannot read checkpoint {str(path)!r} ({exc.strerror or exc})") from exc
    if head.startswith(_ZIP_MAGIC) or (len(head) > 1 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS):
        return
    if not head:
        raise InputError(f"{str(path)!r} is an empty file, not a torch checkpoint")
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a cut multi-byte character at the end of the sample is still text
        sample = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else "\x00"
    text = all(ch.isprintable() or ch in "\n\r\t\f" for ch in sample)
    if text:
        kind = {".yaml": "a YAML text file", ".yml": "a YAML text file", ".json": "a JSON text file"}
        hint = "; a config goes with -c" if path.suffix.lower() in (".yaml", ".yml") else ""
        raise InputError(
            f"{str(path)!r} is {kind.get(path.suffix.lower(), 'a text file')}, not a torch checkpoint "
            f"(no zip/pickle header){hint}: pass a .safetensors file, a .pt state_dict or a run directory"
        )
    raise InputError(
        f"{str(path)!r} is not a torch checkpoint (no zip/pickle header): pass a .safetensors file, a .pt "
        "state_dict or a run directory"
    )


def _check_state_dict(path: Path, obj: Any) -> None:
    """Say what a loaded ``.pt`` holds when it is not a dict of parameter name → tensor."""
    if isinstance(obj, dict) and {"stage_index", "nets"} <= set(obj):
        raise InputError(
            f"{str(path)!r} is an augkd training state (checkpoints/state.pt), not a model: pass the run "
            "directory or its student.safetensors"
        )
    if isinstance(obj, torch.Tensor):
        raise InputError(
            f"{str(path)!r} holds a Tensor of shape {list(obj.shape)}, not a state_dict of tensors "
            "(a dict of parameter name → tensor, as model.state_dict())"
        )
    if not isinstance(obj, dict):
        raise InputError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict of tensors")
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise InputError(
            f"{str(path)!r} holds a dict whose entry {str(bad)!r} is a {type(obj[bad]).__name__}, not a state_dict "
            "of tensors"
        )
    if not obj:
        raise InputError(f"{str(path)!r} holds an empty dict, not a state_dict of tensors")


def resolve_checkpoint_path(source: str | Path) -> Path:
    """A run directory → its final student; a file path → itself."""
    path = Path(source)
    if path.is_dir():
        for name in ("student.safetensors", "teacher.safetensors", "model.safetensors"):
            if (path / name).is_file():
                return path / name
        raise InputError(f"no student.safetensors in run directory {str(path)!r}: has the run finished?")
    return path


def peek_num_classes(source: str | Path) -> int | None:
    """The class count of a model checkpoint or built-in name, read without loading weights (None if unknown)."""
    from augkd.models import get_model_info

    src = str(source)
    if not Path(src).exists() and not any(sep in src for sep in "/\\") and "." not in Path(src).name:
        return get_model_info(src).fixed_num_classes or 10  # as load_model: a built-in pretrained name
    side = sidecar_path(resolve_checkpoint_path(source))
    return read_meta(side).num_classes if side.is_file() else None


def load_model(
    source: str | Path, arch: str | None = None, num_classes: int | None = None, **model_kwargs: Any
) -> tuple[nn.Module, ModelMeta]:
    """Rebuild a model from a checkpoint (or a built-in pretrained name) in eval mode.

    ``source`` can be a run directory, a ``.safetensors`` file with its sidecar, a ``.pt`` state_dict
    (with a sidecar, or ``arch``/``num_classes`` given), or a built-in pretrained name (``ccexam-svhn``).
    """
    from augkd.models import create_model, get_model_info

    src = str(source)
    if not Path(src).exists() and not any(sep in src for sep in "/\\") and "." not in Path(src).name:
        info = get_model_info(src)  # unknown names raise with the list of known ones
        if not info.pretrained:
            raise InputError(f"{src!r} is an architecture without shipped weights: pass a checkpoint file instead")
        model = create_model(src, num_classes or info.fixed_num_classes or 10)
        meta = ModelMeta(
            arch=src,
            num_classes=info.fixed_num_classes or num_classes or 10,
            class_names=[str(i) for i in range(info.fixed_num_classes or num_classes or 10)],
            input_size=info.input_size or 32,
            in_chans=info.in_chans,
            mean=list(info.mean),
            std=list(info.std),
        )
        return model.eval(), meta
    path = resolve_checkpoint_path(source)
    state = load_state_dict_file(path)
    side = sidecar_path(path)
    if side.is_file():
        meta = read_meta(side)
    elif arch is not None and num_classes is not None:
        meta = ModelMeta(arch=arch, num_classes=num_classes, model_kwargs=model_kwargs)
    else:
        raise InputError(f"no sidecar {str(side)!r} for {str(path)!r}: pass the architecture and class count too")
    model = create_model(
        meta.arch, meta.num_classes, **{"pretrained": False} if _is_pretrained(meta.arch) else {}, **meta.model_kwargs
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"weights in {str(path)!r} do not fit architecture {meta.arch!r} ({first})") from exc
    return model.eval(), meta


def _is_pretrained(arch: str) -> bool:
    from augkd.models import get_model_info

    return get_model_info(arch).pretrained


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically save training state (tensors, numbers, strings, lists/dicts of them)."""
    return atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: str | Path) -> dict[str, Any]:
    """Load training state written by :func:`save_state` with ``weights_only=True``."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"refusing to load {str(path)!r}: it is not a plain-tensor training state") from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise InputError(f"training state {str(path)!r} is corrupt ({exc})".splitlines()[0]) from exc
    if not isinstance(obj, dict):
        raise InputError(f"training state {str(path)!r} is not a dict")
    return obj
