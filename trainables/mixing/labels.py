"""Label rules and their registry `LABELS`: the TARGET label weight lam of each mixed sample.

* `area`: 1 - (pasted pixels) / (H*W) of a binary mask (box: the clipped box, exactly);
* `mask_mean`: 1 - mean(source weight), i.e. mean(M) of a soft mask (GuidedMixup, Mixup);
* `saliency_mass` (Saliency Grafting's calibrated label): a_t = sum(S_t * keep_t) / sum(S_t),
  the share of the target's saliency that survives; a_s = sum(S_s * take_s) / sum(S_s), the share
  of the source's saliency that is pasted (in the SOURCE's coordinates, which differ from the
  target's for off-place boxes); lam = a_t / (a_t + a_s). Degenerate maps fall back to
  lam = 1/2 rather than NaN.

Soft targets are then lam * y_t + (1 - lam) * y_s, so rows keep summing to 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .registry import Registry

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Label:
    """A label rule: `weight(source_weight, take_source, target_maps, source_maps)` -> (B,) float64 lam."""

    name: str
    weight: Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]
    doc: str
    binary_only: bool  #: needs a binary mask (the pixel share of a soft mask is not an area)
    reads_saliency: bool  #: needs every image's saliency map


def area(source_weight: Tensor) -> Tensor:
    h, w = source_weight.shape[-2:]
    return 1.0 - source_weight.flatten(1).double().sum(1) / (h * w)


def mask_mean(source_weight: Tensor) -> Tensor:
    return 1.0 - source_weight.flatten(1).double().mean(1)


def saliency_mass(target_maps: Tensor, source_maps: Tensor, keep_target: Tensor, take_source: Tensor,
                  eps: float = 1e-12) -> Tensor:
    st, ss = target_maps.flatten(1).double(), source_maps.flatten(1).double()
    a_t = (st * keep_target.flatten(1).double()).sum(1) / (st.sum(1) + eps)
    a_s = (ss * take_source.flatten(1).double()).sum(1) / (ss.sum(1) + eps)
    return (a_t + eps) / (a_t + a_s + 2 * eps)


def mix_targets(targets: Tensor, partner: Tensor, lam: Tensor) -> Tensor:
    """lam * y + (1 - lam) * y[partner] for (B,K) soft targets and (B,) lam."""
    lam = lam.to(targets.dtype)[:, None]
    return lam * targets + (1.0 - lam) * targets.index_select(0, partner)


LABELS: Registry[Label] = Registry("label rule")


def _register(name: str, weight: Callable, doc: str, *, binary_only: bool, reads_saliency: bool) -> None:
    LABELS.register(name, Label(name, weight, doc, binary_only=binary_only, reads_saliency=reads_saliency), help=doc)


_register("area", lambda w, take, st, ss: area(w), "target weight = 1 - pasted pixel share of a binary mask",
          binary_only=True, reads_saliency=False)
_register("mask_mean", lambda w, take, st, ss: mask_mean(w), "target weight = mean of the soft mask",
          binary_only=False, reads_saliency=False)
_register("saliency_mass", lambda w, take, st, ss: saliency_mass(st, ss, 1.0 - w, take),
          "share of each image's saliency that survives (Saliency Grafting)", binary_only=False, reads_saliency=True)
