"""Accuracy against the number of labelled images per class (issue 15's shots curve).

For every shots value K and seed: ``augkd.training.compare`` of the methods on the preset with
``data.shots_per_class=K``, Module 1 reused from a finished run of the same seed (``--module1``, a folder
holding ``seed<N>/`` runs, e.g. the ``dfkd`` folder of ``bench_accuracy.py``'s work directory): Module 1
never reads the labelled images (with ``module1.stats_target: teacher``), so one Module 1 per seed serves
every K. Finished runs are read back. Writes ``<results>/shots-<preset>.json``, ``.csv`` (one row per
method × K: mean, std and seeds of test Acc@1) and ``.png`` (the curve, the teacher's source-only accuracy
as a line), with the CPU named.

    python benchmarks/bench_shots.py --preset mnist-mnistm-10shot --shots 1,3,10,30 --seeds 0 \\
        --module1 runs/bench-accuracy/mnist-mnistm-10shot/dfkd

A method with a synthesis of its own (the data-free baselines' ``-ft`` forms) takes its own Module 1 folder:
``--methods augkd,dfq-ft --module1-for dfq-ft=runs/bench-accuracy/mnist-mnistm-10shot/dfq-ft``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_rows

METHODS = "scratch,kd,dfkd-ft,augkd"


def module1_folders(args: argparse.Namespace) -> dict[str, list[str]]:
    """Module 1 folder → the methods that reuse it: ``--module1`` for every method but those given their own by
    ``--module1-for METHOD=FOLDER`` (a baseline with its own synthesis, e.g. ``dfq-ft``, cannot reuse AuG-KD's)."""
    own: dict[str, str] = {}
    for spec in args.module1_for:
        method, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"bench_shots: --module1-for {spec!r}: expected METHOD=FOLDER")
        own[method] = folder
    groups: dict[str, list[str]] = {}
    for m in args.methods.split(","):
        groups.setdefault(own.get(m, args.module1), []).append(m)
    return groups


def run_shots(args: argparse.Namespace, shots: int, seed: int) -> dict:
    """``compare`` of the methods at K shots, one call per Module 1 folder into the same work folder; the calls'
    per-method results are merged into one summary."""
    from augkd.config import load_config
    from augkd.training import compare

    merged: dict = {}
    for folder, methods in module1_folders(args).items():
        sets = [*args.set, f"data.shots_per_class={shots}", f"module1.init_from={Path(folder) / f'seed{seed}'}"]
        cfg = load_config(f"configs/{args.preset}.yaml", sets)
        summary = compare(cfg, methods, [seed], Path(args.work) / f"shots{shots}" / f"seed{seed}", resume=True)
        merged = {**summary, "methods": {**merged.get("methods", {}), **summary["methods"]}}
    return merged


def plot(rows: list[dict], teacher: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["shots"], r["acc1_mean"], r["acc1_std"]) for r in rows if r["method"] == method)
        ax.errorbar(
            [p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=method
        )
    ax.axhline(teacher, color="grey", ls="--", lw=1, label="teacher (source only)")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["shots"] for r in rows}), [str(s) for s in sorted({r["shots"] for r in rows})])
    ax.set_xlabel("labelled student-domain images per class")
    ax.set_ylabel("test Acc@1 (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mnist-mnistm-10shot")
    ap.add_argument("--shots", default="1,3,10,30")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--module1", required=True, help="folder of seed<N>/ runs whose Module 1 is reused")
    ap.add_argument(
        "--module1-for",
        action="append",
        default=[],
        help="METHOD=FOLDER: that method reuses this folder's seed<N>/ Module 1 instead (a baseline's own synthesis)",
    )
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--work", default="runs/bench-shots")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()

    t0 = time.time()
    acc: dict[tuple[str, int], list[float]] = {}
    teacher = 0.0
    for shots in [int(s) for s in args.shots.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            summary = run_shots(args, shots, seed)
            teacher = 100 * summary["teacher_source_only"]["acc1"]
            for method, m in summary["methods"].items():
                acc.setdefault((method, shots), []).extend(100 * v for v in m["acc1_runs"])
    rows = [
        {"method": m, "shots": k, "acc1_mean": statistics.fmean(v), "acc1_std": statistics.pstdev(v), "seeds": len(v)}
        for (m, k), v in acc.items()
    ]
    stem = Path(args.results) / f"shots-{args.preset}"
    meta = {
        "preset": args.preset,
        "overrides": args.set,
        "module1": args.module1,
        "module1_for": args.module1_for,
        "teacher_acc1": teacher,
    }
    write_rows(stem, rows, **meta, wall_s=time.time() - t0)
    plot(rows, teacher, stem.with_suffix(".png"))
    for r in rows:
        print(f"{r['method']:<16} {r['shots']:>3} shots  {r['acc1_mean']:5.1f} ± {r['acc1_std']:.1f}  ({r['seeds']})")


if __name__ == "__main__":
    main()
