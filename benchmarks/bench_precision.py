"""Which networks gain from bf16 autocast on this machine: one training step (forward + backward), fp32 vs bf16.

The evidence behind ``train.fp32_nets``: on a CPU, a small network can be slower under bf16 autocast
(casts and depthwise convolutions), while a wide one is faster. Each network is timed channels_last,
with the two precisions alternating repetition by repetition, so that load from other processes falls on
both alike; median after warm-up. Writes ``benchmarks/results/precision-<device>.json``.

    .venv/bin/python benchmarks/bench_precision.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

# (label, registry name, num_classes, kwargs, batch): the students of bench_speed / the presets, and E
NETS = [
    ("mobilenet_v3_small w1.0 (bench_speed student)", "mobilenet_v3_small", 10, {"width_mult": 1.0}, 256),
    ("cnn_small w32 (svhn-mnist student)", "cnn_small", 10, {"width": 32}, 128),
    ("augkd_encoder w64 (bench_speed encoder)", "augkd_encoder", 10, {"latent_dim": 100, "width": 64}, 256),
]


def _step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, encoder: bool) -> None:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        out = net(x, y)[0] if encoder else net(x)
    out.float().sum().backward()


def measure(label: str, name: str, nc: int, kwargs: dict, batch: int, reps: int, warmup: int) -> dict:
    from augkd.models import create_model

    net = create_model(name, nc, **kwargs).train().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, nc, (batch,))
    enc = name == "augkd_encoder"
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(warmup + reps):
        for prec in ("fp32", "bf16"):
            t0 = time.perf_counter()
            _step(net, x, y, prec == "bf16", enc)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[prec].append(dt)
    med = {p: statistics.median(v) * 1e3 for p, v in times.items()}
    return {
        "net": label,
        "arch": name,
        "kwargs": kwargs,
        "batch": batch,
        "fp32_ms": med["fp32"],
        "bf16_ms": med["bf16"],
        "faster": min(med, key=med.get),
        "reps": reps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/precision-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = [measure(*n, reps=args.reps, warmup=args.warmup) for n in NETS]
    from augkd.utils import augkd_version, cpu_name, git_sha

    result = {
        "benchmark": "train_step_precision",
        "rows": rows,
        "device": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "augkd": augkd_version(),
        "git_sha": git_sha(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        ms = f"fp32 {r['fp32_ms']:7.1f} ms  bf16 {r['bf16_ms']:7.1f} ms"
        print(f"{r['net']:<48} B={r['batch']:<4} {ms}  → {r['faster']}")


if __name__ == "__main__":
    main()
