"""How closely do a Module 1 generator's images match the teacher's BatchNorm statistics, layer by layer?

For a finished ``dfkd`` (or ``augkd``) run: the targets the run's BN prior matched (the teacher's running
statistics, or with ``module1.stats_target: student_domain`` its statistics on up to 2,048 unlabelled
training images spread over the split, as the stage computes them), then per BN layer, averaged over
``--batches`` batches of the frozen generator (train-mode BatchNorm, fresh latents, as in Module 1) and as
many random batches of real training images (the reference a real batch scores):
``dmu`` = ‖μ_batch − μ_target‖₂, ``dvar`` = ‖σ²_batch − σ²_target‖₂ (the BN loss's terms),
``rel_dmu2`` = mean over channels of (Δμ)² / σ²_target (the mean shift in target standard deviations, squared),
``log_var_ratio`` = mean over channels of |log(σ²_batch / σ²_target)|.
``rel_rms`` = √mean_c((Δμ)²/σ²_target) + √mean_c(log²(σ²_batch/σ²_target)), the layer's share of the
``bn_form: layer_rel`` term; the ``all`` rows give the BN term per batch in the ``layer_mean`` and ``layer_rel`` forms.

    .venv/bin/python benchmarks/probe_bn_stats.py RUN --out benchmarks/results/probe-bn-stats-NAME
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from module1_run import load_module1_run
from results_io import write_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory with checkpoints/module1/generator.safetensors")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="results stem: writes <out>.csv and <out>.json")
    args = ap.parse_args()

    import torch

    from augkd.training.losses import BNStatsHook, layer_rel_terms
    from augkd.training.stages import evenly_spaced

    cfg, data, teacher, g = load_module1_run(args.run, args.threads)
    hook = BNStatsHook(teacher.net)
    if not hook.layers:
        raise SystemExit(f"error: the teacher of {args.run} has no BatchNorm layer: nothing to compare")
    if cfg.module1.stats_target == "student_domain":
        imgs = data.train.images[evenly_spaced(len(data.train.images), 2048)]
        hook.set_targets_from(teacher.net, [teacher.prepare(b.float().div(255.0)) for b in imgs.split(256)])
    sizes = [m.num_features for m in hook.layers]
    tm, tv = hook.run_mean.split(sizes), hook.run_var.split(sizes)
    xtrain = data.train.as_float()

    @torch.no_grad()
    def per_layer(x: torch.Tensor) -> list[dict[str, float]]:
        hook.enabled = True
        teacher.net(teacher.prepare(x))
        hook.enabled = False
        means, variances = torch.cat(hook._means).split(sizes), torch.cat(hook._vars).split(sizes)
        hook.clear()
        return [
            {
                "dmu": float((m - m0).norm()),
                "dvar": float((v - v0).norm()),
                "rel_dmu2": float(((m - m0) ** 2 / v0).mean()),
                "log_var_ratio": float((v / v0).log().abs().mean()),
                # this layer's share of the bn_form layer_rel term (RMS forms of the two figures above)
                "rel_rms": float(layer_rel_terms(m, v, m0, v0, [len(m)])[0]),
            }
            for m, v, m0, v0 in zip(means, variances, tm, tv, strict=True)
        ]

    figures: dict[str, list[list[dict[str, float]]]] = {"generator": [], "real": []}
    for _ in range(args.batches):
        with torch.no_grad():
            figures["generator"].append(per_layer(g(torch.randn(args.batch, cfg.generator.latent_dim))))
        figures["real"].append(per_layer(xtrain[torch.randint(0, len(xtrain), (args.batch,))]))
    rows = []
    for source, runs in figures.items():
        for layer, channels in enumerate(sizes):
            row: dict[str, object] = {"source": source, "layer": layer, "channels": channels}
            for key in ("dmu", "dvar", "rel_dmu2", "log_var_ratio", "rel_rms"):
                row[key] = statistics.fmean(r[layer][key] for r in runs)
            rows.append(row)
    for source in figures:  # the BN loss on these batches in the layer_mean and layer_rel forms, for reference
        per_batch = [statistics.fmean(lay["dmu"] + lay["dvar"] for lay in r) for r in figures[source]]
        per_batch_rel = [statistics.fmean(lay["rel_rms"] for lay in r) for r in figures[source]]
        rows.append({"source": source, "layer": "all", "bn_layer_mean": statistics.fmean(per_batch),
                     "bn_layer_rel": statistics.fmean(per_batch_rel)})  # fmt: skip
    write_rows(args.out, rows, run=str(args.run), stats_target=cfg.module1.stats_target, batches=args.batches,
               batch=args.batch, threads=args.threads)  # fmt: skip
    for r in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
