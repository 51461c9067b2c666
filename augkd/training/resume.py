"""``augkd distill --resume RUN --set k=v``: the few settings a run may change when it resumes.

A resumed run keeps its own ``config.yaml``. Only learning rates, epoch counts and the numeric
precision may change (:data:`RESUME_KEYS`), and only for a stage that has not finished yet (an epoch
count no lower than the epochs that stage has already run). An accepted change rewrites ``config.yaml``
atomically and is appended to ``RUN/resume_overrides.json`` (what changed, from what, when, at which
stage and epoch); ``summary.json`` repeats that record. Any other key is refused before anything is
written.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

from augkd.config import DistillConfig, build_config, config_to_dict, load_config, parse_override, save_config
from augkd.errors import ConfigError, InputError
from augkd.utils import atomic_write_json

logger = logging.getLogger(__name__)

# Learning rates and epoch counts of each stage, and the precision (weights and optimiser states are fp32
# under either precision, so the checkpoint resumes in both). Nothing that changes the data, the split,
# the networks or the method can change in the middle of a run.
RESUME_KEYS: tuple[str, ...] = (
    "module1.epochs", "module1.g_lr", "module1.s_lr", "module1.e_lr",
    "module2.epochs", "module2.lr",
    "module3.epochs", "module3.lr",
    "kd.epochs", "kd.lr",
    "train.precision",
)  # fmt: skip
RECORD = "resume_overrides.json"
_SECTION_OF_STAGE = {
    "module1": "module1",
    "module2": "module2",
    "module3": "module3",
    "scratch": "kd",
    "kd": "kd",
    "finetune": "kd",
}


def _get(d: dict[str, Any], key: str) -> Any:
    section, name = key.split(".")
    return d[section][name]


def _progress(cfg: DistillConfig, run_dir: Path) -> tuple[list[str], int, int]:
    """The run's stage names and (stage index, epochs done in it) from ``checkpoints/state.pt`` (0, 0 without)."""
    from augkd.checkpoint import load_state
    from augkd.training.stages import DataFreeStage, build_stages

    stages = build_stages(cfg)
    if cfg.module1.init_from and stages and isinstance(stages[0], DataFreeStage):
        stages = stages[1:]  # as distill(): Module 1 comes from another run
    names = [st.name for st in stages]
    ckpt = run_dir / "checkpoints" / "state.pt"
    if not ckpt.is_file():
        return names, 0, 0
    state = load_state(ckpt)
    return names, int(state["stage_index"]), int(state["epoch"])


def resume_config(run_dir: Path, overrides: list[str] | None = None) -> tuple[DistillConfig, dict[str, Any]]:
    """The config a resumed run continues with: ``RUN/config.yaml`` plus the allowed ``overrides``.

    Returns the config and the accepted changes (``{}`` without overrides), as ``{"changes": {key: {"from":
    old, "to": new}}, "stage": ..., "epoch": ...}``. A key outside :data:`RESUME_KEYS`, a stage that has
    finished or is not part of the method, or fewer epochs than already run is a one-line ConfigError.
    """
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"cannot resume: {str(run_dir)!r} has no config.yaml (is it a run directory?)")
    cfg = load_config(run_dir / "config.yaml")
    if not overrides:
        return cfg, {}
    keys = []
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key not in RESUME_KEYS:
            raise ConfigError(
                f"--set {key} cannot change when a run resumes: with --resume only {', '.join(RESUME_KEYS)} can "
                "(the rest of RUN/config.yaml is fixed; start a new run with --out to change it)"
            )
        keys.append(key)
    new = build_config(DistillConfig, config_to_dict(cfg), overrides)
    old_d, new_d = config_to_dict(cfg), config_to_dict(new)
    changed = {
        k: {"from": _get(old_d, k), "to": _get(new_d, k)}
        for k in dict.fromkeys(keys)
        if _get(old_d, k) != _get(new_d, k)
    }
    if not changed:
        return cfg, {}
    names, si, epoch = _progress(new, run_dir)
    for key, change in changed.items():
        section, name = key.split(".")
        if section == "train":
            continue
        idx = [i for i, n in enumerate(names) if _SECTION_OF_STAGE.get(n) == section]
        if not idx:
            reused = section == "module1" and cfg.module1.init_from
            why = " (its Module 1 is reused from module1.init_from)" if reused else ""
            raise ConfigError(
                f"--set {key}: method {cfg.method!r} has no {section} stage in this run{why}; stages: "
                f"{', '.join(names)}"
            )
        if idx[0] < si:
            running = f"{names[si]} is running" if si < len(names) else "every stage has finished"
            raise ConfigError(
                f"--set {key}: stage {names[idx[0]]} has already finished in {str(run_dir)!r} "
                f"({running}); only a stage that has not finished can change"
            )
        if idx[0] == si and name == "epochs" and change["to"] < epoch:
            raise ConfigError(
                f"--set {key}={change['to']}: stage {names[si]} has already run {epoch} epochs in "
                f"{str(run_dir)!r}; pass {epoch} or more"
            )
    at = names[si] if si < len(names) else "finished"
    return new, {"changes": changed, "stage": at, "epoch": epoch}


def record_resume_overrides(run_dir: Path, cfg: DistillConfig, plan: dict[str, Any]) -> None:
    """Append ``plan`` (with the time) to ``RUN/resume_overrides.json``, then rewrite ``config.yaml`` atomically."""
    entry = {"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **plan}
    history = read_resume_overrides(run_dir)
    atomic_write_json(run_dir / RECORD, [*history, entry])
    save_config(cfg, run_dir / "config.yaml")
    text = ", ".join(f"{k} {v['from']} → {v['to']}" for k, v in plan["changes"].items())
    logger.info("resume: %s (at %s epoch %d; recorded in %s)", text, plan["stage"], plan["epoch"], run_dir / RECORD)


def read_resume_overrides(run_dir: Path) -> list[dict[str, Any]]:
    """The changes made on earlier resumes of ``run_dir`` (``[]`` when there were none)."""
    path = run_dir / RECORD
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{str(path)!r} is unreadable ({exc}); move it away to resume") from exc
    return list(data) if isinstance(data, list) else []
