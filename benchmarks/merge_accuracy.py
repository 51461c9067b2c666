"""Merge accuracy results of the same preset run in parts (different seeds, possibly different sessions).

``bench_accuracy.py`` writes one JSON per call; when seeds are run in separate calls (two processes at
once on a 2-core machine, or a later session adding seeds), this combines them into one table: Acc@1 from
the per-seed values, Acc@3/5 mean and sample std pooled exactly from each part's (n, mean, std), wall
times as seed-weighted means. Each part's seeds, git commit and overrides are kept under ``parts``.

    .venv/bin/python benchmarks/merge_accuracy.py benchmarks/results/accuracy-svhn-mnist-10shot.json \\
        /tmp/acc-s3/accuracy-svhn-mnist-10shot.json /tmp/acc-s4/accuracy-svhn-mnist-10shot.json

A part written ``FILE:m1,m2`` contributes only those methods (e.g. when some methods were re-run with a
re-tuned config: take the baselines from the old parts and the re-run methods from the new ones).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

WALL_FIELDS = ("wall_time_per_module_s", "wall_time_per_epoch_s")  # per-method wall-time tables of a part


def _pool(parts: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Mean and sample std of the union of groups given as (n, mean, sample std)."""
    n = sum(p[0] for p in parts)
    total = sum(k * m for k, m, _ in parts)
    mean = total / n
    # within-group plus between-group sums of squares (no cancellation of large terms)
    ss = sum((k - 1) * s * s + k * (m - mean) ** 2 for k, m, s in parts)
    var = ss / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(max(var, 0.0))


def merge(docs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    presets = {d["preset"] for d in docs}
    if len(presets) != 1:
        raise SystemExit(f"error: the parts are of different presets: {sorted(presets)}")
    methods: dict[str, Any] = {}
    order = list(dict.fromkeys(m for d in docs for m in d["methods"]))  # every method of any part, first seen first
    for method in order:
        rows = [d["methods"][method] for d in docs if method in d["methods"]]
        seeds = [s for r in rows for s in r["seeds"]]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"error: {method}: a seed appears in two parts: {seeds}")
        row: dict[str, Any] = {"seeds": seeds, "acc1_runs": [a for r in rows for a in r["acc1_runs"]]}
        row["acc1_mean"] = statistics.fmean(row["acc1_runs"])
        row["acc1_std"] = statistics.stdev(row["acc1_runs"]) if len(seeds) > 1 else 0.0
        for k in ("acc3", "acc5"):
            row[f"{k}_mean"], row[f"{k}_std"] = _pool([(len(r["seeds"]), r[f"{k}_mean"], r[f"{k}_std"]) for r in rows])
        n = [len(r["seeds"]) for r in rows]
        row["total_s_mean"] = sum(k * r["total_s_mean"] for k, r in zip(n, rows, strict=True)) / sum(n)
        methods[method] = row
    wall: dict[str, dict[str, dict[str, float]]] = {field: {} for field in WALL_FIELDS}
    for field, table in wall.items():
        for method in methods:
            parts = [
                (len(d["methods"][method]["seeds"]), d.get(field, {}).get(method, {}))
                for d in docs
                if method in d["methods"]
            ]
            parts = [(n, w) for n, w in parts if w]  # parts written before a field existed
            keys = sorted({k for _, w in parts for k in w})
            table[method] = {
                k: sum(n * w.get(k, 0.0) for n, w in parts if k in w) / sum(n for n, w in parts if k in w) for k in keys
            }
    first = docs[0]
    return {
        "teacher_source_only": first["teacher_source_only"],
        "methods": methods,
        "preset": first["preset"],
        **wall,
        "machine": first["machine"],
        "torch": first["torch"],
        "augkd": first["augkd"],
        "parts": [
            {
                "file": name,
                "seeds": sorted({s for r in d["methods"].values() for s in r["seeds"]}),
                "git_sha": d["git_sha"],
                "overrides": d["overrides"],
                "timestamp": d["timestamp"],
                "load_avg_at_end": d.get("load_avg_at_end"),
            }
            for name, d in zip(names, docs, strict=True)
        ],
    }


def select(doc: dict[str, Any], methods: list[str], name: str) -> dict[str, Any]:
    """The part ``doc`` restricted to ``methods`` (results and wall-time tables)."""
    missing = [m for m in methods if m not in doc["methods"]]
    if missing:
        raise SystemExit(f"error: {name} has no results for {', '.join(missing)}")
    out = dict(doc, methods={m: doc["methods"][m] for m in methods})
    for field in WALL_FIELDS:
        if field in doc:
            out[field] = {m: v for m, v in doc[field].items() if m in methods}
    return out


def read_part(spec: str) -> dict[str, Any]:
    """A part given as ``FILE`` or ``FILE:method,method``."""
    path, sep, methods = spec.rpartition(":")
    if not sep or Path(spec).is_file():  # no method list (a colon may be part of the path itself)
        return json.loads(Path(spec).read_text())
    names = [m for m in methods.split(",") if m]
    if not names:
        raise SystemExit(f"error: {spec}: no methods after ':'")
    return select(json.loads(Path(path).read_text()), names, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="+", help="accuracy-<preset>.json files to merge, each FILE or FILE:method,...")
    ap.add_argument("--results", default="benchmarks/results", type=Path)
    args = ap.parse_args()
    from augkd.training.pipeline import plot_summary, summary_markdown

    docs = [read_part(p) for p in args.parts]
    out = merge(docs, list(args.parts))
    stem = args.results / f"accuracy-{out['preset']}"
    args.results.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    stem.with_suffix(".md").write_text(summary_markdown(out))
    plot_summary(out, stem.with_suffix(".png"))
    print(summary_markdown(out))


if __name__ == "__main__":
    main()
