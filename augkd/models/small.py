"""Small CNNs for tiny data, and the pretrained digit teachers that the ``ccexam`` package ships.

The ccexam architectures are re-declared here (same layer layout, so their state_dicts load) instead
of importing ccexam's classes, whose forward refuses any other input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.errors import MissingDependencyError
from augkd.models.layers import flat_head
from augkd.models.registry import register_model

torch.fx.wrap("flat_head")  # a leaf for torch.fx (its layout branch is not traceable): lets the teacher fold BN


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages with max-pooling, global average pooling and a linear head."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, w in enumerate(widths):
            layers += _conv_bn(cin, w)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("cnn_small")
def cnn_small(num_classes: int = 10, width: int = 32, **kwargs: Any) -> nn.Module:
    """3-stage CNN (32-64-128 channels at width 32), ~0.1 M params: a student for tiny data."""
    return SmallCNN(num_classes, widths=(width, 2 * width, 4 * width), **kwargs)


@register_model("cnn_tiny")
def cnn_tiny(num_classes: int = 10, width: int = 8, **kwargs: Any) -> nn.Module:
    """2-stage CNN (8-16 channels): for tests and smoke runs."""
    return SmallCNN(num_classes, widths=(width, 2 * width), **kwargs)


class _SVHNNet(nn.Module):
    """ccexam's SVHN classifier layout: 3 × (conv-BN-ReLU ×2, max-pool), 2-layer head with dropout."""

    def __init__(self, num_classes: int = 10, input_size: int = 32, dropout: float = 0.3) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )  # fmt: skip

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        feat = 128 * (input_size // 8) ** 2
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(feat, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flat_head(self.features(x), self.classifier)


class _DigitNet(nn.Module):
    """ccexam's MNIST (no BN) / USPS (BN + dropout) classifier layout, 1 input channel."""

    def __init__(self, num_classes: int = 10, input_size: int = 28, bn: bool = False) -> None:
        super().__init__()
        feat = 64 * (input_size // 4) ** 2
        if bn:
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            )  # fmt: skip
            self.classifier = nn.Sequential(
                nn.Dropout(0.3), nn.Linear(feat, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, num_classes)
            )
        else:
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )  # fmt: skip
            self.classifier = nn.Sequential(nn.Linear(feat, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flat_head(self.features(x), self.classifier)


def ccexam_weights(name: str) -> Path:
    """Path of a weights file shipped by the ``ccexam`` package (the ``data`` extra)."""
    try:
        import ccexam
    except ImportError as exc:
        raise MissingDependencyError(
            "the pretrained digit teachers come from the 'ccexam' package: pip install 'augkd[data]'"
        ) from exc
    path = Path(ccexam.__file__).parent / "weights" / f"{name}.pth"
    if not path.is_file():
        raise MissingDependencyError(f"ccexam is installed but {path} is missing: reinstall ccexam")
    return path


def _load_ccexam(model: nn.Module, name: str) -> nn.Module:
    # Shipped file is a plain state_dict: never unpickle arbitrary objects.
    state = torch.load(ccexam_weights(name), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


_SVHN = {"mean": (0.4377, 0.4438, 0.4728), "std": (0.1980, 0.2010, 0.1970)}


@register_model("ccexam-svhn", input_size=32, in_chans=3, pretrained=True, fixed_num_classes=10, **_SVHN)
def ccexam_svhn(num_classes: int = 10, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """SVHN digit CNN (815k params, 32×32 RGB) with the real weights the ccexam package ships."""
    model = _SVHNNet(num_classes, input_size=32)
    return _load_ccexam(model, "svhn") if pretrained else model


@register_model(
    "ccexam-mnist", input_size=28, in_chans=1, pretrained=True, fixed_num_classes=10, mean=(0.1307,), std=(0.3081,)
)
def ccexam_mnist(num_classes: int = 10, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """MNIST digit CNN (28×28 grey) with the real weights the ccexam package ships."""
    model = _DigitNet(num_classes, input_size=28, bn=False)
    return _load_ccexam(model, "mnist") if pretrained else model


@register_model(
    "ccexam-usps", input_size=16, in_chans=1, pretrained=True, fixed_num_classes=10, mean=(0.2471,), std=(0.2994,)
)
def ccexam_usps(num_classes: int = 10, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """USPS digit CNN (16×16 grey, BN) with the real weights the ccexam package ships."""
    model = _DigitNet(num_classes, input_size=16, bn=True)
    return _load_ccexam(model, "usps") if pretrained else model
