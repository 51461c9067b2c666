"""Data-free students: Module 1 variants × settings × seeds, test Acc@1, teacher agreement and cost.

Each variant is a set of ``module1.*`` overrides of the same engine (``augkd distill -m dfkd``); each setting
a preset. Runs are resumable: a run whose ``summary.json`` exists is read back. Writes
``benchmarks/results/datafree-<tag>.{csv,json,png}`` with the machine, versions and load average.

    .venv/bin/python benchmarks/bench_datafree.py --presets mnist-datafree --variants official,bank --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

# The variants: overrides on top of each preset (docs/decisions.md, "Module 1").
# the memory bank, the adversarial term masked to T/S agreement and jitter; then with the input-statistics prior
BANK = ["module1.bank_size=20000", "module1.adv_mask=true", "module1.jitter=2"]
BANK_INPUT = [*BANK, "module1.w_input=10"]
# twice the student steps per generator step (the student, not the generator, is what lags), one encoder step
K20_E1 = [*BANK_INPUT, "module1.student_steps=20", "module1.encoder_steps=1"]
VARIANTS: dict[str, list[str]] = {
    "preset": [],  # the preset as written
    "official": ["module1.bank_size=0", "module1.adv_mask=false", "module1.jitter=0", "module1.kd_tau=1"],
    "bank": BANK,
    "bank-noadv": [*BANK, "module1.w_adv=0"],
    "bank-tau4": [*BANK, "module1.kd_tau=4", "module1.s_lr=3e-3"],
    "bank-bnmean": [*BANK, "module1.bn_form=layer_mean", "module1.w_bn=10"],
    "bank-input": BANK_INPUT,
    "bank-input-tau4": [*BANK_INPUT, "module1.kd_tau=4"],
    "input": ["module1.w_input=10"],  # the official loop (no bank) with the input-statistics prior
    "bank-input-noadv": [*BANK_INPUT, "module1.w_adv=0"],
    "bank-input30": [*BANK, "module1.w_input=30"],
    "bank-input-k10": [*BANK_INPUT, "module1.student_steps=10"],
    # the SVHN teacher has BatchNorm: its concatenated BN term (80-290) dominates the official loss
    "bank-input-k10-bnmean": [*BANK_INPUT, "module1.student_steps=10", "module1.bn_form=layer_mean"],
    "bank-input-k10-bnmean5": [*BANK_INPUT, "module1.student_steps=10", "module1.bn_form=layer_mean", "module1.w_bn=5"],
    # the same with one encoder step per generator step (E only serves Modules 2 and 3): ~30% less time
    "bank-input-k10-e1": [*BANK_INPUT, "module1.student_steps=10", "module1.encoder_steps=1"],
    "bank-input-k20-e1": K20_E1,
    # every synthesised image stays in the bank (750 × 128 = 96k): the student keeps training on the early
    # generator's images too, instead of only the last ~150 generator steps' (the 20k bank)
    "bank-input-k20-e1-all": [*K20_E1, "module1.bank_size=96000"],
    # the student's bank draws augmented before the teacher labels them: mixup within the batch / rotation
    "bank-input-k20-e1-mix": [*K20_E1, "module1.bank_mixup=1"],
    "bank-input-k20-e1-rot": [*K20_E1, "module1.bank_rotate=15"],
    "bank-input-k20-e1-bnmean": [*K20_E1, "module1.bn_form=layer_mean"],
    # the BN and input priors matched to the teacher's statistics on the unlabelled student-domain images
    "bank-input-k20-e1-bnmean-sd": [*K20_E1, "module1.bn_form=layer_mean", "module1.stats_target=student_domain"],
    "bank-input-k20-e1-bnmean-sd-mix": [
        *K20_E1,
        "module1.bn_form=layer_mean",
        "module1.stats_target=student_domain",
        "module1.bank_mixup=1",
    ],
    # the BN term in each channel's own target units (bn_form layer_rel), every layer weighing the same; w_bn
    # 700 gives it the value layer_mean (w 1) has on the SVHN->MNIST preset's final generator (seed 0: 65.7 vs 0.0946,
    # bn_layer_mean / bn_layer_rel in benchmarks/results/probe-bn-stats-svhn-mnist-datafree-seed0.csv)
    "bnrel": ["module1.bn_form=layer_rel", "module1.w_bn=700"],
    # the paper's data-free baselines (augkd.methods): each fixes its own loss weights on the same budget
    **{m: [f"method={m}"] for m in ("deepinversion", "dfq", "cmi", "zskt", "dafl")},
}


def _method(variant: str) -> str:
    return next((o.split("=", 1)[1] for o in VARIANTS[variant] if o.startswith("method=")), "dfkd")


def run_finetune(preset: str, variant: str, seed: int, extra: list[str], run_dir: Path) -> float:
    """The "+" row: the variant's Module 1 (reused from ``run_dir``), then KD fine-tuning on the labelled
    split (``METHOD-ft``); returns its test Acc@1."""
    from augkd.config import load_config
    from augkd.training import distill

    ft_dir = run_dir / "ft"
    if not (ft_dir / "summary.json").is_file():
        sets = ["method=dfkd", f"train.seed={seed}", *VARIANTS[variant], *extra]
        sets += [f"method={_method(variant)}-ft", f"module1.init_from={run_dir}"]
        distill(
            load_config(f"configs/{preset}.yaml", sets), ft_dir, resume=(ft_dir / "checkpoints" / "state.pt").is_file()
        )
    return json.loads((ft_dir / "summary.json").read_text())["test"]["acc1"]


def run_one(preset: str, variant: str, seed: int, extra: list[str], work: Path, finetune: bool = False) -> dict:
    from augkd.config import load_config
    from augkd.training import distill

    run_dir = work / preset / variant / f"seed{seed}"
    if not (run_dir / "summary.json").is_file():
        cfg = load_config(f"configs/{preset}.yaml", ["method=dfkd", f"train.seed={seed}", *VARIANTS[variant], *extra])
        distill(cfg, run_dir, resume=(run_dir / "checkpoints" / "state.pt").is_file())
    s = json.loads((run_dir / "summary.json").read_text())
    h = s.get("module1_health", {})
    with (run_dir / "metrics.csv").open(newline="") as fh:
        curve = [float(r["fid_eval"]) for r in csv.DictReader(fh) if r["stage"] == "module1"]
    return {
        "preset": preset,
        "variant": variant,
        "seed": seed,
        "test_acc1": s["test"]["acc1"],
        "teacher_acc1": s["teacher_test"]["acc1"],
        "fid_eval": h.get("fid_eval"),
        "fid_gen": h.get("fid_gen"),
        "gen_class_entropy": h.get("gen_class_entropy"),
        "gen_std_ratio": h.get("gen_std_ratio"),
        "selected_epoch": h.get("selected_epoch"),
        "images_synthesised": h.get("images_synthesised"),
        "module1_s": s["timings"].get("module1"),
        "precision": s["precision"],
        "method": _method(variant),
        "ft_test_acc1": run_finetune(preset, variant, seed, extra, run_dir) if finetune else None,
        "fid_eval_curve": curve,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(r["preset"] for r in rows))
    fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 3.6), squeeze=False)
    for ax, p in zip(axes[0], presets, strict=True):
        for v in dict.fromkeys(r["variant"] for r in rows if r["preset"] == p):
            for r in (r for r in rows if r["preset"] == p and r["variant"] == v):
                ax.plot(
                    range(1, len(r["fid_eval_curve"]) + 1),
                    r["fid_eval_curve"],
                    lw=1.2,
                    label=f"{v} s{r['seed']}: test {100 * r['test_acc1']:.1f}%",
                )
        teacher = next(r["teacher_acc1"] for r in rows if r["preset"] == p)
        ax.set_title(f"{p} (teacher {100 * teacher:.1f}%)")
        ax.set_xlabel("Module 1 epoch")
        ax.set_ylabel("student–teacher agreement, eval images")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="mnist-datafree")
    ap.add_argument("--variants", default="official,bank")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    ap.add_argument("--tag", default=None, help="results file name (default: the presets)")
    ap.add_argument("--work", default="runs/bench-datafree")
    ap.add_argument("--finetune", action="store_true", help="also the '+' row: Module 1, then KD on the labels")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()

    import torch

    from augkd.utils import augkd_version, cpu_name, git_sha

    t0 = time.time()
    rows = [
        run_one(p, v, int(s), args.set, Path(args.work), args.finetune)
        for p in args.presets.split(",")
        for v in args.variants.split(",")
        for s in args.seeds.split(",")
    ]
    summary: dict[str, list[dict]] = {}
    for r in rows:
        summary.setdefault(f"{r['preset']}/{r['variant']}", []).append(r)

    def stats(vals: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}

    table = {
        k: {
            **stats([r["test_acc1"] for r in v]),
            "module1_s": statistics.fmean(r["module1_s"] for r in v),
            "ft": stats([r["ft_test_acc1"] for r in v]) if v[0]["ft_test_acc1"] is not None else None,
        }
        for k, v in summary.items()
    }
    tag = args.tag or args.presets.replace(",", "+")
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[0] if k != "fid_eval_curve"]
    with (res / f"datafree-{tag}.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    out = {
        "rows": rows,
        "test_acc1": table,
        "variants": {v: VARIANTS[v] for v in args.variants.split(",")},
        "extra_overrides": args.set,
        "machine": {"cpu": cpu_name(), "load_avg_at_end": os.getloadavg()},
        "torch": torch.__version__,
        "augkd": augkd_version(),
        "git_sha": git_sha(),
        "bench_wall_s": time.time() - t0,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (res / f"datafree-{tag}.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(rows, res / f"datafree-{tag}.png")
    print(f"{'setting/variant':36s} {'data-free Acc@1':>16s} {'+ fine-tuned':>14s} {'Module 1 s':>10s}  runs")
    for k, v in table.items():
        ft = f"{100 * v['ft']['mean']:6.1f} ± {100 * v['ft']['std']:4.1f}" if v["ft"] else "-"
        print(f"{k:36s} {100 * v['mean']:8.1f} ± {100 * v['std']:4.1f} {ft:>14s} {v['module1_s']:10.0f}  {v['n']}")


if __name__ == "__main__":
    main()
