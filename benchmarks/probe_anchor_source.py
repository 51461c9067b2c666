"""Are the anchors teacher-domain views of *their own* image? Measured against the MNIST digit each MNIST-M image
was built from (issue 15).

The built-in ``mnist-m`` is ``mnist5k``'s digits blended with photo crops, image for image, so every real
student-domain image x has a known teacher-domain original: its source digit d(x). That gives two references
no run can measure by itself:

* the **ceiling of the anchor-diversity measure**: the within-class pixel std of the source digits over that
  of the MNIST-M images (``anchor_std_ratio`` of a perfect anchor, G(A(E(x))) = d(x));
* **source retrieval**: the fraction of images (``--split``: eval or train) whose anchor image (and G(E(x)))
  correlates best, among
  the source digits of x's class, with x's own source digit (chance: 1 / images of the class); an anchor
  that is one image per class scores chance.

``--invert N`` adds what G can express at all: per-image latents optimised for N steps so that the teacher's
features of G(z) pick out their own x (an upper bound for any encoder's G(E(x)) on those same images: a fit,
not a held-out figure).

For each run directory (``augkd`` on a ``mnist-m`` preset): G from its Module 1 (its own or
``module1.init_from``), E from its Module 2 when Module 2 trained it (``module2.w_encoder`` > 0), else
Module 1's, and the AnchorNet from its Module 2; the first ``--limit`` images of the split (of eval: the
images of the run's ``anchors.json``). Writes ``<results>/anchor-source-<tag>.{csv,json,png}`` (the picture:
x, d(x), G(E(x)) and the anchor for a few images of each run), with the CPU named.

    .venv/bin/python benchmarks/probe_anchor_source.py --tag mnist-mnistm-10shot --split eval \\
        --run paper=runs/paper/mnist-mnistm-10shot/augkd/seed0 --run encoder=runs/enc/mnist-mnistm-10shot/augkd/seed0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_rows


def source_digits(run: Path, cfg: Any, data: Any, split: str = "eval") -> tuple[Any, Any, Any]:
    """(the run's MNIST-M ``split`` images, their labels, their source mnist5k digits), uint8 NCHW, in the run's
    split order (``data``: the run's :class:`DomainData`)."""
    import torch

    from augkd.data import load_dataset, load_split

    if cfg.data.dataset != "mnist-m":
        raise SystemExit(f"{run}: dataset {cfg.data.dataset!r}; this probe needs the built-in mnist-m")
    part = data.split(split)
    d = load_dataset("mnist5k", cfg.data.image_size)
    idx = load_split(run / "split.json", d.labels)[split]  # the split's label check fails if the order differs
    if not torch.equal(d.labels[idx], part.labels):
        raise SystemExit("mnist-m and mnist5k labels differ: the built-ins are no longer image-for-image")
    return part.images, part.labels, d.images[idx]


def retrieval(views: Any, sources: Any, y: Any, pixels: bool = True) -> tuple[float, float]:
    """(rank-1 rate, chance): whether each view's Pearson correlation (``pixels``: of grey pixels; else of the
    rows as given, e.g. teacher features) is highest with its own source among the sources of its class."""
    import torch

    def unit(v: torch.Tensor) -> torch.Tensor:
        g = v.float().mean(1).flatten(1) if pixels else v.float()
        g = g - g.mean(1, keepdim=True)
        return g / g.norm(dim=1, keepdim=True).clamp_min(1e-8)

    a, b = unit(views), unit(sources)
    hits, chance = [], []
    for c in y.unique():
        i = torch.nonzero(y == c).flatten()
        sim = a[i] @ b[i].T  # (n_c, n_c): view j against source k of the same class
        hits.append((sim.argmax(1) == torch.arange(len(i))).float())
        chance.append(torch.full((len(i),), 1.0 / len(i)))
    return float(torch.cat(hits).mean()), float(torch.cat(chance).mean())


def invert_latents(
    gen: Any, teacher: Any, hook: Any, z0: Any, x: Any, f_x: Any, d: Any, y: Any, steps: int
) -> dict[str, float]:
    """What G can express at all: each image's own latent, optimised from E(x) by Adam (lr 0.05, ``steps``
    steps) so that the teacher's features of G(z_i) point at x_i's (InfoNCE over the images, τ 0.1, plus
    1 − cosine), G frozen; then G(z)'s retrieval of its own x by the teacher's features (what was optimised:
    a fit on these images) and of its own source digit d(x) by pixels (not optimised), and the teacher's
    agreement between G(z) and x. An upper bound for any encoder's G(E(x)) on these images."""
    import torch
    import torch.nn.functional as F

    from augkd.training.losses import instance_contrast_loss

    gen.requires_grad_(False)
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        f = hook.forward(teacher, gen(z))[1].float()
        loss = instance_contrast_loss(f, f_x, None, 0.1) + 1.0 - F.cosine_similarity(f, f_x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x_z = gen(z).float()
        f = hook.forward(teacher, x_z)[1].float()
        agree = float((teacher(x_z).argmax(1) == teacher(x).argmax(1)).float().mean())
    return {
        "inverted_steps": steps,
        "inverted_feat_retrieval_x": retrieval(f, f_x, y, pixels=False)[0],
        "inverted_retrieval_d": retrieval(x_z, d, y)[0],
        "inverted_teacher_agree_x": agree,
    }


def probe_run(
    run: Path, limit: int, split: str = "eval", invert_steps: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from augkd.checkpoint import load_state_dict_file
    from augkd.config import load_config
    from augkd.data import load_domain
    from augkd.models import create_model
    from augkd.training.engine import stage_net_path
    from augkd.training.losses import FeatureHook
    from augkd.training.pipeline import load_teacher
    from augkd.training.stages import within_class_std

    cfg = load_config(run / "config.yaml")
    data = load_domain(cfg.data, run)
    x8, y, d8 = source_digits(run, cfg, data, split)
    x8, y, d8 = x8[:limit], y[:limit], d8[:limit]
    m1 = Path(cfg.module1.init_from) if cfg.module1.init_from else run
    g = gc = cfg.generator
    nc = data.num_classes
    gen = create_model("augkd_generator", latent_dim=gc.latent_dim, image_size=cfg.data.image_size, width=gc.width)
    size = cfg.data.image_size
    enc = create_model("augkd_encoder", nc, latent_dim=g.latent_dim, image_size=size, width=g.encoder_width)
    mask = "sigmoid" if cfg.module2.mask_form == "per_sample" else "official"
    anc = create_model("augkd_anchor", nc, latent_dim=g.latent_dim, mask=mask)
    gen.load_state_dict(load_state_dict_file(stage_net_path(m1, "module1", "generator")))
    enc_src = run if stage_net_path(run, "module2", "encoder").is_file() else m1
    enc_stage = "module2" if enc_src == run else "module1"
    enc.load_state_dict(load_state_dict_file(stage_net_path(enc_src, enc_stage, "encoder")))
    anc.load_state_dict(load_state_dict_file(stage_net_path(run, "module2", "anchor")))
    teacher, _ = load_teacher(cfg, data)
    for net in (gen, enc, anc):
        net.eval()
    x, d = x8.float().div(255.0), d8.float().div(255.0)
    hook = FeatureHook(teacher.net)
    with torch.no_grad():
        z, _, _ = enc(x, y)
        z_a, _ = anc(z, y)
        x_r, x_a = gen(z).float(), gen(z_a).float()
        f = {}
        for k, v in (("x", x), ("d", d), ("r", x_r), ("a", x_a)):
            f[k] = hook.forward(teacher, v)[1].float()
        t_d, t_a = teacher(d).argmax(1), teacher(x_a).argmax(1)
    inverted = invert_latents(gen, teacher, hook, z, x, f["x"], d, y, invert_steps) if invert_steps else {}
    hook.remove()
    real_std = within_class_std(x, y)
    r_a, chance = retrieval(x_a, d, y)
    r_r, _ = retrieval(x_r, d, y)
    r_x, _ = retrieval(x, d, y)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    m2 = cfg.module2
    row = {
        "run": str(run),
        "seed": cfg.train.seed,
        "module2": f"w_encoder {m2.w_encoder} w_instance {m2.w_instance} w_anchor_instance {m2.w_anchor_instance} "
        f"epochs {m2.epochs}",
        "test_acc1": summary.get("test", {}).get("acc1", ""),
        "best_eval_acc1": summary.get("best_eval_acc1", ""),
        "split": split,
        "images": int(len(y)),
        "ceiling_std_ratio": within_class_std(d, y) / real_std,  # a perfect anchor, d(x)
        "anchor_std_ratio": within_class_std(x_a, y) / real_std,
        "recon_std_ratio": within_class_std(x_r, y) / real_std,
        "anchor_retrieval": r_a,
        "recon_retrieval": r_r,
        "real_retrieval": r_x,  # x itself against the sources: how well the measure can work at all
        "chance": chance,
        # the same in the teacher's penultimate features (as the teacher sees them), against x and against d(x)
        "anchor_feat_retrieval_x": retrieval(f["a"], f["x"], y, pixels=False)[0],
        "recon_feat_retrieval_x": retrieval(f["r"], f["x"], y, pixels=False)[0],
        "anchor_feat_retrieval_d": retrieval(f["a"], f["d"], y, pixels=False)[0],
        "real_feat_retrieval_d": retrieval(f["x"], f["d"], y, pixels=False)[0],
        "teacher_on_source": float((t_d == y).float().mean()),  # the teacher's accuracy on the d(x)
        "anchor_teacher_agree_source": float((t_a == t_d).float().mean()),
        **inverted,
    }
    return row, {"x": x[:6], "d": d[:6], "r": x_r[:6], "a": x_a[:6]}


def plot(pics: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, key) for name in pics for key in ("x", "d", "r", "a")]
    labels = {"x": "x (MNIST-M)", "d": "source digit", "r": "G(E(x))", "a": "anchor"}
    n = len(next(iter(pics.values()))["x"])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.6, 1.1 * len(rows)), squeeze=False)
    for r, (name, key) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(pics[name][key][c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(f"{name}\n{labels[key]}", fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeatable; labels may repeat)")
    ap.add_argument("--limit", type=int, default=512, help="eval images (anchors.json uses the first 512)")
    ap.add_argument("--split", choices=("eval", "train"), default="eval", help="train: the images Modules 2-3 train on")
    ap.add_argument("--invert", type=int, default=0, help="Adam steps of per-image latent inversion (0 = none)")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    rows, pics = [], {}
    for spec in args.run:
        label, _, path = spec.partition("=")
        row, pic = probe_run(Path(path), args.limit, args.split, args.invert)
        rows.append({"variant": label, **row})
        pics.setdefault(label, pic)  # the picture shows each label's first run
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items() if k != "run"}, flush=True)
    summary: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == label]
        keys = [k for k, v in mine[0].items() if isinstance(v, float)]
        summary[label] = {k: statistics.fmean(r[k] for r in mine) for k in keys} | {"runs": len(mine)}
    stem = args.results / f"anchor-source-{args.tag}"
    write_rows(stem, rows, mean_by_variant=summary)
    plot(pics, stem.with_suffix(".png"))
    for label, s in summary.items():
        print(label, {k: round(v, 3) for k, v in s.items()})


if __name__ == "__main__":
    main()
