"""Stratified, seeded train/eval/test splits, written to the run directory and reused."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from augkd.errors import InputError
from augkd.utils import atomic_write_json

SPLITS = ("train", "eval", "test")

logger = logging.getLogger(__name__)


def stratified_split(
    labels: torch.Tensor,
    fractions: tuple[float, float, float],
    seed: int,
    shots_per_class: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Per class: shuffle (seeded), cut into train/eval/test by ``fractions``; optionally keep K train shots.

    Each class contributes ``round(n·f_eval)`` eval and ``round(n·f_test)`` test images (at least one
    when the fraction is positive and the class has ≥ 3 images); the rest is training data. A split
    with a positive fraction that ends up empty is an error; ``shots_per_class`` above what a class has
    for training keeps all of that class's training images, with a warning naming the smallest class.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in SPLITS}
    short: list[tuple[int, int]] = []  # (training images, class) of classes with fewer than shots_per_class
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = len(idx)
        n_eval = round(n * fractions[1])
        n_test = round(n * fractions[2])
        if n >= 3:
            n_eval = max(n_eval, 1 if fractions[1] > 0 else 0)
            n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_train = n - n_eval - n_test
        if n_train < 1:
            raise InputError(f"class {c} has only {n} image(s): too few for split {fractions}")
        train = idx[:n_train]
        if shots_per_class is not None:
            if n_train < shots_per_class:
                short.append((n_train, c))
            train = train[:shots_per_class]
        out["train"].append(train)
        out["eval"].append(idx[n_train : n_train + n_eval])
        out["test"].append(idx[n_train + n_eval :])
    if short:
        n_min, c_min = min(short)
        cname = repr(class_names[c_min]) if class_names else str(c_min)
        logger.warning(
            "data.shots_per_class=%d is more than class %s has for training (%d images after the split): "
            "%d of %d classes use all their training images, fewer than %d",
            shots_per_class,
            cname,
            n_min,
            len(short),
            len(torch.unique(labels)),
            shots_per_class,
        )
    res = {k: torch.sort(torch.cat(v)).values if v else torch.empty(0, dtype=torch.long) for k, v in out.items()}
    for k, f in zip(SPLITS, fractions, strict=True):
        if f > 0 and len(res[k]) == 0:
            raise InputError(
                f"the {k} split is empty: data.split={list(fractions)} gives no {k} image to any class "
                "(each class needs at least 3 images for a non-empty eval and test split)"
            )
    return res


def labels_fingerprint(labels: torch.Tensor) -> str:
    """A short hash of the label vector: detects a split file used with different data."""
    return hashlib.sha256(labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def save_split(path: str | Path, split: dict[str, torch.Tensor], labels: torch.Tensor, info: dict[str, object]) -> None:
    """Write the split as JSON index lists (plus the data fingerprint)."""
    payload = {"fingerprint": labels_fingerprint(labels), "num_images": int(len(labels)), **info}
    payload.update({k: split[k].tolist() for k in SPLITS})
    atomic_write_json(path, payload)


def load_split(path: str | Path, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Read a split written by :func:`save_split`, checking it belongs to these labels."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"split file {str(path)!r} is unreadable ({exc})") from exc
    if data.get("fingerprint") != labels_fingerprint(labels):
        raise InputError(
            f"split file {str(path)!r} was made for other data (fingerprint mismatch): use a new run directory"
        )
    return {k: torch.tensor(data[k], dtype=torch.long) for k in SPLITS}
