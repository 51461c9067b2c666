"""The student-domain data an export is checked on: the run's own split, found from the checkpoint alone.

Parity and accuracy are measured on the run's student-domain TEST split (real images, not noise) and
int8 calibration reads its TRAIN split. :func:`evaluation_data` finds that data, in this order:

1. an explicit ``data`` argument (``--data DATASET``): a built-in name or an image folder / list file,
   split with the default fractions and seed (it wins over what the run recorded);
2. what the run recorded, found as ``augkd eval`` finds it (:func:`augkd.runs.resolve_run_data`): a run
   directory (or a checkpoint whose folder holds ``config.yaml``): the ``data`` section of that
   ``config.yaml``, with the folder's ``split.json`` when present;
3. the checkpoint sidecar's ``extra["data"]`` (the DataConfig the run used), which recomputes the same
   split deterministically (``split.json`` next to the checkpoint is used when present);
4. otherwise an :class:`~augkd.errors.InputError` that says how to pass data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from augkd.errors import InputError

if TYPE_CHECKING:
    from augkd.checkpoint import ModelMeta
    from augkd.config import DataConfig
    from augkd.data import ImageSet

logger = logging.getLogger(__name__)

__all__ = ["EvaluationData", "evaluation_data", "normalize_images", "resolve_data_config"]

_HOW_TO = (
    "pass --data DATASET (a built-in: mnist5k, digits, fashion-mnist; or an image folder / list file), "
    "or export a run directory written by `augkd distill`"
)


@dataclass
class EvaluationData:
    """Student-domain splits prepared for one model: uint8 images at the model's size and channel count."""

    test: ImageSet
    train: ImageSet
    origin: str  # where the data came from, for the report
    dataset: str
    test_split: str  # "test", or "eval" when the run has no test split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int = 3

    def test_batch(self, limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Test images (uint8 ``[N, C, S, S]``) and labels: all of them, or a seeded random subset of ``limit``.

        A subset is drawn at random (then kept in split order) because splits are often sorted by class:
        the first ``limit`` images could all be one class.
        """
        n = len(self.test)
        if limit is None or limit >= n:
            return self._chans(self.test.images), self.test.labels
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        return self._chans(self.test.images[idx]), self.test.labels[idx]

    def calibration_images(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` training images (uint8), a seeded random subset of the TRAIN split (never the test split)."""
        if n < 1:
            raise InputError(f"calibration needs at least 1 image, got {n}")
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))
        return self._chans(self.train.images[order[: min(n, len(order))]])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → the float NCHW input the model takes: ``(x / 255 − mean) / std``."""
        return normalize_images(images, self.mean, self.std)

    def _chans(self, images: torch.Tensor) -> torch.Tensor:
        # Built-in sets are grey images repeated to 3 channels; a 1-channel model takes the first one.
        return images[:, : self.in_chans].contiguous() if self.in_chans < images.shape[1] else images


def normalize_images(images: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """uint8 (or [0, 255] float) images ``[N, C, H, W]`` → float32 ``(x / 255 − mean[c]) / std[c]``."""
    c = images.shape[1]
    m = torch.as_tensor(list(mean)[:c], dtype=torch.float32).view(1, c, 1, 1)
    s = torch.as_tensor(list(std)[:c], dtype=torch.float32).view(1, c, 1, 1)
    return (images.to(torch.float32) / 255.0 - m) / s


def resolve_data_config(
    source: str | Path, meta: ModelMeta, data: str | DataConfig | None = None
) -> tuple[DataConfig, Path | None, str]:
    """Find the student-domain DataConfig for ``source``: ``(config, folder with split.json or None, origin)``."""
    from augkd.runs import data_config, resolve_run_data

    try:
        if data is not None:
            cfg = data_config(data, "--data", meta.input_size)
            return cfg, None, f"--data {cfg.dataset} (default split, seed {cfg.split_seed})"
        found = resolve_run_data(source, meta)
    except InputError as exc:
        raise InputError(f"{exc}; {_HOW_TO}") from exc
    if found is None:
        raise InputError(
            f"no student-domain data recorded for {str(source)!r} (no run config.yaml, no "
            f"extra['data'] in its sidecar): {_HOW_TO}"
        )
    return found.config, found.split_dir, found.origin


def evaluation_data(
    source: str | Path, meta: ModelMeta, data_override: str | DataConfig | None = None
) -> EvaluationData:
    """Load the student-domain splits that belong to ``source`` (see the module docstring for the order)."""
    from augkd.data import load_domain

    cfg, split_dir, origin = resolve_data_config(source, meta, data_override)
    domain = load_domain(cfg, split_dir, meta.num_classes)  # a list file: labels in the model's classes
    if domain.num_classes != meta.num_classes:
        raise InputError(
            f"dataset {cfg.dataset!r} has {domain.num_classes} classes but the model predicts {meta.num_classes}: "
            "pass --data with the student domain the model was trained on"
        )
    test, which = domain.test, "test"
    if len(test) == 0:
        logger.warning("the run has an empty test split: checking on its eval split instead")
        test, which = domain.eval, "eval"
    if len(test) == 0:
        raise InputError(f"dataset {cfg.dataset!r} split {list(cfg.split)} leaves no test or eval images: {_HOW_TO}")
    return EvaluationData(
        test=test,
        train=domain.train,
        origin=origin,
        dataset=cfg.dataset,
        test_split=which,
        mean=tuple(meta.mean),
        std=tuple(meta.std),
        in_chans=meta.in_chans,
    )
