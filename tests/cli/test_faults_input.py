"""Bad input through the CLI: one `error:` line, a non-zero exit, no traceback, the run directory untouched.

One test per bad case of issue 13 ("the bad ones" 1, 2, 4, 5 and the partial cases of 6). The resume
tests share one interrupted `kd` run of the smoke preset (two of four epochs done), copied per test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from augkd.cli import app
from augkd.config import load_config

SMOKE = "configs/smoke.yaml"
runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _flat(text: str) -> str:
    """Log output with rich's line wrapping undone."""
    return " ".join(text.split())


def _snapshot(d: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``d``: (mtime, sha256)."""
    return {
        str(p.relative_to(d)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def _image_folder(root: Path, classes: list[str], per_class: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _list_file(tmp: Path, labels: list[int]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp / "img").mkdir()
    lines = ["# path label"]
    for i, y in enumerate(labels):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp / "img" / f"{i}.png")
        lines.append(f"img/{i}.png {y}")
    (tmp / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp / "list.txt"


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    """A smoke `kd` run (4 epochs) stopped after its second epoch: checkpoints/state.pt holds epoch 2."""
    from augkd.training import distill

    run = tmp_path_factory.mktemp("partial") / "run"
    cfg = load_config(SMOKE, ["method=kd", "kd.epochs=4", "train.save_images=false"])

    def stop(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUGKD_KERNEL_BACKEND", "torch")
        with pytest.raises(KeyboardInterrupt):
            distill(cfg, run, on_epoch_end=[stop])
    assert (run / "checkpoints" / "state.pt").is_file() and not (run / "student.safetensors").exists()
    return run


@pytest.fixture
def run_copy(partial_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(partial_run, dst)
    return dst


# 1. class names are checked against the teacher's ------------------------------------------------


def test_class_folders_named_differently_from_teacher(tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    folder = _image_folder(tmp_path / "domain", names)
    run = tmp_path / "run"
    res = _run("distill", "-c", SMOKE, "--method", "kd", "--set", f"data.dataset={folder}", "--out", run, "-q")
    line = assert_one_line_error(res, "differ from the classes of teacher 'ccexam-svhn'")
    assert "[eight, five, four, nine, one, seven, six, three, two, zero]" in line  # the folders, sorted
    assert "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in line  # the teacher's
    assert not (run / "checkpoints").exists() and not (run / "student.safetensors").exists()


def test_teacher_without_class_names_checks_the_count_only(tmp_path):
    from augkd.checkpoint import ModelMeta, save_model
    from augkd.data import load_domain
    from augkd.models import create_model
    from augkd.training.pipeline import load_teacher

    teacher = save_model(
        create_model("cnn_tiny", 10, width=4),
        tmp_path / "t.safetensors",
        ModelMeta(arch="cnn_tiny", num_classes=10, model_kwargs={"width": 4}),
    )
    folder = _image_folder(tmp_path / "domain", [f"c{i}" for i in range(10)], per_class=3)
    cfg = load_config(SMOKE, [f"teacher.checkpoint={teacher}", f"data.dataset={folder}", "data.shots_per_class=null"])
    data = load_domain(cfg.data)
    load_teacher(cfg, data)  # no names in the sidecar: any folder names, 10 classes
    builtin = load_config(SMOKE)  # ccexam-svhn ("0".."9") on digits ("0".."9")
    load_teacher(builtin, load_domain(builtin.data))


# 2. --resume with --set / -c, and NaN messages true to the run --------------------------------------


def test_resume_refuses_a_config_file(run_copy):
    before = _snapshot(run_copy)
    res = _run("distill", "--resume", run_copy, "-c", SMOKE, "-q")
    assert_one_line_error(res, "-c/--config cannot be used with --resume", "kd.lr")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.split_seed=3", "--set data.split_seed cannot change when a run resumes: with --resume only"),
        ("kd.epochs=1", "--set kd.epochs=1: stage kd has already run 2 epochs"),
        ("module3.lr=0.1", "method 'kd' has no module3 stage"),
    ],
)
def test_resume_refuses_unsafe_overrides(run_copy, override, message):
    before = _snapshot(run_copy)
    res = _run("distill", "--resume", run_copy, "--set", override, "-q")
    assert_one_line_error(res, message)
    assert _snapshot(run_copy) == before


def test_resume_applies_and_records_safe_overrides(run_copy):
    res = _run("distill", "--resume", run_copy, "--set", "kd.lr=5e-3", "--set", "kd.epochs=3", "--json", "-q")
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert cfg["kd"]["lr"] == 0.005 and cfg["kd"]["epochs"] == 3
    record = json.loads((run_copy / "resume_overrides.json").read_text())
    assert len(record) == 1 and record[0]["stage"] == "kd" and record[0]["epoch"] == 2 and record[0]["time"]
    assert record[0]["changes"] == {"kd.lr": {"from": 0.01, "to": 0.005}, "kd.epochs": {"from": 4, "to": 3}}
    assert json.loads((run_copy / "summary.json").read_text())["resume_overrides"] == record
    rows = (run_copy / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["kd", "0"], ["kd", "1"], ["kd", "2"]]  # 3 epochs, not 4
    from augkd.training.resume import RESUME_KEYS

    help_text = _flat(_run("distill", "--help").output)
    assert all(k in help_text for k in RESUME_KEYS)


def test_resumed_stage_takes_the_new_learning_rate_and_epochs():
    """The checkpoint's optimiser keeps its moments and the schedule its position; the lr base and the cosine
    length come from the (overridden) config. A plain resume is unchanged."""
    from augkd.training.stages import SupervisedStage

    net = torch.nn.Linear(2, 2)

    def stage(lr, epochs):
        st = SupervisedStage(epochs, use_teacher=True, name="kd")
        st.setup(SimpleNamespace(nets={"student": net}, cfg=load_config(SMOKE, [f"kd.lr={lr}"])))
        return st

    a = stage(0.01, 4)
    for _ in range(2):
        a.optimizers["student"].step()
        a.schedulers["student"].step()
    lr_a, state = a.optimizers["student"].param_groups[0]["lr"], a.state_dict()
    same = stage(0.01, 4)
    same.load_state_dict(state)
    assert same.optimizers["student"].param_groups[0]["lr"] == lr_a and same.schedulers["student"].T_max == 4
    b = stage(0.005, 6)
    b.load_state_dict(state)
    assert b.optimizers["student"].param_groups[0]["lr"] == pytest.approx(lr_a / 2)
    assert b.schedulers["student"].get_last_lr()[0] == pytest.approx(lr_a / 2)  # what metrics.csv logs
    saved = state["schedulers"]["student"]  # the checkpoint itself is not edited
    assert saved["base_lrs"] == [0.01] and saved["_last_lr"][0] == lr_a
    assert b.schedulers["student"].T_max == 6 and b.schedulers["student"].last_epoch == 2
    b.optimizers["student"].step()
    b.schedulers["student"].step()
    step = (1 + math.cos(math.pi * 3 / 6)) / (1 + math.cos(math.pi * 2 / 6))  # the 6-epoch cosine from epoch 2
    assert b.optimizers["student"].param_groups[0]["lr"] == pytest.approx(lr_a / 2 * step)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_nan_before_any_checkpoint_says_there_is_nothing_to_resume(tmp_path, precision):
    run = tmp_path / "nan"
    res = _run(
        "distill",
        "-c",
        SMOKE,
        "--method",
        "kd",
        "--set",
        "kd.lr=1e30",
        "--set",
        "kd.epochs=3",
        "--set",
        f"train.precision={precision}",
        "--set",
        "train.save_images=false",
        "--out",
        run,
        "-q",
    )
    line = assert_one_line_error(
        res, "loss became nan in kd", "no epoch completed", "there is no checkpoint to resume from", "--set kd.lr=1e+29"
    )
    assert "last good checkpoint" not in line and not (run / "checkpoints" / "state.pt").exists()
    assert ("train.precision=fp32" in line) == (precision != "fp32")  # fp32 is advised only when not in fp32


def test_nan_after_a_checkpoint_keeps_it_and_advises_a_working_resume(run_copy):
    state = run_copy / "checkpoints" / "state.pt"
    before = _snapshot(run_copy / "checkpoints")
    res = _run("distill", "--resume", run_copy, "--set", "kd.lr=1e30", "-q")
    line = assert_one_line_error(
        res,
        "loss became nan in kd",
        f"the last good checkpoint is kept in {state}",
        f"`augkd distill --resume {run_copy} --set kd.lr=1e+29`",
    )
    assert "train.precision=fp32" not in line  # the run is already fp32
    assert _snapshot(run_copy / "checkpoints") == before  # the last good checkpoint is intact


# 4. `augkd eval` on files that are not checkpoints --------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text.pt", "is a text file, not a torch checkpoint (no zip/pickle header)"),
        ("config.yaml", "is a YAML text file, not a torch checkpoint (no zip/pickle header)"),
        ("tensor.pt", "holds a Tensor of shape [4, 4], not a state_dict of tensors"),
    ],
)
def test_eval_says_what_the_file_is_not(tmp_path, kind, message):
    path = tmp_path / kind
    if kind == "text.pt":
        path.write_text("hello")  # 5 bytes
    elif kind == "config.yaml":
        shutil.copy(SMOKE, path)
    else:
        torch.save(torch.randn(4, 4), path)
    before = _snapshot(tmp_path)
    line = assert_one_line_error(_run("eval", path), message)
    assert "arbitrary code" not in line
    assert _snapshot(tmp_path) == before


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_eval_still_refuses_a_malicious_pickle(tmp_path):
    """A guard, not a regression: a pickle that would run code is refused as one, and never runs."""
    marker = tmp_path / "pwned"
    torch.save({"w": _Payload(marker)}, tmp_path / "evil.pt")
    assert_one_line_error(_run("eval", tmp_path / "evil.pt"), "is a pickle that needs arbitrary code to load")
    assert not marker.exists()


# 5. an empty split is a config error ------------------------------------------------------------------


@pytest.mark.parametrize(("split", "empty"), [("[0.9,0.1,0.0]", "test"), ("[0.9,0.0,0.1]", "eval")])
def test_empty_split_is_a_config_error_before_training(tmp_path, split, empty):
    run = tmp_path / "run"
    res = _run("distill", "-c", SMOKE, "--set", f"data.split={split}", "--out", run, "-q")
    assert_one_line_error(res, f"leaves the {empty} split empty", "data.split=[0.8,0.1,0.1]")
    assert not run.exists()  # refused before anything is written


# 6. the partial cases ---------------------------------------------------------------------------------


def test_list_file_label_outside_the_teachers_classes(tmp_path):
    labels = [c for c in range(10) for _ in range(3)]
    labels.insert(7, 15)  # row 8 of the images, line 9 of the file (after the comment)
    lst = _list_file(tmp_path, labels)
    res = _run("distill", "-c", SMOKE, "--method", "kd", "--set", f"data.dataset={lst}", "--out", tmp_path / "r", "-q")
    assert_one_line_error(res, f"{str(lst)!r} line 9: label 15 is outside the classes 0..9")


def test_list_file_class_without_rows(tmp_path):
    lst = _list_file(tmp_path, [c for c in range(10) if c != 3 for _ in range(3)])
    res = _run("distill", "-c", SMOKE, "--method", "kd", "--set", f"data.dataset={lst}", "--out", tmp_path / "r", "-q")
    assert_one_line_error(res, "has no rows for class 3 of 0..9")


def test_shots_per_class_above_the_smallest_class_warns():
    res = _run("eval", "ccexam-svhn", "--data", "digits", "--set", "data.shots_per_class=1000", "--json")
    assert res.exit_code == 0, res.output
    log = _flat(res.stderr)
    assert "data.shots_per_class=1000 is more than class" in log and "has for training" in log, res.stderr
    assert "10 of 10 classes use all their training images" in log


def test_yaml_syntax_error_gives_file_line_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: kd\nmodule3: {epochs: 3\ntrain:\n  seed: 1\n")
    res = _run("distill", "-c", bad, "--out", tmp_path / "r")
    assert_one_line_error(res, f"{bad}:3:6: ")


def test_teacher_without_config_says_what_it_trains(tmp_path, monkeypatch):
    import augkd.teacher

    seen = {}

    def fake(cfg, out_dir, progress=None):
        seen["cfg"] = cfg
        return {"teacher": str(out_dir / "teacher.safetensors"), "best_epoch": 0, "eval_acc1": 0.5}

    monkeypatch.setattr(augkd.teacher, "train_teacher", fake)
    res = _run("teacher", "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (
        f"no -c config: training the default teacher, {cfg.model.arch} on {cfg.data.dataset} for "
        f"{cfg.epochs} epochs" in _flat(res.stderr)
    ), res.stderr
