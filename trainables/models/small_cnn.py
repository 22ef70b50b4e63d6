"""A small CNN for demos, CI and fast sweeps on small images.

Not from a paper. The layout follows airbench's conv -> pool -> BN -> ReLU blocks (pooling before BN
does the normalisation and activation on a 4x smaller map: same function class, less work):

    stem   conv3x3(in, w)                  BN ReLU     H x W
    stage  conv3x3(w, w)    maxpool2       BN ReLU     H/2
    stage  conv3x3(w, 2w)   maxpool2       BN ReLU     H/4
    stage  conv3x3(2w, 4w)  maxpool2       BN ReLU     H/8
    head   global avg pool, dropout, linear(4w, num_classes)

Global average pooling makes it work on any input of at least 8x8 (16x16 and up is the intended
range). Cost, width 32 (104 k params at 10 classes): one epoch of 1 000 32x32 images at batch 128
(forward + backward + SGD step) takes about 1.2 s on 2 idle CPU cores and 1.9 s on one thread (width
16: 0.5 s / 1.0 s). On shared cores use one intra-op thread per busy core: OpenMP spin-waits made the
2-thread epoch 3-5x slower while other processes were running.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models._base import init_weights


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Stem + three conv-pool-BN-ReLU stages + global pooling + linear head.

    Args:
        num_classes: size of the linear head.
        width: channels of the stem and first stage; the later stages use 2x and 4x.
        dropout: dropout before the head.
        in_chans: input channels.
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.0, in_chans: int = 3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(in_chans, w, pool=False),
            _block(w, w, pool=True),
            _block(w, 2 * w, pool=True),
            _block(2 * w, 4 * w, pool=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.num_features = 4 * w
        self.fc = nn.Linear(4 * w, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (B, 4 * width, H/8, W/8)."""
        return self.features(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(feats), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
