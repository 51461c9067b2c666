"""Module 2/3 variants on one shared Module 1: the anchor measures and test Acc@1 of each (issue 15).

Every variant is ``augkd distill`` on the preset with ``module1.init_from`` pointing at a finished run
whose Module 1 it reuses (same seed and Module 1 settings), so only Modules 2 and 3 (or the ``kd`` stage of
``scratch``/``kd``) are trained. Finished variants are read back from their ``summary.json``. Writes
``<results>/anchors-<tag>.json``, ``.csv`` and ``.png`` (test Acc@1 and the anchor measures per variant),
with the CPU named.

    python benchmarks/probe_anchors.py --module1 runs/bench-accuracy/mnist-mnistm-10shot/dfkd/seed0 \\
        --work runs/probe-anchors --tag mnist-mnistm-10shot-seed0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_rows

E200 = ["module3.epochs=200", "kd.epochs=200"]  # the preset's earlier epoch count
ENC = ["module2.w_encoder=1", "module2.e_lr=1e-3"]
# name → (method, overrides of the preset); names are the run folders under --work
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("augkd", E200),
    "enc1": ("augkd", [*E200, "module2.w_encoder=1"]),
    "enc1-lr3": ("augkd", [*E200, *ENC]),
    "enc10-lr3": ("augkd", [*E200, "module2.w_encoder=10", "module2.e_lr=1e-3"]),
    "enc1-lr3-near1": ("augkd", [*E200, *ENC, "module2.w_near=1"]),
    "enc1-lr3-near10": ("augkd", [*E200, *ENC, "module2.w_near=10"]),
    "base-u02": ("augkd", [*E200, "module3.u=0.2"]),
    "enc1-lr3-u02": ("augkd", [*E200, *ENC, "module3.u=0.2"]),
    "base-e600": ("augkd", ["module3.epochs=600", "kd.epochs=200"]),
    "enc-near10-e600": ("augkd", ["module3.epochs=600", "kd.epochs=200", *ENC, "module2.w_near=10"]),
    "scratch-e600": ("scratch", ["module3.epochs=200", "kd.epochs=600"]),
    "kd-e600": ("kd", ["module3.epochs=200", "kd.epochs=600"]),
}
MEASURES = ("recon_agree", "anchor_label_agree", "anchor_conf", "anchor_std_ratio", "recon_std_ratio")


def run_variant(preset: str, module1: Path, work: Path, name: str) -> dict:
    from augkd.config import load_config
    from augkd.training import distill

    method, over = VARIANTS[name]
    out = work / name
    if not (out / "summary.json").is_file():
        sets = [f"method={method}", *over] + ([f"module1.init_from={module1}"] if method == "augkd" else [])
        distill(load_config(f"configs/{preset}.yaml", sets), out, resume=(out / "config.yaml").is_file())
    summary = json.loads((out / "summary.json").read_text())
    row = {"variant": name, "method": method, "overrides": " ".join(over), "test_acc1": summary["test"]["acc1"]}
    anchors = out / "checkpoints" / "module2" / "anchors.json"
    measures = json.loads(anchors.read_text()) if anchors.is_file() else {}
    row.update({k: measures.get(k, "") for k in MEASURES})
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 1.5), sharey=True)
    names = [r["variant"] for r in rows]
    axes[0].barh(names, [100 * r["test_acc1"] for r in rows], color="tab:blue")
    axes[0].set_xlabel("test Acc@1 (%)")
    for i, key in enumerate(("recon_agree", "anchor_std_ratio")):
        vals = [r[key] if r[key] != "" else 0.0 for r in rows]
        axes[1].barh([j + 0.2 * (1 - 2 * i) for j in range(len(rows))], vals, height=0.4, label=key)
    axes[1].axvline(0.5, color="grey", ls=":", lw=1)
    axes[1].legend(fontsize=8)
    axes[1].set_xlabel("anchor measure (eval images)")
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mnist-mnistm-10shot")
    ap.add_argument("--module1", required=True, help="a finished run whose Module 1 the variants reuse")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default="runs/probe-anchors")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()

    t0 = time.time()
    rows = [run_variant(args.preset, Path(args.module1), Path(args.work), n) for n in args.variants.split(",")]
    stem = Path(args.results) / f"anchors-{args.tag}"
    write_rows(stem, rows, preset=args.preset, module1=str(args.module1), wall_s=time.time() - t0)
    plot(rows, stem.with_suffix(".png"))
    for r in rows:
        recon, std = str(r["recon_agree"])[:5], str(r["anchor_std_ratio"])[:5]
        print(f"{r['variant']:<18} {100 * r['test_acc1']:5.1f}  recon {recon}  std {std}")


if __name__ == "__main__":
    main()
