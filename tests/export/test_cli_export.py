"""`augkd export` / `augkd bench latency` through the CLI: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from cli_checks import assert_one_line_error
from stat_gates import assert_reduced_precision_ok

from augkd.cli import app
from augkd.export.tensorrt import tensorrt_available

pytestmark = pytest.mark.export
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_export_missing_checkpoint(tmp_path):
    res = _run("export", tmp_path / "nope" / "student.safetensors")
    assert_one_line_error(res, "checkpoint not found")


def test_export_corrupt_checkpoint(tmp_path, digits_student):
    bad = tmp_path / "student.safetensors"
    bad.write_bytes(b"\x00garbage, not a safetensors header" * 10)
    shutil.copy(digits_student.with_suffix(".json"), tmp_path / "student.json")
    assert_one_line_error(_run("export", bad), "not a readable safetensors file")


def test_export_unknown_format(digits_student, tmp_path):
    res = _run("export", digits_student, "--format", "onnx,tflite", "--out", tmp_path)
    assert_one_line_error(res, "unknown export format 'tflite'")
    assert not (tmp_path / "model.onnx").exists()  # rejected before any work


@pytest.mark.parametrize(
    "args, pattern",
    [
        (("--atol", "-1"), "--atol must be >= 0, got -1.0"),
        (("--min-agreement", "99.9"), "--min-agreement is a fraction in [0, 1], got 99.9"),
        (("--calibration-method", "kl"), "unknown calibration method 'kl': use one of minmax, percentile, entropy"),
        (("--opset", "13"), "ONNX opset 13 is too old: use --opset 17 or newer"),
        (("--exporter", "jit"), "unknown ONNX exporter 'jit': use one of auto, dynamo, legacy"),
    ],
)
def test_export_bad_option_is_one_line_before_any_work(digits_student, tmp_path, args, pattern):
    res = _run("export", digits_student, *args, "--out", tmp_path / "out")
    assert_one_line_error(res, pattern)
    assert not (tmp_path / "out").exists()  # rejected before the checkpoint is even loaded


@pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT and a GPU are present here")
def test_export_tensorrt_without_tensorrt(digits_student, tmp_path):
    res = _run("export", digits_student, "--format", "tensorrt-fp16", "--out", tmp_path)
    assert_one_line_error(
        res, "TensorRT export needs a CUDA GPU and the 'tensorrt' extra: pip install 'augkd[tensorrt]'"
    )
    assert "(found: " in res.stderr
    assert not (tmp_path / "model.onnx").exists()


def test_export_parity_failure_is_one_line(digits_student, tmp_path):
    res = _run(
        "export",
        digits_student,
        "--format",
        "onnx",
        "--exporter",
        "legacy",
        "--atol",
        "1e-12",
        "--no-latency",
        "--out",
        tmp_path,
        "-q",
    )
    assert_one_line_error(res, "export check failed: onnx: max |Δ|")
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "export_report.md").is_file()


def test_export_json_success(digits_student, tmp_path):
    # --max-acc-drop 100: the product's gate is off here; the int8 accuracy is judged below by a gate sized to
    # these 64 images (one image is 1.56 points: a 1-point gate failed on Intel AMX CPUs on one flipped image)
    res = _run(
        "export",
        digits_student,
        "--exporter",
        "legacy",
        "--no-latency",
        "--parity-samples",
        "64",
        "--calibration",
        "64",
        "--max-acc-drop",
        "100",
        "--out",
        tmp_path,
        "--json",
        "-q",
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] is True
    assert [a["format"] for a in report["artifacts"]] == ["onnx", "ort-int8"]
    int8 = report["artifacts"][1]
    assert int8["accuracy"]["samples"] == 64
    assert_reduced_precision_ok(64, int8["parity"]["top1_agreement"], int8["accuracy"]["drop_points"])
    assert report["data"]["parity_samples"] == 64 and report["data"]["calibration_samples"] == 64
    assert (tmp_path / "model.int8.onnx").is_file()


def test_bench_latency_cli(digits_student, tmp_path):
    res = _run(
        "bench",
        "latency",
        digits_student,
        "--backends",
        "torch,ort",
        "--batch",
        "1,3",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--out",
        tmp_path,
        "--json",
        "-q",
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert [(r["backend"], r["batch_size"]) for r in result["rows"]] == [
        ("torch", 1),
        ("torch", 3),
        ("ort", 1),
        ("ort", 3),
    ]
    ort_row = result["rows"][2]
    assert ort_row["provider"] == "CPUExecutionProvider" and ort_row["threads"] == result["settings"]["threads"]
    assert result["rows"][0]["threads"] == result["settings"]["threads"]
    assert "test split" in result["notes"][0]
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"latency.{ext}").stat().st_size > 0
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, pattern",
    [(("--backends", "torch,onnx"), "unknown backend 'onnx'"), (("--batch", "1,x"), "batch sizes must be positive")],
)
def test_bench_latency_bad_options(digits_student, tmp_path, args, pattern):
    assert_one_line_error(_run("bench", "latency", digits_student, *args, "--out", tmp_path), pattern)


def test_export_and_bench_help():
    assert _run("export", "--help").exit_code == 0
    assert _run("bench", "latency", "--help").exit_code == 0
