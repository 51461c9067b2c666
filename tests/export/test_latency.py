"""The timing harness: statistics, duration mode, synchronisation hook, bad arguments; bench on the fly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from augkd.errors import InputError
from augkd.export.latency import measure_latency, parse_batches, parse_list

pytestmark = pytest.mark.export


class _SleepRunner:
    """Sleeps a fixed time per call and counts calls and synchronisations."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls, self.syncs = seconds, 0, 0

    def __call__(self, x):
        self.calls += 1
        time.sleep(self.seconds)

    def synchronize(self) -> None:
        self.syncs += 1


def test_measure_latency_statistics():
    run = _SleepRunner(0.002)
    stats = measure_latency(run, np.zeros((4, 3)), warmup=2, iters=10)
    assert run.calls == 12 and run.syncs == 12  # warm-up calls are synchronised too
    assert stats["iters"] == 10 and stats["warmup"] == 2 and stats["batch_size"] == 4
    assert 2.0 <= stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["throughput"] == pytest.approx(4 * 1000.0 / stats["mean_ms"])
    assert stats["first_call_ms"] >= 2.0


def test_measure_latency_duration_mode():
    run = _SleepRunner(0.001)
    t0 = time.perf_counter()
    stats = measure_latency(run, torch.zeros(2, 1), warmup=0, iters=1, duration=0.05, min_iters=3)
    assert time.perf_counter() - t0 >= 0.05
    assert stats["iters"] >= 3 and stats["iters"] == run.calls


def test_measure_latency_explicit_sync_and_batch():
    calls = []
    stats = measure_latency(lambda x: None, [1, 2, 3], warmup=1, iters=4, batch_size=9, sync=lambda: calls.append(1))
    assert len(calls) == 5 and stats["batch_size"] == 9


@pytest.mark.parametrize("kwargs", [{"iters": 0}, {"warmup": -1}, {"duration": 0.0}])
def test_measure_latency_bad_arguments(kwargs):
    with pytest.raises(InputError):
        measure_latency(lambda x: None, np.zeros((1, 1)), **kwargs)


def test_parse_helpers():
    assert parse_batches("1, 8,32") == [1, 8, 32]
    assert parse_batches([4, "2"]) == [4, 2]
    assert parse_list(["torch,ort", "ort"], ("torch", "ort")) == ["torch", "ort"]
    with pytest.raises(InputError, match="did you mean 'ort-int8'"):
        parse_list("ort_int8", ("ort", "ort-int8"), "backend")
    with pytest.raises(InputError, match="positive integers"):
        parse_batches("0,1")


def test_bench_latency_exports_on_the_fly(digits_student, tmp_path):
    """No SOURCE/export yet: ort and ort-int8 artifacts are exported into OUT/artifacts; same images for all."""
    pytest.importorskip("onnxruntime")
    from augkd.export import bench_latency

    res = bench_latency(digits_student, "ort,ort-int8", "2", tmp_path, warmup=1, iters=2, export_dir=tmp_path / "none")
    assert (tmp_path / "artifacts" / "model.onnx").is_file()
    assert (tmp_path / "artifacts" / "model.int8.onnx").is_file()
    assert any("on the fly" in n for n in res["notes"])
    assert {r["backend"] for r in res["rows"]} == {"ort", "ort-int8"}
    # a second run finds the artifacts of `augkd export`-style folders when they are fresh
    from augkd.export.artifacts import is_fresh
    from augkd.export.source import load_source

    assert is_fresh(load_source(digits_student), tmp_path / "artifacts", "ort-int8")
    assert not is_fresh(load_source(digits_student), tmp_path, "onnx")
