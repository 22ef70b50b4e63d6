"""Frequency-tuned salient region detection (Achanta et al., CVPR 2009), batched.

sRGB -> linear RGB -> XYZ (D65) -> CIELAB (white 0.950456, 1, 1.088754); blur the Lab image with
the 5x5 binomial kernel [1,4,6,4,1]/16 (reflect-101 borders); saliency = Euclidean distance
between each blurred pixel's Lab vector and the image's mean Lab vector; divided by the
per-image max so maps lie in [0,1]. Distances below 1e-4 Lab units (a just-noticeable
difference is ~2.3) are float round-off, not contrast, and count as 0, so a constant image gives
an all-zero map instead of normalised noise.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ..lazy import lazy_import
from ..ops import normalize_max, sep_filter
from .base import register

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")

_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
WHITE_D65 = (0.950456, 1.0, 1.088754)
MIN_CONTRAST = 1e-4
BINOMIAL5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


@lru_cache(maxsize=16)
def _host_lab_constants(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The RGB->XYZ matrix and the D65 white point on the CPU (cached on the host only: a cache keyed by
    device would keep device memory alive in a Ray actor reused for the next trial)."""
    return torch.tensor(_RGB_TO_XYZ, dtype=dtype), torch.tensor(WHITE_D65, dtype=dtype)


def _lab_constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """`_host_lab_constants` on `device` (12 numbers copied per batch)."""
    m, white = _host_lab_constants(dtype)
    return m.to(device), white.to(device)


def rgb_to_lab(images: Tensor) -> Tensor:
    """(B,3,H,W) sRGB in [0,1] -> (B,3,H,W) CIELAB (L in [0,100])."""
    x = images.float()
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m, white = _lab_constants(x.dtype, x.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin) / white[None, :, None, None]
    eps = (6.0 / 29.0) ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1.0 / 3.0), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


@register("frequency_tuned", "Achanta et al. 2009: distance of blurred Lab pixels to the mean Lab colour")
def frequency_tuned(images: Tensor, **_: object) -> Tensor:
    lab = rgb_to_lab(images)
    b, c, h, w = lab.shape
    mean = lab.mean(dim=(2, 3), keepdim=True)
    blurred = sep_filter(lab.reshape(b * c, h, w), list(BINOMIAL5), "reflect" if min(h, w) > 2 else "replicate")
    dist = (blurred.reshape(b, c, h, w) - mean).pow(2).sum(1).sqrt()
    return normalize_max(torch.where(dist < MIN_CONTRAST, 0.0, dist))
