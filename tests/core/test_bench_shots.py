"""benchmarks/bench_shots.py: which Module 1 folder each method reuses."""

from __future__ import annotations

import argparse

import pytest
from bench_scripts import load_benchmark


def test_module1_folders_gives_baselines_their_own() -> None:
    bs = load_benchmark("bench_shots")
    args = argparse.Namespace(
        methods="scratch,augkd,dfq-ft,dfkd-ft", module1="/r/dfkd", module1_for=["dfq-ft=/r/dfq-ft"]
    )
    assert bs.module1_folders(args) == {"/r/dfkd": ["scratch", "augkd", "dfkd-ft"], "/r/dfq-ft": ["dfq-ft"]}
    args.module1_for = []
    assert bs.module1_folders(args) == {"/r/dfkd": ["scratch", "augkd", "dfq-ft", "dfkd-ft"]}
    args.module1_for = ["dfq-ft"]
    with pytest.raises(SystemExit, match="METHOD=FOLDER"):
        bs.module1_folders(args)
