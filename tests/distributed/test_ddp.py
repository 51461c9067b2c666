"""Data-parallel distillation with real processes (gloo on CPU, loopback only), on the smoke preset."""

import csv
import json
import shutil
import sys

import pytest
from dist_helpers import WORKER, dist_env, free_port, run, torchrun
from typer.testing import CliRunner

from augkd.cli import app
from augkd.config import load_config

SMOKE = "configs/smoke.yaml"

TIMING = ("train_s", "eval_s")


def _rows(path):
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def _augkd_eval(run_dir, split):
    res = CliRunner().invoke(app, ["eval", str(run_dir), "--split", split, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _only_json(stdout):
    """The command printed exactly one JSON document (only rank 0 reports)."""
    doc, end = json.JSONDecoder().raw_decode(stdout.strip())
    assert stdout.strip()[end:].strip() == "", "more than one process printed a result"
    return doc


@pytest.mark.usefixtures("loopback")
def test_two_processes_augkd_run_then_resume_with_one_and_two(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p = torchrun(2, "augkd", str(out))
    assert p.returncode == 0, p.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    run_dir = out / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["fabric_precision"] == "32-true"
    for r in ranks:
        assert r["backend"] == "gloo" and r["world_size"] == 2
        assert r["teacher_unchanged"] and not r["teacher_requires_grad"]  # weights and BN statistics
        assert not r["teacher_set_up"], "the frozen teacher was set up by Fabric (DDP-wrapped)"
        assert r["setup_modules"] == ["SmallCNN", "Generator", "Encoder", "AnchorNet", "SmallCNN"]
        assert r["test"] == summary["test"]  # every rank reports the same all-reduced metrics
    assert ranks[0]["latent_sum"] != ranks[1]["latent_sum"]  # seed + rank: different latents per rank
    rows = _rows(run_dir / "metrics.csv")
    assert [r["stage"] for r in rows].count("module3") == load_config(SMOKE).module3.epochs
    # the reported accuracies are over the whole split: `augkd eval` on the saved student agrees
    test = _augkd_eval(run_dir, "test")
    assert test["n"] == summary["test"]["n"]
    assert test["acc1"] == pytest.approx(summary["test"]["acc1"], abs=1e-12)
    best_m3 = max(float(r["eval_acc1"]) for r in rows if r["stage"] == "module3")
    assert _augkd_eval(run_dir, "eval")["acc1"] == pytest.approx(best_m3, abs=1e-5)  # csv keeps 6 digits

    # the snapshot holds the checkpoint written after Module 3 epoch 5 by 2 processes
    snap1, snap2 = out / "snap", out / "snap2"
    shutil.copytree(snap1, snap2)
    env = dist_env()
    one = run([sys.executable, "-m", "augkd", "distill", "--resume", str(snap1), "--json", "-q"], env)
    assert one.returncode == 0, one.stderr[-4000:]
    res1 = _only_json(one.stdout)
    assert res1["world_size"] == 1
    resumed = _rows(snap1 / "metrics.csv")
    assert [r["stage"] for r in resumed] == [r["stage"] for r in rows]
    cut = next(i for i, r in enumerate(rows) if (r["stage"], r["epoch"]) == ("module3", "6"))
    assert resumed[:cut] == rows[:cut]  # Modules 1 and 2 and Module 3 epochs 0-5 come from the checkpoint
    assert _augkd_eval(snap1, "test")["acc1"] == pytest.approx(res1["test"]["acc1"], abs=1e-12)

    # the same number of processes resumes exactly (per-rank RNG states in the checkpoint); this one is
    # launched by Fabric itself from the CLI (--devices 2), not by torchrun
    two = run(
        [
            sys.executable,
            "-m",
            "augkd",
            "distill",
            "--resume",
            str(snap2),
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--json",
            "-q",
        ],
        dist_env(free_port()),
    )
    assert two.returncode == 0, two.stderr[-4000:]
    res2 = _only_json(two.stdout)
    assert res2["world_size"] == 2
    assert res2["test"] == summary["test"]
    assert _rows(snap2 / "metrics.csv") == rows


@pytest.mark.usefixtures("loopback")
def test_two_processes_with_batch_b_match_one_process_with_batch_2b(tmp_path):
    """kd, fixed seeds, no augmentation, a student without BatchNorm/dropout: the global batch of the two
    ranks at step i is the single-process batch i (same permutation, strided shards), and DDP averages
    the gradients, so the losses of every step agree to float rounding."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    p1 = run([sys.executable, WORKER, "kd", str(one), "32"], dist_env())
    assert p1.returncode == 0, p1.stderr[-4000:]
    p2 = torchrun(2, "kd", str(two), "16")
    assert p2.returncode == 0, p2.stderr[-4000:]
    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["world_size"] == 1 and ranks[0]["world_size"] == 2
    assert ranks[0]["steps"] == ranks[1]["steps"]  # the callback sees rank-averaged losses
    a, b = single["steps"], ranks[0]["steps"]
    n_train = len(json.loads((one / "run" / "split.json").read_text())["train"])
    assert n_train % 32 != 0  # the last batch is partial (smoke: 300 = 9 × 32 + 12 = 9 × 2 × 16 + 2 × 6)
    assert len(a) == len(b) == 2 * -(-n_train // 32)  # 2 epochs; the second shuffles again
    assert [(s["epoch"], s["step"]) for s in a] == [(s["epoch"], s["step"]) for s in b]
    for sa, sb in zip(a, b, strict=True):
        assert sb["loss"] == pytest.approx(sa["loss"], rel=5e-5), (sa, sb)
