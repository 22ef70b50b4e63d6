"""PreActResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016).

As in the Manifold Mixup / PuzzleMix / GuidedMixup CIFAR code (vikasverma1077/manifold_mixup
`preresnet.py`): a 3x3 stride-1 stem conv with 64 channels, four stages of pre-activation basic blocks
(BN-ReLU-conv twice) with 64/128/256/512 channels and strides 1/2/2/2, 1x1-conv projection shortcuts
(no BN) taken from the pre-activated input, and a final BN-ReLU before global pooling and the head.

Deviations from the reference code: global average pooling instead of `avg_pool2d(out, 4)` (same result
on 32x32, works on any size); no per-image standardisation or mixup inside `forward` (mixing lives in
`trainables.mixing`); Kaiming fan_out / BN 1-0 init instead of PyTorch's defaults.

Parameter count for 10 classes: 11,172,170.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models._base import init_weights


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv, twice, with a shortcut (pre-activation ResNet)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet with a CIFAR stem.

    Args:
        num_blocks: blocks per stage (four stages of 64/128/256/512 channels).
        num_classes: size of the linear head.
        in_chans: input channels.
    """

    def __init__(self, num_blocks: list[int], num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(512)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512
        self.linear = nn.Linear(512, num_classes)
        init_weights(self)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last (post BN-ReLU) feature map, (B, 512, H/8, W/8)."""
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return F.relu(self.bn(out))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(feats), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
