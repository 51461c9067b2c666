"""``augkd teacher`` on the engine: a killed run resumes exactly, and its outputs are all written.

The reference and the interrupted runs are separate processes with the same environment (one thread), so
the resumed run must give the reference's per-epoch metrics and the same teacher weights bit for bit.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from augkd.checkpoint import load_state_dict_file, read_meta
from augkd.config import TeacherTrainConfig, load_config
from augkd.errors import InputError
from augkd.teacher import TeacherStage, train_teacher

ROOT = Path(__file__).resolve().parents[2]
# 4 epochs of the tiny CNN on sklearn's digits: long enough to be killed after 2, seconds in all
SETS = ["model.arch=cnn_tiny", "data.dataset=digits", "epochs=4", "lr=3e-3", "train.batch_size=64"]
OUTPUTS = ("teacher.safetensors", "teacher.json", "config.yaml", "split.json", "summary.json", "metrics.csv")


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "AUGKD_KERNEL_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "augkd", "teacher", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return json.loads(out)


def _epochs_done(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    with metrics.open(newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_state_dict_file(run / "teacher.safetensors")


def test_killed_teacher_run_resumes_exactly(tmp_path):
    sets = [a for s in SETS for a in ("--set", s)]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    expected = _finish(_cli(*sets, "--out", str(ref), "--json", "-q"))
    assert len(expected["history"]) == 4
    p = _cli(*sets, "--out", str(killed), "--json", "-q")
    deadline = time.time() + 600
    while _epochs_done(killed / "metrics.csv") < 2:
        if p.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        if time.time() > deadline:
            p.kill()
            pytest.fail("no epoch finished in time")
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (killed / "checkpoints" / "state.pt").is_file() and not (killed / "teacher.safetensors").exists()
    done = _epochs_done(killed / "metrics.csv")
    assert done < 4, "killed after the last epoch: nothing left to resume"

    # a new run into the unfinished directory is refused (it would throw the epochs away)
    refused = _cli(*sets, "--out", str(killed), "-q")
    _, err = refused.communicate(timeout=600)
    assert refused.returncode != 0 and "unfinished teacher run" in err and "--resume" in err, err
    assert "Traceback" not in err

    resumed = _finish(_cli("--resume", str(killed), "--json", "-q"))
    assert resumed["history"] == expected["history"]  # every epoch, the killed ones and the resumed ones
    assert {k: v for k, v in resumed.items() if k != "teacher"} == {k: v for k, v in expected.items() if k != "teacher"}
    assert resumed["teacher"] == str(killed / "teacher.safetensors")
    a, b = _weights(ref), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in OUTPUTS:
        assert (killed / name).is_file(), name
    assert json.loads((killed / "summary.json").read_text()) == resumed
    meta = read_meta(killed / "teacher.json")
    assert meta.extra["best_epoch"] == resumed["best_epoch"] and meta.metrics["eval_acc1"] == resumed["eval_acc1"]
    assert _epochs_done(killed / "metrics.csv") == 4


def test_interrupted_teacher_resumes_in_process(tmp_path, monkeypatch):
    """The library call: an exception in epoch 2 leaves a checkpoint of epochs 0-1; ``resume=True`` finishes the
    run as an uninterrupted one; a finished run resumes to the same teacher and a new run may replace it."""
    cfg = load_config(None, SETS, model=TeacherTrainConfig)
    expected = train_teacher(cfg, tmp_path / "ref")
    real = TeacherStage.validate

    def interrupted(self, ctx, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, ctx, epoch)

    run = tmp_path / "run"
    monkeypatch.setattr(TeacherStage, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(cfg, run)
    monkeypatch.setattr(TeacherStage, "validate", real)
    assert _epochs_done(run / "metrics.csv") == 2 and not (run / "teacher.safetensors").exists()
    with pytest.raises(InputError, match="unfinished teacher run"):
        train_teacher(cfg, run)
    res = train_teacher(None, run, resume=True)
    assert res["history"] == expected["history"] and res["best_epoch"] == expected["best_epoch"]
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    (run / "teacher.safetensors").unlink()
    again = train_teacher(None, run, resume=True)  # finished: nothing to train, the same teacher is written
    assert again["history"] == res["history"] and all(torch.equal(a[k], v) for k, v in _weights(run).items())
    # a new run into a finished directory starts over, as `augkd teacher` always did
    fresh = train_teacher(load_config(None, [*SETS, "epochs=2"], model=TeacherTrainConfig), run)
    assert len(fresh["history"]) == 2 and fresh["history"][0] == expected["history"][0]
    with pytest.raises(InputError, match="cannot resume"):
        train_teacher(None, tmp_path / "none", resume=True)
