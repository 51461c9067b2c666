"""Shared Triton helpers: launch settings, interpreter detection, pointer-friendly argument packing.

Importing this module imports triton. It is only imported lazily, when a Triton backend is first used.
"""

from __future__ import annotations

import os

import triton

from augkd.errors import KernelUnavailableError

from .._checks import MAX_FUSED_COLS


def _interpret_flag() -> bool:
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


# The mode our @triton.jit functions were built in: triton reads TRITON_INTERPRET when a kernel is
# decorated (module import), so this is captured once, next to the kernels.
INTERPRET: bool = _interpret_flag()

# Masked logits are set to this finite value instead of -inf, so that exp() gives 0 and 0 * value stays 0
# (no NaN from 0 * -inf in masked lanes; the interpreter warns on those).
NEG_LARGE = -1.0e30

# Target number of fp32 elements per program tile for row-wise ops (rows are stacked until the tile is full).
_TILE_ELEMS = 4096
# Row kernels on a GPU: stack fewer rows per program rather than launch fewer programs than this.
_MIN_PROGRAMS = 256
# Elements per program for elementwise ops.
_ELEMWISE_BLOCK = 1024


def row_settings(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """Choose ``(BLOCK_B, BLOCK_C, num_warps)`` for a row-wise op over an [n_rows, n_cols] matrix.

    ``BLOCK_C`` is the next power of two ≥ n_cols (a whole row per tile). Small rows are stacked ``BLOCK_B``
    per program, up to about 4096 elements per tile, but on a GPU no more rows than keep about
    :data:`_MIN_PROGRAMS` programs in the grid (e.g. B = 2048, C = 65: 8 rows of 128 per program, 256
    programs). Under the interpreter each program costs Python time, so tiles are filled up to 4096 elements
    there. ``num_warps`` gives each thread about 16 elements. These are heuristics, not tuned on hardware.

    Raises:
        KernelUnavailableError: a row is wider than :data:`MAX_FUSED_COLS`.
    """
    if n_cols > MAX_FUSED_COLS:
        raise KernelUnavailableError(
            f"the triton row kernels hold a whole row in one block: at most {MAX_FUSED_COLS} classes, "
            f"got {n_cols}; use backend torch"
        )
    block_c = triton.next_power_of_2(max(n_cols, 1))
    block_b = min(_TILE_ELEMS // block_c, triton.next_power_of_2(max(n_rows, 1)))
    if not INTERPRET:
        block_b = min(block_b, triton.next_power_of_2(triton.cdiv(n_rows, _MIN_PROGRAMS)))
    block_b = max(block_b, 1)
    num_warps = min(16, max(1, block_b * block_c // 512))
    return block_b, block_c, num_warps


def elementwise_settings(n_inner: int) -> tuple[int, int]:
    """Choose ``(BLOCK_SIZE, num_warps)`` for an elementwise op whose rows (planes) have ``n_inner`` elements."""
    block = min(_ELEMWISE_BLOCK, triton.next_power_of_2(max(n_inner, 1)))
    num_warps = 4 if block >= 512 else 2 if block >= 128 else 1
    return block, num_warps


def scalar_args(value, dummy) -> tuple[object, int, float, bool]:
    """Kernel arguments ``(ptr, stride, value, IS_TENSOR)`` for a per-sample factor (a float or a [] / [B] tensor).

    A float is passed by value (``ptr`` is an unused dummy tensor); a 0-d tensor is read with stride 0 and a
    [B] tensor with stride 1.
    """
    if isinstance(value, float):
        return dummy, 0, value, False
    return value, (0 if value.dim() == 0 else 1), 0.0, True
