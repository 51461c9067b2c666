"""TensorRT: real checks where TensorRT and a GPU exist, the missing-dependency path elsewhere; lean imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from augkd.errors import MissingDependencyError
from augkd.export.tensorrt import require_tensorrt, tensorrt_available, tensorrt_selftest

pytestmark = pytest.mark.export

_OK, _FOUND = tensorrt_available()
_SKIP = f"TensorRT export needs a CUDA GPU and the 'tensorrt' extra: pip install 'augkd[tensorrt]' (found: {_FOUND})"


@pytest.mark.skipif(_OK, reason="TensorRT and a GPU are present here")
def test_tensorrt_missing_is_reported():
    with pytest.raises(MissingDependencyError) as info:
        require_tensorrt()
    msg = str(info.value)
    assert "\n" not in msg and "pip install 'augkd[tensorrt]'" in msg and f"(found: {_FOUND})" in msg
    result = tensorrt_selftest()
    assert result == {"status": "skipped", "reason": msg}


@pytest.mark.gpu
@pytest.mark.skipif(not _OK, reason=_SKIP)
def test_tensorrt_selftest_passes():
    result = tensorrt_selftest()
    assert result["status"] == "ok", result
    assert {(c["precision"], c["batch"]) for c in result["checks"]} == {("fp32", 1), ("fp32", 5), ("fp16", 1),
                                                                       ("fp16", 5)}  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not _OK, reason=_SKIP)
def test_tensorrt_export_fp16_and_int8(digits_student, tmp_path):
    from augkd.export import export_model

    report = export_model(digits_student, ["tensorrt-fp16", "tensorrt-int8"], tmp_path, exporter="legacy",
                          calibration=128, latency_batches=(1, 8), latency_iters=5)  # fmt: skip
    for fmt in ("tensorrt-fp16", "tensorrt-int8"):
        art = report.artifact(fmt)
        assert (tmp_path / art.file).is_file()
        assert art.accuracy.drop_points <= 1.0
        assert art.parity.top1_agreement >= 0.95
    assert (tmp_path / "trt_timing.cache").is_file()
    assert {r.backend for r in report.latency} >= {"tensorrt-fp16", "tensorrt-int8"}


def test_import_augkd_export_is_lean():
    """`import augkd.export` (and resolving its public names) loads no onnx, onnxruntime or tensorrt."""
    code = (
        "import sys, augkd.export as e; e.export_model; e.measure_latency; e.export_onnx; e.tensorrt_selftest; "
        "print([m for m in ('onnx', 'onnxruntime', 'tensorrt', 'onnxslim', 'onnxscript') if m in sys.modules])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout + res.stderr
