"""The kernel microbenchmark library, the bench script and the plot script (tiny CPU runs)."""

import json

import pytest
from bench_scripts import load_benchmark

from augkd.errors import ConfigError
from augkd.kernels import bench


def test_bench_rows_are_tidy_and_consistent():
    rows = bench.run_kernel_bench(
        ops=["kd_loss"], providers=["torch", "triton"], modes=["forward"], device="cpu", quick=True
    )
    assert {r["provider"] for r in rows} == {"torch"}  # triton is never timed on CPU
    assert len(rows) == 2 * 2 * 2  # 2 batches x 2 class counts x (time, bandwidth)
    assert all(tuple(r) == bench.ROW_FIELDS for r in rows)
    times = {(r["x_value"], r["extra_config_json"]): r for r in rows if r["metric"] == "time"}
    for r in rows:
        assert r["p50"] > 0 and r["p20"] <= r["p50"] <= r["p80"]
        if r["metric"] == "bandwidth":
            cfg = json.loads(r["extra_config_json"])
            t = times[(r["x_value"], r["extra_config_json"])]
            expected_bytes = 2 * cfg["B"] * cfg["C"] * 4 + 8 * cfg["B"]
            assert r["unit"] == "GB/s"
            assert r["p50"] == pytest.approx(expected_bytes / 1e9 / (t["p50"] / 1e3))


def test_bench_rejects_unknown_names():
    with pytest.raises(ConfigError, match=r"unknown bench provider\(s\) \['cuda'\]"):
        bench.run_kernel_bench(providers=["cuda"], device="cpu", quick=True)
    with pytest.raises(ConfigError, match=r"unknown bench op\(s\) \['softmax'\]"):
        bench.run_kernel_bench(ops=["softmax"], device="cpu", quick=True)


def test_bench_script_and_plot(tmp_path):
    script = load_benchmark("bench_kernels")
    args = ["--ops", "fused_mixup", "--providers", "torch", "copy", "--modes", "forward", "full", "--quick"]
    assert script.main([*args, "--device", "cpu", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    stem = script.results_stem("cpu")
    csv_path = tmp_path / f"{stem}.csv"
    sidecar = json.loads((tmp_path / f"{stem}.json").read_text())
    assert sidecar["environment"]["torch_threads"] == 1 and len(sidecar["rows"]) > 0
    copy_rows = [r for r in sidecar["rows"] if r["provider"] == "copy"]
    assert copy_rows and all(r["mode"] == "forward" for r in copy_rows)
    pngs = load_benchmark("plot").plot_file(csv_path, tmp_path / "png")
    names = sorted(p.name for p in pngs)
    assert names == [f"fused_mixup-{m}-{k}.png" for m in ("forward", "full") for k in ("bandwidth", "time")]
    assert all(p.stat().st_size > 1000 for p in pngs)
