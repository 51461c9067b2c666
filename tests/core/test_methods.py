"""The method registry (augkd.methods) and the data-free baselines' own loss terms, against hand-computed
values; every method also runs end to end on the smoke preset in test_distill.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from augkd.config import METHODS, load_config
from augkd.errors import ConfigError
from augkd.methods import METHODS as REGISTRY
from augkd.methods import get_method
from augkd.training.losses import FeatureHook, activation_loss, instance_contrast_loss
from augkd.training.pipeline import method_config
from augkd.training.stages import AnchorStage, DataFreeStage, MixupStage, SupervisedStage, build_stages

SMOKE = "configs/smoke.yaml"
BASELINES = ("deepinversion", "dfq", "cmi", "zskt", "dafl")


def test_every_method_is_declared_once_with_its_stages():
    assert METHODS == tuple(REGISTRY) and len(set(METHODS)) == len(METHODS)
    for name in BASELINES:
        assert get_method(name).stages == ("module1",)
        assert get_method(f"{name}-ft").stages == ("module1", "finetune")
    kinds = {m: [type(s) for s in build_stages(load_config(SMOKE, [f"method={m}"]))] for m in METHODS}
    assert kinds["augkd"] == [DataFreeStage, AnchorStage, MixupStage]
    assert kinds["scratch"] == [SupervisedStage] and kinds["dfq-ft"] == [DataFreeStage, SupervisedStage]
    assert all(len(kinds[m]) == len(get_method(m).stages) for m in METHODS)


def test_unknown_method_is_one_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown method 'dafll'; did you mean 'dafl'"):
        load_config(SMOKE, ["method=dafll"])


def test_a_baseline_fixes_its_loss_weights_and_keeps_the_budget():
    # the preset's own synthesis options (AuG-KD's) must not leak into a baseline; its budget must stay
    cfg = load_config(
        SMOKE,
        [
            "method=dfq",
            "module1.w_input=10",
            "module1.adv_mask=true",
            "module1.epochs=7",
            "module1.w_balance=3",
            "module1.bank_size=500",
        ],
    )
    m1 = cfg.module1
    assert (m1.w_adv, m1.w_ce, m1.w_balance, m1.w_bn, m1.bn_form) == (1.0, 1.0, 20.0, 1.0, "layer_sum")
    assert (m1.w_input, m1.adv_mask, m1.bank_size) == (0.0, False, 0)
    assert (m1.epochs, m1.batch_size) == (7, 32)
    cmi = load_config(SMOKE, ["method=cmi"]).module1
    assert cmi.bank_size == 50 * 32 and cmi.w_contrast == 0.8  # a bank of 50 batches when the config has none
    assert load_config(SMOKE, ["method=cmi", "module1.bank_size=64"]).module1.bank_size == 64
    # augkd's own methods keep the config's Module 1 as it is
    assert load_config(SMOKE, ["method=dfkd", "module1.w_input=10"]).module1.w_input == 10.0


def test_method_config_revalidates_so_compare_gets_each_baseline():
    base = load_config(SMOKE, ["module1.w_input=10"])
    dafl = method_config(base, "dafl", seed=3)
    assert dafl.method == "dafl" and dafl.train.seed == 3
    assert (dafl.module1.w_act, dafl.module1.w_bn, dafl.module1.w_input) == (0.1, 0.0, 0.0)
    assert method_config(base, "dfkd", 0).module1 == base.module1


def test_contrast_without_a_bank_is_a_config_error():
    with pytest.raises(ConfigError, match="bank_size"):
        load_config(SMOKE, ["method=dfkd", "module1.w_contrast=0.5"])


def test_feature_hook_records_the_last_linear_input():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    hook = FeatureHook(net)
    x = torch.randn(5, 1, 2, 2)
    net(x)
    with pytest.raises(AssertionError):
        hook.pop()  # disabled: nothing recorded
    hook.enabled = True
    net(x)
    assert torch.allclose(hook.pop(), net[3](net[2](net[1](net[0](x)))))
    with pytest.raises(ConfigError, match="no Linear layer"):
        FeatureHook(nn.Conv2d(1, 1, 1))


def test_activation_and_contrast_losses_by_hand():
    f = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert activation_loss(f).item() == pytest.approx(-1.5)
    # unit features: a = [(1, 0), (0, 1)], positives the same rows, one bank negative (1, 0), tau 0.5
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[3.0, 0.0]])
    # row 0: logits (1, 0, 1)/0.5 → CE = −log(e² / (e² + 1 + e²)); row 1: (0, 1, 0)/0.5 → −log(e² / (e² + 2))
    want = 0.5 * (-math.log(math.e**2 / (2 * math.e**2 + 1)) - math.log(math.e**2 / (math.e**2 + 2)))
    assert instance_contrast_loss(a, a, neg, tau=0.5).item() == pytest.approx(want, rel=1e-6)
    without = 0.5 * 2 * -math.log(math.e**2 / (math.e**2 + 1))  # no bank: each row's other row only
    assert instance_contrast_loss(a, a, None, tau=0.5).item() == pytest.approx(without, rel=1e-6)


@pytest.mark.parametrize("method", ["cmi", "dafl"])
def test_baseline_terms_enter_the_generator_loss(method, tmp_path):
    import csv

    from augkd.training import distill

    distill(load_config(SMOKE, [f"method={method}", "train.save_images=false", "module1.epochs=1"]), tmp_path / "r")
    with (tmp_path / "r" / "metrics.csv").open(newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["stage"] == "module1")
    term = {"cmi": "g_contrast", "dafl": "g_act"}[method]
    assert math.isfinite(float(row[term])) and float(row[term]) != 0.0


def test_within_class_std_by_hand():
    from augkd.training.stages import within_class_std

    # class 0: pixels {0, 2} and {1, 1} → per-pixel std (√2, 0), mean √2/2; class 1: one image (skipped)
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [5.0, 5.0]])
    y = torch.tensor([0, 0, 1])
    assert within_class_std(x, y) == pytest.approx(math.sqrt(2) / 2)
    assert math.isnan(within_class_std(x[2:], y[2:]))


def test_augkd_run_reports_anchor_measures(tmp_path):
    import json

    from augkd.training import distill

    cfg = load_config(SMOKE, ["train.save_images=false", "module3.epochs=1"])
    distill(cfg, tmp_path / "r")
    a = json.loads((tmp_path / "r" / "summary.json").read_text())["anchors"]
    assert a["images"] == min(512, 179)  # the smoke eval split: 10% of digits' 1,797 images
    for k in ("recon_agree", "anchor_label_agree", "anchor_conf"):
        assert 0.0 <= a[k] <= 1.0, (k, a)
    assert a["anchor_conf"] >= 0.1  # a top-1 probability over 10 classes is at least 1/10
    assert a["anchor_std_ratio"] >= 0 and a["recon_std_ratio"] >= 0


def test_per_class_indices_groups_by_class():
    from augkd.training.stages import per_class_indices

    labels = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    assert per_class_indices(labels, per_class=2, classes=2).tolist() == [1, 4, 3, 6]
    assert per_class_indices(labels, per_class=1, classes=10).tolist() == [1, 3, 0]
