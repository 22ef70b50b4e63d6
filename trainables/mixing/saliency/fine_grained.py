"""Fine-grained static saliency (Montabone & Soto 2010), bit-exact with OpenCV, batched.

SaliencyMix's detector is OpenCV's `StaticSaliencyFineGrained`, which the released code calls
once per image on the CPU. This is the same computation for a whole batch on any device:

1. gray = (3735 B + 19235 G + 9798 R + 2^14) >> 15 on uint8 values (OpenCV's BGR2GRAY);
2. two 3x3 Gaussian blurs [1,2,1]^T[1,2,1]/16, reflect-101, each rounded back: (s + 8) >> 4;
3. for half-sizes n in (12, 24, 48, 28, 56, 112): box sums over rows/cols
   [clamp(i-n+1, 0, L), clamp(i+n+1, 0, L)); surround = (box - g) / (area - 1) in float32;
   on_n = trunc(max(g - surround, 0)), off_n = trunc(max(surround - g, 0));
4. ON = sum on_n, OFF = sum off_n; on8 = trunc(255 * (ON / max ON)), same for OFF;
5. map = trunc(255 * (on8 + off8) / max(max on8, max off8)), returned as map / 255.

Why the box sums are separable matrix products: a box sum is R_n @ g @ C_n^T with 0/1 band
matrices, and every partial sum is an integer below 2^24 (boxes are at most 224x224 of values
<= 255), so float32 products are exact in any summation order; this is ~10x faster on a CPU
than integral-image gathers. Float32 is used only when matmuls run at full IEEE precision
(no TF32/bf16 modes); otherwise float64.

Deviation from OpenCV, on purpose: OpenCV 5 accumulates its integral image in float32, which
rounds once an image's total gray sum exceeds 2^24 (bright images larger than ~256x256); there
OpenCV's own map differs from the exact one in a few pixels (about 0.05 % on a 512x512 photo).
We compute the exact one. A constant image has max 0 and gives an all-zero map, never NaN.

Scales whose windows coincide are computed once and weighted by their multiplicity (exact: the
per-scale terms are integers). On 32x32 inputs the half-sizes 48, 56 and 112 all cover the whole
image, so CIFAR-size batches do 4 scales' work instead of 6.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ..lazy import lazy_import
from ..ops import Normalization, blur3_u8, gray_u8
from .base import register

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")
#: bound by name: importing it here would register the `opencv_*` detectors before this module's
#: (the registry keeps the order of `saliency/__init__`, which `mixsweep list` and errors show)
opencv_ref = lazy_import("trainables.mixing.saliency.opencv_ref")

HALF_SIZES = (12, 24, 48, 28, 56, 112)
#: elements of the (chunk, 6, H, W) working tensor processed at once (bounds memory: 64 MB)
_CHUNK_ELEMS = 1 << 24


def _windows(length: int) -> tuple[Tensor, Tensor]:
    """(6,L) window starts and ends of the six half-sizes (CPU)."""
    i = torch.arange(length)
    n = torch.tensor(HALF_SIZES)[:, None]
    return (i - n + 1).clamp(0, length), (i + n + 1).clamp(0, length)


@lru_cache(maxsize=64)
def _host_scales(height: int, width: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Band matrices of the DISTINCT scales for an HxW image, on the CPU: rows (s,H,H), cols (s,W,W),
    area - 1 (s,H,W), and each distinct scale's multiplicity (s,) float32 among the six half-sizes.

    Cached on the host only: a cache keyed by device would keep device memory alive in a Ray actor
    that is reused for the next trial."""
    (ylo, yhi), (xlo, xhi) = _windows(height), _windows(width)
    keys = [(tuple(ylo[k].tolist()), tuple(yhi[k].tolist()), tuple(xlo[k].tolist()), tuple(xhi[k].tolist()))
            for k in range(len(HALF_SIZES))]
    distinct = list(dict.fromkeys(keys))
    pick = [keys.index(key) for key in distinct]
    weight = torch.tensor([keys.count(key) for key in distinct], dtype=torch.float32)
    iy, ix = torch.arange(height), torch.arange(width)
    rows = ((iy >= ylo[pick, :, None]) & (iy < yhi[pick, :, None])).to(dtype)
    cols = ((ix >= xlo[pick, :, None]) & (ix < xhi[pick, :, None])).to(dtype)
    area_m1 = ((yhi - ylo)[pick, :, None] * (xhi - xlo)[pick, None, :] - 1).to(torch.float32)
    return rows, cols, area_m1, weight


def _scales(height: int, width: int, device: torch.device,
            dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_host_scales` on `device` (one small host-to-device copy per batch; none on the CPU)."""
    return tuple(t.to(device) for t in _host_scales(height, width, dtype))  # type: ignore[return-value]


def _exact_matmul_dtype(device: torch.device) -> torch.dtype:
    if torch.get_float32_matmul_precision() != "highest":
        return torch.float64
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return torch.float64
    return torch.float32


def _scale_to_255(v: Tensor) -> Tensor:
    """trunc(255 * (v / max v)) as OpenCV: float32 quotient, double product; 0/0 -> 0.

    v holds non-negative integers, so max v is 0 or >= 1: dividing by max(max v, 1) changes nothing
    but 0/0, and trunc is floor.
    """
    peak = v.amax(dim=(-2, -1), keepdim=True).clamp_min_(1.0)
    return torch.div(v, peak).double().mul_(255.0).floor_()


def _fine_grained_u8(gray: Tensor) -> Tensor:
    """gray: (b,H,W) blurred integer-valued float32 -> uint8-valued float64 map (b,H,W).

    Works in an (s,H,b,W) layout so that both box-sum passes are large matrix products (one GEMM
    over all rows, one batched GEMM per distinct scale) instead of b*s tiny ones.
    """
    b, h, w = gray.shape
    rows, cols, area_m1, weight = _scales(h, w, gray.device, _exact_matmul_dtype(gray.device))
    s = rows.shape[0]
    g = gray.transpose(0, 1).contiguous()  # (H,b,W)
    x = torch.mm(rows.reshape(s * h, h), g.view(h, b * w).to(rows.dtype)).view(s, h * b, w)  # row sums
    box = torch.bmm(x, cols.transpose(1, 2)).view(s, h, b, w).float()  # then column sums: (s,H,b,W)
    box.sub_(g).div_(area_m1.view(s, h, 1, w))  # surround mean, float32 as OpenCV
    t = torch.sub(g, box, out=box).trunc_().view(s, -1)  # trunc(g - surround): on where > 0, -off where < 0
    # sums over the scales as matrix-vector products: integers |t| <= 255 times multiplicities <= 6
    # are exact even in TF32/bf16 inputs, and accumulate exactly in float32
    total = weight @ t  # ON - OFF
    on = weight @ t.clamp_min_(0)
    off = on - total
    on, off = on.view(h, b, w).transpose(0, 1), off.view(h, b, w).transpose(0, 1)
    on8, off8 = _scale_to_255(on), _scale_to_255(off)
    peak = torch.maximum(on8.amax(dim=(-2, -1), keepdim=True), off8.amax(dim=(-2, -1), keepdim=True)).clamp_min_(1.0)
    return on8.add_(off8).mul_(255.0).div_(peak).floor_().clamp_(0.0, 255.0)


@register(
    "fine_grained",
    "Montabone & Soto 2010 = OpenCV StaticSaliencyFineGrained, bit-exact, batched (SaliencyMix default)",
    inputs=("uint8", "official_float"),
)
def fine_grained(images: Tensor, *, saliency_input: str = "uint8", normalization: Normalization | None = None,
                 **_: object) -> Tensor:
    if saliency_input == "official_float":  # released SaliencyMix: normalised float32 into OpenCV (an artefact)
        return opencv_ref.opencv_saliency("fine_grained", images, "official_float", normalization)
    gray = blur3_u8(blur3_u8(gray_u8(images)))
    b, h, w = gray.shape
    step = max(1, _CHUNK_ELEMS // (len(HALF_SIZES) * h * w))
    maps = [_fine_grained_u8(gray[i : i + step]) for i in range(0, b, step)]
    return (maps[0] if len(maps) == 1 else torch.cat(maps)).div_(255.0).float()
