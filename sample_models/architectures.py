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
