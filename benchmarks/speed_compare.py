"""Pool interleaved ``bench_speed.py`` runs of two or more code versions into one results file and a plot.

Timings on these shared machines drift by ±5% within an hour, so a "did it get slower" question is answered
by alternating the versions in one session (A, B, A, B, ...) and comparing the medians of the runs, not one
run each. Each ``LABEL=FILE[,FILE...]`` names the JSON files ``bench_speed.py`` wrote for one version; the
label is what the table and the plot call it (for example the commit). Writes ``OUT.json``, ``OUT.csv`` (one
row per version, synthesis and precision: the median over runs of each run's median, the runs' medians and
range, and the ratio to the first label's figure; ``results_io.write_rows``, so the JSON also names the machine
that pooled them) and ``OUT.png``::

    python benchmarks/speed_compare.py --out benchmarks/results/speed-module1-intel-amx-issue14 \\
        441ed44=/tmp/speed/old441-1.json,... a4ca41d=/tmp/speed/head-1.json,/tmp/speed/head-2.json,...

Runs from different devices are refused (their times are not comparable) unless ``--mixed-devices``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_rows


def pool(versions: dict[str, list[dict]]) -> list[dict]:
    """One row per (version, synthesis, precision): the runs' medians, their median and range, and the ratio
    of that median to the same (synthesis, precision) of the first version (1.0 there)."""
    rows: list[dict] = []
    for label, runs in versions.items():
        cells: dict[tuple[str, str], list[float]] = {}
        for run in runs:
            for r in run["rows"]:
                cells.setdefault((r.get("synthesis", "official"), r["precision"]), []).append(r["median_s"])
        for (syn, prec), meds in cells.items():
            rows.append(
                {
                    "version": label,
                    "synthesis": syn,
                    "precision": prec,
                    "runs": len(meds),
                    "median_s": statistics.median(meds),
                    "min_s": min(meds),
                    "max_s": max(meds),
                    "run_medians_s": meds,
                }
            )
    first = next(iter(versions))
    base = {(r["synthesis"], r["precision"]): r["median_s"] for r in rows if r["version"] == first}
    for r in rows:
        b = base.get((r["synthesis"], r["precision"]))
        r["ratio_to_" + first] = r["median_s"] / b if b else None
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    keys = sorted({(r["synthesis"], r["precision"]) for r in rows})
    labels = list(dict.fromkeys(r["version"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(keys), 3.6))
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        named = False
        for i, key in enumerate(keys):
            r = next((r for r in rows if r["version"] == lab and (r["synthesis"], r["precision"]) == key), None)
            if r is None:
                continue
            x = i + (j - (len(labels) - 1) / 2) * width
            ax.bar(x, r["median_s"], width * 0.9, color=f"C{j}", label=None if named else lab)
            named = True
            ax.plot([x] * len(r["run_medians_s"]), r["run_medians_s"], "k.", ms=4)
    ax.set_xticks(range(len(keys)), [f"{s}\n{p}" for s, p in keys])
    ax.set_ylabel("s per Module 1 iteration")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="+", help="LABEL=FILE[,FILE...] per code version; the first is the base")
    ap.add_argument("--out", required=True, help="path without extension")
    ap.add_argument("--note", default="", help="free text kept in the JSON (how the runs were made)")
    ap.add_argument("--mixed-devices", action="store_true", help="pool runs from different devices anyway")
    args = ap.parse_args()
    versions: dict[str, list[dict]] = {}
    for spec in args.versions:
        label, _, files = spec.partition("=")
        if not label or not files or label in versions:
            raise SystemExit(f"speed_compare: {spec!r}: give each version once, as LABEL=FILE[,FILE...]")
        versions[label] = [json.loads(Path(f).read_text()) for f in files.split(",")]
    rows = pool(versions)
    runs = [run for rs in versions.values() for run in rs]
    devices = sorted({run["device"] for run in runs})
    if len(devices) > 1 and not args.mixed_devices:
        raise SystemExit(f"speed_compare: runs from {len(devices)} devices ({', '.join(devices)}); not comparable")
    out = Path(args.out)
    base = "ratio_to_" + next(iter(versions))
    write_rows(  # <out>.csv and <out>.json, the latter with the machine that pooled them (results_io)
        out,
        rows,
        benchmark="module1_iteration, interleaved versions",
        device=devices,
        threads=sorted({run["threads"] for run in runs}),
        runs_torch=sorted({run["torch"] for run in runs}),
        iters_warmup=sorted({(r["iters"], r["warmup"]) for run in runs for r in run["rows"]}),
        # from the newest script among the runs (older bench_speed.py files lack the fields)
        official_references=next((r["official_references"] for r in runs if "official_references" in r), None),
        official_reference=next((r["official_reference"] for r in runs if r.get("official_reference")), None),
        note=args.note,
        runs={lab: [run.get("timestamp") for run in rs] for lab, rs in versions.items()},
    )
    plot(rows, out.with_suffix(".png"), f"Module 1 iteration, official configuration; {', '.join(devices)}")
    for r in rows:
        ratio = r[base]
        print(
            f"{r['version']:10s} {r['synthesis']:9s} {r['precision']}: {r['median_s']:.2f} s "
            f"({r['min_s']:.2f}-{r['max_s']:.2f}, {r['runs']} runs)" + (f", x{ratio:.3f}" if ratio else "")
        )


if __name__ == "__main__":
    main()
