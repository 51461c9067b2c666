"""The stages of every method: AuG-KD's three modules and supervised/KD training on real images.

Tang et al., "AuG-KD: Anchor-Based Mixup Generation for Out-of-Domain Knowledge Distillation", ICLR 2024.
Module 1 (data-free learning) trains G, E and S from the teacher alone; Module 2 (anchor learning)
trains the AnchorNet in G's latent space; Module 3 (mixup learning) trains S on mixtures of anchor
images and real student-domain images, distilled from the teacher. Where the official code departs
from the paper, augkd follows docs/decisions.md (teacher KD in Module 3, per-sample mask penalty, ...).

Data-parallel runs (:mod:`augkd.training.dist`): a network whose weights a step trains is called through
``ctx.net(name)`` (Fabric/DDP-wrapped), every frozen or no-grad use through the plain ``ctx.nets[name]``;
steps go through :meth:`Stage.optimize` (``fabric.backward``). Batch sizes are per device. In Module 1
each rank draws its own latents, and the BN-statistics term matches the teacher's running statistics
with the batch statistics of that rank's own generated batch (no cross-rank synchronisation), as do the
class-balance term and the student/generator BatchNorm layers.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from augkd.kernels import fused_mixup, latent_mix
from augkd.methods import get_method
from augkd.training.bank import ImageBank
from augkd.training.engine import RunContext, Stage, adam, frozen_bn_stats, frozen_weights, set_trainable
from augkd.training.losses import (
    BNStatsHook,
    FeatureHook,
    activation_loss,
    anchor_loss,
    channel_mean_var,
    encoder_loss,
    encoder_real_loss,
    generator_loss,
    input_stats_loss,
    instance_contrast_loss,
    pooled_mean_var,
    student_kd_loss,
    total_variation,
)
from augkd.training.schedule import cosine_factor, stage_factor, warmup_factor

if TYPE_CHECKING:
    from augkd.config import DistillConfig


def _cl(x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if ctx.cfg.train.channels_last else x


def _mean(rows: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: float(torch.stack([r[k].detach().float() for r in rows]).mean()) for k in rows[0]}


def _mean_steps(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each loss's mean over the steps that computed it."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: torch.stack([r[k] for r in rows if k in r]).mean() for k in keys}


def jitter(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Shift the whole batch by a random (dy, dx) in [−pixels, pixels]², filling with reflected borders
    (DeepInversion's jitter before the teacher); ``pixels`` = 0 returns ``x``."""
    if pixels <= 0:
        return x
    h, w = x.shape[-2:]
    dy, dx = (int(v) for v in torch.randint(0, 2 * pixels + 1, (2,)))
    pad = F.pad(x, (pixels, pixels, pixels, pixels), mode="reflect")
    return pad[..., dy : dy + h, dx : dx + w]


def rotate_scale(x: torch.Tensor, degrees: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate each image of ``x`` [B, C, H, W] by ``degrees[b]`` (clockwise as displayed) about its centre and
    magnify it by ``scale[b]``, bilinear, zeros outside (the black background of the synthesised images)."""
    rad = degrees.to(x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(rad) / scale, torch.sin(rad) / scale
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates: the inverse rotation, divided by the magnification
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def evenly_spaced(n: int, k: int) -> torch.Tensor:
    """Indices of min(n, k) items spread evenly over 0 … n − 1 (all of them when k ≥ n): a subset that keeps
    each class's share when the items are sorted by class."""
    if k >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def augment_draw(x: torch.Tensor, mixup: float, rotate: float) -> torch.Tensor:
    """Module 1's augmentation of a batch drawn from the bank, before the teacher labels it (bank_mixup,
    bank_rotate): each image blended with another of the batch, λ ~ Beta(α, α) per image, then rotated by
    U(±rotate) degrees and magnified by U(0.9, 1.1). 0 = off; with both off ``x`` itself is returned."""
    if mixup > 0:
        lam = torch.distributions.Beta(mixup, mixup).sample((x.shape[0], 1, 1, 1)).to(x.device, x.dtype)
        x = lam * x + (1 - lam) * x[torch.randperm(x.shape[0], device=x.device)]
    if rotate > 0:
        deg = (torch.rand(x.shape[0], device=x.device) * 2 - 1) * rotate
        x = rotate_scale(x, deg, 0.9 + 0.2 * torch.rand(x.shape[0], device=x.device, dtype=x.dtype))
    return x


def recolor(x: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """A two-colour map of images ``x`` in [0, 1]: ``c0 + x·(c1 − c0)`` per image and channel, where
    ``colors[0]``, ``colors[1]`` (each N×C×1×1 in [0, 1]) are the colours of 0 and 1; the result stays in [0, 1]."""
    c0, c1 = colors[0], colors[1]
    return c0 + x * (c1 - c0)


def random_recolor(x: torch.Tensor) -> torch.Tensor:
    """:func:`recolor` with two colours drawn uniformly per image and channel."""
    return recolor(x, torch.rand(2, x.shape[0], x.shape[1], 1, 1, device=x.device))


HEALTH_LATENTS = 256  # fixed latents for the per-epoch health figures of Module 1


def _student_eval(ctx: RunContext) -> tuple[float, dict[str, float]]:
    acc = ctx.student_accuracy("eval")
    return acc["acc1"] + 1e-3 * acc["acc3"] + 1e-6 * acc["acc5"], {"eval_acc1": acc["acc1"], "eval_acc3": acc["acc3"]}


class DataFreeStage(Stage):
    """Module 1: one generator step, then k student + encoder steps per iteration."""

    name = "module1"
    trains = ("student", "generator", "encoder")
    # The student is restored to its best eval-split epoch; G and E keep their last epoch: the student's
    # accuracy on real data says nothing about which generator is best, and training only improves it.
    selected = ("student",)

    def __init__(self, epochs: int) -> None:
        super().__init__(epochs)
        self.hook: BNStatsHook | None = None
        self.feat: FeatureHook | None = None  # the teacher's penultimate features (w_act, w_contrast)
        self.bank: ImageBank | None = None
        self._teacher_eval: torch.Tensor | None = None  # the teacher's top-1 on the eval images (fixed)
        self._real_std = 1.0  # mean per-pixel std of the eval images (the diversity reference)
        self.health_rows: dict[int, dict[str, Any]] = {}  # epoch → health figures (kept in the resume state)

    def setup(self, ctx: RunContext) -> None:
        c = ctx.cfg.module1
        s, g, e = ctx.nets["student"], ctx.nets["generator"], ctx.nets["encoder"]
        for n in self.trains:
            set_trainable(ctx.nets[n], True)
        self.optimizers = {
            "generator": adam(g.parameters(), lr=c.g_lr),
            "student": adam(s.parameters(), lr=c.s_lr, weight_decay=c.s_wd),
            "encoder": adam(e.parameters(), lr=c.e_lr),
        }
        # cosine per epoch on all three (official: E's scheduler never stepped, B8)
        self.schedulers = {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(self.epochs, 1))
                           for k, o in self.optimizers.items()}  # fmt: skip
        self.hook = BNStatsHook(ctx.teacher.net)
        self._input_target: tuple[torch.Tensor, torch.Tensor] | None = None
        if c.stats_target == "student_domain":
            self._student_domain_targets(ctx)
        self.feat = FeatureHook(ctx.teacher.net) if c.w_act > 0 or c.w_contrast > 0 else None
        self.bank = ImageBank(c.bank_size) if c.bank_size > 0 else None

    @torch.no_grad()
    def _student_domain_targets(self, ctx: RunContext, limit: int = 2048, chunk: int = 256) -> None:
        """``stats_target: student_domain``: the BN and input priors match the teacher's statistics on up to
        ``limit`` unlabelled student-domain training images instead of its running statistics and (0, 1).
        The images are spread evenly over the training set (built-in sets are stored sorted by class: the
        first ``limit`` would be a few classes only)."""
        imgs = ctx.data.train.images[evenly_spaced(len(ctx.data.train.images), limit)]
        batches = [ctx.teacher.prepare(_cl(b.float().div(255.0).to(ctx.device), ctx)) for b in imgs.split(chunk)]
        assert self.hook is not None
        self.hook.set_targets_from(ctx.teacher.net, batches)
        self._input_target = pooled_mean_var([channel_mean_var(b.float()) for b in batches])

    def _generator_step(self, ctx: RunContext, bsz: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """One generator step; returns its losses and (z, x, teacher top-1) of the batch it generated."""
        c = ctx.cfg.module1
        g, s = ctx.net("generator"), ctx.nets["student"]  # the student is frozen in this step: plain module
        assert self.hook is not None
        z = torch.randn(bsz, ctx.cfg.generator.latent_dim, device=ctx.device)
        with ctx.autocast(), frozen_weights(s):
            x = _cl(g(z), ctx)
            xt = jitter(x, c.jitter)
            self.hook.enabled = True
            if self.feat is not None:
                self.feat.enabled = True
            t = ctx.teacher(xt)
            self.hook.enabled = False
            s_out = s(ctx.student_norm(xt))
            bn = self.hook.loss(c.bn_form) if self.hook.layers else None
            losses = generator_loss(t, s_out, bn, c, ctx.backend)
            self._image_priors(ctx, x, xt, losses)
        ctx.check_finite(losses, "module1 generator step")
        self.optimize(ctx, "generator", losses["loss"])
        return {f"g_{k}": v.detach() for k, v in losses.items()}, (z, x.detach().float(), t.detach().argmax(dim=1))

    def _image_priors(
        self, ctx: RunContext, x: torch.Tensor, xt: torch.Tensor, losses: dict[str, torch.Tensor]
    ) -> None:
        """Add the optional generator terms to ``losses["loss"]``: the input-statistics and TV priors, DAFL's
        feature activation and CMI's contrastive diversity (their weights in ``module1``; 0 = off)."""
        c = ctx.cfg.module1
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if c.w_input > 0:
            terms["input"] = (c.w_input, input_stats_loss(ctx.teacher.prepare(xt).float(), self._input_target))
        if c.w_tv > 0:
            terms["tv"] = (c.w_tv, total_variation(x.float()))
        if self.feat is not None:
            f1 = self.feat.pop()
            if c.w_act > 0:
                terms["act"] = (c.w_act, activation_loss(f1))
            if c.w_contrast > 0:
                ctx.teacher(jitter(x, max(c.jitter, 1)))  # a second view of the same images
                f2 = self.feat.pop()
                self.feat.enabled = False
                f_neg = None
                if self.bank is not None and len(self.bank) > 0:  # the bank's images as negatives (no grad)
                    with torch.no_grad():
                        f_neg = self.feat.forward(ctx.teacher, _cl(self.bank.sample(x.shape[0]), ctx))[1]
                terms["contrast"] = (c.w_contrast, instance_contrast_loss(f1, f2, f_neg, c.contrast_tau))
            self.feat.enabled = False
        for name, (w, v) in terms.items():
            losses[name] = v
            losses["loss"] = losses["loss"] + w * v

    def _bank_steps(self, ctx: RunContext, bsz: int, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Bank mode: the G step's images join the bank; k student steps on batches drawn from the whole bank
        (augmented and jittered, the teacher scoring each drawn batch); k encoder steps on the G step's own
        (z, x) pairs."""
        c = ctx.cfg.module1
        assert self.bank is not None
        z, x_new, y_new = batch
        self.bank.add(x_new)
        out: list[dict[str, torch.Tensor]] = []
        n_enc = c.encoder_steps or c.student_steps
        for i in range(c.student_steps):
            x = _cl(jitter(augment_draw(self.bank.sample(bsz), c.bank_mixup, c.bank_rotate), c.jitter), ctx)
            with torch.no_grad(), ctx.autocast():
                t = ctx.teacher(x).float()
            out.append(self._student_encoder_step(ctx, x, t, x_new, y_new, z, train_encoder=i < n_enc))
        return _mean_steps(out)

    def _student_encoder_step(
        self,
        ctx: RunContext,
        x: torch.Tensor,
        t: torch.Tensor,
        x_e: torch.Tensor,
        y_e: torch.Tensor,
        z: torch.Tensor,
        train_encoder: bool = True,
    ) -> dict[str, torch.Tensor]:
        """One student step (KL to the teacher's logits ``t`` on ``x``), then (``train_encoder``) one encoder
        step that maps (``x_e``, label ``y_e``) back to the latents ``z`` that generated ``x_e``."""
        c = ctx.cfg.module1
        s, e = ctx.net("student"), ctx.net("encoder")
        xs = random_recolor(x) if c.recolor else x
        with ctx.autocast():
            s_out = s(ctx.student_norm(xs))
            ls = student_kd_loss(s_out, t, None, u=0.0, tau=c.kd_tau, backend=ctx.backend)
        ctx.check_finite({"loss": ls}, "module1 student step")
        self.optimize(ctx, "student", ls)
        if not train_encoder:
            return {"s_kl": ls.detach()}
        with ctx.autocast():
            z_hat, mu, logvar = e(x_e, y_e)
        le = encoder_loss(z_hat.float(), z, mu.float(), logvar.float(), c.kld_weight)
        ctx.check_finite({"loss": le}, "module1 encoder step")
        self.optimize(ctx, "encoder", le)
        return {"s_kl": ls.detach(), "e_loss": le.detach()}

    def _student_steps(self, ctx: RunContext, bsz: int) -> dict[str, torch.Tensor]:
        c = ctx.cfg.module1
        g = ctx.nets["generator"]  # G only runs under no_grad here
        k, n_enc = c.student_steps, c.encoder_steps or c.student_steps
        z_all = torch.randn(k * bsz, ctx.cfg.generator.latent_dim, device=ctx.device)
        with torch.no_grad(), ctx.autocast():
            # G (train mode) normalises with its batch statistics, so it runs once per step's batch, as k
            # separate generations would (BN statistics over B, running statistics updated k times; one
            # k·B call costs the same); the teacher (eval mode, per-sample) scores all k·B images at once
            x_all = _cl(torch.cat([g(zc) for zc in z_all.split(bsz)]), ctx).float()
            t_all = ctx.teacher(x_all).float()
        out: list[dict[str, torch.Tensor]] = []
        for i in range(k):
            sl = slice(i * bsz, (i + 1) * bsz)
            x, t, z = x_all[sl], t_all[sl], z_all[sl]
            out.append(self._student_encoder_step(ctx, x, t, x, t.argmax(dim=1), z, train_encoder=i < n_enc))
        return _mean_steps(out)

    def train_epoch(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        bsz = ctx.cfg.module1.batch_size
        rows = []
        for it in range(ctx.cfg.module1.iters_per_epoch):
            row, batch = self._generator_step(ctx, bsz)
            row.update(self._bank_steps(ctx, bsz, batch) if self.bank is not None else self._student_steps(ctx, bsz))
            rows.append(row)
            ctx.step_end(self.name, epoch, it, row)
        for sch in self.schedulers.values():
            sch.step()
        out = ctx.reduce_mean(_mean(rows))
        if self.bank is not None:
            out["bank_images"] = float(len(self.bank))
        return out

    def validate(self, ctx: RunContext, epoch: int) -> tuple[float, dict[str, Any]]:
        score, metrics = _student_eval(ctx)
        health = self.health(ctx)
        metrics.update(health)
        self.health_rows[epoch] = {**health, "eval_acc1": metrics["eval_acc1"]}
        if ctx.cfg.module1.select == "fidelity":  # no labels: agreement with the teacher on the eval images
            score = health["fid_eval"] + 1e-3 * health["fid_gen"]
        return score, metrics

    @torch.no_grad()
    def health(self, ctx: RunContext) -> dict[str, Any]:
        """Module 1's health figures (no labels used): the student's top-1 agreement with the teacher on the
        real eval images (``fid_eval``) and on G's images from fixed latents (``fid_gen``); the teacher's class
        histogram over those images (``gen_hist``, its largest share ``gen_class_max`` and normalised entropy
        ``gen_class_entropy``: 1 = every class equally often); and their diversity, the mean per-pixel std
        over the batch relative to the real eval images' (``gen_std_ratio``)."""
        from augkd.evaluate import predict_logits

        s, g = ctx.nets["student"], ctx.nets["generator"]
        ev = ctx.data.eval
        if self._teacher_eval is None:
            self._teacher_eval = predict_logits(ctx.teacher, ev, ctx.cfg.train.eval_batch_size, ctx.device).argmax(1)
            self._real_std = float(ev.as_float().std(dim=0).mean()) if len(ev) > 1 else 1.0
        s_eval = predict_logits(s, ev, ctx.cfg.train.eval_batch_size, ctx.device, ctx.student_norm).argmax(1)
        gen = torch.Generator(device="cpu").manual_seed(ctx.cfg.train.seed + 7)
        z = torch.randn(HEALTH_LATENTS, ctx.cfg.generator.latent_dim, generator=gen).to(ctx.device)
        was = (s.training, g.training)
        s.eval(), g.eval()
        try:
            with ctx.autocast():
                x = g(z).float()
                t_gen = ctx.teacher(x).float().argmax(1)
                s_gen = s(ctx.student_norm(x)).float().argmax(1)
        finally:
            s.train(was[0]), g.train(was[1])
        n_cls = ctx.data.num_classes
        hist = torch.bincount(t_gen.cpu(), minlength=n_cls)
        p = hist.float() / hist.sum()
        ent = float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(n_cls)) if n_cls > 1 else 1.0
        return {
            "fid_eval": float((s_eval.cpu() == self._teacher_eval.cpu()).float().mean()) if len(ev) else 0.0,
            "fid_gen": float((s_gen == t_gen).float().mean()),
            "gen_class_max": float(p.max()),
            "gen_class_entropy": ent,
            "gen_std_ratio": float(x.std(dim=0).mean()) / max(self._real_std, 1e-8),
            "gen_hist": " ".join(str(int(v)) for v in hist.tolist()),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["health_rows"] = self.health_rows
        if self.bank is not None:
            state["bank"] = self.bank.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.health_rows = {int(k): v for k, v in state.get("health_rows", {}).items()}
        if self.bank is not None and "bank" in state:
            self.bank.load_state_dict(state["bank"], device="cpu")

    def health_report(self) -> dict[str, Any]:
        """The health figures of the kept epoch and of the last one (``health.json``, ``summary.json``)."""

        def row(epoch: int) -> dict[str, Any]:
            r = dict(self.health_rows.get(epoch, {}))
            if "gen_hist" in r:
                r["gen_hist"] = [int(v) for v in str(r["gen_hist"]).split()]
            return r

        last = max(self.health_rows) if self.health_rows else -1
        report: dict[str, Any] = {"select": None, "selected_epoch": self.best_epoch, **row(self.best_epoch)}
        report["last_epoch"] = {"epoch": last, **row(last)}
        if self.bank is not None:
            report["bank_images"], report["images_synthesised"] = len(self.bank), self.bank.added
        return report

    def finish(self, ctx: RunContext) -> None:
        super().finish(ctx)
        if self.hook is not None:
            self.hook.remove()
        if self.feat is not None:
            self.feat.remove()
        if ctx.is_main:
            from augkd.utils import atomic_write_json

            c = ctx.cfg.module1
            report = {**self.health_report(), "select": c.select}
            if self.bank is None:
                report["images_synthesised"] = self.epochs * c.iters_per_epoch * c.batch_size * (1 + c.student_steps)
            atomic_write_json(ctx.run_dir / "checkpoints" / self.name / "health.json", report)

    def images(self, ctx: RunContext, out_dir: Path) -> None:
        from augkd.training.plots import save_grid

        g = ctx.nets["generator"].eval()
        gen = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(64, ctx.cfg.generator.latent_dim, generator=gen).to(ctx.device)
        with torch.no_grad():
            x = g(z).float()
            pred = ctx.teacher(x).argmax(1)
        order = torch.argsort(pred, stable=True)
        save_grid(x[order], out_dir / "module1_generated.png", nrow=8,
                  title="Module 1: generated images, sorted by the teacher's class")  # fmt: skip


class AnchorStage(Stage):
    """Module 2: learn the class-conditioned latent anchor. Only the AnchorNet is trained (the paper), or the
    AnchorNet and the encoder with ``module2.w_encoder`` > 0 (sample-specific anchors, docs/decisions.md)."""

    name = "module2"
    higher_is_better = False

    def __init__(self, epochs: int, train_encoder: bool = False) -> None:
        super().__init__(epochs)
        self.trains = ("anchor", "encoder") if train_encoder else ("anchor",)
        self.feat: FeatureHook | None = None  # the teacher's penultimate features (w_encoder, w_anchor_instance)

    def setup(self, ctx: RunContext) -> None:
        for n in ("generator", "encoder", "student"):
            set_trainable(ctx.nets[n], False)
        set_trainable(ctx.nets["anchor"], True)
        c = ctx.cfg.module2
        self.optimizers = {"anchor": adam(ctx.nets["anchor"].parameters(), lr=c.lr)}
        if "encoder" in self.trains:
            ctx.nets["encoder"].requires_grad_(True)  # weights trained, BN kept in eval mode (as it is used)
            self.optimizers["encoder"] = adam(ctx.nets["encoder"].parameters(), lr=c.e_lr)
        if "encoder" in self.trains or c.w_anchor_instance > 0:
            self.feat = FeatureHook(ctx.teacher.net)
        self.schedulers = {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(self.epochs, 1))
                           for k, o in self.optimizers.items()}  # fmt: skip

    def _loss(
        self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, a: torch.nn.Module, train: bool = False
    ) -> dict[str, torch.Tensor]:
        e, g = ctx.nets["encoder"], ctx.nets["generator"]  # frozen: gradients flow through G to the anchor only
        c = ctx.cfg.module2
        with torch.no_grad():  # the mean, or a draw from q(z|x, y) in training batches (module2.encoder_z)
            z, _, _ = e(x, y, sample=True if train and c.encoder_z == "sample" else None)
        with ctx.autocast():
            z_a, m = a(z, y)
            x_a = _cl(g(z_a), ctx)
            if c.w_anchor_instance > 0:  # the hook's features, also under no_grad (validate)
                assert self.feat is not None
                with torch.no_grad():
                    f_real = self.feat.forward(ctx.teacher, _cl(x, ctx))[1].float()
                o, f_anchor = self.feat.forward(ctx.teacher, x_a)
            else:
                o = ctx.teacher(x_a)
        losses = anchor_loss(o, y, m, c, ctx.backend)
        if c.w_anchor_instance > 0:
            inst = instance_contrast_loss(f_anchor, f_real, None, c.instance_tau)
            losses["instance"] = inst.detach()
            losses["loss"] = losses["loss"] + c.w_anchor_instance * inst
        if c.w_near > 0:
            near = (z_a.float() - z.float()).pow(2).mean()
            losses["near"] = near.detach()
            losses["loss"] = losses["loss"] + c.w_near * near
        return losses

    def _encoder_loss(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's loss on a real batch (x, y) and a fresh generated batch, in one encoder forward (DDP
        expects one forward per backward); see :func:`encoder_real_loss`."""
        e, g = ctx.net("encoder"), ctx.nets["generator"]
        assert self.feat is not None
        b, dim = x.shape[0], ctx.cfg.generator.latent_dim
        with torch.no_grad(), ctx.autocast():
            f_real = self.feat.forward(ctx.teacher, _cl(x, ctx))[1].float()
            z_g = torch.randn(b, dim, device=ctx.device)
            x_g = g(z_g).float()
            y_g = ctx.teacher(_cl(x_g, ctx)).argmax(dim=1)
        with ctx.autocast():
            z_all, mu, logvar = e(torch.cat([x, x_g]), torch.cat([y, y_g]), sample=True)
            t_rec, f_rec = self.feat.forward(ctx.teacher, _cl(g(z_all[:b]), ctx))
        inverse = encoder_loss(z_all[b:].float(), z_g, mu[b:].float(), logvar[b:].float(), ctx.cfg.module1.kld_weight)
        c = ctx.cfg.module2
        return encoder_real_loss(f_rec, f_real, t_rec, y, c.w_encoder, inverse / dim, c.w_instance, c.instance_tau)

    def train_epoch(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        rows = []
        for i, (x, y) in enumerate(ctx.batches("train", ctx.cfg.train.batch_size, self.name, epoch, augment=True,
                                               drop_last=True)):  # fmt: skip
            x, y = x.to(ctx.device), y.to(ctx.device)
            enc: dict[str, torch.Tensor] = {}
            if "encoder" in self.trains:  # the encoder's step on this batch first, then the anchor's
                enc = self._encoder_loss(ctx, x, y)
                ctx.check_finite(enc, "module2 encoder step")
                self.optimize(ctx, "encoder", enc["loss"])
            losses = self._loss(ctx, x, y, ctx.net("anchor"), train=True)
            ctx.check_finite(losses, "module2")
            self.optimize(ctx, "anchor", losses["loss"])
            rows.append(
                {**{f"a_{k}": v.detach() for k, v in losses.items()}, **{f"e_{k}": v.detach() for k, v in enc.items()}}
            )
            ctx.step_end(self.name, epoch, i, rows[-1])
        for sch in self.schedulers.values():
            sch.step()
        return ctx.reduce_mean(_mean(rows))

    @torch.no_grad()
    def validate(self, ctx: RunContext, epoch: int) -> tuple[float, dict[str, float]]:
        """Anchor losses on the eval split: the mean of the batch means in one process; under DDP each rank
        scores a disjoint shard and the batch means are weighted by batch size across ranks."""
        from augkd.data import iterate_batches
        from augkd.training.dist import eval_shard

        a = ctx.nets["anchor"]
        a.eval()
        data = ctx.data.eval
        if ctx.world_size > 1:
            data = data.subset(eval_shard(len(data), ctx.rank, ctx.world_size))
        keys = ("loss", "energy", "mask_mean")
        rows, sizes = [], []
        for x, y in iterate_batches(data, ctx.cfg.train.eval_batch_size, shuffle=False):
            rows.append(self._loss(ctx, x.to(ctx.device), y.to(ctx.device), a))
            sizes.append(len(y))
        a.train()
        if ctx.world_size == 1:
            m = _mean(rows)
        else:
            sums = {k: sum(float(r[k]) * n for r, n in zip(rows, sizes, strict=True)) for k in keys}
            tot = ctx.reduce_mean({**sums, "_n": float(sum(sizes))})
            n_all = max(tot.pop("_n"), 1e-12)
            m = {k: v / n_all for k, v in tot.items()}
        return m["loss"], {"eval_a_loss": m["loss"], "eval_a_energy": m["energy"], "eval_a_mask": m["mask_mean"]}

    def finish(self, ctx: RunContext) -> None:
        super().finish(ctx)
        set_trainable(ctx.nets["anchor"], False)
        set_trainable(ctx.nets["encoder"], False)
        if self.feat is not None:
            self.feat.remove()
            self.feat = None
        if ctx.is_main:
            from augkd.utils import atomic_write_json

            atomic_write_json(ctx.run_dir / "checkpoints" / self.name / "anchors.json", anchor_measures(ctx))

    @torch.no_grad()
    def images(self, ctx: RunContext, out_dir: Path) -> None:
        from augkd.training.plots import save_rows

        idx = per_class_indices(ctx.data.train.labels, per_class=4, classes=6)  # several images of several classes
        x = ctx.data.train.images[idx].float().div(255.0).to(ctx.device)
        y = ctx.data.train.labels[idx].to(ctx.device)
        z, _, _ = ctx.nets["encoder"](x, y)
        z_a, _ = ctx.nets["anchor"](z, y)
        g = ctx.nets["generator"]
        save_rows([x, g(z).float(), g(z_a).float()], ["student image", "G(E(x))", "anchor G(A(E(x)))"],
                  out_dir / "module2_anchors.png", title="Module 2: student images beside their anchors")  # fmt: skip


def per_class_indices(labels: torch.Tensor, per_class: int, classes: int) -> torch.Tensor:
    """Indices of the first ``per_class`` images of each of the first ``classes`` classes present, grouped
    by class (the pictures show several images of several classes, not the split's first rows)."""
    picked = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()[:classes]]
    return torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)


def within_class_std(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes (with ≥ 2 images) of the mean per-pixel std over that class's images."""
    stds = [x[y == c].float().std(dim=0).mean() for c in y.unique() if int((y == c).sum()) >= 2]
    return float(torch.stack(stds).mean()) if stds else float("nan")


@torch.no_grad()
def anchor_measures(ctx: RunContext, limit: int = 512) -> dict[str, float]:
    """Measures of the anchors on up to ``limit`` eval-split images x with labels y (class-level: none of them
    tells a view of x from a view of x's class; benchmarks/probe_anchor_source.py does):

    ``recon_agree``: the teacher's top-1 on G(E(x)) equals its top-1 on x (reconstruction consistency);
    ``anchor_label_agree``: the teacher's top-1 on the anchor image G(A(E(x))) is y; ``anchor_conf``: the
    teacher's mean top-1 probability on anchor images; ``anchor_std_ratio`` / ``recon_std_ratio``: the
    within-class pixel std of anchor / G(E(x)) images over the real images' (1 = as varied as the real
    images of a class, 0 = one image per class)."""
    x = ctx.data.eval.images[:limit].float().div(255.0).to(ctx.device)
    y = ctx.data.eval.labels[:limit].to(ctx.device)
    e, a, g = ctx.nets["encoder"], ctx.nets["anchor"], ctx.nets["generator"]
    was = {n: ctx.nets[n].training for n in ("encoder", "anchor", "generator")}
    for net in (e, a, g):
        net.eval()
    with ctx.autocast():
        z, _, _ = e(x, y)
        z_a, _ = a(z, y)
        x_r, x_a = g(z).float(), g(z_a).float()
        t_x, t_r, t_a = (ctx.teacher(v).float() for v in (x, x_r, x_a))
    for n, mode in was.items():
        ctx.nets[n].train(mode)
    real_std = within_class_std(x, y)
    return {
        "images": int(len(y)),
        "recon_agree": float((t_r.argmax(1) == t_x.argmax(1)).float().mean()),
        "anchor_label_agree": float((t_a.argmax(1) == y).float().mean()),
        "anchor_conf": float(t_a.softmax(1).max(1).values.mean()),
        "anchor_std_ratio": within_class_std(x_a, y) / real_std,
        "recon_std_ratio": within_class_std(x_r, y) / real_std,
    }


class MixupStage(Stage):
    """Module 3: the student learns from anchor/real mixtures at stage factor s(e), distilled from the teacher."""

    name = "module3"
    trains = ("student",)

    def __init__(self, epochs: int, use_anchor: bool = True, fixed_s: float | None = None) -> None:
        super().__init__(epochs)
        self.use_anchor, self.fixed_s = use_anchor, fixed_s
        self.step = 0
        self._lr_epoch = 0  # the epoch whose cosine factor the per-step lambda applies

    def lr_factor(self, ctx: RunContext, step: int) -> float:
        """lr / module3.lr at the stage's optimizer step ``step`` (counted from its first epoch) in the epoch
        last passed to :meth:`start_epoch_lr`; depends only on (step, epoch), so a resumed run continues exactly."""
        f = warmup_factor(step)
        if ctx.cfg.module3.lr_schedule == "cosine":
            f *= cosine_factor(self._lr_epoch, self.epochs)
        return f

    def s_at(self, cfg: DistillConfig, epoch: int) -> float:
        """The stage factor s(e) of epoch ``epoch`` (``fixed_s`` for the no-mixup ablation)."""
        if self.fixed_s is not None:
            return self.fixed_s
        c = cfg.module3
        return stage_factor(epoch, self.epochs, c.a, c.b, c.schedule)

    def start_epoch_lr(self, ctx: RunContext, epoch: int) -> None:
        """Set the student's lr for this epoch's first step (LambdaLR set it with the previous epoch's factor).

        The scheduler takes its last step again with this epoch's factor: ``base_lr · lr_factor(step)``, and
        ``get_last_lr()`` follows. A new stage's first lr already has epoch 0's factor.
        """
        if epoch == self._lr_epoch:
            return
        self._lr_epoch = epoch
        sch = self.schedulers["student"]
        sch.last_epoch -= 1
        sch.step()

    def setup(self, ctx: RunContext) -> None:
        for n in ("generator", "encoder", "anchor"):
            set_trainable(ctx.nets[n], False)
        set_trainable(ctx.nets["student"], True)
        c = ctx.cfg.module3
        opt = adam(ctx.nets["student"].parameters(), lr=c.lr, weight_decay=c.wd)
        self.optimizers = {"student": opt}
        # ConstantLR defaults (lr/3 for the first 5 steps), as a per-step warm-up; with lr_schedule=cosine
        # also the baselines' per-epoch cosine (the factor is refreshed at the start of every epoch)
        self.schedulers = {"student": torch.optim.lr_scheduler.LambdaLR(opt, lambda st: self.lr_factor(ctx, st))}

    @torch.no_grad()
    def mix(
        self,
        ctx: RunContext,
        x: torch.Tensor,
        y: torch.Tensor,
        s: float,
        sample: bool | None = None,
        x_view: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_m in [0,1], normalised x_m): z_a = A(E(x, y)), z_m = (1−s)z_a + s·z, x_m = (1−s)G(z_m) + s·x.

        z is a draw from q(z|x, y) with ``sample=True`` (training batches, module3.encoder_z), else the
        encoder's own rule (its mean in eval mode, unless built with ``sample_in_eval``, bug B13). With
        ``x_view`` (the student's recoloured view of x, ``data.recolor``) the normalised mixture blends G's
        image with ``x_view`` instead of x.
        """
        xv = x if x_view is None else x_view
        if s >= 1.0:
            return x, ctx.student_norm(xv)
        z, _, _ = ctx.nets["encoder"](x, y, sample=sample)
        z_a = ctx.nets["anchor"](z, y)[0] if self.use_anchor else z
        z_m = latent_mix(z_a, z, s, backend=ctx.backend)
        with ctx.autocast():
            g = ctx.nets["generator"](z_m)
        g = g.float()
        norm = ctx.student_norm
        x_m = fused_mixup(g, x, s, backend=ctx.backend)
        gv = random_recolor(g) if x_view is not None and ctx.cfg.module3.mix_color else g
        x_mn = fused_mixup(gv, xv, s, norm.mean.flatten(), norm.std.flatten(), backend=ctx.backend)
        return x_m, x_mn

    def train_epoch(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        c = ctx.cfg.module3
        s_net = ctx.net("student")
        s = self.s_at(ctx.cfg, epoch)
        self.start_epoch_lr(ctx, epoch)
        lr = self.optimizers["student"].param_groups[0]["lr"]  # logged: the lr of this epoch's first step
        rows = []
        for i, (x, y) in enumerate(ctx.batches("train", ctx.cfg.train.batch_size, self.name, epoch, augment=True)):
            x, y = x.to(ctx.device), y.to(ctx.device)
            xs = random_recolor(x) if ctx.cfg.data.recolor else x  # the student's view (the teacher sees x)
            x_m, x_mn = self.mix(ctx, x, y, s, sample=True if c.encoder_z == "sample" else None, x_view=xs)
            if c.mixed_only:
                inputs, raw, labels = x_mn, x_m, y
            else:
                real = ctx.student_norm(xs) if c.normalize_real else xs
                inputs, raw, labels = torch.cat([real, x_mn]), torch.cat([x, x_m]), torch.cat([y, y])
            inputs = _cl(inputs, ctx)
            with ctx.autocast():
                q = s_net(inputs)
                if c.kd_target == "teacher":
                    with torch.no_grad():
                        t = ctx.teacher(_cl(raw, ctx))
                else:  # official code (B1): the student itself, a second stochastic pass (plain module: one
                    t = ctx.nets["student"](inputs)  # DDP forward per backward; its gradients still all-reduce)
            loss = student_kd_loss(q, t, labels, c.u, c.tau, ctx.backend)
            if c.w_gen > 0:
                loss = loss + c.w_gen * self._rehearsal(ctx, x)
            ctx.check_finite({"loss": loss}, "module3")
            self.optimize(ctx, "student", loss)
            self.schedulers["student"].step()
            rows.append({"m3_loss": loss.detach()})
            ctx.step_end(self.name, epoch, i, {"loss": rows[-1]["m3_loss"]})
        out = ctx.reduce_mean(_mean(rows))
        out["s"], out["lr"] = s, lr
        return out

    def _rehearsal(self, ctx: RunContext, x: torch.Tensor) -> torch.Tensor:
        """τ²·KL(T ‖ S) on ``module3.gen_batch`` rehearsal images (:meth:`rehearsal_views`).

        The student's second forward of the step goes through the plain module (one DDP forward per backward,
        as in the official-code branch; the weights' gradients still all-reduce). In train mode its BatchNorm
        running statistics are updated by these G images too, unless ``module3.gen_bn_stats`` is false."""
        c = ctx.cfg.module3
        xg, xs = self.rehearsal_views(ctx, x, c.gen_batch)
        with torch.no_grad(), ctx.autocast():
            tg = ctx.teacher(_cl(xg, ctx)).float()
        keep = contextlib.nullcontext() if c.gen_bn_stats else frozen_bn_stats(ctx.nets["student"])
        with keep, ctx.autocast():
            qg = ctx.nets["student"](ctx.student_norm(_cl(xs, ctx)))
        return student_kd_loss(qg, tg, None, u=0.0, tau=c.tau, backend=ctx.backend)

    @torch.no_grad()
    def rehearsal_views(self, ctx: RunContext, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the teacher's view, the student's view) of ``n`` fresh images of the frozen G (eval mode, random
        latents), each blended with a random real image of the batch ``x`` (in [0, 1]) by λ ~ U(0, gen_mix);
        the student's view has G's part recoloured when ``module3.gen_color``."""
        c = ctx.cfg.module3
        z = torch.randn(n, ctx.cfg.generator.latent_dim, device=ctx.device)
        with ctx.autocast():
            g = ctx.nets["generator"](z).float()
        xs = random_recolor(g) if c.gen_color else g
        xg = g
        if c.gen_mix > 0:
            lam = torch.rand(n, 1, 1, 1, device=ctx.device) * c.gen_mix
            xr = x[torch.randint(0, x.shape[0], (n,), device=ctx.device)]
            xg, xs = (1 - lam) * g + lam * xr, (1 - lam) * xs + lam * xr
        return xg, xs

    def validate(self, ctx: RunContext, epoch: int) -> tuple[float, dict[str, float]]:
        return _student_eval(ctx)

    @torch.no_grad()
    def images(self, ctx: RunContext, out_dir: Path) -> None:
        from augkd.training.plots import save_rows

        idx = per_class_indices(ctx.data.train.labels, per_class=1, classes=12)  # one image of each class
        x = ctx.data.train.images[idx].float().div(255.0).to(ctx.device)
        y = ctx.data.train.labels[idx].to(ctx.device)
        values = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        rows = [self.mix(ctx, x, y, s)[0] for s in values]
        save_rows(rows, [f"s={s:.1f}" for s in values], out_dir / "module3_mixup.png",
                  title="Module 3: mixup images as the stage factor s grows")  # fmt: skip
        if ctx.cfg.module3.w_gen > 0:
            cuda = [ctx.device] if torch.device(ctx.device).type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # the picture does not move the run's random state
                torch.manual_seed(ctx.cfg.train.seed)
                views = [self.rehearsal_views(ctx, x, x.shape[0]) for _ in range(2)]
            rows = [v for pair in views for v in pair]
            title = "Module 3 rehearsal: G's images blended with real ones, as each network sees them"
            save_rows(rows, ["teacher sees", "student sees"] * 2, out_dir / "module3_rehearsal.png", title=title)


class SupervisedStage(Stage):
    """Training on real student-domain images: CE only (``scratch``) or teacher KD (``kd``, ``dfkd-ft``)."""

    name = "supervised"
    trains = ("student",)

    def __init__(self, epochs: int, use_teacher: bool, name: str = "supervised") -> None:
        super().__init__(epochs)
        self.use_teacher = use_teacher
        self.name = name

    def setup(self, ctx: RunContext) -> None:
        set_trainable(ctx.nets["student"], True)
        c = ctx.cfg.kd
        opt = adam(ctx.nets["student"].parameters(), lr=c.lr, weight_decay=c.wd)
        self.optimizers = {"student": opt}
        self.schedulers = {"student": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))}

    def train_epoch(self, ctx: RunContext, epoch: int) -> dict[str, float]:
        c = ctx.cfg.kd
        s_net = ctx.net("student")
        rows = []
        for i, (x, y) in enumerate(ctx.batches("train", ctx.cfg.train.batch_size, self.name, epoch, augment=True)):
            x, y = x.to(ctx.device), y.to(ctx.device)
            xs = random_recolor(x) if ctx.cfg.data.recolor else x
            with ctx.autocast():
                q = s_net(_cl(ctx.student_norm(xs), ctx))
                if self.use_teacher and c.u < 1.0:
                    with torch.no_grad():
                        t = ctx.teacher(_cl(x, ctx))
                    loss = student_kd_loss(q, t, y, c.u, c.tau, ctx.backend)
                else:
                    loss = F.cross_entropy(q.float(), y)
            ctx.check_finite({"loss": loss}, self.name)
            self.optimize(ctx, "student", loss)
            rows.append({"loss": loss.detach()})
            ctx.step_end(self.name, epoch, i, rows[-1])
        self.schedulers["student"].step()
        return ctx.reduce_mean(_mean(rows))

    def validate(self, ctx: RunContext, epoch: int) -> tuple[float, dict[str, float]]:
        return _student_eval(ctx)


def build_stages(ctx_cfg: DistillConfig) -> list[Stage]:
    """The stage list of the config's method (augkd.methods: one engine, methods are configs)."""
    c = ctx_cfg
    make = {
        "module1": lambda: DataFreeStage(c.module1.epochs),
        "module2": lambda: AnchorStage(c.module2.epochs, train_encoder=c.module2.w_encoder > 0),
        "module3": lambda: MixupStage(c.module3.epochs),
        "module3-no-anchor": lambda: MixupStage(c.module3.epochs, use_anchor=False),
        # s = 1 from the first epoch: no anchor or generated images are used
        "module3-no-mixup": lambda: MixupStage(c.module3.epochs, fixed_s=1.0),
        "scratch": lambda: SupervisedStage(c.kd.epochs, use_teacher=False, name="scratch"),
        "kd": lambda: SupervisedStage(c.kd.epochs, use_teacher=True, name="kd"),
        "finetune": lambda: SupervisedStage(c.kd.epochs, use_teacher=True, name="finetune"),
    }
    return [make[name]() for name in get_method(c.method).stages]
