"""The pieces of data-parallel runs that need no second process: sharding, precision, layout, options."""

import pytest
import torch
from typer.testing import CliRunner

from augkd.cli import app
from augkd.data import iterate_batches
from augkd.data.images import ImageSet
from augkd.errors import ConfigError
from augkd.training import dist
from augkd.training.dist import DistSpec, rank_batches, resolve_layout, restore_rng, shard_indices
from augkd.training.precision import fabric_precision


@pytest.mark.parametrize("n,world", [(300, 2), (10, 3), (7, 4), (2, 4), (33, 1)])
def test_shards_are_equal_sized_and_cover_every_index(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [shard_indices(order, r, world) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank for s in shards)  # equal step counts keep DDP's collectives in lockstep
    allidx = torch.cat(shards)
    assert set(allidx.tolist()) == set(range(n))
    assert len(allidx) - n == per_rank * world - n  # only the padding repeats indices
    if n % world == 0:
        assert len(set(allidx.tolist())) == n  # disjoint


def test_ranks_step_batches_together_are_the_single_process_batch():
    n, b, world = 300, 16, 2
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    shards = [shard_indices(order, r, world) for r in range(world)]
    for i in range(-(-n // (b * world))):
        joint = torch.cat([s[i * b : (i + 1) * b] for s in shards])
        single = order[i * b * world : (i + 1) * b * world]
        assert sorted(joint.tolist()) == sorted(single.tolist())


def _images(n=20):
    """n random images whose labels are their indices (to see which images a rank drew)."""
    g = torch.Generator().manual_seed(0)
    return ImageSet(
        torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n), [str(i) for i in range(n)]
    )


def test_one_process_batches_are_the_engine_s_single_process_batches():
    data = _images()
    ref = list(iterate_batches(data, 6, shuffle=True, generator=torch.Generator().manual_seed(5), augment=True))
    got = list(
        rank_batches(
            data,
            6,
            shuffle_gen=torch.Generator().manual_seed(5),
            rank=0,
            world=1,
            seed=0,
            stage="kd",
            epoch=0,
            augment=True,
        )
    )
    assert len(ref) == len(got)
    for (xa, ya), (xb, yb) in zip(ref, got, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_two_ranks_draw_disjoint_data_and_their_own_augmentation():
    data = _images()
    seen = []
    for rank in (0, 1):
        batches = list(
            rank_batches(
                data,
                4,
                shuffle_gen=torch.Generator().manual_seed(5),
                rank=rank,
                world=2,
                seed=0,
                stage="kd",
                epoch=0,
                augment=True,
            )
        )
        seen.append(torch.cat([y for _, y in batches]))
    assert len(seen[0]) == len(seen[1]) == 10
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist()) and len(set(torch.cat(seen).tolist())) == 20
    # the same image crops differently on two ranks when it is drawn by both (per-rank augmentation seed)
    assert dist.augment_seed(0, 0, "kd", 0) != dist.augment_seed(0, 1, "kd", 0)
    assert dist.augment_seed(0, 0, "kd", 0) != dist.augment_seed(0, 0, "kd", 1)


@pytest.mark.parametrize(
    "requested,train,device,world,bf16_cpu,expected",
    [
        (None, "fp32", "cpu", 1, True, "32-true"),
        (None, "bf16", "cpu", 2, False, "bf16-mixed"),
        (None, "auto", "cpu", 1, True, "bf16-mixed"),  # the earlier single-process behaviour on AVX-512 BF16
        (None, "auto", "cpu", 1, False, "32-true"),
        (None, "auto", "cpu", 2, True, "32-true"),  # DDP on CPU: fp32
        ("bf16-mixed", "fp32", "cpu", 2, False, "bf16-mixed"),  # --precision wins over train.precision
        ("32-true", "bf16", "cuda", 8, True, "32-true"),
        ("auto", "fp32", "cuda", 8, True, "32-true"),
    ],
)
def test_precision_mapping(monkeypatch, requested, train, device, world, bf16_cpu, expected):
    monkeypatch.setattr("augkd.training.precision.cpu_supports_bf16", lambda: bf16_cpu)
    assert fabric_precision(requested, train, device, world) == expected


def test_auto_precision_on_gpus_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert fabric_precision(None, "auto", "cuda", 16) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert fabric_precision(None, "auto", "cuda", 1) == "32-true"


def test_layout_defaults_to_torchrun_s(monkeypatch):
    assert resolve_layout(DistSpec()) == (1, 1)
    assert resolve_layout(DistSpec(devices=4, num_nodes=2)) == (4, 2)
    env = {"RANK": "3", "GROUP_RANK": "0", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8", "WORLD_SIZE": "16"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert resolve_layout(DistSpec()) == (8, 2)
    assert resolve_layout(DistSpec(devices=8, num_nodes=2)) == (8, 2)
    with pytest.raises(ConfigError, match="does not match torchrun's world size 16"):
        resolve_layout(DistSpec(devices=2))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"strategy": "fsdp"}, "unknown strategy"),
        ({"precision": "16-mixed"}, "unsupported precision"),
        ({"devices": 0}, "devices"),
    ],
)
def test_bad_specs_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        DistSpec(**kw)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--strategy", "fsdp"], "--strategy must be one of auto, ddp"),
        (["--precision", "16-mixed"], "--precision must be one of"),
    ],
)
def test_cli_rejects_bad_distribution_options(tmp_path, args, match):
    res = CliRunner().invoke(app, ["distill", "-c", "configs/smoke.yaml", "--out", str(tmp_path / "r"), *args])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert match in " ".join(res.output.replace("│", " ").split())


def test_resume_with_another_world_size_reseeds_each_rank_deterministically():
    state = {
        "stage_index": 2,
        "epoch": 6,
        "world_size": 2,
        "rng": torch.get_rng_state(),
        "rng_ranks": {"cpu": [torch.get_rng_state(), torch.get_rng_state()]},
    }
    draws = []
    for rank in (0, 1, 2):
        restore_rng(state, 0, rank, 3, torch.device("cpu"))
        draws.append(torch.rand(3))
    restore_rng(state, 0, 1, 3, torch.device("cpu"))
    assert torch.equal(torch.rand(3), draws[1])
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    torch.manual_seed(123)
    saved = [torch.get_rng_state(), torch.Generator().manual_seed(9).get_state()]
    restore_rng({**state, "rng_ranks": {"cpu": saved}}, 0, 1, 2, torch.device("cpu"))  # same world: rank 1's own
    assert torch.equal(torch.get_rng_state(), saved[1])
