"""One markdown table of data-free methods from ``bench_datafree.py`` results files.

    .venv/bin/python benchmarks/datafree_table.py benchmarks/results/datafree-mnist-datafree-methods.json \
        benchmarks/results/datafree-svhn-mnist-methods.json --out benchmarks/results/datafree-methods.md

One row per (setting, variant): data-free test Acc@1, after KD fine-tuning on the labelled split (the
paper's "+" rows, when the file has them), Module 1 wall time, images synthesised, the student's agreement
with the teacher on the eval images, and the teacher's own Acc@1; the CPU and load come from each file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAMES = {
    "official": "AuG-KD Module 1, official",
    "bank-input-k10": "augkd: bank + prior, k=10",
    "bank-input-k20-e1": "augkd: bank + prior, k=20, 1 E step",
    "bank-input-k10-bnmean": "augkd: bank + prior, k=10, BN layer mean",
    "bank-input-k20-e1-bnmean": "augkd: bank + prior, k=20, 1 E step, BN layer mean",
    "bank-input-k20-e1-bnmean-sd": "augkd: as above, student-domain statistics",
    "deepinversion": "DeepInversion",
    "dfq": "DFQ",
    "cmi": "CMI",
    "zskt": "ZSKT",
    "dafl": "DAFL",
}


def table(files: list[Path]) -> str:
    lines = [
        (
            "| setting | method (variant) | data-free Acc@1 | + fine-tuned | Module 1 s | images | fidelity (eval) "
            "| teacher |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for f in files:
        d = json.loads(f.read_text())
        for r in d["rows"]:
            ft = f"{100 * r['ft_test_acc1']:.1f}" if r.get("ft_test_acc1") is not None else "-"
            lines.append(
                f"| {r['preset']} | {NAMES.get(r['variant'], r['variant'])} (`{r['variant']}`) "
                f"| {100 * r['test_acc1']:.1f} | {ft} | {r['module1_s']:.0f} | {r['images_synthesised']:,} "
                f"| {r['fid_eval']:.3f} | {100 * r['teacher_acc1']:.1f} |"
            )
        la = d["machine"].get("load_avg_at_end")
        notes.append(
            f"- `{f.name}`: {d['machine']['cpu']}, torch {d['torch']}, seed(s) "
            f"{sorted({r['seed'] for r in d['rows']})}, load average at the end {la[0]:.1f}; "
            f"overrides {' '.join(d['extra_overrides']) or '-'}"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    text = table(args.files)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
