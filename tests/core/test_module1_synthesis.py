"""Module 1's synthesis options: the loss terms against hand-computed values, the image bank, jitter,
the health figures, and an exact kill-and-resume with the bank."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augkd.config import Module1Config, load_config
from augkd.training import distill
from augkd.training.bank import ImageBank
from augkd.training.losses import BNStatsHook, generator_loss
from augkd.training.stages import augment_draw, jitter, rotate_scale

SMOKE = "configs/smoke.yaml"
BANK = [
    "method=dfkd",
    "train.save_images=false",
    "module1.epochs=3",
    "module1.bank_size=100",
    "module1.adv_mask=true",
    "module1.jitter=2",
    "module1.bn_form=layer_mean",
    "module1.kd_tau=4",
]


def test_bn_loss_layer_mean_by_hand():
    """BN(2) → 1×1 conv summing the channels → BN(1), known running statistics, a batch of constant
    channels (batch variance 0): both BN-loss forms against hand-computed norms."""
    net = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1, bias=False), nn.BatchNorm2d(1)).eval()
    net[0].running_mean.copy_(torch.tensor([1.0, 0.0]))
    net[0].running_var.copy_(torch.tensor([1.0, 1.0]))
    net[1].weight.data.fill_(1.0)
    net[2].running_mean.fill_(0.5)
    net[2].running_var.fill_(2.0)
    x = torch.zeros(4, 2, 3, 3)
    x[:, 0] = 3.0  # BN0 input: mean (3, 0), var (0, 0)
    hook = BNStatsHook(net)
    hook.enabled = True
    net(x)
    l0 = 2.0 + math.sqrt(2.0)  # ‖(2, 0)‖ + ‖(−1, −1)‖
    mu1 = 2.0 / math.sqrt(1.0 + 1e-5)  # BN0's output summed by the conv: (3 − 1)/√(1 + eps) + 0
    l1 = abs(mu1 - 0.5) + 2.0  # one channel: |Δμ| + |0 − 2|
    assert hook.loss("layer_mean").item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    net(x)
    assert hook.loss("layer_sum").item() == pytest.approx(l0 + l1, rel=1e-5)
    net(x)
    concat = math.sqrt(2.0**2 + (mu1 - 0.5) ** 2) + math.sqrt(1.0 + 1.0 + 4.0)
    assert hook.loss("concat").item() == pytest.approx(concat, rel=1e-5)
    net(x)
    with pytest.raises(ValueError, match="unknown BN loss form"):
        hook.loss("sum")


def test_bn_loss_layer_rel_by_hand():
    """``layer_rel``: per layer √mean_c(Δμ²/σ*²) + √mean_c(log²(σ²/σ*²)), mean over layers. Two BN layers with
    different errors and unequal errors across channels, so an RMS is told from a mean absolute value and a mean
    over layers from a sum or from one pool of all channels. The batch's channel statistics are exact (±a around
    a mean: mean and unbiased variance known by hand); the second layer sees the first one's output."""
    net = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1, bias=False), nn.BatchNorm2d(1)).eval()
    net[0].running_mean.copy_(torch.tensor([1.0, -1.0]))
    net[0].running_var.copy_(torch.tensor([4.0, 0.25]))
    net[1].weight.data.fill_(0.0)
    net[1].weight.data[0, 0] = 1.0  # the conv passes channel 0 of BN0's output
    x = torch.empty(2, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([2.0, 4.0])  # mean 3, unbiased var 2
    x[:, 1, 0, 0] = torch.tensor([0.0, 1.0])  # mean 0.5, unbiased var 0.5
    eps = 1e-5
    y = (x[:, 0, 0, 0] - 1.0) / math.sqrt(4.0 + eps)  # BN0's channel 0 output: mean 2/√(4+ε), var 2/(4+ε)
    net[2].running_mean.fill_(0.0)
    net[2].running_var.fill_(2.0)
    hook = BNStatsHook(net)
    hook.enabled = True
    net(x)
    z0 = math.sqrt(((3 - 1) ** 2 / 4.0 + (0.5 + 1) ** 2 / 0.25) / 2)  # √mean(1, 9) = √5
    lv0 = math.sqrt((math.log(2 / 4.0) ** 2 + math.log(0.5 / 0.25) ** 2) / 2)  # ln 2
    m1, v1 = float(y.mean()), float(y.var())
    l1 = abs(m1) / math.sqrt(2.0) + abs(math.log(v1 / 2.0))  # one channel: |Δμ|/σ* + |log ratio|
    assert hook.loss("layer_rel").item() == pytest.approx((z0 + lv0 + l1) / 2, rel=1e-5)
    # a matched batch scores 0 with a finite gradient (no NaN from √0)
    hook.run_mean = torch.tensor([3.0, 0.5, m1])
    hook.run_var = torch.tensor([2.0, 0.5, v1])
    xr = x.clone().requires_grad_(True)
    net(xr)
    loss = hook.loss("layer_rel")
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert torch.isfinite(xr.grad).all()


def test_generator_loss_masks_the_adversarial_term_by_hand():
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # agrees on sample 0 only
    cfg = Module1Config(adv_mask=True, w_ce=0.0, w_balance=0.0, w_bn=0.0)
    out = generator_loss(t, s, None, cfg)
    pt, ps = F.softmax(t[0], 0), F.softmax(s[0], 0)
    kl0 = float((pt * (pt.log() - ps.log())).sum())
    assert out["kl"].item() == pytest.approx(kl0 / 2, rel=1e-6)  # (1/B) Σ agree·KL, B = 2
    assert out["adv_frac"].item() == pytest.approx(0.5)
    assert out["loss"].item() == pytest.approx(-kl0 / 2, rel=1e-6)
    plain = generator_loss(t, s, None, Module1Config(w_ce=0.0, w_balance=0.0, w_bn=0.0))
    both = sum(float((F.softmax(t[i], 0) * (F.log_softmax(t[i], 0) - F.log_softmax(s[i], 0))).sum()) for i in (0, 1))
    assert plain["kl"].item() == pytest.approx(both / 2, rel=1e-5) and "adv_frac" not in plain


def test_jitter_shifts_with_reflected_borders():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    assert jitter(x, 0) is x
    torch.manual_seed(0)
    dy, dx = (int(v) for v in torch.randint(0, 5, (2,)))
    torch.manual_seed(0)
    y = jitter(x, 2)
    ref = F.pad(x, (2, 2, 2, 2), mode="reflect")[..., dy : dy + 6, dx : dx + 6]
    assert y.shape == x.shape and torch.equal(y, ref)


def test_image_bank_ring_sample_and_state():
    bank = ImageBank(5)
    bank.add(torch.full((3, 1, 2, 2), 0.2))
    assert len(bank) == 3 and bank.added == 3
    bank.add(torch.full((4, 1, 2, 2), 1.0))  # 7 images into 5 slots: the two oldest are overwritten
    assert len(bank) == 5 and bank.added == 7 and bank.next == 2
    vals = sorted(float(v) for v in bank.images[:, 0, 0, 0])
    assert vals == [51.0, 255.0, 255.0, 255.0, 255.0]  # 0.2·255 = 51 kept once
    x = bank.sample(64, torch.Generator().manual_seed(0))
    assert (
        x.shape == (64, 1, 2, 2)
        and x.dtype == torch.float32
        and set((x * 255).round().unique().tolist()) == {51.0, 255.0}
    )
    other = ImageBank(5)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.images, bank.images) and (other.count, other.next, other.added) == (5, 2, 7)
    with pytest.raises(ValueError, match="bank_size is 4"):
        ImageBank(4).load_state_dict(bank.state_dict())


def _rows(path):
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in ("train_s", "eval_s")} for r in csv.DictReader(fh)]


# the resume check runs with the bank draws' augmentations on: their random draws must resume exactly too
BANK_AUG = [*BANK, "module1.bank_mixup=1", "module1.bank_rotate=15"]


def test_rotate_scale_by_hand():
    x = torch.rand(3, 2, 8, 8)
    y = rotate_scale(x, torch.tensor([90.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.5]))
    assert torch.allclose(y[0], torch.rot90(x[0], -1, dims=(1, 2)), atol=1e-5)  # clockwise as displayed
    assert torch.allclose(y[1], x[1], atol=1e-6)
    ones = rotate_scale(torch.ones(1, 1, 8, 8), torch.zeros(1), torch.tensor([0.5]))[0, 0]
    assert torch.allclose(ones[2:6, 2:6], torch.ones(4, 4)) and ones[0].abs().max() == 0  # halved, zeros around


def test_augment_draw_mixes_within_the_batch():
    x = torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 4, 4).contiguous() / 8  # image i is constant (i+1)/8
    assert augment_draw(x, 0.0, 0.0) is x
    torch.manual_seed(0)
    lam = torch.distributions.Beta(1.0, 1.0).sample((8, 1, 1, 1))
    perm = torch.randperm(8)
    torch.manual_seed(0)
    y = augment_draw(x, 1.0, 0.0)
    assert torch.allclose(y, lam * x + (1 - lam) * x[perm])
    assert ((y >= x.amin()) & (y <= x.amax())).all()  # convex: never outside the batch's range


def test_bank_augmentation_needs_the_bank():
    with pytest.raises(ValueError, match="bank_size > 0"):
        Module1Config(bank_rotate=10)


def test_bank_run_health_figures_and_exact_resume(tmp_path):
    full = distill(load_config(SMOKE, BANK_AUG), tmp_path / "full")
    rows = _rows(tmp_path / "full" / "metrics.csv")
    assert [float(r["bank_images"]) for r in rows] == [96.0, 100.0, 100.0]  # 3 iterations × 32 per epoch, cap 100
    for r in rows:
        hist = [int(v) for v in r["gen_hist"].split()]
        assert len(hist) == 10 and sum(hist) == 256
        assert float(r["gen_class_max"]) == pytest.approx(max(hist) / 256, abs=1e-5)
        assert 0.0 <= float(r["fid_eval"]) <= 1.0 and 0.0 < float(r["gen_class_entropy"]) <= 1.0
        assert float(r["gen_std_ratio"]) > 0
    # select=fidelity is not in BANK: the default eval_acc1 selection; the summary carries the health figures
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    health = summary["module1_health"]
    kept = health["selected_epoch"]
    assert health["select"] == "eval_acc1" and float(rows[kept]["eval_acc1"]) == max(
        float(r["eval_acc1"]) for r in rows
    )
    assert health["gen_hist"] == [int(v) for v in rows[kept]["gen_hist"].split()]
    assert health["last_epoch"]["gen_hist"] == [int(v) for v in rows[-1]["gen_hist"].split()]
    assert health["images_synthesised"] == 3 * 3 * 32 and health["bank_images"] == 100

    class Stop(Exception):
        pass

    def stop_after_second_epoch(row):
        if row["stage"] == "module1" and row["epoch"] == 1:
            raise Stop  # before epoch 1's checkpoint: state.pt holds epoch 0 and a bank of 96 images

    with pytest.raises(Stop):
        distill(load_config(SMOKE, BANK_AUG), tmp_path / "killed", on_epoch_end=[stop_after_second_epoch])
    resumed = distill(load_config(SMOKE, BANK_AUG), tmp_path / "killed", resume=True)
    assert _rows(tmp_path / "killed" / "metrics.csv") == rows
    assert resumed.test == full.test


def test_fidelity_selection_keeps_the_epoch_of_best_agreement(tmp_path):
    res = distill(load_config(SMOKE, [*BANK, "module1.select=fidelity"]), tmp_path / "fid")
    rows = _rows(tmp_path / "fid" / "metrics.csv")
    scores = [float(r["fid_eval"]) + 1e-3 * float(r["fid_gen"]) for r in rows]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    summary = json.loads((tmp_path / "fid" / "summary.json").read_text())
    assert summary["module1_health"]["selected_epoch"] == best
    assert res.test["n"] == 179


def test_input_stats_and_total_variation_by_hand():
    from augkd.training.losses import input_stats_loss, total_variation

    # two channels over (N, H, W) = (2, 1, 2): channel 0 values {0, 2, 0, 2} (mean 1, unbiased var 4/3),
    # channel 1 all 1 (mean 1, var 0) → ‖(1, 1)‖ + ‖(4/3 − 1, 0 − 1)‖
    xn = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]], [[[0.0, 2.0]], [[1.0, 1.0]]]])
    want = math.sqrt(2.0) + math.sqrt((1 / 3) ** 2 + 1.0)
    assert input_stats_loss(xn).item() == pytest.approx(want, rel=1e-6)
    x = torch.tensor([[[[0.0, 1.0], [3.0, 1.0]]]])  # vertical |3−0|, |1−1| → 1.5; horizontal |1−0|, |1−3| → 1.5
    assert total_variation(x).item() == pytest.approx(3.0)


def test_image_priors_enter_the_generator_loss(tmp_path):
    cfg = load_config(
        SMOKE, ["method=dfkd", "train.save_images=false", "module1.epochs=1", "module1.w_input=2", "module1.w_tv=0.5"]
    )
    distill(cfg, tmp_path / "priors")
    row = _rows(tmp_path / "priors" / "metrics.csv")[0]
    assert float(row["g_input"]) > 0 and float(row["g_tv"]) > 0


@pytest.mark.parametrize("bank", [0, 100])
def test_encoder_steps_are_the_first_n_student_steps(bank, tmp_path, monkeypatch):
    from collections import Counter

    from augkd.training.stages import DataFreeStage

    calls: Counter[str] = Counter()
    real = DataFreeStage.optimize

    def spy(self, ctx, name, loss):
        calls[name] += 1
        return real(self, ctx, name, loss)

    monkeypatch.setattr(DataFreeStage, "optimize", spy)
    cfg = load_config(
        SMOKE,
        [
            "method=dfkd",
            "train.save_images=false",
            "module1.epochs=1",
            "module1.student_steps=2",
            "module1.encoder_steps=1",
            f"module1.bank_size={bank}",
        ],
    )
    distill(cfg, tmp_path / "enc")
    iters = cfg.module1.iters_per_epoch
    assert calls == Counter(generator=iters, student=2 * iters, encoder=iters)
    row = _rows(tmp_path / "enc" / "metrics.csv")[0]
    assert math.isfinite(float(row["e_loss"])) and math.isfinite(float(row["s_kl"]))
    with pytest.raises(Exception, match="encoder_steps=3 exceeds"):
        load_config(SMOKE, ["module1.student_steps=2", "module1.encoder_steps=3"])


def test_student_domain_targets_by_hand():
    """BNStatsHook.set_targets_from: two equal batches of a 1-channel input to BN(1), values {0, 2, 0, 2}
    (mean 1, unbiased var 4/3) and {4, 4, 4, 4} (mean 4, var 0); then input_stats_loss against a target."""
    from augkd.training.losses import input_stats_loss

    net = nn.Sequential(nn.BatchNorm2d(1)).eval()
    hook = BNStatsHook(net)
    b1 = torch.tensor([0.0, 2.0, 0.0, 2.0]).view(4, 1, 1, 1)  # mean 1, unbiased var 4/3
    b2 = torch.full((4, 1, 1, 1), 4.0)  # mean 4, var 0
    hook.set_targets_from(net, [b1, b2])
    mean = (1.0 + 4.0) / 2
    var = ((4 / 3 + 1.0) + (0.0 + 16.0)) / 2 - mean**2
    assert hook.run_mean.item() == pytest.approx(mean) and hook.run_var.item() == pytest.approx(var)
    assert not hook.enabled and hook._means == []
    xn = torch.tensor([[[[0.0, 2.0]]], [[[0.0, 2.0]]]])  # mean 1, var 4/3
    target = (torch.tensor([0.5]), torch.tensor([1.0]))
    assert input_stats_loss(xn, target).item() == pytest.approx(0.5 + 1 / 3, rel=1e-6)


def test_student_domain_subset_keeps_every_class():
    """The built-in sets are stored sorted by class (mnist5k's training split: 400 zeros, then 400 ones, ...);
    the student-domain targets must come from all classes, not from the first ``limit`` images (which were
    classes 0-4 only before this was fixed)."""
    from augkd.training.stages import evenly_spaced

    labels = torch.arange(10).repeat_interleave(400)
    idx = evenly_spaced(len(labels), 2048)
    assert len(idx) == 2048 and len(set(idx.tolist())) == 2048
    counts = torch.bincount(labels[idx], minlength=10)
    assert counts.min() >= 204 and counts.max() <= 206  # 2048 / 10 = 204.8 each
    assert evenly_spaced(100, 2048).tolist() == list(range(100))
    assert evenly_spaced(7, 7).tolist() == list(range(7))


def test_stats_target_student_domain_runs(tmp_path):
    cfg = load_config(
        SMOKE,
        [
            "method=dfkd",
            "train.save_images=false",
            "module1.epochs=1",
            "module1.w_input=1",
            "module1.stats_target=student_domain",
        ],
    )
    distill(cfg, tmp_path / "sd")
    row = _rows(tmp_path / "sd" / "metrics.csv")[0]
    base = load_config(SMOKE, ["method=dfkd", "train.save_images=false", "module1.epochs=1", "module1.w_input=1"])
    distill(base, tmp_path / "t")
    ref = _rows(tmp_path / "t" / "metrics.csv")[0]
    assert float(row["g_input"]) > 0 and float(row["g_bn"]) > 0
    assert float(row["g_bn"]) != float(ref["g_bn"])  # another target: another BN term
