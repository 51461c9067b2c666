"""Plot benchmark CSVs of the tidy schema (benchmarks/README.md): one PNG per (op, mode, metric), x = ``x_value``
(batch size, processes, ...), one line per provider, the p20–p80 band shaded.

Panels split what ``extra_config_json`` names: its ``panel`` when present (the export benchmark: the thread
count), else the other size dimension (C for the row ops, H x W for the images). Usage::

    python benchmarks/plot.py benchmarks/results/kernels-cpu-pt2.14.csv [--out-dir DIR] [--metric latency]

By default the PNGs go to ``<csv folder>/<csv stem>/<op>-<mode>-<metric>.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _panel(row: dict) -> str:
    cfg = json.loads(row["extra_config_json"])
    if "panel" in cfg:
        return str(cfg["panel"])
    if "H" in cfg:
        return f"{cfg.get('C', '?')}x{cfg['H']}x{cfg['W']}"
    return f"C={cfg['C']}" if "C" in cfg else "all"


def _provider_colors(rows: list[dict]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {p: cycle[i % len(cycle)] for i, p in enumerate(sorted({r["provider"] for r in rows}))}


def plot_file(csv_path: Path, out_dir: Path | None = None, metrics: Sequence[str] | None = None) -> list[Path]:
    """Write the PNGs for one CSV (only the rows of ``metrics`` when given); returns their paths."""
    rows = [r for r in read_rows(csv_path) if metrics is None or r["metric"] in metrics]
    out_dir = out_dir or csv_path.parent / csv_path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["op"], r["mode"], r["metric"])].append(r)
    written = []
    for (op, mode, metric), grp in sorted(groups.items()):
        panels = sorted({_panel(r) for r in grp}, key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
        colors = _provider_colors(grp)  # one colour per provider in every panel
        for ax, panel in zip(axes[0], panels, strict=True):
            lines: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
            for r in grp:
                if _panel(r) == panel:
                    lines[r["provider"]].append(
                        (float(r["x_value"]), float(r["p50"]), float(r["p20"]), float(r["p80"]))
                    )
            for provider, pts in sorted(lines.items()):
                pts.sort()
                xs, p50, p20, p80 = zip(*pts, strict=True)
                ax.plot(xs, p50, marker="o", label=provider, color=colors[provider])
                ax.fill_between(xs, p20, p80, alpha=0.2, color=colors[provider])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")  # sizes span 16x and providers can differ by 10x
            ax.set_title(panel, fontsize=9)
            ax.set_xlabel(grp[0]["x_name"])
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel(f"{metric} ({grp[0]['unit']})")
        fig.suptitle(f"{op} {mode} - {grp[0]['device_name']}, torch {grp[0]['torch_version']}", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{op}-{mode}-{metric}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, nargs="+")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--metric", action="append", help="plot only this metric (repeatable; default: all)")
    args = parser.parse_args(argv)
    for path in args.csv:
        for png in plot_file(path, args.out_dir, args.metric):
            print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
