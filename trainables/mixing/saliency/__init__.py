"""Saliency detectors: `saliency_map(name, images)` -> (B,H,W) maps in [0,1] on the same device.

| name | what |
|---|---|
| fine_grained | OpenCV StaticSaliencyFineGrained, bit-exact, batched (SaliencyMix's detector) |
| spectral_residual | OpenCV StaticSaliencySpectralResidual, batched |
| spectral_residual_guided | GuidedMixup's GPU spectral residual |
| frequency_tuned | Achanta et al. 2009 |
| gradient | input-gradient saliency of the model being trained |
| opencv_fine_grained / opencv_spectral_residual | the OpenCV calls, per image on the CPU |
"""

from __future__ import annotations

from torch import Tensor, nn

from ..ops import check_images
from . import fine_grained, frequency_tuned, gradient, opencv_ref, spectral  # noqa: F401  (registration)
from .base import SALIENCY, Detector

SALIENCY_INPUTS = ("uint8", "official_float")

__all__ = ["SALIENCY", "SALIENCY_INPUTS", "Detector", "list_saliency", "saliency_map"]


def list_saliency(pattern: str | None = None) -> list[str]:
    """Names of the registered saliency detectors (the `mix.saliency` values besides `none`)."""
    return SALIENCY.names(pattern)


def saliency_map(
    name: str,
    images: Tensor,
    *,
    model: nn.Module | None = None,
    targets: Tensor | None = None,
    saliency_input: str = "uint8",
) -> Tensor:
    """Saliency maps of a batch.

    Args:
        name: a detector from `list_saliency()`.
        images: (B,3,H,W) RGB floats in [0,1] (not normalised), any device.
        model: the classifier, needed by `gradient` only.
        targets: (B,K) soft labels (or None) for `gradient`.
        saliency_input: `uint8` (correct) or `official_float` (the released SaliencyMix code's
            normalised-float input to OpenCV); only for the OpenCV-family detectors.

    Returns:
        (B,H,W) float32 maps in [0,1] on `images.device`.
    """
    detector = SALIENCY.get(name)
    check_images(images, min_size=2)
    if saliency_input not in SALIENCY_INPUTS:
        raise ValueError(f"unknown saliency_input {saliency_input!r}; known: {', '.join(SALIENCY_INPUTS)}")
    if saliency_input != "uint8" and not detector.opencv_input:
        allowed = [d for d in SALIENCY if SALIENCY.get(d).opencv_input]
        raise ValueError(
            f"saliency_input {saliency_input!r} applies only to OpenCV-style detectors ({', '.join(allowed)}), "
            f"not {name!r}"
        )
    return detector.fn(images, model=model, targets=targets, saliency_input=saliency_input)
