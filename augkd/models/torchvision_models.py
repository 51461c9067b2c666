"""torchvision classifiers with the head replaced, randomly initialised (no downloads at run time)."""

from __future__ import annotations

from typing import Any

from torch import nn

from augkd.models.registry import register_model


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif hasattr(model, "classifier") and isinstance(model.classifier, nn.Sequential):
        last = model.classifier[-1]
        assert isinstance(last, nn.Linear)
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model


def _tv(arch: str, num_classes: int, bn_momentum: float | None = None, **kwargs: Any) -> nn.Module:
    """Build a torchvision classifier; ``bn_momentum`` overrides every BatchNorm's momentum.

    torchvision's MobileNetV3 uses momentum 0.01, tuned for long ImageNet runs: on short runs with few
    steps (e.g. 10 images per class), the running statistics then lag the weights so far behind that the
    eval-mode network outputs nearly constant logits. 0.1 (PyTorch's default) fixes that.
    """
    import torchvision

    # weights=None: augkd never downloads; ImageNet initialisation needs a local weights file
    # loaded through `augkd teacher --set model.kwargs.init=PATH` style checkpoints instead.
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = bn_momentum
    return _replace_head(model, num_classes)


def _make(arch: str) -> None:
    def fn(num_classes: int = 10, **kwargs: Any) -> nn.Module:
        return _tv(arch, num_classes, **kwargs)

    fn.__doc__ = f"torchvision {arch} (random init, new {{num_classes}}-way head)."
    register_model(arch)(fn)


for _arch in ("resnet18", "resnet34", "resnet50", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "efficientnet_b0"):
    _make(_arch)


@register_model("mobilenet_v3_small")
def mobilenet_v3_small(num_classes: int = 10, width_mult: float = 1.0, **kwargs: Any) -> nn.Module:
    """torchvision MobileNetV3-Small with ``width_mult`` (random init, new head)."""
    return _tv("mobilenet_v3_small", num_classes, width_mult=width_mult, **kwargs)


@register_model("mobilenet_v3_large")
def mobilenet_v3_large(num_classes: int = 10, width_mult: float = 1.0, **kwargs: Any) -> nn.Module:
    """torchvision MobileNetV3-Large with ``width_mult`` (random init, new head)."""
    return _tv("mobilenet_v3_large", num_classes, width_mult=width_mult, **kwargs)
