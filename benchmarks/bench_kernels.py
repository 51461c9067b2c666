"""Kernel microbenchmarks: writes benchmarks/results/kernels-<device>-pt<ver>.csv and a JSON with the environment.

The measuring code is library code (:func:`augkd.kernels.bench.run_kernel_bench`, also behind
``augkd bench kernels``); this script only picks the settings and writes the files. Examples::

    python benchmarks/bench_kernels.py                              # everything, CUDA if present, else CPU
    python benchmarks/bench_kernels.py --device cpu --threads 2     # CPU: torch vs compile (no triton timing)
    python benchmarks/bench_kernels.py --ops kd_loss --modes full --quick
    python benchmarks/plot.py benchmarks/results/kernels-cpu-pt2.14.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

from augkd.kernels.bench import MODES, OPS, PROVIDERS, ROW_FIELDS, environment, run_kernel_bench

RESULTS = Path(__file__).resolve().parent / "results"


def device_slug(device: str) -> str:
    """Short device name for file names: 'cpu', or the GPU model, e.g. 'h100' for 'NVIDIA H100 80GB HBM3'."""
    if not device.startswith("cuda"):
        return "cpu"
    name = torch.cuda.get_device_name(torch.device(device)).lower().replace("nvidia", "").replace("geforce", "")
    token = next((t for t in re.split(r"[\s_-]+", name) if t), "gpu")
    return re.sub(r"[^a-z0-9.]+", "", token) or "gpu"


def results_stem(device: str) -> str:
    """'kernels-<device>-pt<major.minor>', the stem of the CSV and JSON files."""
    major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    return f"kernels-{device_slug(device)}-pt{major_minor}"


def write_csv(rows: list[dict], path: Path, append: bool) -> None:
    """Write (or append) tidy rows with the columns of ROW_FIELDS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.exists() and append
    with path.open("a" if exists else "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        if not exists:
            writer.writeheader()
        writer.writerows(rows)


def machine_info(device: str, threads: int, load_before: tuple[float, ...] | None) -> dict:
    """Environment facts for the JSON sidecar."""
    info = {
        **environment(device),
        "device": device,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "nice": os.nice(0) if hasattr(os, "nice") else None,  # scheduling priority of this process
        "cuda": torch.version.cuda,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if device.startswith("cuda"):
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(torch.device(device))))
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if present)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="a few small sizes only")
    parser.add_argument("--append", action="store_true", help="append to the CSV instead of replacing it")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    rows = run_kernel_bench(args.ops, args.providers, args.modes, device=device, quick=args.quick)
    stem = results_stem(device)
    write_csv(rows, args.out_dir / f"{stem}.csv", args.append)
    sidecar = {
        "environment": machine_info(device, args.threads, load_before),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    (args.out_dir / f"{stem}.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {args.out_dir / stem}.csv and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
