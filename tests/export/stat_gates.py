"""Accuracy gates for reduced-precision artifacts, sized to the sample they are measured on.

int8 (and fp16/bf16) numerics differ between CPUs: onnxruntime's MLAS picks its int8 kernels by the CPU's
instruction set (AVX2, AVX-512 VNNI, AMX, ...) and has no switch to restrict it, and oneDNN/ATen do the same
for the PyTorch side (even the fixture student's training moves with it). Measured on the digits fixture
student: top-1 agreement of int8 with fp32 100% / 93.8% / 96.9% of 64 test images with the default ISA /
``ONEDNN_MAX_CPU_ISA=AVX2`` / ``SSE41`` + ``ATEN_CPU_CAPABILITY=default`` (AMD EPYC, avx512_vnni), and one
image of 64 lost on an Intel Xeon with AMX. A fixed "1 point" gate on 64 images is one image.

What holds on every CPU is a property, not a figure: quantisation flips a few predictions, and flips that
are noise help as often as they hurt. So the net number of images lost (fp32 right → int8 wrong, minus the
reverse) stays within ``z·√d`` of zero, where ``d`` is the number of predictions that changed: |b − c| of a
sign test on b + c ≤ d discordant pairs, whose standard deviation is √(b + c) ≤ √d. With z = 3, a correct
quantiser fails it with probability < 0.3 %; a broken one (weights or scales wrong) loses far more.
"""

from __future__ import annotations

import math

MIN_AGREEMENT = 0.85  # a trained student keeps ≥ 85% of its top-1 predictions in int8 (measured ≥ 93.8%)


def max_net_loss_points(samples: int, agreement: float, z: float = 3.0) -> float:
    """The largest Acc@1 drop (points) a no-worse-than-fp32 quantiser shows on ``samples`` images."""
    changed = round((1.0 - agreement) * samples)
    return 100.0 * z * math.sqrt(changed) / samples


def assert_reduced_precision_ok(samples: int, agreement: float, drop_points: float, what: str = "int8") -> None:
    """Agreement with fp32 ≥ MIN_AGREEMENT and the Acc@1 drop within noise for this sample size."""
    assert agreement >= MIN_AGREEMENT, f"{what}: top-1 agreement {agreement:.3f} < {MIN_AGREEMENT} on {samples} images"
    bound = max_net_loss_points(samples, agreement)
    assert drop_points <= bound + 1e-9, (
        f"{what}: Acc@1 drop {drop_points:.2f} pts on {samples} images > {bound:.2f} pts "
        f"(3·√changed predictions, agreement {agreement:.3f})"
    )
