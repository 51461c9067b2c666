"""benchmarks/speed_compare.py pools interleaved bench_speed runs; bench_speed picks the official reference of the
CPU it runs on."""

from __future__ import annotations

from pathlib import Path

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


def test_official_reference_matches_the_machine() -> None:
    bs = load_benchmark("bench_speed")
    assert bs.official_reference("AMD EPYC 7B13", 2)["s_per_iter"] == 10.6
    assert bs.official_reference("Intel(R) Xeon(R) Processor", 2, amx=True)["s_per_iter"] == 12.6
    assert bs.official_reference("Intel(R) Xeon(R) Processor", 2, amx=False) is None  # the reference is an AMX Xeon
    assert bs.official_reference("AMD EPYC 7B13", 8) is None  # the references ran 2 threads
    assert bs.official_reference("NVIDIA H200", 2) is None


def test_augkd_synthesis_is_the_svhn_preset_per_step_recipe() -> None:
    """bench_speed's ``augkd`` overrides load, and every one of them is the value configs/svhn-mnist-datafree.yaml
    sets (so the timed recipe cannot drift from the preset unnoticed)."""
    from augkd.config import load_config

    bs = load_benchmark("bench_speed")
    timed = load_config(None, bs.SYNTHESIS["augkd"]).module1
    preset = load_config(Path(__file__).resolve().parents[2] / "configs" / "svhn-mnist-datafree.yaml", []).module1
    for o in bs.SYNTHESIS["augkd"]:
        key = o.split("=", 1)[0].removeprefix("module1.")
        assert getattr(timed, key) == getattr(preset, key), key


def _write(path, device: str, rows: list[dict]) -> str:
    import json

    path.write_text(json.dumps({"device": device, "threads": 2, "torch": "t", "timestamp": "x", "rows": rows}))
    return str(path)


def test_main_writes_csv_json_png_and_refuses_mixed_devices(tmp_path, monkeypatch) -> None:
    import csv
    import json
    import sys

    sc = load_benchmark("speed_compare")
    row = {"precision": "bf16", "iters": 3, "warmup": 1}  # an old bench_speed file: no "synthesis" key
    a = _write(tmp_path / "a.json", "cpu X", [{**row, "median_s": 2.0}])
    b = _write(tmp_path / "b.json", "cpu X", [{**row, "synthesis": "official", "median_s": 1.5}])
    out = tmp_path / "cmp"
    monkeypatch.setattr(sys, "argv", ["speed_compare", "--out", str(out), f"old={a}", f"new={b}"])
    sc.main()
    got = list(csv.DictReader((tmp_path / "cmp.csv").open()))
    assert [(r["version"], r["synthesis"], float(r["median_s"])) for r in got] == [
        ("old", "official", 2.0),
        ("new", "official", 1.5),
    ]
    assert float(got[1]["ratio_to_old"]) == 0.75
    assert json.loads((tmp_path / "cmp.json").read_text())["device"] == ["cpu X"]
    assert (tmp_path / "cmp.png").stat().st_size > 0
    c = _write(tmp_path / "c.json", "cpu Y", [{**row, "median_s": 1.0}])
    monkeypatch.setattr(sys, "argv", ["speed_compare", "--out", str(out), f"old={a}", f"new={c}"])
    with pytest.raises(SystemExit, match="not comparable"):
        sc.main()
    monkeypatch.setattr(sys, "argv", ["speed_compare", "--out", str(out), f"old={a}", f"old={b}"])
    with pytest.raises(SystemExit, match="each version once"):
        sc.main()
