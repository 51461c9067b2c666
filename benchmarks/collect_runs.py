"""Collect finished runs into one results table: a row per run directory (one holding ``summary.json``).

Probes and tuning sweeps launch ``augkd distill`` runs by hand or by script; this turns their directories into
``<out>.csv`` + ``<out>.json`` with the machine named (``results_io``). Each row has the run's path relative to
its root, the method and seed, the figures asked for from ``summary.json`` (``--key``, dotted), the config
values asked for from ``config.yaml`` (``--cfg``, dotted) and, per ``--curve STAGE:COLUMN``, the best and last
value of that column of ``metrics.csv`` and the mean of its last ``--tail`` epochs. Usage::

    python benchmarks/collect_runs.py /tmp/probe --cfg module3.lr --curve module3:eval_acc1 \\
        --out benchmarks/results/probe-m3-lr
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_rows

DEFAULT_KEYS = ("test.acc1", "best_eval_acc1", "timings.total_s", "precision", "threads")


def dotted(d: Any, key: str) -> Any:
    """``d["a"]["b"]`` for ``key`` "a.b"; "" where a part is missing."""
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return ""
        d = d[part]
    return d


def curve_figures(metrics: Path, stage: str, column: str, tail: int) -> dict[str, float | str]:
    """Best, last and last-``tail`` mean of ``column`` over ``stage``'s rows of a ``metrics.csv``."""
    vals: list[float] = []
    if metrics.is_file():
        with metrics.open(newline="") as f:
            for r in csv.DictReader(f):
                if r.get("stage") == stage and r.get(column) not in (None, ""):
                    vals.append(float(r[column]))
    name = f"{stage}.{column}"
    if not vals:
        return {f"{name}.best": "", f"{name}.last": "", f"{name}.tail_mean": ""}
    return {
        f"{name}.best": max(vals),
        f"{name}.last": vals[-1],
        f"{name}.tail_mean": statistics.fmean(vals[-tail:]),
    }


def collect(
    roots: list[Path], keys: list[str], cfg_keys: list[str], curves: list[str], tail: int
) -> list[dict[str, Any]]:
    rows = []
    for root in roots:
        for summ in sorted(root.rglob("summary.json")):
            run = summ.parent
            summary = json.loads(summ.read_text())  # not yaml: PyYAML reads JSON's 1e-05 as a string
            if not isinstance(summary, dict) or "method" not in summary:  # e.g. augkd compare's overview
                continue
            cfg_file = run / "config.yaml"
            cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
            row: dict[str, Any] = {"run": str(run.relative_to(root)) or ".", "method": summary["method"]}
            row["seed"] = summary.get("seed", "")
            row.update({k: dotted(summary, k) for k in keys})
            row.update({k: dotted(cfg, k) for k in cfg_keys})
            for spec in curves:
                stage, _, column = spec.partition(":")
                row.update(curve_figures(run / "metrics.csv", stage, column or "eval_acc1", tail))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="directories searched for run directories")
    ap.add_argument("--key", action="append", default=None, help=f"summary.json key (default: {DEFAULT_KEYS})")
    ap.add_argument("--cfg", action="append", default=[], help="config.yaml key, e.g. module3.lr")
    ap.add_argument("--curve", action="append", default=[], help="STAGE:COLUMN of metrics.csv, e.g. module1:fid_eval")
    ap.add_argument("--tail", type=int, default=5, help="epochs averaged at the end of each curve")
    ap.add_argument("--out", type=Path, required=True, help="results stem: writes <out>.csv and <out>.json")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = collect(args.roots, args.key or list(DEFAULT_KEYS), args.cfg, args.curve, args.tail)
    if not rows:
        print(f"error: no run directory (with summary.json) under {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 1
    csv_path, _ = write_rows(args.out, rows, roots=[str(r) for r in args.roots], tail=args.tail)
    print(f"{len(rows)} runs -> {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
