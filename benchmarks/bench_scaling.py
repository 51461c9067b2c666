"""Data-parallel scaling of Module 1 and Module 3: samples/s with 1, 2, ... processes (Lightning Fabric DDP).

Weak scaling: the per-device batch is fixed, so N processes process N times as many samples per step.
Each world size runs under ``torchrun`` on 127.0.0.1 (gloo on CPU with one thread per process, nccl on
GPUs with bf16-mixed); every rank builds the same networks as ``augkd distill`` and runs the engine's own
steps (``DataFreeStage._generator_step`` + ``_student_steps``; ``MixupStage.train_epoch``), timed between
two barriers on rank 0.

- Module 1 samples = generated images per iteration, all ranks: world × (1 + k) × B
  (one generator step on B latents, then k student/encoder steps on B images each).
- Module 3 samples = real student-domain images per step, all ranks: world × B (the student sees each
  twice, once real and once mixed with its anchor image).

A control (``--control``, CPU) runs N *independent* one-process workers at the same time, with no
process group, and adds their throughputs: what this machine can deliver to N processes right now. The
gap between DDP and the control is the cost of data parallelism (gradient all-reduce, barriers); the
gap between the control and N × one process is the machine (shared cores, memory bandwidth, other load).

Usage::

    python benchmarks/bench_scaling.py                        # CPU: 1 and 2 processes, 1 thread each
    python benchmarks/bench_scaling.py --accelerator cuda --procs 1,2,4,8 --m1-batch 256 --m3-batch 256
    python benchmarks/bench_scaling.py --plot benchmarks/results/scaling-cpu-pt2.14.csv

Writes ``benchmarks/results/scaling-<device>-pt<ver>.csv`` (tidy rows), ``.json`` (rows + environment)
and ``.png`` (samples/s and scaling efficiency against the number of processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PRESET = "configs/svhn-mnist-10shot.yaml"


# --- one rank ---------------------------------------------------------------------------------------
def _context(args: argparse.Namespace):
    """The RunContext ``augkd distill`` builds (same data, teacher, networks, seeding), on this rank."""
    from augkd.config import load_config
    from augkd.training.dist import DistSpec, make_fabric
    from augkd.training.pipeline import build_context

    precision = "bf16" if args.accelerator == "cuda" else "fp32"
    overrides = [
        "data.shots_per_class=null",
        f"train.device={args.accelerator}",
        f"train.precision={precision}",
        "train.threads=1",
        f"module1.batch_size={args.m1_batch}",
        f"train.batch_size={args.m3_batch}",
        "train.save_images=false",
        "train.seed=0",
    ]
    cfg = load_config(PRESET, overrides)
    fabric = make_fabric(cfg.train, DistSpec())
    if args.accelerator == "cpu":
        torch.set_num_threads(1)
    return build_context(cfg, Path(args.run_dir), fabric)


def _timed(ctx, fn, warmup: int, iters: int) -> list[float]:
    times = []
    for i in range(warmup + iters):
        ctx.fabric.barrier()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        ctx.fabric.barrier()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def worker(args: argparse.Namespace) -> None:
    from augkd.data import DomainData
    from augkd.training.engine import prepare_stage
    from augkd.training.stages import DataFreeStage, MixupStage

    ctx = _context(args)
    world, out = ctx.world_size, {}
    m1 = DataFreeStage(1)
    prepare_stage(ctx, m1)
    b1, k = ctx.cfg.module1.batch_size, ctx.cfg.module1.student_steps

    def m1_iter() -> None:
        m1._generator_step(ctx, b1)
        m1._student_steps(ctx, b1)

    t = _timed(ctx, m1_iter, args.warmup, args.iters)
    out["module1"] = {"samples_per_iter": world * (1 + k) * b1, "times_s": t, "batch": b1, "k": k}
    m1.finish(ctx)
    m3 = MixupStage(10)
    prepare_stage(ctx, m3)
    b3, steps = ctx.cfg.train.batch_size, args.m3_steps
    full = ctx.data
    n_img = min(len(full.train), steps * b3 * world)
    ctx.data = DomainData(full.train.subset(list(range(n_img))), full.eval, full.test)  # an epoch = `steps` steps
    t = _timed(ctx, lambda: m3.train_epoch(ctx, 0), args.warmup, args.iters)  # epoch 0: s = b, anchors mixed in
    out["module3"] = {"samples_per_iter": n_img, "times_s": t, "batch": b3, "steps": -(-n_img // (b3 * world))}
    if ctx.is_main:
        dev = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else _cpu_name()
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        prec = str(getattr(ctx.fabric.strategy.precision, "precision", "?"))
        res = {
            "world_size": world,
            "device": dev,
            "backend": backend,
            "precision": prec,
            "modules": out,
            "student": ctx.cfg.student.arch,
            "teacher": ctx.cfg.teacher.checkpoint,
        }
        Path(args.json).write_text(json.dumps(res))


# --- driver -----------------------------------------------------------------------------------------
def _cpu_name() -> str:
    from augkd.utils import cpu_name

    return f"{cpu_name()} ({os.cpu_count()} threads)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_args(args: argparse.Namespace, js: Path) -> list[str]:
    return [
        __file__,
        "--worker",
        "--json",
        str(js),
        "--run-dir",
        str(js.parent),
        "--accelerator",
        args.accelerator,
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
        "--m1-batch",
        str(args.m1_batch),
        "--m3-batch",
        str(args.m3_batch),
        "--m3-steps",
        str(args.m3_steps),
    ]


def _env(args: argparse.Namespace) -> dict[str, str]:
    backend = os.environ.get("AUGKD_KERNEL_BACKEND", "torch" if args.accelerator == "cpu" else "auto")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUGKD_KERNEL_BACKEND": backend, "MASTER_ADDR": "127.0.0.1"}
    if args.accelerator == "cpu":
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def run_world(n: int, args: argparse.Namespace) -> dict:
    """One DDP run with ``n`` processes under torchrun."""
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "res.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(n),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            *_worker_args(args, js),
        ]
        load0 = os.getloadavg()
        p = subprocess.run(cmd, env=_env(args), capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"{n} process(es) failed:\n{p.stderr[-3000:]}")
        res = json.loads(js.read_text())
        res["load_avg"] = {"start": load0, "end": os.getloadavg()}
        return res


def run_independent(n: int, args: argparse.Namespace) -> dict:
    """The control: ``n`` one-process workers at once (no process group); their throughputs add up."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"w{i}" / "res.json" for i in range(n)]
        for js in paths:
            js.parent.mkdir()
        load0 = os.getloadavg()
        procs = [
            subprocess.Popen(
                [sys.executable, *_worker_args(args, js)],
                env=_env(args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for js in paths
        ]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"independent worker failed:\n{err[-3000:]}")
        parts = [json.loads(js.read_text()) for js in paths]
    res = dict(parts[0])
    res["world_size"] = n
    res["load_avg"] = {"start": load0, "end": os.getloadavg()}
    res["modules"] = {}
    for op, m in parts[0]["modules"].items():
        # iteration i of the control = the n workers' iteration i side by side: samples add, time = slowest
        times = [max(p["modules"][op]["times_s"][i] for p in parts) for i in range(len(m["times_s"]))]
        res["modules"][op] = {**m, "samples_per_iter": n * m["samples_per_iter"], "times_s": times}
    return res


def rows_of(res: dict, meta: dict) -> list[dict]:
    rows = []
    for op, m in res["modules"].items():
        rates = sorted(m["samples_per_iter"] / t for t in m["times_s"])
        q = statistics.quantiles(rates, n=10) if len(rates) >= 2 else [rates[0]] * 9
        extra = {
            "per_device_batch": m["batch"],
            **({"k": m["k"]} if "k" in m else {"steps": m["steps"]}),
            "samples_per_iter": m["samples_per_iter"],
            "iters": len(rates),
            "precision": res["precision"],
            "student": res["student"],
            "threads_per_process": 1 if "cpu" in meta["provider"] else None,
            "load_avg_start_end": [res["load_avg"]["start"][0], res["load_avg"]["end"][0]],
        }
        rows.append(
            {
                "op": op,
                "provider": meta["provider"],
                "mode": "train",
                "metric": "throughput",
                "unit": "samples/s",
                "x_name": "processes",
                "x_value": res["world_size"],
                "p50": statistics.median(rates),
                "p20": q[1],
                "p80": q[7],
                "extra_config_json": json.dumps(extra, sort_keys=True),
                **meta["env"],
            }
        )
    return rows


def plot(csv_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = sorted({(r["op"], r["provider"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for op, provider in lines:
        pts = sorted(
            (int(r["x_value"]), float(r["p50"]), float(r["p20"]), float(r["p80"]))
            for r in rows
            if r["op"] == op and r["provider"] == provider
        )
        xs, p50, p20, p80 = zip(*pts, strict=True)
        style = {"marker": "o", "ls": "-" if provider.startswith("ddp") else ":", "label": f"{op} ({provider})"}
        err = [[a - b for a, b in zip(p50, p20, strict=True)], [c - a for a, c in zip(p50, p80, strict=True)]]
        axes[0].errorbar(xs, p50, yerr=err, capsize=3, **style)
        axes[1].plot(xs, [v / (x * p50[0] / xs[0]) for x, v in zip(xs, p50, strict=True)], **style)
    axes[0].set(xlabel="processes", ylabel="samples/s (p50, p20-p80)", title="throughput")
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[1].set(xlabel="processes", ylabel="samples/s ÷ (N × 1-process)", title="scaling efficiency", ylim=(0, 1.2))
    for ax in axes:
        ax.set_xticks(sorted({int(r["x_value"]) for r in rows}))
        ax.legend(fontsize=8)
    fig.suptitle(f"Lightning Fabric DDP, weak scaling (fixed per-device batch) on {rows[0]['device_name']}", fontsize=9)
    fig.tight_layout()
    out = csv_path.parent / (csv_path.name.removesuffix(".csv") + ".png")
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", default="1,2", help="comma-separated process counts")
    ap.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--m1-batch", type=int, default=64, help="Module 1 batch per device")
    ap.add_argument("--m3-batch", type=int, default=64, help="Module 3 real-image batch per device")
    ap.add_argument("--m3-steps", type=int, default=4, help="Module 3 steps per timed iteration")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/scaling-<dev>-pt<ver>)")
    ap.add_argument("--control", action="store_true", help="also run N independent processes (CPU capacity)")
    ap.add_argument("--plot", default=None, help="only plot this CSV")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plot:
        print(plot(Path(args.plot)))
        return
    if args.worker:
        worker(args)
        return
    procs = [int(p) for p in args.procs.split(",")]
    if args.accelerator == "cuda":
        have = torch.cuda.device_count()
        skipped = [p for p in procs if p > have]
        if skipped:
            print(f"skipping {skipped}: only {have} GPU(s) here", file=sys.stderr)
        procs = [p for p in procs if p <= have]
    from augkd.utils import augkd_version, git_sha

    try:
        import triton

        triton_v = triton.__version__
    except ImportError:
        triton_v = "none"
    results = [run_world(n, args) for n in procs]
    control = [run_independent(n, args) for n in procs if n > 1] if args.control else []
    dev = results[0]["device"]
    tag = "cpu" if args.accelerator == "cpu" else dev.split()[-1].lower()
    stem = args.out or f"benchmarks/results/scaling-{tag}-pt{'.'.join(torch.__version__.split('.')[:2])}"
    env = {
        "device_name": dev,
        "torch_version": torch.__version__,
        "triton_version": triton_v,
        "augkd_version": augkd_version(),
        "git_sha": git_sha(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }
    provider = f"ddp-{results[-1]['backend']}-{args.accelerator}"
    rows = [r for res in results for r in rows_of(res, {"provider": provider, "env": env})]
    solo = [r for r in rows if r["x_value"] == 1]  # 1 process is its own control
    ctrl = [{**r, "provider": f"independent-{args.accelerator}"} for r in solo] if control else []
    ctrl += [r for res in control for r in rows_of(res, {"provider": f"independent-{args.accelerator}", "env": env})]
    rows += ctrl
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    csv_path = Path(f"{stem}.csv")
    from augkd.kernels.bench import ROW_FIELDS  # the one tidy schema of every timing benchmark

    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ROW_FIELDS)
        w.writeheader()
        w.writerows(rows)
    meta = {"benchmark": "ddp_scaling", "preset": PRESET, "args": vars(args), "cpu_count": os.cpu_count(), **env}
    runs = {"ddp": results, "independent": control}
    Path(f"{stem}.json").write_text(json.dumps({**meta, "runs": runs, "rows": rows}, indent=2) + "\n")
    print(plot(csv_path))
    for r in rows:
        spread = f"p20 {r['p20']:.1f}, p80 {r['p80']:.1f}"
        print(f"{r['op']:8s} {r['x_value']} process(es): {r['p50']:8.1f} samples/s ({spread})")


if __name__ == "__main__":
    main()
