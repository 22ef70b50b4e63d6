"""WideResNet-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

Follows the PyTorch reference used by the CutMix / PuzzleMix / Co-Mixup CIFAR code
(xternalz/WideResNet-pytorch): a 3x3 stem conv with 16 channels, three groups of (depth - 4) / 6
pre-activation wide blocks with 16k/32k/64k channels and strides 1/2/2, dropout between the two convs
of each block, 1x1-conv shortcuts where the width changes (taken from the pre-activated input), a final
BN-ReLU, global pooling and a linear head. Init as the reference: Kaiming fan_out convs, BN 1/0, zero
linear bias.

Deviation: global average pooling instead of `avg_pool2d(out, 8)` (same result on 32x32).

WRN-28-10 has 36,479,194 parameters for 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models._base import init_weights


class WideBlock(nn.Module):
    """A pre-activation block of a Wide ResNet, with dropout between its two convolutions."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        out = self.conv2(self.drop(F.relu(self.bn2(self.conv1(o)))))
        return out + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-widen.

    Args:
        depth: total depth, (depth - 4) % 6 == 0 (28 -> 4 blocks per group).
        widen: width multiplier k (group widths 16k, 32k, 64k).
        num_classes: size of the linear head.
        dropout: dropout probability inside each block (0.3 in the WRN-28-10 CIFAR recipes).
        in_chans: input channels.
    """

    def __init__(
        self, depth: int, widen: int, num_classes: int, dropout: float = 0.3, in_chans: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must satisfy (depth - 4) % 6 == 0 and be >= 10; got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._group(widths[0], widths[1], n, 1, dropout)
        self.block2 = self._group(widths[1], widths[2], n, 2, dropout)
        self.block3 = self._group(widths[2], widths[3], n, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[3]
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self, zero_linear_bias=True)

    @staticmethod
    def _group(in_planes: int, out_planes: int, n: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            *[
                WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last (post BN-ReLU) feature map, (B, 64k, H/4, W/4)."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn(out))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(feats), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
