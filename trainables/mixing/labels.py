"""Label rules: the TARGET label weight lam of each mixed sample.

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

from torch import Tensor


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
