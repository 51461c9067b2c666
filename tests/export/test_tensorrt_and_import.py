"""TensorRT: real checks where TensorRT and a GPU exist, the missing-dependency path elsewhere; lean imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
from stat_gates import assert_reduced_precision_ok

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
    assert {(c["precision"], c["batch"]) for c in result["checks"]} == {
        ("fp32", 1),
        ("fp32", 5),
        ("fp16", 1),
        ("fp16", 5),
    }


@pytest.mark.gpu
@pytest.mark.skipif(not _OK, reason=_SKIP)
def test_tensorrt_export_fp16_and_int8(digits_student, tmp_path):
    from augkd.export import export_model

    cfg = {
        "formats": ["tensorrt-fp16", "tensorrt-int8"],
        "onnx": {"exporter": "legacy"},
        "int8": {"calibration": 128},
        "latency": {"batches": (1, 8), "iters": 5},
        "checks": {"max_acc_drop": 100.0},
    }
    report = export_model(digits_student, cfg, tmp_path)
    for fmt in ("tensorrt-fp16", "tensorrt-int8"):
        art = report.artifact(fmt)
        assert (tmp_path / art.file).is_file()
        assert_reduced_precision_ok(art.accuracy.samples, art.parity.top1_agreement, art.accuracy.drop_points, fmt)
        assert art.parity.top1_agreement >= 0.95
    assert (tmp_path / "trt_timing.cache").is_file()
    assert {r.backend for r in report.latency} >= {"tensorrt-fp16", "tensorrt-int8"}


def test_import_augkd_export_is_lean():
    """`import augkd.export` (and resolving its public names) loads no onnx, onnxruntime or tensorrt."""
    code = (
        "import sys, augkd.export as e; e.export_model; e.ExportConfig; e.measure_latency; e.export_onnx; "
        "e.tensorrt_selftest; "
        "print([m for m in ('onnx', 'onnxruntime', 'tensorrt', 'onnxslim', 'onnxscript') if m in sys.modules])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


class _FakeTRT:
    """A strict stand-in for the TensorRT 10 builder API (only the documented names used by build_engine).

    It lets the build path's control flow (parser errors, profile shapes, flags, timing-cache round trip,
    build failure) run on machines without TensorRT. It cannot show that a real engine is right: the
    GPU tests above do that where TensorRT exists.
    """

    __version__ = "10.fake"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "fp16"
        INT8 = "int8"

    def __init__(self, parse_ok=True, build_ok=True):
        self.parse_ok, self.build_ok, self.log = parse_ok, build_ok, []
        fake = self

        class _Tensor:
            name, shape = "input", (-1, 3, 16, 16)

        class _Network:
            def get_input(self, i):
                assert i == 0
                return _Tensor()

        class _Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                fake.log.append(("parse", len(data)))
                return fake.parse_ok

            def get_error(self, i):
                return "In node 3 (Foo): unsupported op"

        class _Profile:
            def set_shape(self, name, mn, opt, mx):
                fake.log.append(("profile", name, mn, opt, mx))

        class _Cache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+updated"

        class _Config:
            def set_memory_pool_limit(self, pool, size):
                fake.log.append(("pool", pool, size))

            def add_optimization_profile(self, profile):
                fake.log.append(("add_profile",))

            def set_flag(self, flag):
                fake.log.append(("flag", flag))

            def create_timing_cache(self, data):
                fake.log.append(("cache_in", bytes(data)))
                self._cache = _Cache(data)
                return self._cache

            def set_timing_cache(self, cache, ignore_mismatch):
                assert cache is self._cache
                return True

            def get_timing_cache(self):
                return self._cache

        class _Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                assert flags == 0  # TensorRT 10: explicit batch only
                return _Network()

            def create_builder_config(self):
                return _Config()

            def create_optimization_profile(self):
                return _Profile()

            def build_serialized_network(self, network, config):
                return b"ENGINE" if fake.build_ok else None

        self.Builder, self.OnnxParser = _Builder, _Parser


@pytest.fixture()
def fake_trt(monkeypatch):
    import augkd.export.tensorrt as trt_mod

    def install(**kwargs):
        fake = _FakeTRT(**kwargs)
        monkeypatch.setattr(trt_mod, "_probe", lambda: (fake, "tensorrt 10.fake", True, "CUDA device fake"))
        return fake

    return install


def test_build_engine_control_flow_with_fake_tensorrt(fake_trt, tmp_path):
    from augkd.export.tensorrt import build_engine

    fake = fake_trt()
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx-bytes")
    (tmp_path / "timing.cache").write_bytes(b"old")
    info = build_engine(
        onnx_path,
        tmp_path / "m.engine",
        precision="fp16",
        max_batch=64,
        opt_batch=16,
        timing_cache=tmp_path / "timing.cache",
    )
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE"
    assert (tmp_path / "timing.cache").read_bytes() == b"old+updated"  # read, then written back
    assert ("cache_in", b"old") in fake.log and ("flag", "fp16") in fake.log and ("flag", "int8") not in fake.log
    assert ("profile", "input", (1, 3, 16, 16), (16, 3, 16, 16), (64, 3, 16, 16)) in fake.log
    assert info["profile"] == {"min": 1, "opt": 16, "max": 64} and info["precision"] == "fp16"


def test_build_engine_reports_parser_and_build_failures(fake_trt, tmp_path):
    from augkd.export.errors import ExportError
    from augkd.export.tensorrt import build_engine

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    fake_trt(parse_ok=False)
    with pytest.raises(ExportError, match="TensorRT cannot parse .*unsupported op"):
        build_engine(onnx_path, tmp_path / "m.engine")
    fake_trt(build_ok=False)
    with pytest.raises(ExportError, match="could not build a fp32 engine"):
        build_engine(onnx_path, tmp_path / "m.engine", precision="fp32")
    assert not (tmp_path / "m.engine").exists()
    with pytest.raises(ExportError, match="needs calibration images"):
        build_engine(onnx_path, tmp_path / "m.engine", precision="int8")
