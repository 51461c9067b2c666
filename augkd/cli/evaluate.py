"""``augkd eval``: top-1/3/5 accuracy of any checkpoint on a split of its own data or of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from augkd.cli._options import ConfigOpt, JsonOpt, SetOpt, VerboseOpt
from augkd.cli._util import cli_errors, print_json, print_table, setup_logging

if TYPE_CHECKING:
    from augkd.checkpoint import ModelMeta
    from augkd.config import DataConfig

SPLITS = ("train", "eval", "test", "all")
_HOW_TO = "pass --config FILE (a distill config) to take the data settings from it"


def _eval_data(
    source: str, meta: ModelMeta, dataset: str | None, config: Path | None, overrides: list[str]
) -> tuple[DataConfig, Path | None]:
    """The data to measure on and the folder of its ``split.json`` (None: split from the config).

    The data settings come from, in order: ``--config`` (a distill config), what the run recorded
    (:func:`augkd.runs.resolve_run_data`: its ``config.yaml``, the checkpoint sidecar's ``extra.data``),
    DataConfig's defaults; ``--data`` replaces the dataset name (and the run's split), ``--set data.KEY=VALUE``
    any setting.
    """
    from augkd.config import DataConfig, build_config, load_config
    from augkd.errors import InputError
    from augkd.runs import resolve_run_data

    split_dir: Path | None = None
    data_dict: dict[str, Any] = {"image_size": meta.input_size}
    if config is not None:
        data_dict = load_config(config).data.model_dump(mode="json")
    else:
        try:
            found = resolve_run_data(source, meta)
        except InputError as exc:
            raise InputError(f"{exc}; {_HOW_TO}") from exc
        if found is not None:
            data_dict, split_dir = found.config.model_dump(mode="json"), found.split_dir
    if dataset is not None:
        data_dict, split_dir = {**data_dict, "dataset": dataset}, None
    return build_config(DataConfig, data_dict, [o.removeprefix("data.") for o in overrides]), split_dir


def _evaluate(source: str, dataset: str | None, split: str, config: Path | None, overrides: list[str]) -> dict:
    from augkd.checkpoint import load_model
    from augkd.data import load_domain
    from augkd.errors import InputError
    from augkd.evaluate import accuracy
    from augkd.models.teacher import FrozenTeacher

    model, meta = load_model(source)
    data_cfg, split_dir = _eval_data(source, meta, dataset, config, overrides)
    target = load_domain(data_cfg, split_dir, meta.num_classes).split(split)  # a list file: the model's classes
    if len(target) == 0:
        raise InputError(
            f"the {split} split of {data_cfg.dataset!r} is empty: pick another --split ({', '.join(SPLITS)})"
        )
    wrapped = FrozenTeacher(model, meta.mean, meta.std, meta.input_size, meta.in_chans)
    acc = accuracy(wrapped, target, 1024, "cpu")
    return {**acc, "arch": meta.arch, "dataset": data_cfg.dataset, "split": split}


@cli_errors
def eval_cmd(
    checkpoint: Annotated[
        str, typer.Argument(help="Run directory, .safetensors/.pt checkpoint, or built-in teacher name.")
    ],
    data: Annotated[
        Optional[str], typer.Option("--data", help="Dataset (built-in name or folder); default: the checkpoint's own.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="train, eval, test or all.")] = "test",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Top-1/3/5 accuracy of any checkpoint on a dataset split."""
    setup_logging(verbose, True)
    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be train, eval, test or all, got {split!r}")
    res = _evaluate(checkpoint, data, split, config, list(overrides or []))
    if json_out:
        print_json(res)
    else:
        row = {"split": split, "n": int(res["n"]), "acc1": res["acc1"], "acc3": res["acc3"], "acc5": res["acc5"]}
        print_table([row], title=f"{res['arch']} on {res['dataset']}")
