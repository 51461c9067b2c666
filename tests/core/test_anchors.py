"""Sample-specific anchors (module2.w_encoder, module2.w_near): the loss by hand, which networks Module 2
trains, and exact resume inside Module 2 when the encoder trains too."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from augkd.config import load_config
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


def test_module2_trains_the_encoder_only_when_asked(tmp_path):
    distill(load_config(SMOKE, FAST), tmp_path / "paper")
    ck = tmp_path / "paper" / "checkpoints"
    assert not (ck / "module2" / "encoder.safetensors").exists()  # the paper: E frozen in Module 2

    distill(load_config(SMOKE, [*FAST, "module2.w_encoder=1", "module2.w_near=0.5"]), tmp_path / "real")
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
