"""Export benchmark: fp32 parity, int8 accuracy and latency of torch / ONNX Runtime fp32 / int8 on this machine.

Models:
  (a) ``svhn-mnist`` demo student: ``mobilenet_v3_small`` (``width_mult=0.5``) at 32×32, 10 classes. Pass the
      distilled student with ``--checkpoint RUN_DIR_OR_CKPT``; without it a STAND-IN is trained here (plain
      cross-entropy on mnist5k, fixed number of steps) and labelled as such in every result file.
  (b) ``mobilenet_v3_small`` (width 1.0) and ``resnet18`` at 224×224, random init: parity and latency on real
      mnist5k test images resized to 224; their accuracy (and int8 accuracy drop) is NOT meaningful.

Every latency cell uses the same images for every backend, torch and ONNX Runtime pinned to the same thread
count, and is measured in ``--rounds`` interleaved rounds (backend by backend, batch by batch, then again)
whose per-round statistics are combined by their median: this damps the effect of other processes on a
shared CPU. The 1-minute load average is recorded before and after each model.

The int8 sweep (model (a)) measures what the issue asks to investigate: calibration method, QDQ vs QOperator,
which op types are quantised, per-channel, reduce_range, activation type, excluding the first/last layer,
graph optimisation level and intra-op threads.

    .venv/bin/python benchmarks/bench_export.py                      # everything, stand-in for (a)
    .venv/bin/python benchmarks/bench_export.py --checkpoint runs/augkd --models a
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("a", "mnv3-224", "r18-224")
STANDIN_LABEL = (
    "STAND-IN for the svhn-mnist demo student: mobilenet_v3_small(width_mult=0.5) at 32x32 trained with "
    "plain cross-entropy on mnist5k ({steps} steps, batch 64, AdamW 3e-3 cosine, BatchNorm statistics "
    "recomputed on the train split); NOT the distilled student"
)
CSV_COLUMNS = ["suite", "model", "provider", "mode", "metric", "unit", "x_name", "x_value", "value", "p20", "p50",
               "p80", "p90", "p99", "mean", "throughput", "extra_config_json", "device_name", "threads", "load_avg_1m",
               "torch", "onnxruntime", "augkd", "git_sha", "timestamp"]  # fmt: skip

logger = logging.getLogger("bench_export")


# ---------------------------------------------------------------------------------------------------------------
# model (a): the demo student or its stand-in; (b): random-init 224 models
# ---------------------------------------------------------------------------------------------------------------
def train_standin(path: Path, steps: int, seed: int = 0) -> Path:
    """Train the stand-in student with plain CE for a fixed number of steps (about a minute on 2 idle cores)."""
    import torch.nn.functional as F

    from augkd.checkpoint import ModelMeta, save_model
    from augkd.config import DataConfig
    from augkd.data import iterate_batches, load_domain
    from augkd.models import create_model

    if path.is_file():  # a stand-in trained by an earlier run with the same recipe is reused
        from augkd.checkpoint import read_meta

        if read_meta(path.with_suffix(".json")).extra.get("label") == STANDIN_LABEL.format(steps=steps):
            logger.info("reusing the stand-in trained earlier: %s", path)
            return path
    torch.manual_seed(seed)
    cfg = DataConfig(dataset="mnist5k", image_size=32)
    dom = load_domain(cfg)
    model = create_model("mobilenet_v3_small", 10, width_mult=0.5)
    meta = ModelMeta(
        arch="mobilenet_v3_small",
        num_classes=10,
        model_kwargs={"width_mult": 0.5},
        class_names=dom.class_names,
        input_size=32,
        extra={"data": cfg.model_dump(mode="json"), "label": STANDIN_LABEL.format(steps=steps)},
    )
    mean, std = torch.tensor(meta.mean).view(1, 3, 1, 1), torch.tensor(meta.std).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen, step, t0 = torch.Generator().manual_seed(seed), 0, time.perf_counter()
    model.train()
    while step < steps:
        for x, y in iterate_batches(dom.train, 64, shuffle=True, generator=gen, drop_last=True):
            loss = F.cross_entropy(model((x - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= steps:
                break
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:  # exact running statistics instead of the EMA that lags a short, high-lr run
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        for x, _ in iterate_batches(dom.train, 250, shuffle=False):
            model((x - mean) / std)
    model.eval()
    logger.info("stand-in trained: %d steps in %.0f s", steps, time.perf_counter() - t0)
    return save_model(model, path, meta)


def random_224(arch: str, path: Path, **kwargs: Any) -> Path:
    """A random-init 10-class model at 224×224 whose sidecar points at mnist5k resized to 224."""
    from augkd.checkpoint import ModelMeta, save_model
    from augkd.config import DataConfig
    from augkd.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, 10, **kwargs).eval()
    cfg = DataConfig(dataset="mnist5k", image_size=224)
    meta = ModelMeta(
        arch=arch,
        num_classes=10,
        model_kwargs=kwargs,
        class_names=[str(i) for i in range(10)],
        input_size=224,
        extra={
            "data": cfg.model_dump(mode="json"),
            "label": f"{arch} random init at 224x224 (accuracy not meaningful)",
        },
    )
    return save_model(model, path, meta)


# ---------------------------------------------------------------------------------------------------------------
# latency: interleaved rounds, same images, same threads
# ---------------------------------------------------------------------------------------------------------------
def _median_stats(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("mean_ms", "min_ms", "p20_ms", "p50_ms", "p80_ms", "p90_ms", "p99_ms", "throughput")
    out = {k: statistics.median(r[k] for r in per_round) for k in keys}
    out["iters"] = sum(r["iters"] for r in per_round)
    out["rounds"] = len(per_round)
    out["round_p50_ms"] = [r["p50_ms"] for r in per_round]
    return out


def time_model(src: Any, ev: Any, artifacts: dict[str, Path], backends: list[str], batches: list[int], threads: int,
               duration: float, rounds: int, warmup: int,
               single_thread: tuple[str, ...] = ("torch", "ort")) -> list[dict[str, Any]]:  # fmt: skip
    """Rows (backend × threads × batch) from ``rounds`` interleaved rounds of :func:`measure_latency`.

    ``single_thread`` backends are also timed with 1 thread at the smallest and largest batch: a
    single-threaded run is much less disturbed by other processes on a shared CPU.
    """
    import copy

    from augkd.export.latency import measure_latency, ort_backend, take_batch, torch_backend, torch_threads

    images, _ = ev.test_batch(max(batches))
    specs = [(n, threads, list(batches)) for n in backends]
    if threads > 1:
        specs += [(n, 1, sorted({min(batches), max(batches)})) for n in single_thread if n in backends]
    runners = {}
    for name, t, _ in specs:
        if name in ("torch", "compile"):
            runners[(name, t)] = torch_backend(
                copy.deepcopy(src.model), ev.normalize, t, torch.device("cpu"), compile=name == "compile"
            )
        else:
            runners[(name, t)] = ort_backend(name, artifacts[name], ev.normalize, t)
    inputs = {(n, t, b): runners[(n, t)].prepare(take_batch(images, b)) for n, t, bs in specs for b in bs}
    cells: dict[tuple[str, int, int], list[dict[str, Any]]] = {k: [] for k in inputs}
    first_call: dict[tuple[str, int, int], float] = {}
    for _ in range(rounds):
        for name, t, bs in specs:
            runner = runners[(name, t)]
            with torch_threads(t):
                for b in bs:
                    stats = measure_latency(runner.fn, inputs[(name, t, b)], warmup=warmup, iters=5,
                                            duration=duration, batch_size=b, sync=runner.sync)  # fmt: skip
                    first_call.setdefault((name, t, b), stats["first_call_ms"])
                    cells[(name, t, b)].append(stats)
    rows = []
    for (name, t, b), per_round in cells.items():
        row = {
            "backend": name,
            "batch_size": b,
            **_median_stats(per_round),
            "provider": runners[(name, t)].provider,
            "threads": t,
        }
        if name == "compile":
            row["note"] = f"first call (compile) {first_call[(name, t, b)] / 1000:.1f} s, excluded"
        rows.append(row)
        logger.info(
            "%-8s %dt b%-3d p50 %.3f ms (rounds %s)",
            name,
            t,
            b,
            row["p50_ms"],
            ", ".join(f"{v:.3f}" for v in row["round_p50_ms"]),
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# int8 sweep
# ---------------------------------------------------------------------------------------------------------------
SWEEP = [  # name, quantize_ort_int8 kwargs, session kwargs
    ("qdq minmax per-channel u8s8 (default)", {}, {}),
    ("qdq percentile", {"method": "percentile"}, {}),
    ("qdq entropy", {"method": "entropy"}, {}),
    ("qdq per-tensor weights", {"per_channel": False}, {}),
    ("qdq reduce_range", {"reduce_range": True}, {}),
    ("qdq s8s8 (int8 activations)", {"activation_type": "int8"}, {}),
    ("qdq Conv/Gemm/MatMul only", {"op_types": ["Conv", "Gemm", "MatMul"]}, {}),
    ("qdq exclude first/last layer", {"exclude_first_last": True}, {}),
    ("qoperator (QLinear ops)", {"quant_format": "qoperator"}, {}),
    ("qdq default, graph opt extended", {}, {"opt_level": "extended"}),
    ("qdq default, 1 thread", {}, {"threads": 1}),
]


def int8_sweep(ev: Any, fp32_path: Path, work: Path, threads: int, duration: float, rounds: int,
               labels: torch.Tensor, images: torch.Tensor) -> list[dict[str, Any]]:  # fmt: skip
    """Accuracy and b1/b32 latency of each int8 variant next to fp32 (all timed in the same interleaved rounds).

    The speed-up is the median over rounds of (fp32 p50 / variant p50) within each round.
    """
    from augkd.export.latency import measure_latency, take_batch
    from augkd.export.parity import accuracy
    from augkd.export.quantize import quantize_ort_int8
    from augkd.export.runtime import OrtRunner, run_batched

    cal = ev.normalize(ev.calibration_images(256)).numpy()
    x_test = ev.normalize(images).numpy()
    variants: list[tuple[str, Path, dict[str, Any], dict[str, Any]]] = [
        ("fp32", fp32_path, {}, {}),
        ("fp32, graph opt extended", fp32_path, {}, {"opt_level": "extended"}),
        ("fp32, 1 thread", fp32_path, {}, {"threads": 1}),
    ]
    for i, (name, qkw, skw) in enumerate(SWEEP):
        path = work / f"sweep{i}.int8.onnx"
        info = quantize_ort_int8(fp32_path, path, cal, **qkw)
        variants.append((name, path, info, skw))
    runners, rows = [], []
    for name, path, info, skw in variants:
        runner = OrtRunner(path, skw.get("threads", threads), "cpu", skw.get("opt_level", "all"))
        acc = accuracy(run_batched(runner, x_test), labels)
        rows.append({"variant": name, "acc1": acc, "threads": runner.threads, "opt_level": skw.get("opt_level", "all"),
                     "quantized_ops": info.get("quantized_ops"), "float_ops": info.get("float_ops"),
                     "q_dq_nodes": (info.get("quantize_linear", 0), info.get("dequantize_linear", 0)),
                     "file_kib": path.stat().st_size / 1024})  # fmt: skip
        runners.append((runner, {b: runner.prepare(take_batch(images, b), ev.normalize) for b in (1, 32)}))
    # Interleaved rounds: every variant (fp32 included) is timed once per round, so each round's ratios
    # against fp32 compare measurements taken within seconds of each other on the shared CPU.
    p50: dict[tuple[int, int], list[float]] = {(i, b): [] for i in range(len(rows)) for b in (1, 32)}
    for _ in range(rounds):
        for i, (runner, xs) in enumerate(runners):
            for b, x in xs.items():
                p50[(i, b)].append(
                    measure_latency(runner, x, warmup=5, iters=5, duration=duration, batch_size=b)["p50_ms"]
                )
    index = {r["variant"]: i for i, r in enumerate(rows)}
    for i, r in enumerate(rows):
        ref = index["fp32, 1 thread"] if r["threads"] == 1 else index["fp32"]
        for b in (1, 32):
            r[f"p50_ms_b{b}"] = statistics.median(p50[(i, b)])
            r[f"round_p50_ms_b{b}"] = p50[(i, b)]
            r[f"speedup_b{b}_vs_fp32"] = statistics.median(
                f / v for f, v in zip(p50[(ref, b)], p50[(i, b)], strict=True)
            )
        r["acc_drop_pts"] = (rows[index["fp32"]]["acc1"] - r["acc1"]) * 100
        logger.info(
            "sweep %-38s acc %.4f  b1 %.3f ms  b32 %.3f ms  x%.2f",
            r["variant"],
            r["acc1"],
            r["p50_ms_b1"],
            r["p50_ms_b32"],
            r["speedup_b32_vs_fp32"],
        )
    return rows


def profile_ops(path: Path, x: Any, threads: int, work: Path, runs: int = 30) -> dict[str, Any]:
    """ONNX Runtime's own profiler: kernel time per op type (µs per run) and node counts of the optimised graph."""
    import collections

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"ortprofile-{path.stem}")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(10 + runs):
        sess.run(None, {name: x})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    nodes: collections.Counter[str] = collections.Counter()
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev["args"]["op_name"]] += ev["dur"]
            nodes[(ev["args"]["op_name"], ev["name"])] += 1
    total_runs = 10 + runs + 1  # profiling also covers the session's own warm-up run
    counts = collections.Counter(op for op, _ in nodes)
    return {
        "us_per_run": {k: round(v / total_runs, 1) for k, v in per_op.most_common()},
        "total_us_per_run": round(sum(per_op.values()) / total_runs, 1),
        "nodes": dict(counts.most_common()),
    }


# ---------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------
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


def _notes(results: dict[str, Any]) -> list[str]:
    """Conclusions computed from this run's numbers (nothing copied in by hand)."""
    notes = []
    prof = results.get("op_profile_a_b32")
    if prof:
        f32, i8 = prof["fp32"]["us_per_run"], prof["int8"]["us_per_run"]
        conv32 = f32.get("Conv", 0.0)
        conv8 = sum(v for k, v in i8.items() if k in ("QLinearConv", "ConvInteger")) + i8.get("Conv", 0.0)
        glue = sum(
            v
            for k, v in i8.items()
            if k in ("QuantizeLinear", "DequantizeLinear", "HardSigmoid", "QLinearMul", "Mul", "Transpose")
        )
        total32, total8 = prof["fp32"]["total_us_per_run"], prof["int8"]["total_us_per_run"]
        notes.append(
            f"model a, batch 32 (ONNX Runtime profiler): the convolutions take {conv8:.0f} µs as int8 QLinearConv "
            f"against {conv32:.0f} µs as fp32 Conv (MLAS NCHWc kernels with HardSwish fused in): int8 buys no "
            "convolution time on the narrow layers of this width-0.5 network. On top, the int8 graph spends "
            f"{glue:.0f} µs in Quantize/DequantizeLinear, HardSigmoid and QLinearMul around each HardSwish (ONNX "
            f"Runtime has no int8 HardSwish), so the whole int8 graph takes {total8:.0f} µs against {total32:.0f} "
            "µs in fp32. "
            "None of the sweep's variants (calibration, format, op types, per-channel, reduce_range, first/last "
            "layer excluded, optimisation level, threads) changes that."
        )
    threads = results["settings"]["threads"]
    for name, res in results["models"].items():
        lat = {(r["backend"], r["batch_size"]): r["p50_ms"] for r in res["latency"] if r["threads"] == threads}
        if ("torch", 1) in lat and ("ort", 1) in lat and lat[("torch", 1)] / lat[("ort", 1)] < 2.0:
            macs = res["model"]["macs"]
            notes.append(
                f"{name.split(':')[0]}: at batch 1 ONNX Runtime fp32 runs at {macs / lat[('ort', 1)] / 1e6:.0f} GMAC/s "
                f"and torch eager at {macs / lat[('torch', 1)] / 1e6:.0f} GMAC/s ({macs / 1e9:.2f} GMACs per image): "
                "the time is in large dense convolutions where both use vectorised GEMM kernels, so ORT's gains from "
                "fusing ops and removing per-op dispatch overhead (which dominate the small models) are a small "
                "share here; int8 is the lever for this model (see its int8 row)."
            )
    sweep = {r["variant"]: r for r in results.get("int8_sweep", [])}
    names = (
        ("minmax", "qdq minmax per-channel u8s8 (default)"),
        ("percentile", "qdq percentile"),
        ("entropy", "qdq entropy"),
    )
    cal = {k: sweep[v]["acc1"] for k, v in names if v in sweep}
    if cal:
        best = max(cal.values())
        notes.append(
            "calibration (model a, Acc@1 on the test split): "
            + ", ".join(f"{k} {v * 100:.2f}%" for k, v in cal.items())
            + (
                f"; the default stays minmax: it is within {(best - cal['minmax']) * 100:.2f} pts "
                "of the best here and needs no histograms."
            )
        )
    loads = [
        f"{n.split(':')[0]} {r['load_avg_1m_before']:.2f}→{r['load_avg_1m_after']:.2f}"
        for n, r in results["models"].items()
    ]
    notes.append(
        "the CPU was shared with other engineers' jobs during this run (1-min load average before→after each "
        f"model: {', '.join(loads)}; 2 cores). torch eager (OpenMP) suffers far more from that contention "
        "than ONNX Runtime, which inflates the torch-vs-ORT ratios at 2 threads; the 1-thread rows are the "
        "steadier comparison."
    )
    if any("@224" in n for n in results["models"]):
        notes.append(
            "the 224x224 models are random init: their accuracy and int8 accuracy drop are NOT meaningful, only "
            "their latency and fp32 parity (on real mnist5k test images resized to 224) are."
        )
    return notes


def write_results(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """CSV (tidy rows), JSON (everything), Markdown summary and a latency PNG under ``out``."""
    from augkd.utils import atomic_write_json, atomic_write_text

    env = results["environment"]
    tag = (
        f"cpu{env['physical_cores']}-{_slug(env['cpu'])}-pt{'.'.join(env['torch'].split('.')[:2])}-"
        f"ort{'.'.join(str(env['onnxruntime']).split('.')[:2])}"
    )
    files = {
        "json": out / f"export-{tag}.json",
        "csv": out / f"export-{tag}.csv",
        "md": out / f"export-{tag}.md",
        "png": out / f"latency-{tag}.png",
    }
    if results.get("int8_sweep"):
        files["sweep"] = out / f"export-int8-sweep-{tag}.csv"
    atomic_write_json(files["json"], results)
    _write_csv(results, files["csv"])
    if results.get("int8_sweep"):
        keys = list(results["int8_sweep"][0].keys())
        with open(files["sweep"], "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            for r in results["int8_sweep"]:
                w.writerow({k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in r.items()})
    atomic_write_text(files["md"], _markdown(results, files))
    _chart(results, files["png"])
    return files


def _write_csv(results: dict[str, Any], path: Path) -> None:
    env, ts = results["environment"], results["created"]
    common = {"suite": "export", "mode": "inference", "device_name": env["cpu"], "torch": env["torch"],
              "onnxruntime": env["onnxruntime"], "augkd": env["augkd_version"], "git_sha": env["git_sha"],
              "timestamp": ts, "threads": results["settings"]["threads"]}  # fmt: skip
    rows = []
    for name, res in results["models"].items():
        load = res["load_avg_1m_before"]
        for r in res["latency"]:
            rows.append({**common, "model": name, "provider": r["backend"], "metric": "latency", "unit": "ms",
                         "x_name": "batch", "x_value": r["batch_size"], "value": r["p50_ms"], "p20": r["p20_ms"],
                         "p50": r["p50_ms"], "p80": r["p80_ms"], "p90": r["p90_ms"], "p99": r["p99_ms"],
                         "mean": r["mean_ms"], "throughput": r["throughput"], "load_avg_1m": load,
                         "threads": r["threads"],
                         "extra_config_json": json.dumps({"provider": r["provider"], "rounds": r["rounds"],
                                                          "iters": r["iters"]})})  # fmt: skip
        par, i8 = res["parity"], res["int8"]
        for metric, value, prov in (
            ("max_abs_diff", par["max_abs_diff"], "ort"),
            ("top1_agreement", par["top1_agreement"], "ort"),
            ("acc1", res["onnx_acc1"], "ort"),
            ("acc1", i8["acc1"], "ort-int8"),
            ("acc1", res["torch_acc1"], "torch"),
            ("acc_drop_pts", i8["drop_points"], "ort-int8"),
        ):
            rows.append({**common, "model": name, "provider": prov, "metric": metric, "unit": "",
                         "x_name": "samples", "x_value": par["samples"], "value": value, "load_avg_1m": load,
                         "extra_config_json": json.dumps({"accuracy_meaningful": res["acc_meaningful"]})})  # fmt: skip
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _markdown(results: dict[str, Any], files: dict[str, Path]) -> str:
    env, s = results["environment"], results["settings"]
    lines = [f"# Export benchmark ({results['created']})", "",
             f"- CPU: {env['cpu']}, {env['physical_cores']} physical cores, shared with other users; GPU: "
             f"{env.get('gpu') or 'none'}. torch {env['torch']}, onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, "
             f"augkd {env['augkd_version']} (git {env['git_sha']}).",
             f"- threads {s['threads']} for torch and ONNX Runtime; {s['rounds']} interleaved rounds of "
             f"{s['duration']} s per cell, median of the rounds' statistics; {s['warmup']} warm-up calls per cell.",
             f"- command: `{results['command']}`", "", "## Targets", "",
             "| model | target | measured | met |", "|---|---|---|---|"]  # fmt: skip
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


def _chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    models = list(results["models"].items())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], models, strict=True):
        rows = [r for r in res["latency"] if r["threads"] == results["settings"]["threads"]]
        backends = list(dict.fromkeys(r["backend"] for r in rows))
        batches = sorted({r["batch_size"] for r in rows})
        width = 0.8 / len(backends)
        for i, b_name in enumerate(backends):
            by = {r["batch_size"]: r["p50_ms"] for r in rows if r["backend"] == b_name}
            ax.bar([j + i * width for j in range(len(batches))], [by[b] for b in batches], width, label=b_name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.set_ylabel("p50 latency (ms, log)")
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    env = results["environment"]
    fig.suptitle(
        (
            f"{env['cpu']} ({env['physical_cores']} cores, {results['settings']['threads']} threads), "
            f"torch {env['torch']}, onnxruntime {env['onnxruntime']}"
        ),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
def run_model(
    name: str, ckpt: Path, label: str, acc_meaningful: bool, work: Path, args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    from augkd.export import ExportCheckError, export_model
    from augkd.export.data import evaluation_data
    from augkd.export.source import load_source

    load_before = os.getloadavg()[0]
    try:
        cfg = {
            "formats": ["onnx", "ort-int8"],
            "threads": threads,
            "checks": {"parity_samples": args.parity_samples if not acc_meaningful else None},
            "latency": {"enabled": False},
        }
        report = export_model(ckpt, cfg, work / name)
    except ExportCheckError as exc:  # a failed check is a result to record, not a crash
        report = exc.report
    src = load_source(ckpt)
    ev = evaluation_data(src.spec, src.meta)
    artifacts = {"ort": work / name / "model.onnx", "ort-int8": work / name / "model.int8.onnx"}
    backends = ["torch"] + (["compile"] if args.compile else []) + ["ort", "ort-int8"]
    latency = time_model(src, ev, artifacts, backends, args.batches, threads, args.duration, args.rounds, args.warmup)
    onnx_art, i8 = report.artifact("onnx"), report.artifact("ort-int8")
    return {
        "label": label, "checkpoint": str(ckpt), "acc_meaningful": acc_meaningful,
        "data_origin": f"{ev.test_split}-split images of {ev.dataset} at {src.meta.input_size}px ({ev.origin})",
        "parity": onnx_art.parity.model_dump(), "torch_acc1": report.model["torch_acc1"],
        "onnx_acc1": onnx_art.accuracy.acc1, "int8": i8.accuracy.model_dump(),
        "int8_parity": i8.parity.model_dump(), "int8_ops": i8.details["quantization"]["quantized_ops"],
        "int8_settings": {k: i8.details["quantization"][k] for k in ("calibration_method", "format", "activation_type",
                                                                      "per_channel", "calibration_samples")},
        "onnx": {k: report.onnx[k] for k in ("exporter", "fallback_reason", "opset", "nodes_exported", "nodes_final")},
        "model": {k: report.model[k] for k in ("arch", "model_kwargs", "input_size", "parameters", "macs")},
        "latency": latency, "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0],
        "export_failures": report.failures,
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="the svhn-mnist demo student (run dir or .safetensors); default: train a labelled stand-in",
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--out", type=Path, default=RESULTS)
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
        help=(
            "re-render CSV/MD/PNG (targets and notes recomputed) from a results "
            "JSON of an earlier run, without measuring"
        ),
    )
    p.add_argument("--sweep-duration", type=float, default=1.0, help="seconds per int8 variant, batch and round")
    p.add_argument("--sweep-rounds", type=int, default=5)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import sys

    from augkd.export.report import environment_info, now_iso
    from augkd.export.runtime import physical_cores

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("augkd").setLevel(logging.INFO)
    args = parse_args(argv)
    if args.rewrite is not None:
        results = json.loads(args.rewrite.read_text())
        results["targets"], results["notes"] = _targets(results), []
        results["notes"] = _notes(results)
        for f in write_results(results, args.out).values():
            print(f)
        return results
    threads = args.threads or physical_cores()
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    results: dict[str, Any] = {"created": now_iso(), "command": " ".join(["benchmarks/bench_export.py", *sys.argv[1:]]),
                               "environment": environment_info(), "models": {}, "notes": [],
                               "settings": {"threads": threads, "batches": args.batches, "duration": args.duration,
                                            "rounds": args.rounds, "warmup": args.warmup}}  # fmt: skip
    if "a" in wanted:
        if args.checkpoint is not None:  # a stand-in trained by an earlier run keeps its label
            from augkd.export.source import load_source

            recorded = load_source(args.checkpoint).meta.extra.get("label")
            ckpt, label = args.checkpoint, recorded or f"svhn-mnist demo student ({args.checkpoint})"
        else:
            ckpt = train_standin(args.work / "standin" / "student.safetensors", args.train_steps)
            label = STANDIN_LABEL.format(steps=args.train_steps)
        results["models"]["a: svhn-mnist student mnv3-small-0.5 @32"] = run_model(
            "a", ckpt, label, True, args.work, args, threads
        )
        if args.sweep:
            from augkd.export.data import evaluation_data
            from augkd.export.source import load_source

            src = load_source(ckpt)
            ev = evaluation_data(src.spec, src.meta)
            images, labels = ev.test_batch()
            results["int8_sweep"] = int8_sweep(ev, args.work / "a" / "model.onnx", args.work / "a", threads,
                                               args.sweep_duration, args.sweep_rounds, labels, images)  # fmt: skip
            from augkd.export.latency import take_batch

            x32 = ev.normalize(take_batch(images, 32)).numpy()
            results["op_profile_a_b32"] = {
                k: profile_ops(args.work / "a" / f, x32, threads, args.work / "a")
                for k, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))
            }
    for key, arch, kwargs in (("mnv3-224", "mobilenet_v3_small", {}), ("r18-224", "resnet18", {})):
        if key in wanted:
            ckpt = random_224(arch, args.work / key / "student.safetensors", **kwargs)
            results["models"][f"{key}: {arch} @224 (random init)"] = run_model(
                key, ckpt, f"{arch} at 224x224, random init: latency and parity on mnist5k test images resized "
                f"to 224; accuracy not meaningful", False, args.work, args, threads)  # fmt: skip
    results["targets"] = _targets(results)
    results["notes"] += _notes(results)
    results["load_avg_1m_end"] = os.getloadavg()[0]
    files = write_results(results, args.out)
    for f in files.values():
        print(f)
    return results


if __name__ == "__main__":
    main()
