"""Saliency detectors: `saliency_map(name, images)` -> (B,H,W) maps in [0,1] on the same device.

| name | what |
|---|---|
| fine_grained | OpenCV StaticSaliencyFineGrained, bit-exact, batched (SaliencyMix's detector) |
| spectral_residual | OpenCV StaticSaliencySpectralResidual, batched |
| spectral_residual_guided | GuidedMixup's GPU spectral residual |
| frequency_tuned | Achanta et al. 2009 |
| gradient | input-gradient saliency of the model being trained |
| opencv_fine_grained / opencv_spectral_residual | the OpenCV calls, per image on the CPU |

`saliency_input` (`uint8` | `official_float`) and the detectors that accept each: see `base`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ops import Normalization, check_images, check_normalization
from . import fine_grained, frequency_tuned, gradient, opencv_ref, spectral  # noqa: F401  (registration)
from .base import SALIENCY, SALIENCY_INPUTS, Detector

if TYPE_CHECKING:
    from torch import Tensor, nn


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
    normalization: Normalization | None = None,
) -> Tensor:
    """Saliency maps of a batch.

    Args:
        name: a detector from `list_saliency()`.
        images: (B,3,H,W) RGB floats in [0,1] (not normalised), any device.
        model: the classifier, needed by `gradient` only.
        targets: (B,K) soft labels (or None) for `gradient`.
        saliency_input: `uint8` (correct, every detector) or `official_float` (what the released
            code fed the detector: the batch normalised with `normalization`); the detector's
            `inputs` list what it accepts.
        normalization: the dataset's per-channel `(mean, std)` of [0,1] images, read by
            `official_float` only; default (None): the released SaliencyMix/CutMix CIFAR values
            (`ops.CIFAR_MEAN`, `ops.CIFAR_STD`).

    Returns:
        (B,H,W) float32 maps in [0,1] on `images.device`.
    """
    detector = SALIENCY.get(name)
    check_images(images, min_size=2)
    if saliency_input not in SALIENCY_INPUTS:
        raise ValueError(f"unknown saliency_input {saliency_input!r}; known: {', '.join(SALIENCY_INPUTS)}")
    if saliency_input not in detector.inputs:
        allowed = [d for d in SALIENCY if saliency_input in SALIENCY.get(d).inputs]
        raise ValueError(
            f"saliency_input {saliency_input!r} applies only to {', '.join(allowed)}, not {name!r} "
            f"(which accepts: {', '.join(detector.inputs)})"
        )
    return detector.fn(images, model=model, targets=targets, saliency_input=saliency_input,
                       normalization=check_normalization(normalization))
