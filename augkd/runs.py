"""The student-domain data a checkpoint was trained on, found from the checkpoint alone.

``augkd eval`` and ``augkd export`` both find it here (:func:`resolve_run_data`), in this order:

1. a run directory (or a checkpoint whose folder holds ``config.yaml``): the ``data`` section of that
   ``config.yaml``, with the folder's ``split.json`` when present;
2. the checkpoint sidecar's ``extra["data"]`` (the DataConfig the run used), which recomputes the same
   split deterministically (``split.json`` next to the checkpoint is used when present);
3. otherwise nothing is recorded (a built-in pretrained name, a bare checkpoint): ``None``, and the caller
   says how to pass data.

The data is loaded at the model's input size. A record that cannot be read is a one-line
:class:`~augkd.errors.InputError`, to which each command appends how to pass data instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augkd.errors import AugKDError, InputError

if TYPE_CHECKING:
    from augkd.checkpoint import ModelMeta
    from augkd.config import DataConfig

logger = logging.getLogger(__name__)

__all__ = ["RunData", "data_config", "resolve_run_data", "run_folder"]


@dataclass(frozen=True)
class RunData:
    """A checkpoint's recorded student-domain data: its DataConfig and where its split comes from."""

    config: DataConfig
    split_dir: Path | None  # load_domain's run_dir: the folder of the run's split.json; None: recompute it
    origin: str  # where the data came from, for reports


def run_folder(source: str | Path) -> Path | None:
    """The folder a checkpoint's run records are in: a run directory itself, a checkpoint file's folder."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    return None  # a built-in pretrained name: no folder


def data_config(raw: Any, where: str, image_size: int) -> DataConfig:
    """A data section (a mapping, a dataset name or a DataConfig) from ``where``, at ``image_size``."""
    from pydantic import ValidationError

    from augkd.config import DataConfig

    if isinstance(raw, DataConfig):
        cfg = raw
    elif isinstance(raw, str):
        cfg = DataConfig.model_validate({"dataset": raw, "image_size": image_size})
    elif isinstance(raw, dict):
        try:
            cfg = DataConfig.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(map(str, err["loc"]))
            raise InputError(f"data settings in {where} are invalid: {loc}: {err['msg']}") from exc
    else:
        raise InputError(f"data settings in {where} must be a mapping, got {type(raw).__name__}")
    if cfg.image_size != image_size:
        logger.info(
            "data %s: loading at the model's input size %d (the run used %d)", cfg.dataset, image_size, cfg.image_size
        )
        cfg = cfg.model_copy(update={"image_size": image_size})
    return cfg


def resolve_run_data(source: str | Path, meta: ModelMeta) -> RunData | None:
    """The data recorded for ``source`` (a run directory, a checkpoint, a built-in name), or None (module docs)."""
    size = meta.input_size
    folder = run_folder(source)
    split_dir = folder if folder is not None and (folder / "split.json").is_file() else None
    split_note = f"split from {split_dir / 'split.json'}" if split_dir else "split recomputed from the config"
    if folder is not None and (folder / "config.yaml").is_file():
        from augkd.config import read_yaml

        try:
            raw = read_yaml(folder / "config.yaml").get("data")
        except AugKDError as exc:
            raise InputError(str(exc)) from exc
        if raw is not None:
            cfg = data_config(raw, str(folder / "config.yaml"), size)
            return RunData(cfg, split_dir, f"run config {folder / 'config.yaml'} ({split_note})")
    raw = meta.extra.get("data")
    if raw is not None:
        cfg = data_config(raw, "the checkpoint sidecar's extra['data']", size)
        return RunData(cfg, split_dir, f"checkpoint sidecar extra['data'] ({split_note})")
    return None
