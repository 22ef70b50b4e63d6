"""The four mask families and their registry `MASKS`. Each family's `mix` function turns a
`MaskInputs` into a `MaskResult`: the mixed batch and `source_weight` (B,H,W), the share of every
OUTPUT pixel that comes from the partner (source) image, plus the boxes for box masks.

A `Mask` record carries what the config layer and the mixer need to know about a family (whether
it draws lam, reads a saliency map, is binary, its default label, whether one draw may serve the
whole batch, its own options), so adding a mask is one record and one function here.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lazy import lazy_import
from .registry import Registry
from .selection import SELECTIONS, cut_sizes, place_boxes

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


@dataclass(frozen=True)
class MaskInputs:
    """What a mask family may read; fields a family does not use are None."""

    images: Tensor  #: (B,3,H,W) the unmodified batch
    partner: Tensor  #: (B,) source index of each target, on the images' device
    lam: Tensor | None  #: (B,) float64 host draws (box sides, blend weights)
    saliency: Tensor | None  #: (B,H,W) map of each target
    source_saliency: Tensor | None  #: (B,H,W) map each pair's source is selected from
    guided: Tensor | None  #: (B,H,W) GuidedMixup's blurred, sum-to-1 maps of the targets
    centres: Tensor | None  #: (B,2) host (y, x) random box centres
    uniform: Tensor | None  #: (B, G*G) host Bernoulli draws for grafting
    options: dict[str, object]  #: the family's own factors (selection, box_fit, graft_*), resolved


@dataclass(frozen=True)
class MaskResult:
    mixed: Tensor
    source_weight: Tensor  #: (B,H,W) share of each output pixel taken from the source
    source_box: Tensor | None = None  #: (B,4) box cut from the source (box masks)
    target_box: Tensor | None = None  #: (B,4) box pasted into the target (box masks)

    def take_source(self) -> Tensor:
        """Which SOURCE pixels were taken, in the source's coordinates (for `saliency_mass`)."""
        if self.source_box is None:
            return self.source_weight
        return box_mask(self.source_box, tuple(self.source_weight.shape[-2:]))


@dataclass(frozen=True)
class Mask:
    """A mask family and its properties."""

    name: str
    mix: Callable[[MaskInputs], MaskResult]
    doc: str
    uses_lam: bool  #: draws lam from `mix.lam` (box side, blend weight)
    reads_saliency: bool  #: the mask itself reads saliency maps
    guided: bool  #: reads GuidedMixup's blurred sum-to-1 maps
    binary: bool  #: source weights in {0,1}, so the `area` label applies
    default_label: str
    per_batch: bool  #: one draw may serve the whole batch (`mix.scope: per_batch`)
    options: dict[str, object]  #: the family's own factor keys and their defaults (None: resolved elsewhere)


MASKS: Registry[Mask] = Registry("mask")


def _register(name: str, doc: str, **props: object) -> Callable[[Callable], Callable]:
    def deco(fn: Callable[[MaskInputs], MaskResult]) -> Callable[[MaskInputs], MaskResult]:
        MASKS.register(name, Mask(name, fn, doc, **props), help=doc)
        return fn

    return deco


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


# -- the families, in `mixsweep list` order ---------------------------------------------------------


@_register("box", "paste a rectangle of the source (SaliencyMix, CutMix)", uses_lam=True, reads_saliency=False,
           guided=False, binary=True, default_label="area", per_batch=True,
           options={"selection": None, "box_fit": None})
def mix_box(inp: MaskInputs) -> MaskResult:
    """SaliencyMix / CutMix box: sides from lam, placed by the selection scheme, fitted by `box_fit`."""
    images = inp.images
    dev, (h, w) = images.device, images.shape[-2:]
    scheme = SELECTIONS.get(inp.options["selection"])
    cut_h, cut_w = (t.to(dev, non_blocking=True) for t in cut_sizes(inp.lam, h, w))
    centres = inp.centres.to(dev, non_blocking=True) if inp.centres is not None else None
    source, target = place_boxes(scheme, cut_h, cut_w, (h, w), source_maps=inp.source_saliency,
                                 target_maps=inp.saliency, centres=centres, box_fit=inp.options["box_fit"])
    mixed, weight = paste_boxes(images, inp.partner, source, target, aligned=scheme.target == "corresponding")
    return MaskResult(mixed, weight, source, target)


@_register("pixel_ratio", "per-pixel ratio of the two saliency maps (GuidedMixup)", uses_lam=False,
           reads_saliency=True, guided=True, binary=False, default_label="mask_mean", per_batch=False, options={})
def mix_pixel_ratio(inp: MaskInputs) -> MaskResult:
    weight = pixel_ratio_weight(inp.guided, inp.partner)
    return MaskResult(blend_pairs(inp.images, inp.partner, weight), weight)


@_register("blend", "global blend lam x_t + (1 - lam) x_s (Mixup)", uses_lam=True, reads_saliency=False,
           guided=False, binary=False, default_label="mask_mean", per_batch=True, options={})
def mix_blend(inp: MaskInputs) -> MaskResult:
    b, _, h, w = inp.images.shape
    lam = inp.lam.to(inp.images.device, non_blocking=True).float()
    weight = (1.0 - lam)[:, None, None].expand(b, h, w)
    return MaskResult(blend_pairs(inp.images, inp.partner, weight), weight)


@_register("graft", "stochastic salient patches of the source (Saliency Grafting, our formulation)",
           uses_lam=False, reads_saliency=True, guided=False, binary=True, default_label="saliency_mass",
           per_batch=False, options={"graft_grid": 4, "graft_temperature": 0.5, "graft_p": 0.5})
def mix_graft(inp: MaskInputs) -> MaskResult:
    o = inp.options
    weight = graft_weight(inp.source_saliency, o["graft_grid"], o["graft_temperature"], o["graft_p"],
                          inp.uniform.to(inp.images.device, non_blocking=True))
    return MaskResult(blend_pairs(inp.images, inp.partner, weight), weight)
