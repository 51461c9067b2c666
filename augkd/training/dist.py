"""Data-parallel distillation through Lightning Fabric: launching, precision, sharding, seeding, reductions.

One code path serves a CPU process, one GPU and DDP (``augkd distill --devices N --strategy ddp`` on one
machine, or ``torchrun --nnodes/--nproc-per-node`` across machines): :func:`make_fabric` builds a
:class:`lightning_fabric.Fabric` (gloo on CPU, nccl on GPUs), and the engine sets up only the networks a
stage trains with ``fabric.setup_module`` (DDP-wrapped when the world has more than one process). The
frozen teacher is never set up by Fabric and never wrapped in DDP: it is moved to the device and called
as a plain module.

The rules every rank follows (see the README, "Scaling out"):

- **Seeds.** Every rank builds the networks from ``train.seed`` (identical initial weights), then seeds
  its own RNG with ``train.seed + rank``: Module 1's latents differ between ranks.
- **Data.** The student-domain shuffle comes from one ``torch.Generator`` seeded identically on every
  rank (one permutation per epoch, the same on all ranks); each rank takes a disjoint shard of it with
  ``DistributedSampler`` semantics (pad by wrapping to a multiple of the world size, then every
  ``world``-th index starting at ``rank``). With a per-device batch ``B`` the ranks' step-``i`` batches
  together are exactly the single-process step-``i`` batch of size ``world · B``. Augmentation draws
  from a per-rank generator derived from ``(seed, rank, stage, epoch)``.
- **Metrics.** Eval/test accuracy counts top-k hits on a disjoint shard per rank and sums the counts
  with Fabric's all-reduce, so Acc@k is over the whole split. Per-epoch training losses are averaged.
- **Buffers.** BatchNorm running statistics of the trained networks are averaged across ranks after
  every epoch, so every rank evaluates (and rank 0 saves) the same network.
- **Files.** Only global rank 0 writes; checkpoints hold unwrapped state dicts plus every rank's RNG
  state, so a run resumes with the same or a different number of processes.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from augkd.errors import ConfigError
from augkd.training.precision import PRECISION_ALIASES, PRECISIONS, fabric_precision

if TYPE_CHECKING:
    from lightning_fabric import Fabric

    from augkd.config import TrainConfig
    from augkd.data.images import ImageSet

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp")
_ELASTIC_VARS = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE")


@dataclass(frozen=True)
class DistSpec:
    """How to run: processes per node, nodes, strategy and (optionally) a Fabric precision.

    ``devices=None`` means one process, or under ``torchrun`` the launcher's ``LOCAL_WORLD_SIZE`` (and
    ``num_nodes`` = ``WORLD_SIZE / LOCAL_WORLD_SIZE``). ``precision=None`` maps ``train.precision``.
    """

    devices: int | None = None
    strategy: str = "auto"
    precision: str | None = None
    num_nodes: int | None = None

    def __post_init__(self) -> None:
        if self.devices is not None and self.devices < 1:
            raise ConfigError(f"--devices must be >= 1, got {self.devices}")
        if self.num_nodes is not None and self.num_nodes < 1:
            raise ConfigError(f"--num-nodes must be >= 1, got {self.num_nodes}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}: choose from {', '.join(STRATEGIES)}")
        if self.precision is not None and self.precision not in PRECISION_ALIASES:
            raise ConfigError(
                f"unsupported precision {self.precision!r}: choose from {', '.join(PRECISIONS)} "
                "(16-mixed needs a gradient scaler per optimiser and is not supported)"
            )


def under_torchrun() -> bool:
    """True when a launcher such as ``torchrun`` created this process (its rank variables are set)."""
    return all(v in os.environ for v in _ELASTIC_VARS)


def resolve_layout(spec: DistSpec) -> tuple[int, int]:
    """(processes per node, nodes): explicit values win; under torchrun the launcher's layout is the default."""
    devices, nodes = spec.devices, spec.num_nodes
    if under_torchrun():
        local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
        devices = devices if devices is not None else local
        nodes = nodes if nodes is not None else max(world // max(local, 1), 1)
        if devices * nodes != world:
            raise ConfigError(
                f"--devices {devices} × --num-nodes {nodes} does not match torchrun's world size {world}: "
                "leave both out under torchrun, or pass --nproc-per-node and --nnodes values that agree"
            )
    return devices or 1, nodes or 1


def make_fabric(train: TrainConfig, spec: DistSpec | None = None) -> Fabric:
    """Build and launch the Fabric of one run (gloo on CPU, nccl on GPUs); a no-op launch for one process.

    With ``devices > 1`` outside torchrun, Fabric re-runs this process's command line once per extra
    device (``augkd distill --devices 2`` works; a notebook or pytest process cannot be re-run that way:
    use ``torchrun`` there).
    """
    from lightning_fabric import Fabric

    from augkd.utils import resolve_device

    spec = spec or DistSpec()
    devices, nodes = resolve_layout(spec)
    world = devices * nodes
    dev = resolve_device(train.device)
    accelerator = dev.type
    strategy = "ddp" if spec.strategy == "auto" and world > 1 else spec.strategy
    dev_arg: int | list[int] = devices
    if accelerator == "cuda" and dev.index is not None and world == 1:
        dev_arg = [dev.index]
    precision = fabric_precision(spec.precision, train.precision, accelerator, world)
    fabric = Fabric(accelerator=accelerator, devices=dev_arg, num_nodes=nodes, strategy=strategy, precision=precision)  # type: ignore[arg-type]
    fabric.launch()
    if fabric.world_size > 1 and fabric.is_global_zero:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "?"
        logger.info(
            "data-parallel run: %d processes (%d node(s)), backend %s, precision %s",
            fabric.world_size,
            nodes,
            backend,
            precision,
        )
    return fabric


def global_rank() -> int:
    """This process's global rank (0 outside a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0


def teardown() -> None:
    """Destroy the default process group, if any (end of a CLI command)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# --- seeding and sharding ---------------------------------------------------------------------------
def rank_seed(seed: int, rank: int) -> int:
    """The RNG seed of ``rank`` after the networks are built: ``seed + rank`` (different latents per rank)."""
    return seed + rank


def resume_seed(seed: int, rank: int, stage_index: int, epoch: int) -> int:
    """A fresh per-rank seed for a resume whose world size differs from the checkpoint's."""
    return (seed * 1_000_003 + stage_index * 10_007 + epoch * 101 + rank) % (2**63 - 1)


def augment_seed(seed: int, rank: int, stage: str, epoch: int) -> int:
    """Seed of a rank's augmentation generator for one epoch of one stage (no state to checkpoint)."""
    return (zlib.crc32(f"{seed}/{rank}/{stage}/{epoch}".encode()) << 16) + rank


def shard_indices(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """``DistributedSampler`` semantics: wrap ``order`` to a multiple of ``world``, keep every world-th from ``rank``.

    Every rank gets ``ceil(n / world)`` indices (equal step counts keep DDP's collectives in lockstep);
    the shards are disjoint except for the ``< world`` wrapped indices that pad the last round.
    """
    n = int(order.numel())
    if world == 1 or n == 0:
        return order
    total = math.ceil(n / world) * world
    if total > n:
        order = order.repeat(math.ceil(total / n))[:total]
    return order[rank:total:world]


def rank_batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle_gen: torch.Generator,
    rank: int,
    world: int,
    seed: int,
    stage: str,
    epoch: int,
    shuffle: bool = True,
    augment: bool = False,
    hflip: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of one epoch (``batch_size`` per device).

    One process: exactly :func:`augkd.data.iterate_batches` with ``shuffle_gen`` for shuffling and
    augmentation (the single-process behaviour). Several: the same permutation on every rank (drawn from
    ``shuffle_gen``, identical on all ranks), this rank's shard of it, and augmentation from a per-rank
    generator (:func:`augment_seed`).
    """
    from augkd.data import iterate_batches

    if world == 1:
        yield from iterate_batches(
            data, batch_size, shuffle=shuffle, generator=shuffle_gen, augment=augment, hflip=hflip, drop_last=drop_last
        )
        return
    n = len(data)
    order = torch.randperm(n, generator=shuffle_gen) if shuffle else torch.arange(n)
    aug_gen = torch.Generator().manual_seed(augment_seed(seed, rank, stage, epoch))
    yield from iterate_batches(
        data,
        batch_size,
        shuffle=False,
        generator=aug_gen,
        augment=augment,
        hflip=hflip,
        drop_last=drop_last,
        index=shard_indices(order, rank, world),
    )


def eval_shard(n: int, rank: int, world: int) -> torch.Tensor:
    """Disjoint eval shard (no padding: every image is counted exactly once across ranks)."""
    return torch.arange(rank, n, world)


# --- reductions -------------------------------------------------------------------------------------
def all_reduce_sum(fabric: Fabric, values: list[int], device: torch.device) -> list[int]:
    """Sum integer counts over ranks with Fabric's all-reduce (exact: int64)."""
    if fabric.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.int64, device=device)
    out = fabric.all_reduce(t, reduce_op="sum")
    return [int(v) for v in out.cpu().tolist()]  # type: ignore[union-attr]


def all_reduce_mean(fabric: Fabric, metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (every rank must pass the same keys in the same order)."""
    if fabric.world_size == 1 or not metrics:
        return metrics
    keys = list(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    out = fabric.all_reduce(t, reduce_op="mean")
    return dict(zip(keys, out.cpu().tolist(), strict=True))  # type: ignore[union-attr]


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (one small all-reduce; used per step for the NaN check)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_buffers(fabric: Fabric, net: torch.nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) of ``net`` over ranks, in place."""
    if fabric.world_size == 1:
        return
    bufs = [b for b in net.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.detach().float().reshape(-1) for b in bufs])
    flat = fabric.all_reduce(flat, reduce_op="mean")  # type: ignore[assignment]
    offset = 0
    with torch.no_grad():
        for b in bufs:
            k = b.numel()
            b.copy_(flat[offset : offset + k].view_as(b).to(b.dtype))
            offset += k


def gather_rng_states(fabric: Fabric, device: torch.device) -> dict[str, Any]:
    """Every rank's torch RNG state (CPU, and CUDA where used), gathered on all ranks."""
    states: dict[str, Any] = {"cpu": [torch.get_rng_state()]}
    if device.type == "cuda":
        states["cuda"] = [torch.cuda.get_rng_state(device)]
    if fabric.world_size == 1:
        return states
    out: dict[str, Any] = {}
    for key, (st,) in states.items():
        parts = [torch.empty_like(st, device=device) for _ in range(fabric.world_size)]
        torch.distributed.all_gather(parts, st.to(device))  # uint8 state bytes (nccl needs them on the GPU)
        out[key] = [p.cpu() for p in parts]
    return out


def restore_rng(state: dict[str, Any], seed: int, rank: int, world: int, device: torch.device) -> None:
    """Restore this rank's RNG from a checkpoint; reseed deterministically when the world size changed."""
    ranks = state.get("rng_ranks")
    saved_world = int(state.get("world_size", 1))
    if ranks is not None and saved_world == world:
        torch.set_rng_state(ranks["cpu"][rank])
        if device.type == "cuda" and "cuda" in ranks:
            torch.cuda.set_rng_state(ranks["cuda"][rank], device)
        return
    if ranks is None and world == 1:  # checkpoints written before data-parallel support
        torch.set_rng_state(state["rng"])
        return
    s = resume_seed(seed, rank, int(state["stage_index"]), int(state["epoch"]))
    torch.manual_seed(s)
    if rank == 0:
        logger.info(
            "checkpoint written by %d process(es), resumed with %d: random streams re-seeded per rank",
            saved_world,
            world,
        )
