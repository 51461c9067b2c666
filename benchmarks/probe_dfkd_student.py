"""Can a student learn the teacher's function from Module 1's generated images? (README: why ``dfkd`` stays near chance)

Trains a fresh student with KL(teacher ‖ student) only (temperature 1, Adam, no labels) on either
``gen``: images of a *frozen* Module 1 generator (train-mode BatchNorm, fresh latents per batch, as in
Module 1), or ``real``: the run's real training images (the control), and prints/saves the KL and the test
Acc@1 every ``steps/5`` steps.

    .venv/bin/python benchmarks/probe_dfkd_student.py runs/rs-s0/svhn-mnist/dfkd/seed0 --mode gen
    .venv/bin/python benchmarks/probe_dfkd_student.py runs/rs-s0/svhn-mnist/dfkd/seed0 --mode real
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from module1_run import load_module1_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished dfkd (or augkd) run directory")
    ap.add_argument("--mode", choices=("gen", "real"), default="gen")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: print only)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from augkd.evaluate import Normalize, accuracy
    from augkd.models import create_model

    cfg, data, teacher, g = load_module1_run(args.run, args.threads)
    s = create_model(cfg.student.arch, data.num_classes, **cfg.student.kwargs)
    norm = Normalize(cfg.data.mean, cfg.data.std)  # the student's input normalisation, as in a run
    xtrain = data.train.as_float()
    opt = torch.optim.Adam(s.parameters(), lr=args.lr, weight_decay=1e-4)

    rows, t0 = [], time.time()
    for it in range(args.steps + 1):
        with torch.no_grad():
            if args.mode == "gen":
                x = g(torch.randn(args.batch, cfg.generator.latent_dim))
            else:
                x = xtrain[torch.randint(0, len(xtrain), (args.batch,))]
            t = teacher(x)
        loss = F.kl_div(F.log_softmax(s(norm(x)), 1), F.softmax(t, 1), reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % max(args.steps // 5, 1) == 0:
            acc1 = accuracy(s, data.test, cfg.train.eval_batch_size, "cpu", norm)["acc1"]
            rows.append({"step": it, "kl": loss.item(), "test_acc1": acc1, "wall_s": time.time() - t0})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        import os

        from augkd.utils import cpu_name, git_sha

        setup = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        env = {
            "machine": {"cpu": cpu_name(), "threads": args.threads},
            "torch": torch.__version__,
            "git_sha": git_sha(),
            "load_avg_at_end": os.getloadavg(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        args.out.write_text(json.dumps({**setup, **env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
