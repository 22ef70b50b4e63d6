"""Spectral-residual saliency (Hou & Zhang 2007), in two flavours.

`spectral_residual` is OpenCV's `StaticSaliencySpectralResidual` (opencv-contrib 5.0):
gray (uint8 BGR weights) -> resize to 64x64 (bilinear, half-pixel, no antialias, rounded to
uint8) -> FFT -> L = log(|F| + 1) -> R = L - box3x3(L) (reflect-101) -> inverse FFT of exp(R)
with the original phase -> magnitude -> Gaussian 5x5, sigma 8 (reflect-101) -> square ->
divide by the max -> bilinear resize back. OpenCV computes in float64; float32 gives the same
maps to ~5e-5 (measured on scikit-image photos from 32x32 to 300x451, identical to a float64
run of this code) at half the memory traffic. The remaining difference to OpenCV is its
fixed-point uint8 resize, emulated with float + rounding.

`spectral_residual_guided` is GuidedMixup's GPU variant (3neutronstar/GuidedMixup,
`spectral_residual.py`): gray of the float image (ITU-R 601 weights), native resolution up to
128 (resized to 128x128 above, antialiased as torchvision's Resize), L = log sqrt(|F|^2 + 1e-10),
box3x3 with replicate padding, magnitude (not squared) of the inverse FFT, Gaussian 7x7
sigma 3, resized back. We divide by the max so maps lie in [0,1] (GuidedMixup re-normalises to
sum 1 afterwards, so the scale is immaterial there).

Input (`saliency_input`): by default (`uint8`) the guided variant reads the [0,1] image, i.e. the
8-bit levels / 255 the loaders yield. The released GuidedMixup code instead computed it on the
training batch AFTER its per-channel mean/std normalisation (`unary = sr.transform_spectral_residual(input)`
on the loader's normalised tensor); `official_float` reproduces that with the dataset's mean/std
(the `normalization` argument; the released code used (125.3, 123.0, 113.9)/255, (63.0, 62.1,
66.7)/255 on CIFAR-10, (129.3, 124.1, 112.4)/255, (68.2, 65.4, 70.4)/255 on CIFAR-100 and 0.5, 0.5
on Tiny-ImageNet). The two differ by more than a scale: normalisation reweights the channels
before the gray conversion and moves the mean (the DC term of the spectrum), so the maps differ
and so do the greedy partners chosen from them (31 % agree on synthetic_salient batches of 100).

Known weakness (both): the argmax of SR sits near the border on most images (DFT wrap-around),
which hurts argmax-box methods; it is fine for GuidedMixup's pixel ratios.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_import
from ..ops import (
    Normalization,
    box3,
    check_normalization,
    gaussian_blur,
    gray_float,
    gray_u8,
    normalize_images,
    normalize_max,
    resize,
)
from .base import register

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")
#: bound by name: importing it here would register the `opencv_*` detectors before this module's
#: (the registry keeps the order of `saliency/__init__`, which `mixsweep list` and errors show)
opencv_ref = lazy_import("trainables.mixing.saliency.opencv_ref")

OPENCV_SR_SIZE = (64, 64)
GUIDED_MAX_SIZE = 128


@register(
    "spectral_residual",
    "Hou & Zhang 2007 as OpenCV StaticSaliencySpectralResidual computes it (64x64 spectrum), batched",
    inputs=("uint8", "official_float"),
)
def spectral_residual(images: Tensor, *, saliency_input: str = "uint8", normalization: Normalization | None = None,
                      **_: object) -> Tensor:
    if saliency_input == "official_float":
        return opencv_ref.opencv_saliency("spectral_residual", images, "official_float", normalization)
    h, w = images.shape[-2:]
    small = torch.floor(resize(gray_u8(images), OPENCV_SR_SIZE) + 0.5)  # uint8 resize
    spec = torch.fft.fft2(small)
    mag = _abs(spec)
    log_amp = torch.log1p(mag)
    residual = torch.exp(log_amp - box3(log_amp, "reflect"))
    # exp(R) with the original phase = F * exp(R) / |F|; OpenCV's phase of a zero coefficient is 0
    nonzero = mag > 0
    rescaled = spec * torch.where(nonzero, residual / mag.clamp_min(1e-30), 0.0) + torch.where(nonzero, 0.0, residual)
    back = gaussian_blur(_abs(torch.fft.ifft2(rescaled, norm="forward")), 5, 8.0, "reflect")
    back = normalize_max(back * back)
    return resize(back, (h, w)).clamp_(0.0, 1.0)


def _abs(z: Tensor) -> Tensor:
    """|z| of a complex tensor (on CPU ~5x faster than torch.abs, which uses hypot)."""
    return (z.real * z.real + z.imag * z.imag).sqrt()


@register(
    "spectral_residual_guided",
    "GuidedMixup's GPU spectral residual (native res <=128, log-amplitude residual, Gaussian 7x7 s=3)",
    inputs=("uint8", "official_float"),
)
def spectral_residual_guided(images: Tensor, *, saliency_input: str = "uint8",
                             normalization: Normalization | None = None, **_: object) -> Tensor:
    h, w = images.shape[-2:]
    if saliency_input == "official_float":  # the released code's input: the normalised training batch
        images = normalize_images(images, check_normalization(normalization))
    gray = gray_float(images)
    if h > GUIDED_MAX_SIZE or w > GUIDED_MAX_SIZE:
        gray = resize(gray, (GUIDED_MAX_SIZE, GUIDED_MAX_SIZE), antialias=True)
    spec = torch.fft.fft2(gray)
    mag = (spec.real**2 + spec.imag**2 + 1e-10).sqrt()
    log_mag = mag.log()
    residual = torch.exp(log_mag - box3(log_mag, "replicate"))
    sal = _abs(torch.fft.ifft2(spec * (residual / mag)))
    sal = gaussian_blur(sal, 7, 3.0, "reflect")
    if sal.shape[-2:] != (h, w):
        sal = resize(sal, (h, w), antialias=True).clamp_min(0.0)
    return normalize_max(sal)
