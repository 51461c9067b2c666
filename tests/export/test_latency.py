"""The timing harness: statistics, duration mode, synchronisation hook, bad arguments; bench on the fly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from augkd.errors import InputError
from augkd.export.latency import (
    BackendRunner,
    combine_rounds,
    measure_latency,
    parse_batches,
    parse_list,
    time_interleaved,
)

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


def test_combine_rounds_takes_each_statistics_median():
    rounds = [
        {"batch_size": 8, "iters": n, "warmup": 2, "first_call_ms": 9.0 - i, **dict.fromkeys(_STATS, v)}
        for i, (n, v) in enumerate([(5, 3.0), (7, 1.0), (6, 2.0)])
    ]
    out = combine_rounds(rounds)
    assert out["iters"] == 18 and out["rounds"] == 3 and out["round_p50_ms"] == [3.0, 1.0, 2.0]
    assert all(out[k] == 2.0 for k in _STATS) and out["first_call_ms"] == 9.0 and out["batch_size"] == 8
    with pytest.raises(InputError, match="at least one round"):
        combine_rounds([])


_STATS = ("mean_ms", "std_ms", "min_ms", "p20_ms", "p50_ms", "p80_ms", "p90_ms", "p99_ms", "throughput")


def test_time_interleaved_rounds_and_order():
    """Each round times every backend × batch once, in plan order; rows follow the plan, with per-round p50s."""
    calls: list[tuple[str, int]] = []
    threads_seen: list[int] = []

    def backend(name: str, seconds: float, threads: int) -> BackendRunner:
        def fn(x: torch.Tensor) -> None:
            calls.append((name, len(x)))
            threads_seen.append(torch.get_num_threads())
            time.sleep(seconds)

        return BackendRunner(name, fn, lambda u: u.float(), f"fake {name}", threads)

    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    plan = [(backend("slow", 0.004, 1), [1, 5]), (backend("fast", 0.001, 1), [2])]
    rows = time_interleaved(plan, images, rounds=2, warmup=1, iters=3, duration=None)
    one_round = [("slow", 1)] * 4 + [("slow", 5)] * 4 + [("fast", 2)] * 4  # 1 warm-up + 3 timed calls per cell
    assert calls == one_round * 2  # batch 5 repeats the 3 images
    assert set(threads_seen) == {1}  # each backend timed at its own thread count
    assert [(r["backend"], r["batch_size"], r["rounds"], r["iters"]) for r in rows] == [
        ("slow", 1, 2, 6),
        ("slow", 5, 2, 6),
        ("fast", 2, 2, 6),
    ]
    assert rows[0]["p50_ms"] >= 4.0 > rows[2]["p50_ms"] and len(rows[0]["round_p50_ms"]) == 2
    assert rows[0]["provider"] == "fake slow" and rows[0]["threads"] == 1 and "first_call_ms" not in rows[0]
    with pytest.raises(InputError, match="rounds >= 1"):
        time_interleaved(plan, images, rounds=0, warmup=1, iters=3, duration=None)


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
