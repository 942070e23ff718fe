"""Architectures of the digits samples; `width` scales every hidden layer (used for distillation students)."""

from __future__ import annotations

import torch
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channels after scaling by `width`, at least 1."""
    return max(1, int(round(channels * width)))


class DigitsMLP(nn.Module):
    """8x8 digits -> 10 logits through two hidden layers."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        h1, h2 = scaled(256, width), scaled(128, width)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                 nn.Linear(h2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    """8x8 digits -> 10 logits through three 3x3 convolutions and two linear layers."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c1, c2, c3, h = scaled(32, width), scaled(64, width), scaled(128, width), scaled(128, width)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c3 * 4, h), nn.ReLU(), nn.Linear(h, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand -> BN -> ReLU6 -> depthwise 3x3 -> BN -> ReLU6 -> 1x1 project -> BN,
    with the input added back when the shapes match (Sandler et al. 2018)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class ShapesMobileNet(nn.Module):
    """32x32 shapes -> logits through a MobileNetV2-style stack: a 3x3 stem, inverted residual blocks with
    depthwise 3x3 convolutions, BN and ReLU6, a 1x1 head, global average pooling and a linear classifier."""

    # (expansion, output channels, blocks, first stride), as MobileNetV2's table, sized for 32x32 inputs: the
    # stem runs at 32x32, then 16x16, 8x8, 4x4. Measured: an epoch of the train split takes ~20 s on one thread;
    # the same stack with a stride-1 first block (inverted residuals at 32x32) took ~50-75 s.
    STAGES = ((1, 16, 1, 2), (4, 24, 2, 2), (4, 32, 2, 1), (4, 64, 2, 2), (4, 96, 1, 1))

    def __init__(self, width: float = 1.0, n_classes: int = 10):
        super().__init__()
        stem = scaled(16, width)
        layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6()]
        channels = stem
        for expand, out, blocks, stride in self.STAGES:
            out = scaled(out, width)
            for index in range(blocks):
                layers.append(InvertedResidual(channels, out, stride if index == 0 else 1, expand))
                channels = out
        head = scaled(320, width)
        layers += [nn.Conv2d(channels, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(head, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
