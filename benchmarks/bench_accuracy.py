"""Accuracy of every method × seeds on the SVHN→MNIST presets (issue #3's headline benchmark).

Runs ``augkd.training.compare`` (same split for every method and seed; Module 1 trained once per seed
and shared by the methods built on it), then copies ``summary.json`` / ``summary.md`` / ``summary.png``
to ``benchmarks/results/accuracy-<preset>.*`` with the machine, versions and wall time per module.
Interrupted runs resume (finished runs are read back from their ``summary.json``).

    .venv/bin/python benchmarks/bench_accuracy.py --preset svhn-mnist-10shot --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import time
from pathlib import Path

METHODS = "scratch,kd,dfkd,dfkd-ft,augkd,augkd-no-anchor,augkd-no-mixup"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="svhn-mnist-10shot")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--work", default="runs/bench-accuracy")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from augkd.config import load_config
    from augkd.doctor import diagnose
    from augkd.training import compare
    from augkd.utils import augkd_version, cpu_name, git_sha

    cfg = load_config(f"configs/{args.preset}.yaml", args.set)
    work = Path(args.work) / args.preset
    t0 = time.time()
    summary = compare(cfg, args.methods.split(","), [int(s) for s in args.seeds.split(",")], work, resume=True)
    # wall time per module, per method (mean over seeds), from each run's summary.json
    per_module: dict[str, dict[str, float]] = {}
    for method in summary["methods"]:
        runs = [json.loads(p.read_text()) for p in sorted((work / method).glob("seed*/summary.json"))]
        keys = {k for r in runs for k in r["timings"]}
        per_module[method] = {k: sum(r["timings"].get(k, 0.0) for r in runs) / len(runs) for k in sorted(keys)}
    # wall time per epoch (train + eval), per method and stage, mean over seeds and epochs, from metrics.csv
    per_epoch: dict[str, dict[str, float]] = {}
    for method in summary["methods"]:
        acc: dict[str, list[float]] = {}
        for p in sorted((work / method).glob("seed*/metrics.csv")):
            with p.open(newline="") as f:
                for row in csv.DictReader(f):
                    acc.setdefault(row["stage"], []).append(float(row["train_s"]) + float(row.get("eval_s") or 0.0))
        per_epoch[method] = {k: statistics.fmean(v) for k, v in acc.items()}
    env = diagnose()
    cpu = cpu_name()
    out = {
        **summary,
        "preset": args.preset,
        "overrides": args.set,
        "wall_time_per_module_s": per_module,
        "wall_time_per_epoch_s": per_epoch,
        "machine": {"cpu": cpu, "threads": cfg.train.threads, "gpus": env["gpus"], "cpu_bf16": env["cpu_bf16"]},
        "torch": torch.__version__,
        "augkd": augkd_version(),
        "git_sha": git_sha(),
        "bench_wall_s": time.time() - t0,
        "load_avg_at_end": os.getloadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / f"accuracy-{args.preset}.json").write_text(json.dumps(out, indent=2) + "\n")
    shutil.copy(work / "summary.md", res / f"accuracy-{args.preset}.md")
    shutil.copy(work / "summary.png", res / f"accuracy-{args.preset}.png")
    print((work / "summary.md").read_text())


if __name__ == "__main__":
    main()
