"""Library side of ``augkd eval``: accuracy of any checkpoint on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from augkd.checkpoint import load_model, resolve_checkpoint_path
from augkd.config import DataConfig, build_config, load_config
from augkd.data import ImageSet, load_domain
from augkd.evaluate import accuracy
from augkd.models.teacher import FrozenTeacher


def evaluate_checkpoint(
    source: str, dataset: str | None = None, split: str = "test", config: Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Load ``source`` and measure Acc@1/3/5 on ``split`` of its data (or ``dataset``).

    The data config comes from, in order: ``--config`` (a distill config), the run directory's
    ``config.yaml``, the checkpoint sidecar's ``extra.data``, and ``dataset`` overrides its name.
    """
    model, meta = load_model(source)
    path = Path(source)
    run_dir: Path | None = None
    data_dict: dict[str, Any] = {}
    if config is not None:
        data_dict = load_config(config).data.model_dump(mode="json")
    elif path.exists():
        folder = resolve_checkpoint_path(path).parent
        if (folder / "config.yaml").is_file() and (folder / "split.json").is_file():
            run_dir = folder
            data_dict = load_config(folder / "config.yaml").data.model_dump(mode="json")
        elif "data" in meta.extra:
            data_dict = dict(meta.extra["data"])
    if dataset is not None:
        data_dict = {**data_dict, "dataset": dataset}
        run_dir = None
    data_dict.setdefault("image_size", meta.input_size)
    data_cfg = build_config(DataConfig, data_dict, [o.removeprefix("data.") for o in (overrides or [])])
    domain = load_domain(data_cfg, run_dir, meta.num_classes)  # a list file: labels in the model's classes
    sets = {"train": domain.train, "eval": domain.eval, "test": domain.test}
    if split == "all":
        target = ImageSet(torch.cat([s.images for s in sets.values()]), torch.cat([s.labels for s in sets.values()]),
                          domain.class_names)  # fmt: skip
    else:
        target = sets[split]
    if len(target) == 0:
        from augkd.errors import InputError

        raise InputError(
            f"the {split} split of {data_cfg.dataset!r} is empty: pick another --split (train, eval, test, all)"
        )
    wrapped = FrozenTeacher(model, meta.mean, meta.std, meta.input_size, meta.in_chans)
    acc = accuracy(wrapped, target, 1024, "cpu")
    return {**acc, "arch": meta.arch, "dataset": data_cfg.dataset, "split": split}
