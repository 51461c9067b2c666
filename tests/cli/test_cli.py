"""CLI behaviour: exit codes, one-line errors, no tracebacks for user errors."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from augkd.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, list(args))


def _assert_one_line_error(res, pattern):
    assert res.exit_code != 0
    out = res.output
    assert "Traceback" not in out
    assert pattern in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_help_lists_commands():
    res = _run("--help")
    assert res.exit_code == 0
    for cmd in ("distill", "compare", "teacher", "eval", "doctor"):
        assert cmd in res.output


def test_distill_bad_set_is_one_line_error(tmp_path):
    res = _run("distill", "-c", "configs/smoke.yaml", "--set", "module3.epoch=3", "--out", str(tmp_path / "r"))
    _assert_one_line_error(res, "did you mean 'module3.epochs'")
    res = _run("distill", "--set", "nokeyvalue", "--out", str(tmp_path / "r"))
    _assert_one_line_error(res, "expected KEY=VALUE")


def test_distill_unknown_architecture(tmp_path):
    res = _run("distill", "-c", "configs/smoke.yaml", "--set", "student.arch=resnet_34", "--out", str(tmp_path / "r"))
    _assert_one_line_error(res, "unknown architecture 'resnet_34'")


def test_missing_paths(tmp_path):
    res = _run("distill", "-c", str(tmp_path / "none.yaml"))
    _assert_one_line_error(res, "config file not found")
    res = _run("eval", str(tmp_path / "missing.safetensors"))
    _assert_one_line_error(res, "checkpoint not found")
    res = _run(
        "distill",
        "-c",
        "configs/smoke.yaml",
        "--set",
        f"data.dataset={tmp_path / 'nodata'}",
        "--out",
        str(tmp_path / "r2"),
    )
    _assert_one_line_error(res, "neither a built-in")
    res = _run("distill", "--resume", str(tmp_path))
    _assert_one_line_error(res, "cannot resume")


def test_wrong_class_count_is_an_error(tmp_path):
    import numpy as np
    from PIL import Image

    for c in ("a", "b", "c"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "d" / c / f"{i}.png")
    res = _run(
        "distill", "-c", "configs/smoke.yaml", "--set", f"data.dataset={tmp_path / 'd'}", "--out", str(tmp_path / "r")
    )
    _assert_one_line_error(res, "has 10 classes but dataset")


def test_eval_builtin_teacher_json():
    res = _run("eval", "ccexam-svhn", "--data", "digits", "--split", "test", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["arch"] == "ccexam-svhn" and 0.3 < out["acc1"] <= 1.0 and out["n"] > 100


def test_doctor_is_truthful_here():
    res = _run("doctor", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)["environment"]
    import torch

    assert info["cuda_available"] == torch.cuda.is_available()
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]["loaded"]
    if not torch.cuda.is_available():
        assert info["tensorrt_usable"] is False
        assert "CUDAExecutionProvider" not in info["onnxruntime_providers"]["loaded"]


def test_console_script_and_module_entry_points():
    env = {**os.environ, "AUGKD_KERNEL_BACKEND": "torch"}
    res = subprocess.run(
        [sys.executable, "-m", "augkd", "distill", "--set", "module3.epoch=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr and "did you mean" in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and len(lines) == 2  # the error line + the AUGKD_DEBUG hint
    dbg = subprocess.run(
        [sys.executable, "-m", "augkd", "distill", "--set", "module3.epoch=1"],
        capture_output=True,
        text=True,
        env={**env, "AUGKD_DEBUG": "1"},
        timeout=120,
    )
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr


@pytest.mark.parametrize("cmd", ["distill", "teacher", "eval", "compare", "doctor"])
def test_each_command_has_help(cmd):
    assert _run(cmd, "--help").exit_code == 0


def test_import_is_lean():
    code = (
        "import sys, augkd, augkd.cli; bad = [m for m in ('triton', 'onnx', 'onnxruntime', 'tensorrt') "
        "if m in sys.modules]; import torch; print(bad, torch.cuda.is_initialized())"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[] False", res.stdout + res.stderr


def test_bench_kernels_cli(tmp_path):
    out = tmp_path / "k.csv"
    res = _run(
        "bench",
        "kernels",
        "--quick",
        "--ops",
        "uncertainty",
        "--providers",
        "torch",
        "--modes",
        "forward",
        "--out",
        str(out),
        "--json",
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows and {r["op"] for r in rows} == {"uncertainty"} and out.is_file()
    assert all(r["p50"] > 0 for r in rows if r["metric"] == "time")
    res = _run("bench", "kernels", "--ops", "nope")
    _assert_one_line_error(res, "nope")
