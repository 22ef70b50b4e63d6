"""CIFAR ResNet-18 / ResNet-50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The CIFAR variant used by the SaliencyMix / Cutout CIFAR code (which follows kuangliu/pytorch-cifar):
a 3x3 stride-1 stem conv with 64 channels and no max-pool, four stages of 64/128/256/512 channels with
strides 1/2/2/2, BasicBlock [2, 2, 2, 2] (ResNet-18) or Bottleneck [3, 4, 6, 3] (ResNet-50), and
projection shortcuts (1x1 conv + BN) where the shape changes.

Deviations from the reference code:
- global average pooling (`AdaptiveAvgPool2d(1)`) instead of `avg_pool2d(out, 4)`, so any input size
  works (32x32 ends on a 4x4 map, the same result as the reference);
- explicit init (Kaiming fan_out for convs, BN 1/0, as torchvision) instead of PyTorch's defaults.

Parameter counts for 10 classes: ResNet-18 11,173,962; ResNet-50 23,520,842.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models._base import init_weights


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions with a shortcut, 4x wider out (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class CifarResNet(nn.Module):
    """ResNet with a CIFAR stem.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        num_blocks: blocks per stage (four stages of 64/128/256/512 base channels).
        num_classes: size of the linear head.
        in_chans: input channels.
    """

    def __init__(
        self, block: type[BasicBlock | Bottleneck], num_blocks: list[int], num_classes: int, in_chans: int = 3
    ) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.linear = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, n: int, stride: int
    ) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (B, num_features, H/8, W/8)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(feats), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
