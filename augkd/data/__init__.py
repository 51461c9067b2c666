"""Student-domain data: built-in offline sets or user folders, cached as uint8 tensors, split once per run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from augkd.data.builtin import BUILTIN_DATASETS, load_builtin
from augkd.data.folder import load_image_folder, load_list_file
from augkd.data.images import ImageSet, augment_batch, iterate_batches, to_uint8_rgb
from augkd.data.split import SPLITS, load_split, save_split, stratified_split

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_DATASETS",
    "DomainData",
    "ImageSet",
    "augment_batch",
    "iterate_batches",
    "load_dataset",
    "load_domain",
    "stratified_split",
    "to_uint8_rgb",
]


def load_dataset(
    dataset: str,
    image_size: int = 32,
    root: str | None = None,
    skip_bad_files: bool = False,
    max_per_class: int | None = None,
    num_classes: int | None = None,
) -> ImageSet:
    """A built-in name, an ImageFolder directory, or a list file → an in-memory :class:`ImageSet`.

    ``num_classes`` (the model's) sets a list file's label range; folders and built-ins name their classes.
    """
    if dataset in BUILTIN_DATASETS:
        return load_builtin(dataset, image_size, max_per_class=max_per_class)
    path = Path(dataset)
    if path.is_dir():
        return load_image_folder(path, image_size, skip_bad_files)
    if path.is_file():
        return load_list_file(path, root, image_size, skip_bad_files, num_classes)
    from augkd.errors import InputError

    raise InputError(
        f"dataset {dataset!r} is neither a built-in ({', '.join(BUILTIN_DATASETS)}) nor an existing folder or list file"
    )


@dataclass
class DomainData:
    """The three splits of one labelled domain."""

    train: ImageSet
    eval: ImageSet
    test: ImageSet

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def split(self, name: str) -> ImageSet:
        """The ``train``, ``eval`` or ``test`` split, or ``all`` of them in that order."""
        if name != "all":
            return {"train": self.train, "eval": self.eval, "test": self.test}[name]
        parts = (self.train, self.eval, self.test)
        return ImageSet(torch.cat([s.images for s in parts]), torch.cat([s.labels for s in parts]), self.class_names)


def load_domain(
    cfg: DataConfig,  # noqa: F821
    run_dir: str | Path | None = None,
    num_classes: int | None = None,
) -> DomainData:
    """Load ``cfg.dataset`` and split it; the split is read from / written to ``run_dir/split.json``.

    ``num_classes``: the model's class count, the label range of a list file (see :func:`load_dataset`).
    """
    full = load_dataset(cfg.dataset, cfg.image_size, cfg.root, cfg.skip_bad_files, cfg.max_per_class, num_classes)
    split_file = Path(run_dir) / "split.json" if run_dir is not None else None
    if split_file is not None and split_file.is_file():
        split = load_split(split_file, full.labels)
    else:
        split = stratified_split(full.labels, cfg.split, cfg.split_seed, cfg.shots_per_class, full.class_names)
        if split_file is not None:
            info = {
                "dataset": cfg.dataset,
                "split": list(cfg.split),
                "split_seed": cfg.split_seed,
                "shots_per_class": cfg.shots_per_class,
                "class_names": full.class_names,
            }
            save_split(split_file, split, full.labels, info)
    parts = {k: full.subset(split[k]) for k in SPLITS}
    logger.info("data %s: %s", cfg.dataset, ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    return DomainData(parts["train"], parts["eval"], parts["test"])
