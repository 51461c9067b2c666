"""`augkd teacher`, `augkd distill` and `augkd eval` through the CLI on tiny data."""

import json

from typer.testing import CliRunner

from augkd.cli import app

runner = CliRunner()


def test_teacher_then_distill_then_eval(tmp_path):
    teacher_dir = tmp_path / "teacher"
    res = runner.invoke(
        app,
        [
            "teacher",
            "--set",
            "model.arch=cnn_small",
            "--set",
            "data.dataset=digits",
            "--set",
            "lr=3e-3",
            "--set",
            "epochs=3",
            "--set",
            "train.batch_size=64",
            "--out",
            str(teacher_dir),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (teacher_dir / "teacher.safetensors").is_file() and (teacher_dir / "teacher.json").is_file()
    assert out["eval_acc1"] > 0.2 and len(out["history"]) == 3
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "distill",
            "-c",
            "configs/smoke.yaml",
            "--method",
            "kd",
            "--set",
            f"teacher.checkpoint={teacher_dir / 'teacher.safetensors'}",
            "--set",
            "train.save_images=false",
            "--out",
            str(run),
            "--json",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    distilled = json.loads(res.stdout)
    res = runner.invoke(app, ["eval", str(run), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    # the saved student, re-evaluated on the run's own test split, gives the run's reported accuracy
    assert abs(ev["acc1"] - distilled["test"]["acc1"]) < 1e-9 and ev["n"] == distilled["test"]["n"]
    res = runner.invoke(app, ["eval", str(run / "student.safetensors"), "--split", "all", "--json"])
    split = json.loads((run / "split.json").read_text())
    assert res.exit_code == 0 and json.loads(res.stdout)["n"] == sum(len(split[k]) for k in ("train", "eval", "test"))
