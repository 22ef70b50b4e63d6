"""The four mask families. Each returns the mixed batch and `source_weight` (B,H,W): the share of
every OUTPUT pixel that comes from the partner (source) image.

* `box` (SaliencyMix, CutMix): paste the source box into the target box (same size; the two
  may sit at different places). Sources are gathered from the unmodified input, never from the
  half-written output.
* `blend` (Mixup): x~ = lam x_t + (1 - lam) x_s.
* `pixel_ratio` (GuidedMixup): M_i = S_i / (S_i + S_pi(i)) of blurred, sum-to-1 saliency maps
  (an eps added by `normalize_sum` keeps both positive, so M = 1/2 where both maps vanish),
  x~_i = M_i x_i + (1 - M_i) x_pi(i).
* `graft` (Saliency Grafting, OUR formulation; the paper has no public code): the source map is
  average-pooled to a G x G patch grid, and the pooled map rescaled to max 1 per image (so T
  means the same at every scale of the map); P = softmax(S / T) over patches; candidates are the
  patches with P above their mean; each candidate is grafted with Bernoulli(p) (at least one
  patch: the most salient one if the draw kept none); the patch mask M is nearest-upsampled and
  x~ = (1 - M) x_t + M x_s. The label is `saliency_mass` (labels.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def box_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,H,W) bool: inside the (x1, y1, x2, y2) box of each sample."""
    h, w = size
    ys = torch.arange(h, device=boxes.device)[None, :, None]
    xs = torch.arange(w, device=boxes.device)[None, None, :]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)


def paste_boxes(images: Tensor, partner: Tensor, source_box: Tensor, target_box: Tensor,
                aligned: bool) -> tuple[Tensor, Tensor]:
    """Paste each partner's source box into the target box; returns (mixed, source_weight)."""
    b, c, h, w = images.shape
    inside = box_mask(target_box, (h, w))
    sources = images.index_select(0, partner)
    if not aligned:  # different places: gather source pixels at the offset position
        ys = torch.arange(h, device=images.device)[None, :, None]
        xs = torch.arange(w, device=images.device)[None, None, :]
        sy = (ys - target_box[:, 1, None, None] + source_box[:, 1, None, None]).clamp(0, h - 1)
        sx = (xs - target_box[:, 0, None, None] + source_box[:, 0, None, None]).clamp(0, w - 1)
        idx = (sy * w + sx).flatten(1)[:, None, :].expand(b, c, h * w)
        sources = sources.flatten(2).gather(2, idx).view(b, c, h, w)
    mixed = torch.where(inside[:, None], sources, images)
    return mixed, inside.to(images.dtype)


def blend_pairs(images: Tensor, partner: Tensor, source_weight: Tensor) -> Tensor:
    """(1 - w) x + w x[partner], with w (B,H,W) or broadcastable to it."""
    w = source_weight.to(images.dtype)
    if w.ndim == 3:
        w = w[:, None]
    return torch.lerp(images, images.index_select(0, partner), w)


def pixel_ratio_weight(norm_maps: Tensor, partner: Tensor) -> Tensor:
    """GuidedMixup source weight 1 - S_i / (S_i + S_pi(i)) from positive sum-to-1 maps (B,H,W)."""
    src = norm_maps.index_select(0, partner)
    return src / (norm_maps + src)


def graft_weight(source_maps: Tensor, grid: int, temperature: float, p: float, uniform: Tensor) -> Tensor:
    """Saliency Grafting patch mask (B,H,W) in {0,1}; `uniform` (B, grid*grid) draws in [0,1)."""
    b, h, w = source_maps.shape
    pooled = F.adaptive_avg_pool2d(source_maps[:, None].float(), grid).flatten(1)
    pooled = pooled / pooled.amax(1, keepdim=True).clamp_min(1e-12)
    prob = torch.softmax(pooled / temperature, dim=1)
    chosen = (prob > prob.mean(1, keepdim=True)) & (uniform < p)
    best = F.one_hot(prob.argmax(1), grid * grid).bool()
    chosen = chosen | (best & ~chosen.any(1, keepdim=True))
    patches = chosen.view(b, 1, grid, grid).float()
    return F.interpolate(patches, size=(h, w), mode="nearest")[:, 0]
