"""benchmarks/bench_export.py on the committed results: re-rendered from their JSON into the tidy CSV schema."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.export

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
_RESULTS = _BENCH / "results" / "export-cpu2-amd-epyc-pt2.14-ort1.31.json"


def test_bench_export_rewrite_writes_the_tidy_schema(tmp_path, monkeypatch):
    from augkd.kernels.bench import ROW_FIELDS

    monkeypatch.syspath_prepend(str(_BENCH))  # the script imports its siblings (export_measure, plot)
    bench = importlib.import_module("bench_export")
    results = json.loads(_RESULTS.read_text())
    bench.main(["--rewrite", str(_RESULTS), "--out", str(tmp_path)])
    with (tmp_path / _RESULTS.with_suffix(".csv").name).open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == ROW_FIELDS
        rows = list(reader)
    latency = {
        (r["op"], r["provider"], json.loads(r["extra_config_json"])["threads"], int(r["x_value"])): r
        for r in rows
        if r["metric"] == "latency"
    }
    n_cells = 0
    for name, res in results["models"].items():
        for cell in res["latency"]:
            row = latency[(f"export-{name.split(':')[0]}", cell["backend"], cell["threads"], cell["batch_size"])]
            assert (float(row["p20"]), float(row["p50"]), float(row["p80"])) == (
                cell["p20_ms"],
                cell["p50_ms"],
                cell["p80_ms"],
            )
            n_cells += 1
    assert n_cells == len(latency) > 0
    thr = next(r for r in rows if r["metric"] == "throughput" and r["x_value"] == "32")
    assert float(thr["p20"]) < float(thr["p50"]) < float(thr["p80"]) and thr["unit"] == "samples/s"
    acc = [r for r in rows if r["metric"] == "acc1" and r["op"] == "export-a"]
    assert {r["provider"] for r in acc} == {"torch", "ort", "ort-int8"}
    pngs = sorted(p.name for p in (tmp_path / _RESULTS.stem).glob("*.png"))
    assert pngs == sorted(
        f"export-{m}-inference-{k}.png" for m in ("a", "mnv3-224", "r18-224") for k in ("latency", "throughput")
    )
    md = (tmp_path / _RESULTS.with_suffix(".md").name).read_text()
    assert md.splitlines()[:5] == _RESULTS.with_suffix(".md").read_text().splitlines()[:5]
    assert "| ORT int8 >= 1.5x faster than ORT fp32 at batch 32 |" in md
