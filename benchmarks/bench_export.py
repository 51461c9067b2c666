"""Export benchmark, the sweep: which models and settings, and the results files (measuring: export_measure.py).

For model (a) (the svhn-mnist demo student, or a labelled stand-in trained on the spot) and the 224×224 models (b),
``export_measure.py`` exports onnx + ort-int8 with the product's checks and times torch / ONNX Runtime fp32 / int8
through the library's latency harness in interleaved rounds; for (a) this script also sweeps the int8 quantiser
(calibration method, QDQ vs QOperator, which op types are quantised, per-channel, reduce_range, activation type,
excluding the first/last layer, graph optimisation level, intra-op threads) and profiles ONNX Runtime per op type.

Writes, under ``--out`` (``benchmarks/results``), ``export-<tag>.json`` (everything), ``export-<tag>.csv`` (the
tidy schema every benchmark shares: benchmarks/README.md), ``export-<tag>.md`` (targets and tables),
``export-int8-sweep-<tag>.csv`` (one row per int8 variant) and the latency plots drawn by ``plot.py`` from the CSV
into ``export-<tag>/``::

    .venv/bin/python benchmarks/bench_export.py                      # everything, stand-in for (a)
    .venv/bin/python benchmarks/bench_export.py --checkpoint runs/augkd --models a
    .venv/bin/python benchmarks/bench_export.py --quick --out /tmp/bench-export   # a minute: proves it runs
    .venv/bin/python benchmarks/bench_export.py --rewrite RESULTS.json --out DIR   # re-render, no measuring
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import export_measure
import plot

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("a", "mnv3-224", "r18-224")
PLOTTED_METRICS = ("latency", "throughput")
QUICK = {
    "models": "a",
    "train_steps": 30,
    "batches": [1, 32],
    "duration": 0.05,
    "rounds": 2,
    "warmup": 2,
    "sweep_duration": 0.02,
    "sweep_rounds": 1,
    "profile_runs": 3,
    "compile": False,
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    threads = results["settings"]["threads"]
    for name, res in results["models"].items():
        lat = {(r["backend"], r["batch_size"]): r for r in res["latency"] if r["threads"] == threads}
        one = {(r["backend"], r["batch_size"]): r for r in res["latency"] if r["threads"] == 1}
        par = res["parity"]
        t1 = lat[("torch", 1)]["p50_ms"] / lat[("ort", 1)]["p50_ms"]
        t2 = lat[("ort", 32)]["p50_ms"] / lat[("ort-int8", 32)]["p50_ms"]
        out.append(
            {
                "model": name,
                "target": "ORT fp32 p50 at batch 1 >= 2x lower than torch eager",
                "measured": f"{t1:.2f}x ({lat[('torch', 1)]['p50_ms']:.3f} → {lat[('ort', 1)]['p50_ms']:.3f} ms)",
                "met": t1 >= 2.0,
            }
        )
        if threads > 1 and ("torch", 1) in one and ("ort", 1) in one:
            t1s = one[("torch", 1)]["p50_ms"] / one[("ort", 1)]["p50_ms"]
            ms = f"({one[('torch', 1)]['p50_ms']:.3f} → {one[('ort', 1)]['p50_ms']:.3f} ms)"
            out.append(
                {
                    "model": name,
                    "target": "(same, both at 1 thread: less sensitive to other processes)",
                    "measured": f"{t1s:.2f}x {ms}",
                    "met": t1s >= 2.0,
                }
            )
        out.append(
            {
                "model": name,
                "target": "ORT int8 >= 1.5x faster than ORT fp32 at batch 32",
                "measured": (
                    f"{t2:.2f}x ({lat[('ort', 32)]['p50_ms']:.3f} → {lat[('ort-int8', 32)]['p50_ms']:.3f} ms)"
                ),
                "met": t2 >= 1.5,
            }
        )
        if res["acc_meaningful"]:
            drop = res["int8"]["drop_points"]
            out.append(
                {
                    "model": name,
                    "target": "int8 Acc@1 drop <= 1 point (test split)",
                    "measured": (
                        f"{drop:.2f} pts ({res['int8']['reference_acc1'] * 100:.2f} → {res['int8']['acc1'] * 100:.2f}%)"
                    ),
                    "met": drop <= 1.0,
                }
            )
        out.append(
            {
                "model": name,
                "target": "fp32 parity: max abs Δlogits <= 1e-4 and top-1 agreement 100%",
                "measured": (
                    f"max {par['max_abs_diff']:.2e} (max abs logit {par['reference_max_abs']:.3g}), "
                    f"agreement {par['top1_agreement'] * 100:.2f}% ({par['samples']} images)"
                ),
                "met": par["max_abs_diff"] <= 1e-4 and par["top1_agreement"] == 1.0,
            }
        )
    return out


def write_results(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """JSON (everything), the tidy CSV, the int8 sweep CSV, the Markdown summary and the plots under ``out``."""
    from augkd.utils import atomic_write_json, atomic_write_text

    env = results["environment"]
    tag = (
        f"cpu{env['physical_cores']}-{_slug(env['cpu'])}-pt{'.'.join(env['torch'].split('.')[:2])}-"
        f"ort{'.'.join(str(env['onnxruntime']).split('.')[:2])}"
    )
    files = {"json": out / f"export-{tag}.json", "csv": out / f"export-{tag}.csv", "md": out / f"export-{tag}.md"}
    if results.get("int8_sweep"):
        files["sweep"] = out / f"export-int8-sweep-{tag}.csv"
    atomic_write_json(files["json"], results)
    _write_csv(files["csv"], tidy_rows(results))
    if results.get("int8_sweep"):
        _write_sweep_csv(files["sweep"], results["int8_sweep"])
    for i, png in enumerate(plot.plot_file(files["csv"], out / f"export-{tag}", metrics=PLOTTED_METRICS)):
        files[f"png{i}"] = png
    atomic_write_text(files["md"], _markdown(results, files))
    return files


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from augkd.kernels.bench import ROW_FIELDS

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ROW_FIELDS)
        w.writeheader()
        w.writerows(rows)


def _write_sweep_csv(path: Path, sweep: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(sweep[0].keys()))
        w.writeheader()
        for r in sweep:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in r.items()})


def tidy_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The tidy rows (benchmarks/README.md): per model, latency and throughput per backend × threads × batch, then
    its parity and accuracy figures (x = the number of test images they were measured on)."""
    env = results["environment"]
    common = {
        "mode": "inference",
        "device_name": env["cpu"],
        "torch_version": env["torch"],
        "triton_version": env.get("triton") or "",
        "augkd_version": env["augkd_version"],
        "git_sha": env["git_sha"],
        "timestamp": results["created"],
    }
    rows = []
    for name, res in results["models"].items():
        base = {**common, "op": f"export-{name.split(':')[0].strip()}"}
        extra = {"model": name, "onnxruntime": env["onnxruntime"], "load_avg_1m": res["load_avg_1m_before"]}
        for r in res["latency"]:
            rows += _latency_rows(base, extra, r)
        par, i8 = res["parity"], res["int8"]
        for metric, unit, value, provider in (
            ("max_abs_diff", "logit", par["max_abs_diff"], "ort"),
            ("top1_agreement", "fraction", par["top1_agreement"], "ort"),
            ("acc1", "fraction", res["torch_acc1"], "torch"),
            ("acc1", "fraction", res["onnx_acc1"], "ort"),
            ("acc1", "fraction", i8["acc1"], "ort-int8"),
            ("acc_drop_pts", "points", i8["drop_points"], "ort-int8"),
        ):
            cfg = {**extra, "accuracy_meaningful": res["acc_meaningful"]}
            rows.append(
                {
                    **base,
                    "provider": provider,
                    "metric": metric,
                    "unit": unit,
                    "x_name": "samples",
                    "x_value": par["samples"],
                    "p50": value,
                    "p20": value,
                    "p80": value,
                    "extra_config_json": json.dumps(cfg, sort_keys=True),
                }
            )
    return rows


def _latency_rows(base: dict[str, Any], extra: dict[str, Any], r: dict[str, Any]) -> list[dict[str, Any]]:
    """One latency row (ms) and one throughput row (samples/s, from the same percentiles) of a timed cell."""
    threads = r["threads"]
    cfg = {
        **extra,
        "panel": f"{threads} thread{'s' if threads != 1 else ''}",
        "threads": threads,
        "backend_provider": r["provider"],
        "rounds": r["rounds"],
        "iters": r["iters"],
        "p90_ms": r["p90_ms"],
        "p99_ms": r["p99_ms"],
        "mean_ms": r["mean_ms"],
    }
    cell = {
        **base,
        "provider": r["backend"],
        "x_name": "batch",
        "x_value": r["batch_size"],
        "extra_config_json": json.dumps(cfg, sort_keys=True),
    }
    per_s = 1000.0 * r["batch_size"]
    return [
        {**cell, "metric": "latency", "unit": "ms", "p50": r["p50_ms"], "p20": r["p20_ms"], "p80": r["p80_ms"]},
        {
            **cell,
            "metric": "throughput",
            "unit": "samples/s",
            "p50": per_s / r["p50_ms"],
            "p20": per_s / r["p80_ms"],
            "p80": per_s / r["p20_ms"],
        },
    ]


def _markdown(results: dict[str, Any], files: dict[str, Path]) -> str:
    env, s = results["environment"], results["settings"]
    lines = [
        f"# Export benchmark ({results['created']})",
        "",
        (
            f"- CPU: {env['cpu']}, {env['physical_cores']} physical cores, shared with other users; GPU: "
            f"{env.get('gpu') or 'none'}. torch {env['torch']}, onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, "
            f"augkd {env['augkd_version']} (git {env['git_sha']})."
        ),
        (
            f"- threads {s['threads']} for torch and ONNX Runtime; {s['rounds']} interleaved rounds of "
            f"{s['duration']} s per cell, median of the rounds' statistics; {s['warmup']} warm-up calls per cell."
        ),
        f"- command: `{results['command']}`",
        "",
        "## Targets",
        "",
        "| model | target | measured | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(f"| {t['model']} | {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    for name, res in results["models"].items():
        lines += [
            "",
            f"## {name}: {res['label']}",
            "",
            f"- load average (1 min) before/after: {res['load_avg_1m_before']:.2f} / {res['load_avg_1m_after']:.2f}",
            f"- parity on {res['parity']['samples']} {res['data_origin']}",
            (
                f"- Acc@1 torch {res['torch_acc1'] * 100:.2f}%, ONNX fp32 {res['onnx_acc1'] * 100:.2f}%, int8 "
                f"{res['int8']['acc1'] * 100:.2f}% (drop {res['int8']['drop_points']:.2f} pts)"
            )
            + ("" if res["acc_meaningful"] else " — random init: accuracy NOT meaningful"),
            (
                f"- ONNX: {res['onnx']['exporter']} exporter, {res['onnx']['nodes_exported']} → "
                f"{res['onnx']['nodes_final']} nodes; int8 quantised ops {res['int8_ops']}"
            ),
            "",
            "| backend | threads | batch | p50 ms | p90 ms | p99 ms | samples/s | p50 per round (ms) | provider |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in res["latency"]:
            per_round = ", ".join(f"{v:.3f}" for v in r["round_p50_ms"])
            lines.append(
                f"| {r['backend']} | {r['threads']} | {r['batch_size']} | {r['p50_ms']:.3f} | "
                f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput']:.0f} | {per_round} | "
                f"{r['provider']} |"
            )
    if results.get("int8_sweep"):
        lines += [
            "",
            "## int8 sweep (model a; interleaved rounds, speed-up = median over rounds of fp32/variant)",
            "",
            "| variant | Acc@1 % | drop pts | p50 b1 ms | p50 b32 ms | speed-up b1 | speed-up b32 | Q/DQ nodes |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in results["int8_sweep"]:
            lines.append(
                f"| {r['variant']} | {r['acc1'] * 100:.2f} | {r['acc_drop_pts']:.2f} | {r['p50_ms_b1']:.3f} | "
                f"{r['p50_ms_b32']:.3f} | {r['speedup_b1_vs_fp32']:.2f}x | {r['speedup_b32_vs_fp32']:.2f}x | "
                f"{r['q_dq_nodes']} |"
            )
    if results.get("op_profile_a_b32"):
        prof = results["op_profile_a_b32"]
        lines += [
            "",
            "## Where the time goes (model a, batch 32, ONNX Runtime profiler, µs per run by op type)",
            "",
            "| op type | fp32 µs | fp32 nodes | int8 µs | int8 nodes |",
            "|---|---:|---:|---:|---:|",
        ]
        ops = list(dict.fromkeys([*prof["int8"]["us_per_run"], *prof["fp32"]["us_per_run"]]))
        for op in ops:
            lines.append(
                f"| {op} | {prof['fp32']['us_per_run'].get(op, 0):.1f} | {prof['fp32']['nodes'].get(op, 0)} | "
                f"{prof['int8']['us_per_run'].get(op, 0):.1f} | {prof['int8']['nodes'].get(op, 0)} |"
            )
        lines.append(
            f"| **total** | {prof['fp32']['total_us_per_run']:.1f} | | {prof['int8']['total_us_per_run']:.1f} | |"
        )
    if results.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in results["notes"]]]
    lines += ["", "Files: " + ", ".join(f"`{p.name}`" for p in files.values())]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="the svhn-mnist demo student (run dir or .safetensors); default: train a labelled stand-in",
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results (required with --quick)")
    p.add_argument("--work", type=Path, default=Path("/tmp/augkd-bench-export"), help="checkpoints and artifacts")
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument("--duration", type=float, default=2.0, help="seconds per cell per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="default: physical cores available")
    p.add_argument("--parity-samples", type=int, default=256, help="parity images for the 224 models")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    p.add_argument("--no-sweep", dest="sweep", action="store_false")
    p.add_argument(
        "--rewrite",
        type=Path,
        help=("re-render CSV/MD/PNG (targets recomputed) from a results JSON of an earlier run, without measuring"),
    )
    p.add_argument("--sweep-duration", type=float, default=1.0, help="seconds per int8 variant, batch and round")
    p.add_argument("--sweep-rounds", type=int, default=5)
    p.add_argument("--profile-runs", type=int, default=30, help="ONNX Runtime profiler runs per graph")
    p.add_argument("--quick", action="store_true", help=f"the smallest run, to check it works: {QUICK}")
    args = p.parse_args(argv)
    if args.quick:
        if args.out is None:
            p.error("--quick needs --out (its numbers are not results: keep them out of benchmarks/results)")
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.out = args.out or RESULTS
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("augkd").setLevel(logging.INFO)
    args = parse_args(argv)
    if args.rewrite is not None:
        results = json.loads(args.rewrite.read_text())
        results["targets"] = _targets(results)
    else:
        results = measure(args)
    for f in write_results(results, args.out).values():
        print(f)
    return results


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every model asked for (export, checks, latency), the int8 sweep and op profile of (a), the targets."""
    import sys

    from augkd.export.report import environment_info, now_iso
    from augkd.export.runtime import physical_cores

    threads = args.threads or physical_cores()
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    results: dict[str, Any] = {
        "created": now_iso(),
        "command": " ".join(["benchmarks/bench_export.py", *sys.argv[1:]]),
        "environment": environment_info(),
        "models": {},
        "notes": [],
        "settings": {
            "threads": threads,
            "batches": args.batches,
            "duration": args.duration,
            "rounds": args.rounds,
            "warmup": args.warmup,
        },
    }
    if "a" in wanted:
        _model_a(args, threads, results)
    for key, arch in (("mnv3-224", "mobilenet_v3_small"), ("r18-224", "resnet18")):
        if key in wanted:
            ckpt = export_measure.random_224(arch, args.work / key / "student.safetensors")
            label = f"{arch} at 224x224, random init: latency and parity on mnist5k test images resized to 224"
            results["models"][f"{key}: {arch} @224 (random init)"] = export_measure.measure_model(
                key, ckpt, label + "; accuracy not meaningful", False, args.work, args, threads
            )
    results["targets"] = _targets(results)
    results["load_avg_1m_end"] = os.getloadavg()[0]
    return results


def _model_a(args: argparse.Namespace, threads: int, results: dict[str, Any]) -> None:
    """Model (a): the given student (or the stand-in), then its int8 sweep and op profile."""
    from augkd.export.data import evaluation_data
    from augkd.export.latency import take_batch
    from augkd.export.source import load_source

    if args.checkpoint is not None:  # a stand-in trained by an earlier run keeps its label
        recorded = load_source(args.checkpoint).meta.extra.get("label")
        ckpt, label = args.checkpoint, recorded or f"svhn-mnist demo student ({args.checkpoint})"
    else:
        ckpt = export_measure.train_standin(args.work / "standin" / "student.safetensors", args.train_steps)
        label = export_measure.STANDIN_LABEL.format(steps=args.train_steps)
    results["models"]["a: svhn-mnist student mnv3-small-0.5 @32"] = export_measure.measure_model(
        "a", ckpt, label, True, args.work, args, threads
    )
    if not args.sweep:
        return
    src = load_source(ckpt)
    ev = evaluation_data(src.spec, src.meta)
    images, labels = ev.test_batch()
    work = args.work / "a"
    results["int8_sweep"] = export_measure.int8_sweep(
        ev, work / "model.onnx", work, threads, args.sweep_duration, args.sweep_rounds, labels, images
    )
    x32 = ev.normalize(take_batch(images, 32)).numpy()
    results["op_profile_a_b32"] = {
        k: export_measure.profile_ops(work / f, x32, threads, work, runs=args.profile_runs)
        for k, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))
    }


if __name__ == "__main__":
    main()
