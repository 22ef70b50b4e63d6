"""The saliency-detector registry and the detector record.

A detector maps a batch of RGB images in [0,1], (B,3,H,W), to per-image maps in [0,1], (B,H,W),
on the same device. Registry keys are the `mix.saliency` factor values.

`saliency_input` (the `mix.saliency_input` factor) says what a detector is fed; each detector
lists the values it accepts in `Detector.inputs`:

* `uint8`, every detector's default: the image itself, as its 8-bit levels (the OpenCV family
  converts [0,1] to uint8 BGR; the others read the [0,1] floats, which for every dataset here
  are 8-bit levels / 255). This is the correct input.
* `official_float`: what the released code of the detector's method fed it, namely the batch
  normalised with the dataset's per-channel mean/std, as float32 (the `normalization` argument
  of `saliency_map`). For `fine_grained` / `spectral_residual` and their `opencv_*` twins that
  is the released SaliencyMix code, which passed this tensor to OpenCV (an artefact, see
  `opencv_ref`); for `spectral_residual_guided` it is the released GuidedMixup code, which
  computed its spectral residual on the normalised training batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from torch import Tensor


#: every `mix.saliency_input` value; a detector accepts the subset in its `Detector.inputs`
SALIENCY_INPUTS = ("uint8", "official_float")


@dataclass(frozen=True)
class Detector:
    """One saliency detector and what it needs from its caller."""

    name: str
    fn: Callable[..., Tensor]  #: fn(images, *, model, targets, saliency_input, normalization) -> (B,H,W)
    doc: str  #: one line for `mixsweep list`
    needs_model: bool = False  #: `gradient`: needs the model (and labels) at call time
    inputs: tuple[str, ...] = ("uint8",)  #: the `saliency_input` values it accepts; the first is the default

    def __post_init__(self) -> None:
        if not self.inputs or self.inputs[0] != "uint8" or not set(self.inputs) <= set(SALIENCY_INPUTS):
            raise ValueError(f"detector {self.name!r}: inputs must start with 'uint8' and lie in "
                             f"{SALIENCY_INPUTS}, got {self.inputs!r}")


SALIENCY: Registry[Detector] = Registry("saliency detector")


def register(name: str, doc: str, **fields: object) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        SALIENCY.register(name, Detector(name, fn, doc, **fields), help=doc)
        return fn

    return deco
