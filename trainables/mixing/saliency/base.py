"""The saliency-detector registry and the detector record.

A detector maps a batch of RGB images in [0,1], (B,3,H,W), to per-image maps in [0,1], (B,H,W),
on the same device. Registry keys are the `mix.saliency` factor values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..registry import Registry


@dataclass(frozen=True)
class Detector:
    """One saliency detector and what it needs from its caller."""

    name: str
    fn: Callable[..., Tensor]  #: fn(images, *, model, targets, saliency_input) -> (B,H,W)
    doc: str  #: one line for `mixsweep list`
    needs_model: bool = False  #: `gradient`: needs the model (and labels) at call time
    opencv_input: bool = False  #: accepts `saliency_input` (uint8 | official_float)


SALIENCY: Registry[Detector] = Registry("saliency detector")


def register(name: str, doc: str, **flags: bool) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        SALIENCY.register(name, Detector(name, fn, doc, **flags), help=doc)
        return fn

    return deco
