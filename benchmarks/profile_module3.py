"""What share of one Module 3 training step the fused ops take (issue #4: read kernel speed-ups in context).

One Module 3 step of the ``svhn-mnist`` preset (encoder, anchor, generator, latent mix, two fused
mixups, student forward/backward on 2B images, teacher forward, kd_loss forward/backward, optimiser
step) is profiled with ``torch.profiler``; the time inside the augkd ops (``latent_mix``, ``fused_mixup``,
``kd_loss`` forward and its backward) is summed from ``record_function`` ranges placed around each call
and the autograd nodes they create. Reported: median step time, op time, share.

    .venv/bin/python benchmarks/profile_module3.py --steps 20
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="svhn-mnist")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--out", default="benchmarks/results/profile-module3-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import augkd.training.losses as losses_mod
    import augkd.training.stages as stages_mod
    from augkd.config import load_config
    from augkd.data import iterate_batches
    from augkd.training.dist import DistSpec, make_fabric
    from augkd.training.engine import prepare_stage
    from augkd.training.pipeline import build_context
    from augkd.training.stages import MixupStage

    def labelled(name, fn):
        def wrapper(*a, **k):
            with torch.profiler.record_function(f"augkd_op::{name}"):
                return fn(*a, **k)

        return wrapper

    stages_mod.fused_mixup = labelled("fused_mixup", stages_mod.fused_mixup)
    stages_mod.latent_mix = labelled("latent_mix", stages_mod.latent_mix)
    losses_mod.kd_loss = labelled("kd_loss", losses_mod.kd_loss)

    overrides = [f"kernels.backend={args.backend}", "train.device=cpu", "train.channels_last=true"]
    cfg = load_config(f"configs/{args.preset}.yaml", overrides)
    run_dir = tempfile.TemporaryDirectory()
    # the context `augkd distill` builds (networks channels_last, train.fp32_nets, Fabric's precision)
    ctx = build_context(cfg, Path(run_dir.name), make_fabric(cfg.train, DistSpec()))
    data, precision = ctx.data, ctx.precision
    stage = MixupStage(10)
    prepare_stage(ctx, stage)
    one_batch = data.train.subset(list(range(cfg.train.batch_size)))

    def step() -> None:
        sub = ctx.data
        ctx.data = type(sub)(one_batch, sub.eval, sub.test)
        try:
            stage.train_epoch(ctx, 0)  # s(0) = b: anchors are generated and mixed
        finally:
            ctx.data = sub

    for _ in range(3):
        step()
    times = []
    op_ms = []
    for _ in range(args.steps):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        events = prof.key_averages()
        fwd = sum(e.cpu_time_total for e in events if e.key.startswith("augkd_op::")) / 1e3
        # backward of the ops: the autograd nodes created inside them (reference path: softmax/log-softmax/
        # lerp backward nodes; Triton path: the <Op>FunctionBackward node)
        bwd_keys = (
            "KdLossFunctionBackward",
            "KDLossFunctionBackward",
            "LogSoftmaxBackward",
            "SoftmaxBackward",
            "FusedMixupFunctionBackward",
            "LatentMixFunctionBackward",
        )
        bwd = sum(e.cpu_time_total for e in events if any(e.key.startswith(k) for k in bwd_keys)) / 1e3
        op_ms.append(fwd + bwd)
    _ = iterate_batches
    from augkd.utils import cpu_name, git_sha

    res = {
        "preset": args.preset,
        "backend": args.backend,
        "precision": precision,
        "threads": args.threads,
        "batch": cfg.train.batch_size,
        "step_ms_median": statistics.median(times),
        "ops_ms_median": statistics.median(op_ms),
        "ops_share": statistics.median(op_ms) / statistics.median(times),
        "steps": args.steps,
        "note": (
            "ops = latent_mix + 2 fused_mixup + kd_loss forward (record_function ranges) + softmax-family "
            "backward nodes; the student/teacher/generator networks are the rest"
        ),
        "torch": torch.__version__,
        "load_avg": os.getloadavg(),
        "machine": {"cpu": cpu_name()},
        "git_sha": git_sha(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    run_dir.cleanup()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
