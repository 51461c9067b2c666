"""Module 3's teacher-domain rehearsal (module3.w_gen, gen_mix, gen_color): the recolouring and the loss
against hand-computed values, and an exact kill-and-resume of a run that uses them."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augkd.config import load_config
from augkd.training import distill
from augkd.training.stages import MixupStage, recolor

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
REHEARSE = [
    "module3.w_gen=1",
    "module3.gen_batch=16",
    "module3.gen_mix=0.5",
    "module3.gen_color=true",
    "module3.mix_color=true",
    "data.recolor=true",
    "module1.recolor=true",
]


def test_recolor_by_hand():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 2, 1, 3)  # one image, 2 channels, 3 pixels
    colors = torch.tensor([[0.2, 0.9], [1.0, 0.1]]).view(2, 1, 2, 1, 1)  # c0 = (0.2, 0.9), c1 = (1.0, 0.1)
    out = recolor(x, colors)
    # channel 0: 0.2 + x·0.8 → 0.2, 0.6, 1.0; channel 1: 0.9 − x·0.8 → 0.9, 0.5, 0.1 (the polarity flips)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.2, 0.6, 1.0]))
    assert torch.allclose(out[0, 1, 0], torch.tensor([0.9, 0.5, 0.1]))


def _ctx(gen_mix: float, gen_color: bool, tau: float) -> SimpleNamespace:
    torch.manual_seed(3)
    latent, n_cls = 4, 3
    gen = nn.Sequential(nn.Linear(latent, 2 * 2 * 2), nn.Sigmoid(), nn.Unflatten(1, (2, 2, 2)))  # 2×2×2 images
    teacher, student = (
        nn.Sequential(nn.Flatten(), nn.Linear(8, n_cls)),
        nn.Sequential(nn.Flatten(), nn.Linear(8, n_cls)),
    )
    teacher.requires_grad_(False)
    m3 = SimpleNamespace(gen_batch=5, gen_mix=gen_mix, gen_color=gen_color, tau=tau, gen_bn_stats=True)
    cfg = SimpleNamespace(
        module3=m3, generator=SimpleNamespace(latent_dim=latent), train=SimpleNamespace(channels_last=False)
    )
    return SimpleNamespace(
        cfg=cfg, device="cpu", nets={"generator": gen, "student": student}, teacher=teacher, backend="torch",
        autocast=contextlib.nullcontext, student_norm=lambda v: (v - 0.5) / 0.25,
    )  # fmt: skip


@pytest.mark.parametrize("gen_mix,gen_color", [(0.0, False), (0.7, False), (0.0, True), (0.7, True)])
def test_rehearsal_loss_by_hand(gen_mix, gen_color):
    tau = 2.0
    ctx = _ctx(gen_mix, gen_color, tau)
    x = torch.rand(3, 2, 2, 2)  # the step's real batch
    stage = MixupStage(epochs=1)
    torch.manual_seed(11)
    student = ctx.nets["student"]
    got = stage._rehearsal(ctx, x)
    # the same draws in the same order, then the formula written out
    torch.manual_seed(11)
    z = torch.randn(5, 4)
    g = ctx.nets["generator"](z)
    xs = g
    if gen_color:
        c = torch.rand(2, 5, 2, 1, 1)
        xs = c[0] + g * (c[1] - c[0])
    xt = g
    if gen_mix > 0:
        lam = torch.rand(5, 1, 1, 1) * gen_mix
        xr = x[torch.randint(0, 3, (5,))]
        xt, xs = (1 - lam) * g + lam * xr, (1 - lam) * xs + lam * xr
    p_t = F.softmax(ctx.teacher(xt) / tau, dim=1)
    log_p_s = F.log_softmax(student(ctx.student_norm(xs)) / tau, dim=1)
    want = tau**2 * (p_t * (p_t.log() - log_p_s)).sum(dim=1).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    got.backward()  # the loss reaches the student's weights
    assert student[1].weight.grad is not None and student[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ctx.nets["generator"].parameters())  # G is only read


@pytest.mark.parametrize("momentum", [0.1, None])  # exponential and cumulative-average BatchNorm
def test_frozen_bn_stats_keeps_running_statistics(momentum):
    """module3.gen_bn_stats=false: the rehearsal forward normalises with its batch's statistics (same loss and
    gradient as with updates) but leaves the running statistics, counts and momentum as they were."""
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(8, momentum=momentum)
    bn.running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    ctx = _ctx(0.5, True, 2.0)
    ctx.nets["student"] = nn.Sequential(nn.Flatten(), bn, nn.Linear(8, 3))
    x = torch.rand(3, 2, 2, 2)
    losses = {}
    for keep in (False, True):
        ctx.cfg.module3.gen_bn_stats = not keep
        bn.load_state_dict(before)
        torch.manual_seed(11)
        losses[keep] = MixupStage(epochs=1)._rehearsal(ctx, x)
        changed = any(not torch.equal(v, before[k]) for k, v in bn.state_dict().items())
        assert changed is not keep  # updated without the freeze, untouched with it
    assert losses[True].item() == pytest.approx(losses[False].item(), rel=1e-6)
    assert bn.momentum == momentum and bn.training


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in ("train_s", "eval_s")} for r in csv.DictReader(fh)]


def test_rehearsal_changes_module3_and_resumes_exactly(tmp_path):
    """Rehearsal, recoloured real images (every stage) and recoloured Module 1 views: they change the run,
    and a run killed inside Module 3 resumes to the same metrics and test scores."""
    fast = ["train.save_images=false", "module1.epochs=1", "module3.epochs=4"]
    distill(load_config(SMOKE, fast), tmp_path / "off")
    full = distill(load_config(SMOKE, [*fast, *REHEARSE]), tmp_path / "full")
    off_rows, on_rows = _rows(tmp_path / "off" / "metrics.csv"), _rows(tmp_path / "full" / "metrics.csv")
    for stage, key in (("module1", "s_kl"), ("module3", "m3_loss")):  # each option takes part
        assert [r[key] for r in off_rows if r["stage"] == stage] != [r[key] for r in on_rows if r["stage"] == stage]

    class Stop(Exception):
        pass

    def stop(row):
        if row["stage"] == "module3" and row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        distill(load_config(SMOKE, [*fast, *REHEARSE]), tmp_path / "killed", on_epoch_end=[stop])
    resumed = distill(load_config(SMOKE, [*fast, *REHEARSE]), tmp_path / "killed", resume=True)
    assert _rows(tmp_path / "killed" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
    assert resumed.test == full.test


def test_rehearsal_picture_leaves_the_random_state(tmp_path, monkeypatch):
    """images/module3_rehearsal.png is drawn, and drawing it does not move the run's random state."""
    import augkd.training.stages as stages

    seen = {}
    real_images = stages.MixupStage.images

    def spy(self, ctx, out_dir):
        before = torch.get_rng_state()
        real_images(self, ctx, out_dir)
        seen["same"] = torch.equal(before, torch.get_rng_state())

    monkeypatch.setattr(stages.MixupStage, "images", spy)
    over = ["module1.epochs=1", "module2.epochs=1", "module3.epochs=1", *REHEARSE]
    distill(load_config(SMOKE, over), tmp_path / "run")
    assert seen == {"same": True}
    assert (tmp_path / "run" / "images" / "module3_rehearsal.png").stat().st_size > 1000
