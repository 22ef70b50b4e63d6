"""OpenCV reference backends: the OpenCV saliency calls themselves, per image on the CPU.

These are the baseline the batched detectors are measured against (bench/saliency.py) and the
only way to reproduce the released SaliencyMix code, which is why they exist as factor values:

* `opencv_fine_grained`, `opencv_spectral_residual` with `saliency_input: uint8` (correct):
  [0,1] -> x255, round, uint8, RGB->BGR, then `computeSaliency`.
* `saliency_input: official_float` reproduces the released SaliencyMix code, which passed the
  NORMALISED float32 RGB tensor (HWC) straight to OpenCV: normalised with the dataset's mean/std
  (the `normalization` argument; the released CIFAR code used (125.3, 123.0, 113.9)/255 and
  (63.0, 62.1, 66.7)/255 for CIFAR-10 and CIFAR-100 alike, the default here). On float input OpenCV's
  fine-grained detector reads raw bytes of the float buffer as pixel values (`gray.at<uchar>`
  on a CV_32F image), so its argmax is an artefact of IEEE-754 bytes, not saliency. Since the
  artefact is a property of OpenCV's memory layout, we reproduce it by calling OpenCV.
  The released code then computed `(map * 255).astype("uint8")`. That step is harmless: since
  opencv_contrib 3.4.3 (PR #1736, 2018), so in every 4.x (4.2 included) and in 5.x,
  `StaticSaliencyFineGrained.computeSaliency` returns a float32 map in [0,1] (its uint8 map
  converted with scale 1/255), whatever the input dtype, and x255 + truncation gives the 256
  levels back exactly. Only OpenCV before 3.4.3 returned the uint8 map itself, on which x255
  wraps modulo 256. (Checked: opencv-contrib-python-headless 5.0.0 returns float32 in [0,1] for
  uint8 and float32 input; the 4.2.0 source converts to CV_32F with scale 1/255.) We return
  what OpenCV returns, as float32 in [0,1].

This module is the documented exception to "no host syncs": it copies the batch to the host.
OpenCV is imported lazily, so the mixing core imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_import
from ..ops import Normalization, check_normalization, normalize_images
from .base import register

if TYPE_CHECKING:
    from torch import Tensor

np = lazy_import("numpy")
torch = lazy_import("torch")

_FACTORIES = {
    "fine_grained": "StaticSaliencyFineGrained_create",
    "spectral_residual": "StaticSaliencySpectralResidual_create",
}


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is a dependency
        raise ValueError(
            "OpenCV saliency needs opencv-contrib-python-headless (pip install opencv-contrib-python-headless)"
        ) from exc
    if not hasattr(cv2, "saliency"):  # pragma: no cover
        raise ValueError("this OpenCV build has no saliency module: install opencv-contrib-python-headless")
    return cv2


def host_arrays(images: Tensor, saliency_input: str, normalization: Normalization | None = None) -> np.ndarray:
    """What the OpenCV call sees: (B,H,W,3) uint8 BGR, or normalised float32 RGB (official_float).

    `normalization`: the dataset's (mean, std) for `official_float`; None: the released CIFAR values.
    """
    x = images.detach().float().cpu()
    if saliency_input == "uint8":
        u8 = torch.round(x * 255.0).to(torch.uint8)
        return np.ascontiguousarray(u8.flip(1).permute(0, 2, 3, 1).numpy())
    if saliency_input == "official_float":
        normalised = normalize_images(x, check_normalization(normalization))
        return np.ascontiguousarray(normalised.permute(0, 2, 3, 1).numpy())
    raise ValueError(f"unknown saliency_input {saliency_input!r}; known: uint8, official_float")


def opencv_saliency(kind: str, images: Tensor, saliency_input: str = "uint8",
                    normalization: Normalization | None = None) -> Tensor:
    """Run OpenCV's static saliency `kind` on every image; (B,H,W) float32 in [0,1] on images.device."""
    cv2 = _cv2()
    detector = getattr(cv2.saliency, _FACTORIES[kind])()
    maps = []
    for arr in host_arrays(images, saliency_input, normalization):
        ok, m = detector.computeSaliency(arr)
        if not ok:  # pragma: no cover - OpenCV returns False only for empty input
            raise ValueError(f"OpenCV {kind} saliency failed on an image of shape {arr.shape}")
        m = np.asarray(m, dtype=np.float32) / (255.0 if m.dtype == np.uint8 else 1.0)
        maps.append(np.nan_to_num(m, nan=0.0))
    return torch.from_numpy(np.stack(maps)).to(images.device).clamp_(0.0, 1.0)


@register(
    "opencv_fine_grained",
    "OpenCV StaticSaliencyFineGrained per image on the CPU (reference and baseline)",
    inputs=("uint8", "official_float"),
)
def opencv_fine_grained(images: Tensor, *, saliency_input: str = "uint8", normalization: Normalization | None = None,
                        **_: object) -> Tensor:
    return opencv_saliency("fine_grained", images, saliency_input, normalization)


@register(
    "opencv_spectral_residual",
    "OpenCV StaticSaliencySpectralResidual per image on the CPU (reference and baseline)",
    inputs=("uint8", "official_float"),
)
def opencv_spectral_residual(images: Tensor, *, saliency_input: str = "uint8",
                             normalization: Normalization | None = None, **_: object) -> Tensor:
    return opencv_saliency("spectral_residual", images, saliency_input, normalization)
