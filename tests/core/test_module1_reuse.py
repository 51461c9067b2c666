"""module1.init_from across shots: Module 1 never reads the labelled images unless stats_target is
student_domain, so a run with other shots_per_class may reuse it; with student_domain it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from augkd.config import load_config
from augkd.errors import InputError
from augkd.training import distill

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
FAST = ["train.save_images=false", "module1.epochs=1", "module2.epochs=1", "module3.epochs=1"]


@pytest.mark.parametrize("target", ["teacher", "student_domain"])
def test_module1_reuse_across_shots(target, tmp_path):
    over = [*FAST, f"module1.stats_target={target}"]
    distill(load_config(SMOKE, [*over, "method=dfkd"]), tmp_path / "m1")
    other = load_config(SMOKE, [*over, "data.shots_per_class=5", f"module1.init_from={tmp_path / 'm1'}"])
    if target == "student_domain":
        with pytest.raises(InputError, match="different 'data' settings"):
            distill(other, tmp_path / "k5")
        return
    distill(other, tmp_path / "k5")
    assert (tmp_path / "k5" / "checkpoints" / "module2" / "anchor.safetensors").is_file()
    # Module 1 reused, not retrained: the second run writes no Module 1 checkpoint of its own
    assert not (tmp_path / "k5" / "checkpoints" / "module1" / "student.safetensors").exists()
