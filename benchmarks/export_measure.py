"""Export benchmark, the measuring part: the models, the export and its checks, latency, the int8 variants.

Every latency goes through the library's harness (``augkd.export.latency``: :func:`time_interleaved` over
:func:`measure_latency`): the same images for every backend, torch and ONNX Runtime pinned to the same thread
count, ``rounds`` interleaved rounds (backend by backend, batch by batch, then again) whose per-round statistics
are combined by their median, which damps the effect of other processes on a shared CPU.

Models: (a) the ``svhn-mnist`` demo student (``mobilenet_v3_small``, ``width_mult=0.5``, 32×32, 10 classes) or,
without a checkpoint, a STAND-IN trained here with plain cross-entropy and labelled as such; (b)
``mobilenet_v3_small`` and ``resnet18`` at 224×224, random init (accuracy not meaningful). ``bench_export.py``
is the command line that sweeps them and writes the files.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from augkd.export.latency import BackendRunner, ort_backend, time_interleaved, torch_backend

STANDIN_LABEL = (
    "STAND-IN for the svhn-mnist demo student: mobilenet_v3_small(width_mult=0.5) at 32x32 trained with "
    "plain cross-entropy on mnist5k ({steps} steps, batch 64, AdamW 3e-3 cosine, BatchNorm statistics "
    "recomputed on the train split); NOT the distilled student"
)

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
# latency: interleaved rounds, same images, same threads (the library's harness)
# ---------------------------------------------------------------------------------------------------------------
def time_model(
    src: Any,
    ev: Any,
    artifacts: dict[str, Path],
    backends: list[str],
    batches: list[int],
    threads: int,
    duration: float,
    rounds: int,
    warmup: int,
    single_thread: tuple[str, ...] = ("torch", "ort"),
) -> list[dict[str, Any]]:
    """Rows (backend × threads × batch) from ``rounds`` interleaved rounds of the library's harness.

    ``single_thread`` backends are also timed with 1 thread at the smallest and largest batch: a
    single-threaded run is much less disturbed by other processes on a shared CPU.
    """
    specs = [(n, threads, list(batches)) for n in backends]
    if threads > 1:
        specs += [(n, 1, sorted({min(batches), max(batches)})) for n in single_thread if n in backends]
    plan = [(_backend(name, t, src, ev, artifacts), bs) for name, t, bs in specs]
    images, _ = ev.test_batch(max(batches))
    return time_interleaved(plan, images, rounds=rounds, warmup=warmup, iters=5, duration=duration)


def _backend(name: str, threads: int, src: Any, ev: Any, artifacts: dict[str, Path]) -> BackendRunner:
    if name in ("torch", "compile"):
        return torch_backend(copy.deepcopy(src.model), ev.normalize, threads, torch.device("cpu"), name == "compile")
    return ort_backend(name, artifacts[name], ev.normalize, threads)


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


def int8_sweep(
    ev: Any,
    fp32_path: Path,
    work: Path,
    threads: int,
    duration: float,
    rounds: int,
    labels: torch.Tensor,
    images: torch.Tensor,
) -> list[dict[str, Any]]:
    """Accuracy and b1/b32 latency of each int8 variant next to fp32 (all timed in the same interleaved rounds).

    The speed-up is the median over rounds of (fp32 p50 / variant p50) within each round.
    """
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
    plan, rows = [], []
    for name, path, info, skw in variants:
        runner = OrtRunner(path, skw.get("threads", threads), "cpu", skw.get("opt_level", "all"))
        acc = accuracy(run_batched(runner, x_test), labels)
        rows.append(
            {
                "variant": name,
                "acc1": acc,
                "threads": runner.threads,
                "opt_level": skw.get("opt_level", "all"),
                "quantized_ops": info.get("quantized_ops"),
                "float_ops": info.get("float_ops"),
                "q_dq_nodes": (info.get("quantize_linear", 0), info.get("dequantize_linear", 0)),
                "file_kib": path.stat().st_size / 1024,
            }
        )
        prepare = functools.partial(runner.prepare, normalize=ev.normalize)
        plan.append((BackendRunner(name, runner, prepare, runner.provider, runner.threads), (1, 32)))
    # Interleaved rounds: every variant (fp32 included) is timed once per round, so each round's ratios
    # against fp32 compare measurements taken within seconds of each other on the shared CPU.
    timed = time_interleaved(plan, images, rounds=rounds, warmup=5, iters=5, duration=duration)
    p50 = {(i, b): timed[2 * i + j]["round_p50_ms"] for i in range(len(rows)) for j, b in enumerate((1, 32))}
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
# one model: export, checks, latency
# ---------------------------------------------------------------------------------------------------------------
def measure_model(
    name: str, ckpt: Path, label: str, acc_meaningful: bool, work: Path, args: Any, threads: int
) -> dict[str, Any]:
    """Export one model (onnx + ort-int8 with their checks), then time torch / ORT fp32 / int8 on its test images."""
    from augkd.export import ExportCheckError, export_model
    from augkd.export.data import evaluation_data
    from augkd.export.source import load_source

    load_before = os.getloadavg()[0]
    cfg = {
        "formats": ["onnx", "ort-int8"],
        "threads": threads,
        "checks": {"parity_samples": args.parity_samples if not acc_meaningful else None},
        "latency": {"enabled": False},
    }
    try:
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
        "label": label,
        "checkpoint": str(ckpt),
        "acc_meaningful": acc_meaningful,
        "data_origin": f"{ev.test_split}-split images of {ev.dataset} at {src.meta.input_size}px ({ev.origin})",
        "parity": onnx_art.parity.model_dump(),
        "torch_acc1": report.model["torch_acc1"],
        "onnx_acc1": onnx_art.accuracy.acc1,
        "int8": i8.accuracy.model_dump(),
        "int8_parity": i8.parity.model_dump(),
        "int8_ops": i8.details["quantization"]["quantized_ops"],
        "int8_settings": {
            k: i8.details["quantization"][k]
            for k in ("calibration_method", "format", "activation_type", "per_channel", "calibration_samples")
        },
        "onnx": {k: report.onnx[k] for k in ("exporter", "fallback_reason", "opset", "nodes_exported", "nodes_final")},
        "model": {k: report.model[k] for k in ("arch", "model_kwargs", "input_size", "parameters", "macs")},
        "latency": latency,
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": os.getloadavg()[0],
        "export_failures": report.failures,
    }
