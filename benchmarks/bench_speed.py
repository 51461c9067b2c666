"""Module 1 iteration time (1 generator step + k student/encoder steps), the official code's configuration.

Configuration (issue #3): batch 256, latent 100, the official generator width (256) and encoder width
(64), MobileNetV3-Small student (width 1.0), the ccexam SVHN teacher, 2 threads, CPU. fp32 and bf16
(autocast) are measured separately: median and 20/80 percentiles after 10 warm-up iterations.
The official code's figures are references quoted in the issues, with the machine they were measured on
(10.6 s per iteration on an AMD EPYC 2-core machine, issue 3; 12.6 s on an Intel Xeon with AMX, issue 14);
they are not re-run here.

``--synthesis`` times AuG-KD's synthesis options at the same configuration beside the official loop:
``official`` (fresh G batches for the k student steps), ``augkd`` (the per-step options of
``configs/svhn-mnist-datafree.yaml``: the input-statistics prior, the masked adversarial term, jitter, a
20,000-image bank the k student steps draw from with the drawn batches mixed pairwise, one encoder step per
generator step, the BN term in each channel's own units against the student domain's statistics;
docs/decisions.md).

    .venv/bin/python benchmarks/bench_speed.py --iters 10 --warmup 10 --synthesis official,augkd
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

OFFICIAL_REFERENCES = [
    {"s_per_iter": 10.6, "machine": "AMD EPYC, 2 cores", "source": "issue 3", "vendor": "AMD"},
    {
        "s_per_iter": 12.6,
        "machine": "Intel Xeon (AMX), 2 cores",
        "source": "issue 14 (median of 8 after 4 warm-ups)",
        "vendor": "Intel",
    },
]


def _has_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def official_reference(device_name: str, threads: int, amx: bool | None = None) -> dict | None:
    """The official code's figure measured on this kind of machine, or None: a GPU, another vendor, a thread
    count other than the references' 2, an Intel CPU without AMX (the Intel reference is an AMX Xeon)."""
    if threads != 2:
        return None
    for ref in OFFICIAL_REFERENCES:
        if ref["vendor"].lower() in device_name.lower():
            if ref["vendor"] == "Intel" and not (_has_amx() if amx is None else amx):
                return None
            return ref
    return None


SYNTHESIS = {
    "official": [],
    # the per-step options of configs/svhn-mnist-datafree.yaml (AuG-KD's Module 1 recipe for a BN teacher) at the
    # official batch and k; stats_target only changes the BN and input targets, computed once before the loop
    "augkd": [
        "module1.w_input=10",
        "module1.adv_mask=true",
        "module1.jitter=2",
        "module1.bank_size=20000",
        "module1.bank_mixup=1.0",
        "module1.encoder_steps=1",
        "module1.bn_form=layer_rel",
        "module1.w_bn=700",
        "module1.stats_target=student_domain",
    ],
}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(
    precision: str,
    iters: int,
    warmup: int,
    batch: int,
    channels_last: bool,
    device: str = "cpu",
    fp32_nets: tuple[str, ...] = (),
    synthesis: str = "official",
) -> dict:
    from augkd.config import load_config
    from augkd.training.dist import DistSpec, make_fabric
    from augkd.training.engine import prepare_stage
    from augkd.training.pipeline import build_context
    from augkd.training.stages import DataFreeStage

    overrides = [
        f"train.precision={precision}",
        f"train.channels_last={channels_last}",
        f"module1.batch_size={batch}",
        "generator.width=256",
        "generator.encoder_width=64",
        "generator.latent_dim=100",
        "student.arch=mobilenet_v3_small",
        "student.kwargs={width_mult: 1.0}",
        "data.dataset=digits",
        f"train.fp32_nets=[{','.join(fp32_nets)}]",
        f"train.device={device}",
        "module1.iters_per_epoch=1",
        *SYNTHESIS[synthesis],
    ]
    cfg = load_config(None, overrides)
    dev = torch.device(device)
    times = []
    with tempfile.TemporaryDirectory() as run_dir:
        # the context `augkd distill` builds: data, teacher, MobileNetV3-Small, G width 256, E width 64 on the
        # device, channels_last and train.fp32_nets as configured, Fabric's precision
        ctx = build_context(cfg, Path(run_dir), make_fabric(cfg.train, DistSpec()))
        stage = DataFreeStage(warmup + iters)
        prepare_stage(ctx, stage)
        for i in range(warmup + iters):
            _sync(dev)
            t0 = time.perf_counter()
            stage.train_epoch(ctx, i)  # one Module 1 iteration (module1.iters_per_epoch=1): G step + k steps
            _sync(dev)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
            print(f"{precision} iter {i}: {dt:.2f}s", flush=True)
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {
        "synthesis": synthesis,
        "precision": precision,
        "channels_last": channels_last,
        "fp32_nets": list(fp32_nets),
        "batch": batch,
        "iters": iters,
        "warmup": warmup,
        "median_s": statistics.median(times),
        "p20_s": q[1],
        "p80_s": q[7],
        "times_s": times,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--synthesis", default="official", help="comma-separated: " + ", ".join(SYNTHESIS))
    ap.add_argument("--fp32-nets", default="student", help="networks kept in fp32 under bf16 (train.fp32_nets)")
    ap.add_argument("--device", default="cpu", help="cpu (the issue's target) or cuda")
    ap.add_argument(
        "--malloc",
        default="keep",
        choices=("keep", "system"),
        help="keep: augkd.utils.keep_freed_memory(), as a run does (train.malloc); system: glibc defaults",
    )
    ap.add_argument("--out", default=None, help="default benchmarks/results/speed-module1-<cpu|gpu name>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from augkd.utils import keep_freed_memory

    malloc_kept = keep_freed_memory() if args.malloc == "keep" else False
    os.environ.setdefault("AUGKD_KERNEL_BACKEND", "torch")
    fp32 = tuple(n for n in args.fp32_nets.split(",") if n)
    rows = [
        measure(p, args.iters, args.warmup, args.batch, True, args.device, fp32, syn)
        for syn in args.synthesis.split(",")
        for p in args.precisions.split(",")
    ]
    from bench_kernels import device_slug  # benchmarks/ is this script's directory

    from augkd.utils import augkd_version, cpu_name, git_sha

    on_gpu = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if on_gpu else cpu_name()
    if args.out is None:
        args.out = f"benchmarks/results/speed-module1-{device_slug(args.device)}.json"

    ref = None if on_gpu else official_reference(device_name, args.threads)
    for r in rows:  # only the official loop does the official iteration's work (augkd's k steps draw from a bank)
        r["speedup_vs_official"] = ref["s_per_iter"] / r["median_s"] if ref and r["synthesis"] == "official" else None
    result = {
        "benchmark": "module1_iteration",
        # the reference of this CPU's kind (speedup_vs_official divides it by each median), and all of them
        "official_reference": ref,
        "official_reference_s": ref["s_per_iter"] if ref else None,
        "official_references": OFFICIAL_REFERENCES,
        "rows": rows,
        "device": device_name,
        "threads": args.threads,
        "malloc": "keep" if malloc_kept else "system",
        "torch": torch.__version__,
        "augkd": augkd_version(),
        "git_sha": git_sha(),
        "load_avg_at_end": os.getloadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        vs = (
            f"  ({r['speedup_vs_official']:.1f}x vs the official code's {ref['s_per_iter']} s on {ref['machine']})"
            if r["speedup_vs_official"]
            else "  (no official reference for this device)"
            if ref is None
            else "  (less work per iteration than the official loop: no speed-up quoted)"
        )
        print(f"{r['synthesis']:9s} {r['precision']}: median {r['median_s']:.2f}s/iter{vs}")


if __name__ == "__main__":
    main()
