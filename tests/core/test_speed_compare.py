"""benchmarks/speed_compare.py pools interleaved bench_speed runs; bench_speed picks the official reference of the
CPU it runs on."""

from __future__ import annotations

import pytest
from bench_scripts import load_benchmark


def _run(*rows: tuple[str, str, float]) -> dict:
    return {"rows": [{"synthesis": s, "precision": p, "median_s": m} for s, p, m in rows]}


def test_pool_medians_ranges_and_ratios() -> None:
    sc = load_benchmark("speed_compare")
    rows = sc.pool(
        {
            "old": [_run(("official", "bf16", 1.6)), _run(("official", "bf16", 1.8)), _run(("official", "bf16", 1.7))],
            "new": [
                _run(("official", "bf16", 1.5), ("augkd", "bf16", 1.1)),
                _run(("official", "bf16", 2.1), ("augkd", "bf16", 1.2)),
            ],
        }
    )
    by = {(r["version"], r["synthesis"]): r for r in rows}
    old, new, aug = by["old", "official"], by["new", "official"], by["new", "augkd"]
    assert (old["runs"], old["median_s"], old["min_s"], old["max_s"]) == (3, 1.7, 1.6, 1.8)
    assert new["median_s"] == pytest.approx(1.8)  # the median of two runs is their mean
    assert old["ratio_to_old"] == 1.0
    assert new["ratio_to_old"] == pytest.approx(1.8 / 1.7)
    assert aug["ratio_to_old"] is None  # the base version has no augkd row to compare with


def test_official_reference_matches_the_cpu_vendor() -> None:
    bs = load_benchmark("bench_speed")
    assert bs.official_reference("AMD EPYC 7B13")["s_per_iter"] == 10.6
    assert bs.official_reference("Intel(R) Xeon(R) Processor")["s_per_iter"] == 12.6
    assert bs.official_reference("NVIDIA H200") is None
