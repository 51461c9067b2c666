"""Sample-specific anchors (module2.w_encoder, w_near, w_instance, w_anchor_instance): the losses by hand, which
networks Module 2 trains, and exact resume inside Module 2 when the encoder trains too."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from augkd.config import load_config
from augkd.errors import ConfigError
from augkd.training import distill
from augkd.training.losses import encoder_real_loss

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
FAST = ["train.save_images=false", "module1.epochs=1", "module3.epochs=1"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in ("train_s", "eval_s")} for r in csv.DictReader(fh)]


def test_encoder_real_loss_by_hand():
    # features at 90°: 1 − cos = 1; logits (0, 0) for label 0: CE = ln 2; w = 2, inverse term 0.5
    out = encoder_real_loss(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 3.0]]),
        torch.zeros(1, 2),
        torch.tensor([0]),
        2.0,
        torch.tensor(0.5),
    )
    assert out["feat"].item() == pytest.approx(1.0)
    assert out["ce"].item() == pytest.approx(math.log(2.0))
    assert out["loss"].item() == pytest.approx(2.0 * (1.0 + math.log(2.0)) + 0.5)
    same = encoder_real_loss(
        torch.tensor([[1.0, 2.0]]),
        torch.tensor([[2.0, 4.0]]),
        torch.zeros(1, 2),
        torch.tensor([1]),
        1.0,
        torch.tensor(0.0),
    )
    assert same["feat"].item() == pytest.approx(0.0, abs=1e-6)  # parallel features: cosine 1


def test_encoder_instance_term_by_hand():
    # f_rec rows e1, e2; f_real rows (2, 0), (−1, 0): cosines row 0 → (1, −1),
    # row 1 → (0, 0); τ = 0.5: row 0 logits (2, −2), CE = ln(1 + e^−4); row 1 logits (0, 0) → ln 2
    f_rec = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_real = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    args = (torch.zeros(2, 2), torch.tensor([0, 0]), 1.0, torch.tensor(0.0))
    off = encoder_real_loss(f_rec, f_real, *args)
    on = encoder_real_loss(f_rec, f_real, *args, w_instance=3.0, instance_tau=0.5)
    inst = (math.log(1 + math.exp(-4.0)) + math.log(2.0)) / 2
    assert "instance" not in off
    assert on["instance"].item() == pytest.approx(inst, rel=1e-6)
    assert on["loss"].item() == pytest.approx(off["loss"].item() + 3.0 * inst, rel=1e-6)


def test_module2_trains_the_encoder_only_when_asked(tmp_path):
    distill(load_config(SMOKE, FAST), tmp_path / "paper")
    ck = tmp_path / "paper" / "checkpoints"
    assert not (ck / "module2" / "encoder.safetensors").exists()  # the paper: E frozen in Module 2

    distill(
        load_config(SMOKE, [*FAST, "module2.w_encoder=1", "module2.w_near=0.5", "module2.w_instance=1"]),
        tmp_path / "real",
    )
    ck = tmp_path / "real" / "checkpoints"
    before, after = load_file(ck / "module1" / "encoder.safetensors"), load_file(ck / "module2" / "encoder.safetensors")
    assert before.keys() == after.keys()
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert moved, "the encoder's weights did not move in Module 2"
    # E's BatchNorm stays in eval mode while its weights train: its running statistics are Module 1's
    assert all(torch.equal(before[k], after[k]) for k in before if k.endswith(("running_mean", "running_var")))
    rows = [r for r in _rows(tmp_path / "real" / "metrics.csv") if r["stage"] == "module2"]
    for r in rows:
        assert 0.0 <= float(r["e_feat"]) <= 2.0 and float(r["e_ce"]) >= 0 and float(r["e_inverse"]) >= 0
        assert float(r["a_near"]) > 0
        # InfoNCE over the smoke batch: positive and at most ln(batch) + 2/τ (cosines in [−1, 1], τ = 0.1)
        assert 0.0 < float(r["e_instance"]) <= math.log(32) + 20.0


def test_anchor_instance_term_without_the_encoder(tmp_path):
    distill(load_config(SMOKE, [*FAST, "module2.w_anchor_instance=1"]), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "module2" / "encoder.safetensors").exists()  # E stays frozen
    rows = [r for r in _rows(tmp_path / "run" / "metrics.csv") if r["stage"] == "module2"]
    assert rows and all(0.0 < float(r["a_instance"]) <= math.log(32) + 20.0 for r in rows)
    # the term reaches the AnchorNet's gradient: the same run without it ends with other anchor weights
    distill(load_config(SMOKE, FAST), tmp_path / "off")
    on = load_file(tmp_path / "run" / "checkpoints" / "module2" / "anchor.safetensors")
    off = load_file(tmp_path / "off" / "checkpoints" / "module2" / "anchor.safetensors")
    assert any(not torch.equal(on[k], off[k]) for k in on if on[k].is_floating_point())


def test_instance_term_needs_the_encoder():
    with pytest.raises(ConfigError, match="w_encoder"):
        load_config(SMOKE, ["module2.w_instance=1"])


def test_module2_with_encoder_resumes_exactly(tmp_path):
    over = [*FAST, "module2.w_encoder=1", "module2.epochs=3"]
    full = distill(load_config(SMOKE, over), tmp_path / "full")

    class Stop(Exception):
        pass

    def stop(row):
        if row["stage"] == "module2" and row["epoch"] == 1:
            raise Stop  # state.pt holds Module 2's epoch 0: anchor and encoder weights and both optimisers

    with pytest.raises(Stop):
        distill(load_config(SMOKE, over), tmp_path / "killed", on_epoch_end=[stop])
    resumed = distill(load_config(SMOKE, over), tmp_path / "killed", resume=True)
    assert _rows(tmp_path / "killed" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
    assert resumed.test == full.test
