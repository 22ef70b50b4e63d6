"""Small batched tensor helpers shared by the saliency detectors and the mixers.

All functions work on any device and never synchronise with the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from .lazy import lazy_import

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


#: The released SaliencyMix/CutMix CIFAR normalisation (used for CIFAR-10 and CIFAR-100 alike):
#: what `saliency_input: official_float` normalises with when no dataset statistics are given.
CIFAR_MEAN = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
CIFAR_STD = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)

#: per-channel (mean, std) of a dataset's [0,1] images
Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]


def check_images(images: object, what: str = "images", *, min_size: int = 1) -> Tensor:
    """Validate a (B,3,H,W) floating batch; raise ValueError carrying the actual shape/dtype."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of shape (B,3,H,W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B,3,H,W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be a floating tensor in [0,1], got dtype {images.dtype}")
    if images.shape[0] < 1 or min(images.shape[2:]) < min_size:
        raise ValueError(f"{what} must have B>=1 and H,W>={min_size}, got {tuple(images.shape)}")
    return images


def check_normalization(normalization: object) -> Normalization:
    """`(mean, std)` as two 3-tuples of floats (std > 0); None gives (CIFAR_MEAN, CIFAR_STD)."""
    if normalization is None:
        return CIFAR_MEAN, CIFAR_STD
    try:
        mean, std = normalization
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or not all(map(math.isfinite, mean + std)) or min(std) <= 0:
        raise ValueError(f"normalization must be (mean, std) with 3 finite values each and std > 0, "
                         f"got {normalization!r}")
    return mean, std  # type: ignore[return-value]


def normalize_images(images: Tensor, normalization: Normalization) -> Tensor:
    """(x - mean) / std per channel in float32: what torchvision's `Normalize` makes of the batch.

    Python-float scalars per channel, so nothing is copied to the device.
    """
    x = images.float()
    mean, std = normalization
    return torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], 1)


def check_range(images: Tensor, what: str = "images") -> None:
    """Check values lie in [0,1]. This reads two scalars back, so callers do it once, not per step."""
    lo, hi = torch.aminmax(images.detach())
    lo, hi = float(lo), float(hi)
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(
            f"{what} must lie in [0,1] (mix before normalisation), got min {lo:.4g} max {hi:.4g}"
        )


def to_uint8_values(images: Tensor) -> Tensor:
    """[0,1] floats -> the uint8 values OpenCV would see (×255, round half to even), as float32."""
    return torch.round(images.float() * 255.0)


def gray_u8(images: Tensor) -> Tensor:
    """OpenCV COLOR_BGR2GRAY on uint8, bit-exact: (3735 B + 19235 G + 9798 R + 2^14) >> 15.

    Input RGB [0,1] (B,3,H,W); output integer-valued float32 (B,H,W). float32 is exact here: the
    weighted sum is below 2^24.
    """
    u = to_uint8_values(images)
    v = torch.mul(u[:, 2], 3735.0).add_(u[:, 1], alpha=19235.0).add_(u[:, 0], alpha=9798.0)
    return v.add_(16384.0).mul_(1.0 / 32768.0).floor_()


def gray_float(images: Tensor) -> Tensor:
    """ITU-R 601 luma on floats (torchvision's rgb_to_grayscale weights), (B,H,W)."""
    x = images.float()
    return x[:, 0] * 0.2989 + x[:, 1] * 0.587 + x[:, 2] * 0.114


def _pad(x: Tensor, r: int, mode: str) -> Tensor:
    """Pad the last two dims of (B,H,W) by r; 'reflect' is OpenCV's BORDER_REFLECT_101."""
    if r == 0:
        return x
    return F.pad(x[:, None], (r, r, r, r), mode=mode)[:, 0]


def sep_filter(x: Tensor, kernel: Sequence[float], mode: str = "reflect") -> Tensor:
    """Separable 2-D filter of (B,H,W) with the same odd 1-D kernel along rows and columns.

    Implemented as shifted multiply-adds with Python-float weights (rows first, then columns, as
    OpenCV's sepFilter2D): faster than conv2d for the tiny kernels used here, no host-to-device copy
    of the weights, and integer sums stay exact.
    """
    k = [float(v) for v in kernel]
    r = len(k) // 2
    p = _pad(x, r, mode)
    h, w = x.shape[-2:]
    rows = torch.mul(p[..., :, 0:w], k[0])
    for i in range(1, len(k)):
        rows.add_(p[..., :, i : i + w], alpha=k[i])
    out = torch.mul(rows[..., 0:h, :], k[0])
    for i in range(1, len(k)):
        out.add_(rows[..., i : i + h, :], alpha=k[i])
    return out


def blur3_u8(gray: Tensor) -> Tensor:
    """OpenCV GaussianBlur(3x3, sigma 0) on uint8 values: [1,2,1]^T[1,2,1]/16, reflect-101, (s+8)>>4."""
    return sep_filter(gray, (1.0, 2.0, 1.0), "reflect").add_(8.0).mul_(1.0 / 16.0).floor_()


@lru_cache(maxsize=32)
def gaussian_kernel1d(size: int, sigma: float) -> tuple[float, ...]:
    """OpenCV getGaussianKernel / torchvision gaussian_blur 1-D weights (float64, sum 1)."""
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    half = (size - 1) / 2
    w = [math.exp(-((i - half) ** 2) / (2.0 * sigma * sigma)) for i in range(size)]
    s = sum(w)
    return tuple(v / s for v in w)


def gaussian_blur(x: Tensor, size: int, sigma: float, mode: str = "reflect") -> Tensor:
    """Gaussian blur of (B,H,W); reflect-101 borders (OpenCV default, torchvision's choice)."""
    r = size // 2
    if mode == "reflect" and min(x.shape[-2:]) <= r:
        mode = "replicate"  # reflect padding needs the image larger than the radius
    return sep_filter(x, list(gaussian_kernel1d(size, sigma)), mode)


def box3(x: Tensor, mode: str) -> Tensor:
    """3x3 mean filter of (B,H,W)."""
    return sep_filter(x, [1.0 / 3.0] * 3, mode)


def resize(x: Tensor, size: tuple[int, int], *, antialias: bool = False) -> Tensor:
    """Bilinear, half-pixel centres (OpenCV INTER_LINEAR / torch align_corners=False) of (B,H,W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[
        :, 0
    ]


def normalize_max(m: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-image divide by the maximum, so maps lie in [0,1]; all-zero maps stay zero (no NaN)."""
    peak = m.amax(dim=(-2, -1), keepdim=True)
    return m / peak.clamp_min(eps)


def normalize_sum(m: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-image sum-to-1 (GuidedMixup); an all-zero map becomes uniform instead of NaN."""
    m = m.clamp_min(0) + eps
    return m / m.sum(dim=(-2, -1), keepdim=True)
