"""Output parity and accuracy: an artifact's outputs against PyTorch (or fp32 ONNX) on the same real images."""

from __future__ import annotations

import math

import torch

from augkd.export.report import AccuracyResult, CheckResult, ParityResult

__all__ = ["accuracy", "accuracy_result", "compare_outputs", "parity_checks", "sqnr_db"]


def sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float | None:
    """Signal-to-noise ratio of ``output`` against ``reference`` in dB; None when they are identical."""
    ref = reference.double()
    noise = (ref - output.double()).pow(2).sum().item()
    if noise == 0.0:
        return None
    return 10.0 * math.log10(max(ref.pow(2).sum().item(), 1e-300) / noise)


def compare_outputs(reference: torch.Tensor, output: torch.Tensor, reference_name: str) -> ParityResult:
    """Max / mean absolute difference, top-1 agreement and SQNR of ``output`` against ``reference`` ``[N, K]``."""
    if reference.shape != output.shape:
        raise ValueError(f"output shape {tuple(output.shape)} differs from the reference {tuple(reference.shape)}")
    ref, out = reference.float(), output.float()
    diff = (ref - out).abs()
    return ParityResult(
        reference=reference_name,
        samples=int(ref.shape[0]),
        max_abs_diff=float(diff.max().item()) if diff.numel() else 0.0,
        mean_abs_diff=float(diff.mean().item()) if diff.numel() else 0.0,
        top1_agreement=float((ref.argmax(1) == out.argmax(1)).float().mean().item()),
        sqnr_db=sqnr_db(ref, out),
        reference_max_abs=float(ref.abs().max().item()) if ref.numel() else 0.0,
    )


def accuracy(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((outputs.argmax(1) == labels).float().mean().item())


def accuracy_result(
    outputs: torch.Tensor, labels: torch.Tensor, reference_acc1: float, reference_name: str, split: str
) -> AccuracyResult:
    """Acc@1 of ``outputs`` with the drop in points against ``reference_acc1``."""
    acc = accuracy(outputs, labels)
    return AccuracyResult(
        split=split,
        samples=int(labels.shape[0]),
        acc1=acc,
        reference=reference_name,
        reference_acc1=reference_acc1,
        drop_points=(reference_acc1 - acc) * 100.0,
    )


def parity_checks(fmt: str, parity: ParityResult, atol: float, min_agreement: float) -> list[CheckResult]:
    """The fp32 checks: max |Δ| ≤ ``atol`` and top-1 agreement ≥ ``min_agreement``."""
    ok_d = parity.max_abs_diff <= atol
    ok_a = parity.top1_agreement >= min_agreement
    return [
        CheckResult(
            name="max_abs_diff",
            passed=ok_d,
            value=parity.max_abs_diff,
            threshold=atol,
            message=(
                f"{fmt}: max |Δ| {parity.max_abs_diff:.3g} vs {parity.reference} {'≤' if ok_d else '>'} --atol {atol:g}"
            ),
        ),
        CheckResult(
            name="top1_agreement",
            passed=ok_a,
            value=parity.top1_agreement,
            threshold=min_agreement,
            message=(
                f"{fmt}: top-1 agreement {parity.top1_agreement * 100:.2f}% with {parity.reference} "
                f"{'≥' if ok_a else '<'} --min-agreement {min_agreement * 100:g}%"
            ),
        ),
    ]


def accuracy_check(fmt: str, acc: AccuracyResult, max_drop: float) -> CheckResult:
    """Acc@1 drop (points) against the reference ≤ ``max_drop``.

    The message gives the gate's resolution: on ``n`` images one image is ``100 / n`` points, so a gate
    finer than that allows no lost image at all (a 1-point gate on 64 images fails on the first flip).
    """
    ok = acc.drop_points <= max_drop
    per_image = 100.0 / max(acc.samples, 1)
    lost = round(acc.drop_points / per_image)
    note = f"; one image = {per_image:.2f} pts, so this gate allows no lost image" if max_drop < per_image else ""
    return CheckResult(
        name="acc_drop",
        passed=ok,
        value=acc.drop_points,
        threshold=max_drop,
        message=(
            f"{fmt}: Acc@1 {acc.acc1 * 100:.2f}% vs {acc.reference} {acc.reference_acc1 * 100:.2f}% "
            f"(drop {acc.drop_points:.2f} pts, {lost:d} of {acc.samples} images, "
            f"{'≤' if ok else '>'} --max-acc-drop {max_drop:g}{note})"
        ),
    )
